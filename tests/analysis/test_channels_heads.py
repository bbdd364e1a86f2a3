"""Attention heads and grouped KV heads as channel groups, on exports of both torch exporters.

Heads are removed whole (Q, K, V columns and the O projection's rows), grouped-query attention removes
a key/value head with its query heads; shape constants (Reshape targets, Expand shapes, computed or
constant) are rewritten. Checks: pruning nothing changes nothing, removing heads whose weights are
already zero changes nothing, and the shrunk model equals the masked one in onnxruntime.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxprune.analysis.channels import ChannelAnalysis, analyze_channels, mask, masked_values, shrink
from onnxprune.passes import ChannelPruneConfig, ChannelPrunePass
from tests.conftest import ort_run, to_ir
from tests.models.export import torch_export

torch = pytest.importorskip("torch")

EXPORTS = [pytest.param(False, id="torchscript"), pytest.param(True, id="dynamo")]


def _bert() -> tuple[object, dict[str, np.ndarray]]:
    from tests.models.torch_modules import module_class

    module = module_class("BertLikeEncoder")(vocab=50, hidden=32, layers=2, heads=4, intermediate=64, seq=6)
    ids = np.random.default_rng(0).integers(0, 50, (2, 6)).astype(np.int64)
    return module, {"x": ids}


def _gqa() -> tuple[object, dict[str, np.ndarray]]:
    from tests.models.attention import gqa_block

    x = np.random.default_rng(0).standard_normal((2, 6, 32)).astype(np.float32)
    return gqa_block(), {"x": x}


MODELS: dict[str, Callable[[], tuple[object, dict[str, np.ndarray]]]] = {"bert": _bert, "gqa": _gqa}
_CACHE: dict[tuple[str, bool], tuple[onnx.ModelProto, dict[str, np.ndarray]]] = {}


def _export(name: str, dynamo: bool) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    if (name, dynamo) not in _CACHE:
        module, feeds = MODELS[name]()
        args = tuple(torch.from_numpy(v) for v in feeds.values())
        proto = torch_export(module, args, dynamo=dynamo, opset=None if dynamo else 17)
        _CACHE[name, dynamo] = (proto, feeds)
    return _CACHE[name, dynamo]


def _head_groups(analysis: ChannelAnalysis) -> list:
    return [g for g in analysis.prunable() if g.unit in ("head", "KV group")]


def _keep(analysis: ChannelAnalysis, pick: Callable[[int], np.ndarray]) -> dict[int, np.ndarray]:
    """Kept units of every head group: the blocks ``pick(n_blocks)`` chooses."""
    keep = {}
    for group in _head_groups(analysis):
        blocks = pick(group.units // group.block)
        keep[group.id] = (blocks[:, None] * group.block + np.arange(group.block)).ravel()
    return keep


def _shrunk(proto: onnx.ModelProto, keep_of: Callable[[ChannelAnalysis], dict[int, np.ndarray]]) -> ir.Model:
    model = to_ir(proto)
    analysis = analyze_channels(model)
    shrink(analysis, keep_of(analysis))
    return model


def _close(a: dict[str, np.ndarray], b: dict[str, np.ndarray], tol: float = 1e-5) -> None:
    for name in a:
        assert a[name].shape == b[name].shape
        np.testing.assert_allclose(a[name], b[name], rtol=tol, atol=tol)


@pytest.mark.parametrize("dynamo", EXPORTS)
def test_heads_are_groups(dynamo: bool) -> None:
    proto, _ = _export("bert", dynamo)
    heads = _head_groups(analyze_channels(to_ir(proto)))
    assert [g.describe() for g in heads] == ["4 heads × 8", "4 heads × 8"]
    assert all(len(g.producers) == 3 for g in heads)  # query, key and value projections
    proto, _ = _export("gqa", dynamo)
    (kv,) = _head_groups(analyze_channels(to_ir(proto)))
    assert kv.describe() == "2 KV groups × 8" and len(kv.producers) == 3


@pytest.mark.parametrize("dynamo", EXPORTS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_keeping_every_head_changes_nothing(name: str, dynamo: bool) -> None:
    proto, feeds = _export(name, dynamo)
    model = _shrunk(proto, lambda a: _keep(a, np.arange))
    _close(ort_run(proto, feeds), ort_run(model, feeds), 0.0)
    model = to_ir(proto)
    assert not ChannelPrunePass(ChannelPruneConfig(ratio=0.0))(model).modified
    _close(ort_run(proto, feeds), ort_run(model, feeds), 0.0)


@pytest.mark.parametrize("dynamo", EXPORTS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_removing_zeroed_heads_changes_nothing(name: str, dynamo: bool) -> None:
    proto, feeds = _export(name, dynamo)
    drop_first = lambda n: np.arange(1, n)  # noqa: E731
    zeroed = to_ir(proto)
    analysis = analyze_channels(zeroed)
    values = masked_values(analysis, _keep(analysis, drop_first))
    for name_, array in values.items():  # the zeroed weights are the model now: removing them is exact
        zeroed.graph.initializers[name_].const_value = ir.Tensor(array, name=name_)
    proto_zeroed = ir.to_proto(zeroed)
    model = _shrunk(proto_zeroed, lambda a: _keep(a, drop_first))
    assert len(ir.to_proto(model).SerializeToString()) < len(proto_zeroed.SerializeToString())
    _close(ort_run(proto_zeroed, feeds), ort_run(model, feeds))


@pytest.mark.parametrize("dynamo", EXPORTS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_shrunk_equals_masked(name: str, dynamo: bool) -> None:
    proto, feeds = _export(name, dynamo)
    rng = np.random.default_rng(3)
    pick = lambda n: np.sort(rng.choice(n, max(1, n // 2), replace=False))  # noqa: E731
    masked = to_ir(proto)
    analysis = analyze_channels(masked)
    keep = _keep(analysis, pick)
    mask(analysis, keep)
    shrunk = to_ir(proto)
    other = analyze_channels(shrunk)
    shrink(other, {b.id: keep[a.id] for a, b in zip(_head_groups(analysis), _head_groups(other), strict=True)})
    onnx.checker.check_model(ir.to_proto(shrunk), full_check=True)
    _close(ort_run(masked, feeds), ort_run(shrunk, feeds))
    batch = {k: np.concatenate([v, v, v]) for k, v in feeds.items()}  # dynamic batch still works
    assert next(iter(ort_run(shrunk, batch).values())).shape[0] == 6


def test_cli_prunes_heads_and_inspect_names_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from onnxprune.cli import cli

    proto, feeds = _export("bert", True)
    path, out, calib = tmp_path / "bert.onnx", tmp_path / "out.onnx", tmp_path / "calib.npz"
    onnx.save(proto, path)
    np.savez(calib, x=np.random.default_rng(1).integers(0, 50, (16, 6)).astype(np.int64))
    shown = CliRunner().invoke(cli, ["inspect", str(path), "--groups"], catch_exceptions=False)
    assert shown.exit_code == 0 and "4 heads × 8" in shown.output
    args = ["--quiet", "prune", str(path), "-o", str(out), "--channels", "0.5", "--verify", "--calib", str(calib)]
    result = CliRunner().invoke(cli, [*args, "--report", str(tmp_path / "r.json")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    pruned = ort_run(onnx.load(out), feeds)
    assert next(iter(pruned.values())).shape == (2, 6, 32)
    shapes = {t.name: tuple(t.dims) for t in onnx.load(out).graph.initializer}
    assert sorted(s for s in shapes.values() if len(s) == 2).count((32, 16)) == 6  # Q, K, V of 2 layers: 2 of 4 heads
    assert sorted(s for s in shapes.values() if len(s) == 2).count((16, 32)) == 2  # and the O projections' rows


def _zoo_bert(dynamo: bool) -> tuple[onnx.ModelProto, dict[str, np.ndarray], dict[str, np.ndarray]]:
    from tests.models.transformer_zoo import transformer_inputs, transformer_onnx

    proto = transformer_onnx("bert", dynamo=dynamo)
    feeds = {k: v.numpy() for k, v in transformer_inputs("bert", batch=2).items()}
    calib = {k: v.numpy() for k, v in transformer_inputs("bert", batch=32, seed=5).items()}
    return proto, feeds, calib


@pytest.mark.parametrize("dynamo", EXPORTS)
def test_hidden_size_with_the_output_restored(dynamo: bool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from onnxprune.calibration.sources import open_source
    from onnxprune.context import PassContext

    proto, feeds, calib = _zoo_bert(dynamo)
    np.savez(tmp_path / "calib.npz", **calib)
    hidden = ChannelPruneConfig(ratio=0.5, allow_inexact=True, restore_outputs=True)
    nothing = to_ir(proto)
    assert not ChannelPrunePass(dataclasses.replace(hidden, ratio=0.0))(nothing).modified
    _close(ort_run(proto, feeds), ort_run(nothing, feeds), 0.0)
    fits = {}
    for data in (None, tmp_path / "calib.npz"):
        model = to_ir(proto)
        context = PassContext(calibration=open_source(str(data), model) if data else None)
        result = ChannelPrunePass(hidden, context)(model)
        fits[data is None] = result.report.summary["restored_outputs"]["last_hidden_state"]
        out = ort_run(model, feeds)["last_hidden_state"]
        assert out.shape == ort_run(proto, feeds)["last_hidden_state"].shape and np.isfinite(out).all()
        widths = {v.name: v.const_value.shape for v in model.graph.initializers.values() if v.const_value is not None}
        assert widths["word_embeddings.weight"][1] == 16  # the hidden size halved, the output kept its 32
    assert fits[True]["error_fitted"] is None  # without data the kept channels go back to their places
    assert fits[False]["error_fitted"] < 0.5 * fits[False]["error_zero_fill"]
