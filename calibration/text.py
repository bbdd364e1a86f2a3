"""Text files as calibration and validation data: one sample a line, tokenized with a ``tokenizer.json``.

Lines are read as UTF-8 (blank lines skipped), tokenized by the ``tokenizers`` library with the
tokenizer's own special tokens, truncated and padded to the sequence length, and fill the model's
``input_ids``, ``attention_mask`` and ``token_type_ids`` inputs by name.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune._fields import check_at_least, check_fields
from onnxprune.calibration.sampling import pick_samples
from onnxprune.calibration.sources import ArraySource, InputSpec, input_specs
from onnxprune.errors import CalibrationError

__all__ = ["DEFAULT_SEQ_LEN", "TEXT_INPUTS", "TextSpec", "embedding_rows", "load_tokenizer", "open_text", "read_lines"]

logger = logging.getLogger(__name__)

#: The model inputs text fills, by name.
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: The sequence length when neither ``seq_len`` nor the model fixes one.
DEFAULT_SEQ_LEN = 128
#: Lines tokenized per call (and per progress step).
_CHUNK = 512
#: Ops an id tensor may pass through on its way to the embedding ``Gather``.
_PASS_THROUGH = frozenset({"Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


@dataclasses.dataclass(frozen=True)
class TextSpec:
    """How text data is tokenized (recipes: ``calibration.text``).

    ``tokenizer``: a ``tokenizer.json`` or a folder holding one. ``seq_len``: pad and truncate to
    it (``None``: the model's fixed sequence dim, else :data:`DEFAULT_SEQ_LEN`).
    """

    tokenizer: str
    seq_len: int | None = None

    def __post_init__(self) -> None:
        check_fields(self, "calibration.text.")
        check_at_least(self, {"seq_len": 1}, "calibration.text.")


def load_tokenizer(path: str | Path) -> Any:
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` or a folder holding one (one-line errors)."""
    try:
        from tokenizers import Tokenizer  # noqa: PLC0415 - tokenizers is the optional [data] extra
    except ImportError as e:
        raise CalibrationError("reading text needs tokenizers: pip install 'onnxprune[data]'") from e
    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
        if not file.is_file():
            raise CalibrationError(f"{path}: folder holds no tokenizer.json")
    elif not file.is_file():
        raise CalibrationError(f"{path}: no such tokenizer file or folder")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # the Rust side raises plain Exceptions
        message = " ".join(str(e).split())
        raise CalibrationError(f"{file}: cannot read tokenizer ({type(e).__name__}: {message})") from e


def read_lines(path: str | Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file (CRLF and a BOM accepted), without their line ends."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as e:
        raise CalibrationError(f"{path}: cannot read text ({e.strerror or e})") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CalibrationError(f"{path}: line {line} is not UTF-8 text") from e
    lines = [line.rstrip("\r") for line in text.split("\n")]
    kept = [line for line in lines if line.strip()]
    if not kept:
        raise CalibrationError(f"{path}: no text (one sample a line; blank lines are skipped)")
    return kept


def embedding_rows(model: ir.Model, name: str) -> tuple[str, int] | None:
    """The embedding table a model input indexes (through casts and reshapes): its name and row count."""
    value = next((v for v in model.graph.inputs if v.name == name), None)
    stack, seen = [value] if value is not None else [], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for node, index in current.uses():
            if node.op_type == "Gather" and index == 1 and node.domain in ("", "ai.onnx"):
                table = node.inputs[0]
                if table is not None and table.const_value is not None and table.shape is not None:
                    return table.name or "?", int(table.shape[0])
            elif node.op_type in _PASS_THROUGH and index == 0:
                stack.extend(node.outputs)
    return None


def _seq_len(spec: TextSpec, inputs: list[InputSpec], shapes: Mapping[str, tuple[int, ...]], origin: str) -> int:
    fixed = {}
    for item in inputs:
        shape = tuple(shapes.get(item.name, item.shape))
        if len(shape) != 2:
            raise CalibrationError(f"{origin}: input '{item.name}' {item.display_shape} is not [batch, sequence]")
        if shape[0] not in (None, 1):
            raise CalibrationError(f"{origin}: input '{item.name}' has a fixed batch of {shape[0]}; text feeds 1")
        if shape[1] is not None:
            fixed[item.name] = shape[1]
    if len(set(fixed.values())) > 1:
        raise CalibrationError(f"{origin}: the inputs fix different sequence lengths: {fixed}")
    model_len = next(iter(fixed.values()), None)
    if spec.seq_len is not None and model_len is not None and spec.seq_len != model_len:
        name = next(iter(fixed))
        raise CalibrationError(f"--seq-len {spec.seq_len}: input '{name}' fixes the sequence length at {model_len}")
    return spec.seq_len or model_len or DEFAULT_SEQ_LEN


def _text_inputs(model: ir.Model, origin: str) -> list[InputSpec]:
    specs = input_specs(model)
    others = [s.name for s in specs if s.name not in TEXT_INPUTS]
    if others:
        raise CalibrationError(
            f"{origin}: text fills {', '.join(TEXT_INPUTS)}; the model also takes {', '.join(others)} "
            "(give .npz data for it)"
        )
    if not any(s.name == "input_ids" for s in specs):
        raise CalibrationError(f"{origin}: the model has no 'input_ids' input for text")
    return specs


def _check_vocab(tokenizer: Any, model: ir.Model, origin: str) -> None:
    found = embedding_rows(model, "input_ids")
    if found is None:
        logger.info("%s: no embedding Gather found for input_ids; the vocabulary size is not checked", origin)
        return
    table, rows = found
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > rows:
        raise CalibrationError(
            f"{origin}: the tokenizer's vocabulary ({size} tokens) is larger than the model's embedding table "
            f"'{table}' ({rows} rows); is it the model's tokenizer?"
        )


def _configure(tokenizer: Any, seq_len: int) -> None:
    """Truncate and pad to ``seq_len`` with the tokenizer's pad token (its padding settings, else [PAD]/<pad>)."""
    given = tokenizer.padding or {}
    pad_token = given.get("pad_token")
    if pad_token is None:
        pad_token = next((t for t in ("[PAD]", "<pad>", "<|pad|>") if tokenizer.token_to_id(t) is not None), "[PAD]")
    pad_id = given.get("pad_id", tokenizer.token_to_id(pad_token) or 0)
    tokenizer.enable_truncation(max_length=seq_len)
    tokenizer.enable_padding(
        length=seq_len,
        pad_id=pad_id,
        pad_token=pad_token,
        pad_type_id=given.get("pad_type_id", 0),
        direction=given.get("direction", "right"),
    )


def open_text(
    path: str | Path,
    model: ir.Model,
    spec: TextSpec,
    *,
    samples: int | None = None,
    seed: int = 0,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ArraySource:
    """Tokenize a text file's lines (``samples`` of them by a seeded shuffle) into the model's text inputs.

    Raises:
        CalibrationError: an unreadable file or tokenizer, model inputs text cannot fill (named), a
            vocabulary larger than the model's embedding table, or a ``seq_len`` the model does not take.
    """
    origin = str(path)
    inputs = _text_inputs(model, origin)
    seq_len = _seq_len(spec, inputs, input_shapes or {}, origin)
    tokenizer = load_tokenizer(spec.tokenizer)
    _check_vocab(tokenizer, model, f"{spec.tokenizer}")
    lines = read_lines(path)
    chosen = [lines[i] for i in pick_samples(len(lines), samples, seed)]
    _configure(tokenizer, seq_len)
    columns: dict[str, list[np.ndarray]] = {name: [] for name in TEXT_INPUTS}
    for start in range(0, len(chosen), _CHUNK):
        encodings = tokenizer.encode_batch(chosen[start : start + _CHUNK])
        columns["input_ids"].append(np.array([e.ids for e in encodings], dtype=np.int64))
        columns["attention_mask"].append(np.array([e.attention_mask for e in encodings], dtype=np.int64))
        columns["token_type_ids"].append(np.array([e.type_ids for e in encodings], dtype=np.int64))
        if progress is not None:
            progress(min(start + _CHUNK, len(chosen)), len(chosen))
    arrays, resolved = {}, []
    for item in inputs:
        values = np.concatenate(columns[item.name]).astype(item.dtype)
        batch = tuple(input_shapes.get(item.name, item.shape) if input_shapes else item.shape)[0]
        arrays[item.name] = values if batch is None else values[:, None]
        resolved.append(InputSpec(item.name, item.dtype, (batch, seq_len)))
    return ArraySource(arrays, resolved, origin, kind="lines of text")
