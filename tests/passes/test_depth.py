"""Depth pruning: residual block discovery, bypass against torch references, budgets, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.analysis.blocks import bypass, find_blocks
from onnxprune.analysis.flops import count_model
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.calibration.sources import ArraySource, input_specs
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.errors import CalibrationError, RecipeError
from onnxprune.passes import DepthPruneConfig, DepthPrunePass
from tests.conftest import ort_run, sha256, to_ir
from tests.models.export import torch_export
from tests.models.exported import seeded
from tests.models.structured_zoo import build_module, example_input
from tests.models.torch_modules import _randomize_norms, module_class

torch = pytest.importorskip("torch")
EXPORTERS = [pytest.param(False, id="torchscript"), pytest.param(True, id="dynamo")]
VOCAB, HIDDEN, SEQ = 50, 32, 8


def _bert(post_norm: bool = True, seed: int = 0) -> Any:
    if post_norm:
        return seeded(seed, lambda: module_class("BertLikeEncoder")(VOCAB, HIDDEN, 2, 2, 64, SEQ))

    def make() -> Any:
        module = _pre_norm_class()(VOCAB, HIDDEN, 2, 2, 64, SEQ)
        _randomize_norms(module)  # distinct LayerNorm weights: exporters share equal tensors
        return module.eval()

    return seeded(seed, make)


def _pre_norm_class() -> type:
    nn = torch.nn
    attention_class = type(module_class("BertLikeEncoder")(VOCAB, HIDDEN, 1, 2, 64, SEQ).layers[0].attention)

    class PreNormLayer(nn.Module):
        def __init__(self, hidden: int, heads: int, intermediate: int) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
            self.attention = attention_class(hidden, heads)
            self.ffn = nn.Sequential(nn.Linear(hidden, intermediate), nn.GELU(), nn.Linear(intermediate, hidden))

        def forward(self, x: Any) -> Any:
            x = x + self.attention(self.ln1(x))
            return x + self.ffn(self.ln2(x))

    class PreNormEncoder(nn.Module):
        def __init__(self, vocab: int, hidden: int, layers: int, heads: int, intermediate: int, seq: int) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, hidden)
            self.layers = nn.ModuleList(PreNormLayer(hidden, heads, intermediate) for _ in range(layers))
            self.ln_f = nn.LayerNorm(hidden)

        def forward(self, input_ids: Any) -> Any:
            x = self.embed(input_ids)
            for layer in self.layers:
                x = layer(x)
            return self.ln_f(x)

    return PreNormEncoder


def _ids(batch: int = 4, seed: int = 1) -> Any:
    return torch.randint(0, VOCAB, (batch, SEQ), generator=torch.Generator().manual_seed(seed))


def _export_bert(module: Any, dynamo: bool) -> onnx.ModelProto:
    return torch_export(module, (_ids(2),), dynamo=dynamo, input_names=["input_ids"], output_names=["hidden"])


def _context(model: Any, arrays: dict[str, np.ndarray]) -> PassContext:
    return PassContext(calibration=ArraySource(arrays, input_specs(model), "calib"), batch_size=8)


def _blocks(proto: onnx.ModelProto) -> list:
    model = to_ir(proto)
    return find_blocks(model, complete_shapes(model))


class _Zero(torch.nn.Module):
    def forward(self, x: Any) -> Any:
        return torch.zeros_like(x)


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize(
    ("arch", "found", "droppable"),
    [("resnet_basic", 2, 1), ("resnet_bottleneck", 3, 1), ("mobilenetv2_ir", 2, 2), ("transformer_mlp", 1, 1)],
)
def test_discovery_on_cnns_and_mlp(arch: str, found: int, droppable: int, dynamo: bool) -> None:
    from tests.models.structured_zoo import zoo_onnx

    blocks = _blocks(zoo_onnx(arch, dynamo=dynamo))
    assert len(blocks) == found
    assert sum(b.droppable for b in blocks) == droppable
    for b in blocks:
        assert b.droppable or "projection" in (b.reason or "")
        assert b.params > 0 and b.macs > 0


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("post_norm", [True, False], ids=["post_norm", "pre_norm"])
def test_discovery_on_transformers(post_norm: bool, dynamo: bool) -> None:
    blocks = [b for b in _blocks(_export_bert(_bert(post_norm), dynamo)) if b.kind != "broadcast"]
    assert [b.label for b in blocks] == ["layer 0 attention", "layer 0 ffn", "layer 1 attention", "layer 1 ffn"]
    assert all(b.droppable for b in blocks), [b.reason for b in blocks]
    norm = 0 if post_norm else 2 * HIDDEN  # a pre-norm branch holds its LayerNorm
    weights = [4 * (HIDDEN * HIDDEN + HIDDEN) + norm, 2 * HIDDEN * 64 + 64 + HIDDEN + norm]  # q/k/v/out; fc1/fc2
    assert all(0 <= b.params - w <= 8 for b, w in zip(blocks[:2], weights, strict=True))  # + scalar constants


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("post_norm", [True, False], ids=["post_norm", "pre_norm"])
def test_bypass_equals_torch_with_the_sublayer_removed(post_norm: bool, dynamo: bool) -> None:
    module = _bert(post_norm)
    model = to_ir(_export_bert(module, dynamo))
    blocks = {b.label: b for b in find_blocks(model, complete_shapes(model))}
    bypass(model, [blocks["layer 1 attention"], blocks["layer 0 ffn"]])
    module.layers[1].attention = _Zero()
    if post_norm:
        module.layers[0].fc1 = module.layers[0].fc2 = _Zero()
    else:
        module.layers[0].ffn = _Zero()
    ids = _ids(3, seed=5)
    with torch.no_grad():
        expected = module(ids).numpy()
    got = ort_run(model, {"input_ids": ids.numpy()})["hidden"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert sum(1 for n in model.graph if n.op_type in ("Softmax", "MatMul")) < 12


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize(("arch", "path"), [("resnet_bottleneck", "layer1.1"), ("mobilenetv2_ir", "features.3")])
def test_bypass_equals_torch_with_the_cnn_block_removed(arch: str, path: str, dynamo: bool) -> None:
    module = build_module(arch)
    x = example_input(arch, batch=2)
    model = to_ir(torch_export(module, (x,), dynamo=dynamo))
    droppable = [b for b in find_blocks(model, complete_shapes(model)) if b.droppable]
    bypass(model, droppable[-1:])
    parent, name = path.rsplit(".", 1)
    module.get_submodule(parent)[int(name)] = torch.nn.Identity()  # after a ReLU, relu(x) == x
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(ort_run(model, {"x": x.numpy()})["y"], expected, rtol=1e-4, atol=1e-5)
    params_before = count_model(to_ir(torch_export(build_module(arch), (x,), dynamo=dynamo)), {}).params
    assert count_model(model, {}).params == params_before - droppable[-1].params


def _bert_case(dynamo: bool = False, zero_ffn: int | None = None) -> tuple[Any, dict[str, np.ndarray]]:
    module = _bert(True)
    if zero_ffn is not None:
        with torch.no_grad():
            module.layers[zero_ffn].fc2.weight.zero_()
            module.layers[zero_ffn].fc2.bias.zero_()
    model = to_ir(_export_bert(module, dynamo))
    return model, {"input_ids": _ids(16, seed=3).numpy()}


def test_dropping_zero_blocks_changes_nothing() -> None:
    model, arrays = _bert_case()
    before = ort_run(model, arrays)["hidden"]
    nodes = sum(1 for _ in model.graph)
    result = DepthPrunePass(DepthPruneConfig(blocks=0), _context(model, arrays))(model)
    assert not result.modified and sum(1 for _ in model.graph) == nodes
    np.testing.assert_array_equal(ort_run(model, arrays)["hidden"], before)


@pytest.mark.parametrize("criterion", ["output_error", "angular"])
def test_a_zeroed_branch_is_dropped_first_and_changes_nothing(criterion: str) -> None:
    model, arrays = _bert_case(zero_ffn=1)
    before = ort_run(model, arrays)["hidden"]
    result = DepthPrunePass(DepthPruneConfig(blocks=1, criterion=criterion), _context(model, arrays))(model)
    assert result.report.summary["dropped"] == ["layer 1 ffn"]
    assert result.report.summary["rel_mse"] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(ort_run(model, arrays)["hidden"], before, rtol=1e-5, atol=1e-6)


def test_a_zeroed_resnet_block_is_dropped_and_changes_nothing() -> None:
    module = build_module("resnet_bottleneck")
    with torch.no_grad():
        bn3 = module.layer1[1].bn3
        bn3.weight.zero_()
        bn3.bias.zero_()
    x = example_input("resnet_bottleneck", batch=8)
    model = to_ir(torch_export(module, (x,), dynamo=False))
    arrays = {"x": x.numpy()}
    before = ort_run(model, arrays)["y"]
    result = DepthPrunePass(DepthPruneConfig(blocks=1), _context(model, arrays))(model)
    assert result.modified and result.report.summary["dropped"] == ["block 1"]
    np.testing.assert_allclose(ort_run(model, arrays)["y"], before, rtol=1e-5, atol=1e-6)
    assert {s["reason"].split(" (")[0] for s in result.report.skipped} == {"the skip is a projection"}


@pytest.mark.parametrize(
    ("config", "what"),
    [
        ({"blocks": 3}, None),
        ({"target_params": 0.8}, "params"),
        ({"target_flops": 0.7}, "macs"),
        ({"blocks": 2, "iterative": True}, None),
        ({"blocks": 1, "unit": "layer"}, None),
        ({"blocks": 2, "criterion": "angular", "iterative": True}, None),
    ],
)
def test_budgets_are_met(config: dict, what: str | None) -> None:
    model, arrays = _bert_case()
    shapes = complete_shapes(model)
    before = count_model(model, shapes)
    result = DepthPrunePass(DepthPruneConfig(**config), _context(model, arrays))(model)
    summary = result.report.summary
    after = count_model(model, complete_shapes(model))
    if what is None:
        assert summary["dropped_units"] == config["blocks"]
    else:
        target = config.get("target_params", config.get("target_flops"))
        assert getattr(after, what) / getattr(before, what) <= target
        assert summary[f"{what}_kept"] == pytest.approx(getattr(after, what) / getattr(before, what))
    rows = result.report.details["units"]
    assert sum(r["dropped"] for r in rows) == summary["dropped_units"]
    assert all(r["params"] > 0 and r["macs"] > 0 for r in rows)
    if config.get("iterative") and "criterion" not in config:  # 4 alone, 3 re-measured after the first drop
        assert summary["error_runs"] == 7
    if config.get("unit") == "layer":
        assert len(rows) == 2 and summary["params_kept"] < 0.8


def test_max_error_stops_before_the_error_exceeds_it() -> None:
    model, arrays = _bert_case(zero_ffn=0)
    result = DepthPrunePass(DepthPruneConfig(max_error=1e-9), _context(model, arrays))(model)
    assert result.report.summary["dropped"] == ["layer 0 ffn"]
    assert result.report.summary["stopped"].startswith("max_error")


def test_bad_budgets_and_missing_data_are_refused() -> None:
    model, arrays = _bert_case()
    with pytest.raises(RecipeError, match="blocks=5 but the model has 4 droppable blocks"):
        DepthPrunePass(DepthPruneConfig(blocks=5), _context(model, arrays))(model)
    with pytest.raises(RecipeError, match="keeps"):
        DepthPrunePass(DepthPruneConfig(target_params=0.01), _context(model, arrays))(model)
    with pytest.raises(CalibrationError, match="needs calibration data"):
        DepthPrunePass(DepthPruneConfig(blocks=1), PassContext())(model)
    for bad in ({"blocks": 1, "target_flops": 0.5}, {}, {"blocks": 1, "criterion": "norm"}, {"blocks": -1}):
        with pytest.raises(RecipeError):
            DepthPruneConfig(**bad)


@pytest.fixture
def bert_files(tmp_path: Path) -> tuple[Path, Path]:
    model_path, calib = tmp_path / "bert.onnx", tmp_path / "calib.npz"
    onnx.save(_export_bert(_bert(True), False), model_path)
    np.savez(calib, input_ids=_ids(16, seed=3).numpy())
    return model_path, calib


def _invoke(*args: object) -> Any:
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


def test_cli_depth_writes_a_validated_model_and_report(tmp_path: Path, bert_files: tuple[Path, Path]) -> None:
    model_path, calib = bert_files
    digest = sha256(model_path)
    out, report = tmp_path / "d.onnx", tmp_path / "r.json"
    result = _invoke("depth", model_path, "-o", out, "--calib", calib, "--blocks", "2", "--report", report)
    assert result.exit_code == 0, result.output
    assert sha256(model_path) == digest
    data = json.loads(report.read_text())
    depth = data["passes"][0]
    assert depth["name"] == "depth" and depth["summary"]["dropped_units"] == 2
    assert data["after"]["params"] < data["before"]["params"] and data["validation"] is not None
    assert len(depth["changed"]) == 2 and all(r["rel_mse"] is not None for r in depth["details"]["units"])
    outputs = ort_run(onnx.load(out), {"input_ids": _ids(2).numpy()})
    assert outputs["hidden"].shape == (2, SEQ, HIDDEN)
    recipe = _invoke("depth", model_path, "-o", out, "--calib", calib, "--target-flops", "0.6", "--dump-recipe")
    assert "name: depth" in recipe.output and "target_flops: 0.6" in recipe.output
    (tmp_path / "r.yaml").write_text(recipe.output)
    assert _invoke("run", tmp_path / "r.yaml").exit_code == 0


def test_cli_depth_angular_runs_without_data(tmp_path: Path, bert_files: tuple[Path, Path]) -> None:
    model_path, _ = bert_files
    result = _invoke("depth", model_path, "-o", tmp_path / "a.onnx", "--blocks", "1", "--criterion", "angular")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--calib", "CALIB", "--blocks", "9"), "blocks=9 but the model has 4 droppable blocks"),
        (("--blocks", "1"), "needs calibration data"),
        (("--calib", "CALIB", "--blocks", "1", "--target-flops", "0.5"), "give one of --blocks"),
        (("--calib", "CALIB", "--unit", "layer", "--blocks", "3"), "has 2 droppable layers"),
    ],
)
def test_cli_depth_bad_input_exits_2_with_one_line(
    tmp_path: Path, bert_files: tuple[Path, Path], args: tuple[str, ...], message: str
) -> None:
    model_path, calib = bert_files
    out = tmp_path / "o.onnx"
    given = [str(calib) if a == "CALIB" else a for a in args]
    result = CliRunner().invoke(cli, ["depth", str(model_path), "-o", str(out), *given])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and not out.exists()


def test_a_sum_that_is_the_graph_output_becomes_an_identity_of_the_skip() -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), f"w{i}") for i in range(2)]
    nodes = [
        helper.make_node("Relu", ["x"], ["h"]),
        helper.make_node("MatMul", ["h", "w0"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("MatMul", ["b", "w1"], ["f"]),
        helper.make_node("Sum", ["h", "f"], ["y"], name="residual"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        weights,
    )
    model = to_ir(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    (block,) = find_blocks(model, complete_shapes(model))
    assert (block.node, block.skip, block.kind, block.params) == ("residual", "h", "ffn", 128)
    bypass(model, [block])
    x = rng.standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_array_equal(ort_run(model, {"x": x})["y"], np.maximum(x, 0))
    assert [n.op_type for n in model.graph] == ["Relu", "Identity"] and not model.graph.initializers
