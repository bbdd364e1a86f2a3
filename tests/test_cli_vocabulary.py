"""One option vocabulary: the same words in every pass and on the command line, never remapped silently.

Also ``--quiet``/``--debug`` after every verb.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from click.testing import CliRunner

from onnxprune.cli import cli
from onnxprune.errors import RecipeError
from onnxprune.passes import ChannelPruneConfig, FinetuneConfig, UnstructuredPruneConfig
from onnxprune.passes._vocab import AGGREGATES, NORMALIZERS, SCOPES
from onnxprune.recipe import Recipe
from tests.conftest import DIGITS


def _invoke(*args: object) -> object:
    return CliRunner().invoke(cli, [*map(str, args)])


def _recipe(*args: object) -> dict:
    result = _invoke("prune", DIGITS / "digits_cnn.onnx", "-o", "out.onnx", *args, "--dump-recipe")
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.output)["passes"][0]


def _logits(path: Path) -> np.ndarray:
    data = np.load(DIGITS / "digits_test.npz")["input"][:64]
    return ort.InferenceSession(str(path)).run(None, {"input": data})[0]


@pytest.mark.parametrize("word", NORMALIZERS.names())
def test_every_normalize_word_means_the_same_in_both_passes(word: str) -> None:
    assert UnstructuredPruneConfig(scope="global", normalize=word).normalize == word
    assert ChannelPruneConfig(scope="global", normalize=word).normalize == word


@pytest.mark.parametrize("word", SCOPES.names())
def test_scope_words_are_shared(word: str) -> None:
    assert UnstructuredPruneConfig(scope=word).scope == word
    assert ChannelPruneConfig(scope=word).scope == word
    assert FinetuneConfig(prune_scope=word).prune_scope == word


def test_the_cli_passes_normalize_through_unchanged() -> None:
    """``--normalize l2`` used to become ``max`` and ``none`` could not be said for structured pruning."""
    for word in ("none", "l2", "max", "sum"):
        spec = _recipe("--channels", "0.3", "--scope", "global", "--normalize", word)
        assert spec["name"] == "channels" and spec["config"]["normalize"] == word
        spec = _recipe("--sparsity", "0.5", "--scope", "global", "--normalize", word)
        assert spec["name"] == "unstructured" and spec["config"]["normalize"] == word
    spec = _recipe("--channels", "0.3", "--scope", "global", "--aggregate", "max")
    assert spec["config"]["aggregate"] == "max" and spec["config"]["scope"] == "global"
    assert "normalize" not in _recipe("--channels", "0.3")["config"]  # not given: the pass's own default


def test_normalize_changes_the_structured_result(tmp_path: Path) -> None:
    """``l2`` and ``max`` now select different channels where ``l2`` used to run as ``max``."""
    outputs = {}
    for word in ("l2", "max", "none"):
        out = tmp_path / f"{word}.onnx"
        args = ("--channels", "0.5", "--scope", "global", "--normalize", word, "--quiet")
        result = _invoke("prune", DIGITS / "digits_cnn.onnx", "-o", out, *args)
        assert result.exit_code == 0, result.output
        outputs[word] = _logits(out)
    assert not np.allclose(outputs["l2"], outputs["max"]) or outputs["l2"].shape != outputs["max"].shape
    assert not np.allclose(outputs["none"], outputs["max"]) or outputs["none"].shape != outputs["max"].shape


def test_magnitude_is_l2_for_channels_and_the_same_model(tmp_path: Path) -> None:
    assert ChannelPruneConfig(importance="magnitude").importance == "l2"
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for out, importance in ((a, "magnitude"), (b, "l2")):
        args = ("--channels", "0.4", "--importance", importance)
        result = _invoke("prune", DIGITS / "digits_cnn.onnx", "-o", out, *args)
        assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(_logits(a), _logits(b))


def test_old_recipes_load_with_a_deprecation_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scope: uniform`` (the channels pass's old word, written by older --dump-recipe) still runs: as ``layer``."""
    with caplog.at_level(logging.WARNING):
        config = ChannelPruneConfig(scope="uniform")
    assert config.scope == "layer" and config == ChannelPruneConfig()
    assert "scope 'uniform' is deprecated" in caplog.text and "'layer'" in caplog.text
    outputs = []
    for scope in ("uniform", "layer"):
        recipe = {
            "model": str(DIGITS / "digits_cnn.onnx"),
            "output": str(tmp_path / f"{scope}.onnx"),
            "passes": [{"name": "channels", "config": {"ratio": 0.4, "scope": scope, "reconstruct": False}}],
        }
        path = tmp_path / f"{scope}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        assert Recipe.from_yaml(path).passes[0].config["scope"] == scope  # the recipe keeps what was written
        result = _invoke("--quiet", "run", path)
        assert result.exit_code == 0, result.output
        outputs.append(_logits(tmp_path / f"{scope}.onnx"))
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sparsity", "0.5", "--normalize", "l2"], "--normalize l2 scales each layer's scores for one global"),
        (["--channels", "0.5", "--normalize", "none"], "it needs --scope global"),
        (["--sparsity", "0.5", "--aggregate", "max"], "--aggregate combines a channel group's scores"),
        (["--sparsity", "0.5", "--scope", "global", "--normalize", "l2", "--importance", "sparsegpt"], "sparsegpt"),
        (["--channels", "0.5", "--importance", "wanda", "--scope", "uniform"], "'uniform' is not one of"),
    ],
)
def test_words_that_would_change_nothing_are_refused_on_one_line(args: list[str], message: str) -> None:
    result = _invoke("prune", DIGITS / "digits_cnn.onnx", "-o", "out.onnx", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.strip().count("\n") == 0


def test_unknown_words_are_refused_with_the_choices() -> None:
    with pytest.raises(RecipeError, match="normalize must be one of none, mean, max, l2, sum; got 'median'"):
        ChannelPruneConfig(normalize="median")
    with pytest.raises(RecipeError, match="aggregate must be one of sum, mean, max"):
        ChannelPruneConfig(aggregate="prod")
    with pytest.raises(RecipeError, match="scope must be one of layer, global"):
        UnstructuredPruneConfig(scope="row")
    assert AGGREGATES.names() == ("sum", "mean", "max")


# --------------------------------------------------------------------------- #
# --quiet and --debug after the verb
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("verb", sorted(cli.commands))
@pytest.mark.parametrize("flag", ["--quiet", "-q", "--debug"])
def test_every_verb_takes_the_global_flags_after_its_name(verb: str, flag: str) -> None:
    result = _invoke(verb, flag, "--help")
    assert result.exit_code == 0, result.output
    assert "--quiet" in result.output and "--debug" in result.output


def test_quiet_after_the_verb_silences_like_before_it(tmp_path: Path) -> None:
    model, data = DIGITS / "digits_cnn.onnx", DIGITS / "digits_test.npz"
    check = ["validate", model, model, "--data", data]
    for args in (["--quiet", *check], [*check, "-q"]):
        result = _invoke(*args)
        assert result.exit_code == 0 and result.output == "", result.output
    loud = _invoke("validate", model, model, "--data", data)
    assert loud.exit_code == 0 and "execution provider: CPUExecutionProvider" in loud.output
    result = _invoke("prune", model, "-o", tmp_path / "p.onnx", "--sparsity", "0.3", "--quiet")
    assert result.exit_code == 0 and result.output == "" and (tmp_path / "p.onnx").is_file()


def test_debug_after_the_verb_gives_the_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "missing.onnx"
    plain = _invoke("inspect", missing)
    assert plain.exit_code == 2 and "onnxprune: error:" in plain.output
    debug = _invoke("inspect", missing, "--debug")
    assert debug.exit_code != 0 and debug.exception is not None and not isinstance(debug.exception, SystemExit)
