"""``--help`` and ``onnxprune passes``: option descriptions come from the configs, and every example runs."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxprune._cli_examples import EXAMPLES
from onnxprune._field_docs import describe, field_docs, undocumented
from onnxprune.cli import cli
from onnxprune.passes import PASSES
from tests.conftest import DIGITS, sha256

VERBS = sorted(cli.commands)


def _words(text: str) -> str:
    """``text`` on one line, as click wraps it (at spaces and after hyphens)."""
    return " ".join(text.split()).replace("- ", "-")


@pytest.mark.parametrize("name", list(PASSES))
def test_every_config_field_is_documented(name: str) -> None:
    assert undocumented(PASSES[name].config_class) == []


def test_passes_prints_every_field_with_its_description() -> None:
    result = CliRunner().invoke(cli, ["passes"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = _words(result.output)
    for name, cls in PASSES.items():
        assert f"{name}:" in text
        for field in dataclasses.fields(cls.config_class):
            assert f"{field.name} = " in text
            assert _words(describe(cls.config_class, field.name)) in text, (name, field.name)
    assert "l2: divide by the L2 norm of the scores" in text  # a vocabulary's words are listed


def test_passes_names_one_pass_and_refuses_unknown_ones() -> None:
    result = CliRunner().invoke(cli, ["passes", "nm"])
    assert result.exit_code == 0 and "nm:" in result.output and "channels:" not in result.output
    bad = CliRunner().invoke(cli, ["passes", "nosuch"])
    assert bad.exit_code == 2 and bad.output.strip().count("\n") == 0 and "known: unstructured" in bad.output


@pytest.mark.parametrize("verb", VERBS)
def test_help_shows_config_descriptions_and_ends_with_examples(verb: str) -> None:
    command = cli.commands[verb]
    result = CliRunner().invoke(cli, [verb, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = _words(result.output)
    params = {p.name: p for p in command.params}
    for option, (config, field) in getattr(command, "described", {}).items():
        shown = _words(params[option].help or "")
        assert shown in text, (verb, option)
        # every word of the config's description is in the help, in order (field names become --flags)
        words = iter(shown.lower().split())
        wanted = [w for w in _words(field_docs(config)[field]).lower().split() if "_" not in w]
        assert all(any(w == got for got in words) for w in wanted), (verb, option)
    examples = EXAMPLES.get(verb, ())
    assert 2 <= len(examples) <= 3, f"'{verb}' needs two or three examples in onnxprune/_cli_examples.py"
    assert result.output.rstrip().endswith(examples[-1])


def test_described_options_cover_the_config_fields() -> None:
    described = {v: set(getattr(cli.commands[v], "described", {})) for v in VERBS}
    assert {"scope", "normalize", "aggregate", "round_to", "channels"} <= described["prune"]
    assert {"energy", "rank", "whitening", "allocation"} <= described["lowrank"]
    assert {"criterion", "error", "unit", "max_error"} <= described["depth"]
    assert {"schedule", "optimizer", "distill", "holdout", "train_which"} <= described["finetune"]


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the examples name (see ``onnxprune/_cli_examples.py``)."""
    from tests.models.structured_zoo import zoo_onnx

    folder = tmp_path_factory.mktemp("examples")
    (folder / "model.onnx").write_bytes((DIGITS / "digits_cnn.onnx").read_bytes())
    (folder / "calib.npz").write_bytes((DIGITS / "digits_calib.npz").read_bytes())
    (folder / "test.npz").write_bytes((DIGITS / "digits_test.npz").read_bytes())
    onnx.save(zoo_onnx("resnet_basic", dynamo=False), folder / "resnet.onnx")
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    np.savez(folder / "resnet_calib.npz", x=x)
    return folder


def _run_line(line: str) -> tuple[int, str]:
    words = shlex.split(line)
    assert words[0] == "onnxprune", line
    target = None
    if ">" in words:
        at = words.index(">")
        words, target = words[:at], words[at + 1]
    result = CliRunner().invoke(cli, words[1:], catch_exceptions=False)
    if target is not None:
        Path(target).write_text(result.stdout)
    return result.exit_code, result.output


def test_every_example_runs(example_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each verb's examples, in order, in one folder; inputs are never modified; outputs load in onnxruntime."""
    monkeypatch.chdir(example_dir)
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(example_dir / "cache"))
    inputs = {p: sha256(example_dir / p) for p in ("model.onnx", "calib.npz", "test.npz", "resnet.onnx")}
    assert set(EXAMPLES) == set(VERBS), "every verb has examples, and every example's verb exists"
    for verb in ("inspect", "prune", *[v for v in EXAMPLES if v not in ("inspect", "prune")]):
        for line in EXAMPLES[verb]:
            code, output = _run_line(line)
            assert code == 0, f"{line}\n{output}"
    assert {p: sha256(example_dir / p) for p in inputs} == inputs
    feed = {"input": np.load(example_dir / "test.npz")["input"][:8]}
    for written in ("pruned.onnx", "sparse24.onnx", "slim.onnx", "lowrank.onnx", "tuned.onnx", "other.onnx"):
        (logits,) = ort.InferenceSession(str(example_dir / written)).run(None, feed)
        assert logits.shape == (8, 10) and np.isfinite(logits).all(), written
    assert (example_dir / "check.json").is_file() and (example_dir / "digits.json").is_file()
