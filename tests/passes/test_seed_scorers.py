"""Seed scorers: NNrelief (relief + cumulative), SNIP/GraSP/DRIVE (gradient pass), i-SpaSP (channels).

Scores are checked against brute-force numpy/torch computations on tiny hand-built Gemm/Conv
models; pruned models are run in onnxruntime.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.weights import find_weights, read_weight
from onnxprune.calibration.sources import ArraySource, input_specs
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.errors import CalibrationError, RecipeError
from onnxprune.passes import (
    ChannelPruneConfig,
    ChannelPrunePass,
    CumulativePruneConfig,
    CumulativePrunePass,
    GradientPruneConfig,
    GradientPrunePass,
    UnstructuredPruneConfig,
    UnstructuredPrunePass,
)
from onnxprune.passes._gradient_scores import gradient_scores
from onnxprune.passes._ispasp import Consumer, ispasp_support
from onnxprune.passes._relief import cumulative_keep
from onnxprune.passes._scores import WEIGHT_IMPORTANCES
from onnxprune.passes.gradient import round_densities
from tests.conftest import ort_run, to_ir

torch = pytest.importorskip("torch")


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def mlp(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> onnx.ModelProto:
    """x [N, in] -> Gemm(w1 [h, in], transB) -> Relu -> Gemm(w2 [out, h], transB) -> logits."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w1.shape[1]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", w2.shape[0]])],
        [_init("w1", w1), _init("b1", b1), _init("w2", w2), _init("b2", b2)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def conv_net(wc: np.ndarray, bc: np.ndarray, wf: np.ndarray, pads: int = 1) -> onnx.ModelProto:
    """x [N, 2, 6, 6] -> Conv(wc, pads) -> Relu -> Flatten -> Gemm(wf, transB) -> logits."""
    nodes = [
        helper.make_node("Conv", ["x", "wc", "bc"], ["c"], name="conv", pads=[pads] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", wf.shape[0]])],
        [_init("wc", wc), _init("bc", bc), _init("wf", wf)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _random_mlp(seed: int = 0, sizes: tuple[int, int, int] = (6, 12, 4)) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    n_in, hidden, out = sizes
    return mlp(
        rng.normal(size=(hidden, n_in)), rng.normal(size=hidden) * 0.1, rng.normal(size=(out, hidden)), np.zeros(out)
    )


def _random_conv(seed: int = 0, pads: int = 1) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    side = 6 + 2 * pads - 2
    fc = rng.normal(size=(3, 4 * side * side))
    return conv_net(rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4) * 0.1, fc, pads)


def _data(proto: onnx.ModelProto, n: int = 32, seed: int = 1, classes: int | None = None) -> dict[str, np.ndarray]:
    shape = [d.dim_value or n for d in proto.graph.input[0].type.tensor_type.shape.dim]
    arrays = {"x": np.random.default_rng(seed).normal(size=shape).astype(np.float32)}
    if classes:
        arrays["labels"] = np.random.default_rng(seed + 1).integers(0, classes, size=n).astype(np.int64)
    return arrays


def _context(model: ir.Model, arrays: dict[str, np.ndarray]) -> PassContext:
    return PassContext(calibration=ArraySource(arrays, input_specs(model), "test data"))


def _weights(model: ir.Model) -> dict[str, np.ndarray]:
    return {w.name: read_weight(w).copy() for w in find_weights(model)}


# --------------------------------------------------------------------------- NNrelief


def test_relief_scores_match_brute_force_on_gemm() -> None:
    proto = _random_mlp()
    model = to_ir(proto)
    arrays = _data(proto)
    context = _context(model, arrays)
    relief = WEIGHT_IMPORTANCES["relief"]
    weights = {w.name: w for w in find_weights(model)}
    stats = context.stats(model, [r for w in weights.values() for r in relief.requests(w)], needed_by="test")
    x = arrays["x"].astype(np.float64)
    w1, b1 = (numpy_helper.to_array(t) for t in proto.graph.initializer[:2])
    hidden = np.maximum(x @ w1.T + b1, 0)
    for name, inputs in (("w1", x), ("w2", hidden)):
        w = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == name)).astype(np.float64)
        brute = np.mean(np.abs(inputs[:, None, :] * w[None, :, :]), axis=0)  # mean_x |x_j w_ij|
        got = relief.score(weights[name], read_weight(weights[name]), stats)
        np.testing.assert_allclose(got, brute, rtol=1e-5, atol=1e-7)


def test_relief_scores_match_brute_force_on_unpadded_conv() -> None:
    proto = _random_conv(pads=0)
    model = to_ir(proto)
    arrays = _data(proto)
    context = _context(model, arrays)
    relief = WEIGHT_IMPORTANCES["relief"]
    conv = next(w for w in find_weights(model) if w.op_type == "Conv")
    stats = context.stats(model, relief.requests(conv), needed_by="test")
    x = arrays["x"].astype(np.float64)
    wc = read_weight(conv).astype(np.float64)
    # NNrelief's kernel flow per output position, Σ_uv |patch_c(u, v)|·|W_kc(u, v)|, averaged
    patches = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))  # [N, C, 4, 4, 3, 3]
    flow = np.einsum("nchwuv,kcuv->kc", np.abs(patches), np.abs(wc)) / (x.shape[0] * 16)
    got = relief.score(conv, read_weight(conv), stats).sum(axis=(2, 3))
    assert np.allclose(got.sum(), flow.sum(), rtol=0.05)  # equal up to the positions each tap sees
    np.testing.assert_allclose(got, flow, rtol=0.25)


def _cumulative_brute(importances: np.ndarray, alpha: float) -> np.ndarray:
    """The official loop: sort, cumulative sum, keep through the pivot."""
    keep = np.zeros(importances.shape, dtype=bool)
    for i, row in enumerate(importances):
        if row.sum() == 0:
            continue
        order = np.argsort(-row, kind="stable")
        total = 0.0
        for j in order:
            keep[i, j] = True
            total += row[j]
            if total >= alpha * row.sum():
                break
    return keep


@pytest.mark.parametrize("alpha", [0.5, 0.9, 0.95, 1.0])
def test_cumulative_rule_matches_the_official_loop(alpha: float) -> None:
    rng = np.random.default_rng(3)
    scores = rng.exponential(size=(7, 9))
    scores[2] = 0.0  # a dead neuron keeps nothing
    bias = rng.exponential(size=7)
    keep, keep_bias = cumulative_keep(scores, bias, alpha)
    brute = _cumulative_brute(np.concatenate([scores, bias[:, None]], axis=1), alpha)
    np.testing.assert_array_equal(keep, brute[:, :-1])
    np.testing.assert_array_equal(keep_bias, brute[:, -1])
    assert not keep[2].any()


@pytest.mark.parametrize("maker", [_random_mlp, _random_conv])
def test_cumulative_pass_prunes_by_alpha_and_runs(maker) -> None:
    proto = maker()
    model = to_ir(proto)
    arrays = _data(proto)
    before = ort_run(proto, {"x": arrays["x"]})
    low = CumulativePrunePass(CumulativePruneConfig(alpha_conv=0.6, alpha_fc=0.6), _context(model, arrays))(model)
    assert low.modified
    sparsity_low = low.report.summary["achieved_sparsity"]
    after = ort_run(model, {"x": arrays["x"]})["logits"]
    assert np.all(np.isfinite(after)) and after.shape == before["logits"].shape
    model2 = to_ir(proto)
    high = CumulativePrunePass(CumulativePruneConfig(alpha_conv=0.95, alpha_fc=0.95), _context(model2, arrays))(model2)
    assert 0 < high.report.summary["achieved_sparsity"] < sparsity_low < 1
    error = np.abs(ort_run(model2, {"x": arrays["x"]})["logits"] - before["logits"]).mean()
    assert error < np.abs(after - before["logits"]).mean()


def test_cumulative_conv_drops_whole_kernels() -> None:
    proto = _random_conv()
    model = to_ir(proto)
    arrays = _data(proto)
    CumulativePrunePass(CumulativePruneConfig(alpha_conv=0.3, alpha_fc=1.0), _context(model, arrays))(model)
    wc = _weights(model)["wc"]
    zero_kernels = np.all(wc == 0, axis=(2, 3))
    assert zero_kernels.any()
    assert np.array_equal(np.any(wc == 0, axis=(2, 3)), zero_kernels)  # never part of a kernel


def test_cumulative_backward_pass_removes_neurons_that_never_fire() -> None:
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(12, 6)), rng.normal(size=12) * 0.1
    b1[[2, 7]] = -1e3  # never active: their flows into fc2 are zero
    proto = mlp(w1, b1, rng.normal(size=(4, 12)), np.zeros(4))
    arrays = _data(proto)
    before = ort_run(proto, {"x": arrays["x"]})["logits"]
    for backward in (False, True):
        model = to_ir(proto)
        config = CumulativePruneConfig(alpha_fc=1.0, include_bias=False, backward=backward)
        result = CumulativePrunePass(config, _context(model, arrays))(model)
        weights = _weights(model)
        assert np.all(weights["w2"][:, [2, 7]] == 0)
        assert np.all(weights["w1"][[2, 7]] == 0) == backward
        assert result.report.summary.get("neurons_without_outputs", 0) == (2 if backward else 0)
        np.testing.assert_allclose(ort_run(model, {"x": arrays["x"]})["logits"], before, rtol=1e-5, atol=1e-5)
    b1_after = model.graph.initializers["b1"].const_value.numpy()
    assert np.all(b1_after[[2, 7]] == 0)


def test_relief_works_in_the_unstructured_pass() -> None:
    proto = _random_mlp()
    model = to_ir(proto)
    arrays = _data(proto)
    config = UnstructuredPruneConfig(sparsity=0.5, importance="relief")
    result = UnstructuredPrunePass(config, _context(model, arrays))(model)
    assert abs(result.report.summary["achieved_sparsity"] - 0.5) < 0.02


# --------------------------------------------------------------------------- SNIP / GraSP / DRIVE


def _torch_reference(proto: onnx.ModelProto, arrays: dict[str, np.ndarray], temperature: float):
    """θ, g and Hg of the MLP's weights by plain torch autograd (same loss: mean cross-entropy of logits/T)."""
    init = {t.name: torch.tensor(numpy_helper.to_array(t), dtype=torch.float64) for t in proto.graph.initializer}
    params = [init["w1"].requires_grad_(), init["w2"].requires_grad_()]
    x = torch.tensor(arrays["x"], dtype=torch.float64)
    y = torch.tensor(arrays["labels"])

    def loss(w1, w2):
        h = torch.relu(x @ w1.T + init["b1"])
        return torch.nn.functional.cross_entropy((h @ w2.T + init["b2"]) / temperature, y)

    grads = torch.autograd.grad(loss(*params), params, create_graph=True)
    z = sum((g.detach() * g2).sum() for g, g2 in zip(grads, grads, strict=True))
    hg = torch.autograd.grad(z, params)
    return [p.detach().numpy() for p in params], [g.detach().numpy() for g in grads], [h.numpy() for h in hg]


@pytest.mark.parametrize("importance", ["snip", "grasp", "drive"])
def test_gradient_scores_match_torch_autograd(importance: str) -> None:
    from onnxprune.torchview import TorchView

    proto = _random_mlp()
    arrays = _data(proto, classes=4)
    entry = WEIGHT_IMPORTANCES[importance]
    theta, grad, hg = _torch_reference(proto, arrays, entry.temperature)
    view = TorchView(to_ir(proto), trainable=False)
    batches = [({"x": arrays["x"][i : i + 10]}, arrays["labels"][i : i + 10]) for i in range(0, 32, 10)]
    got = gradient_scores(view, ["w1", "w2"], batches, entry)
    expected = {
        "snip": [np.abs(t * g) for t, g in zip(theta, grad, strict=True)],
        "grasp": [-t * h for t, h in zip(theta, hg, strict=True)],
        "drive": [np.abs(t) * (np.abs(g) + np.abs(h)) for t, g, h in zip(theta, grad, hg, strict=True)],
    }[importance]
    if importance == "grasp":  # returned as max(S) - S: the largest S removed first
        top = max(e.max() for e in expected)
        expected = [top - e for e in expected]
    for name, want in zip(["w1", "w2"], expected, strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-3, atol=1e-6 * np.abs(want).max())


def test_round_densities_reach_the_target() -> None:
    assert round_densities(0.9, 1) == [pytest.approx(0.1)]
    densities = round_densities(0.99, 4)
    assert densities[-1] == pytest.approx(0.01)
    assert np.allclose(np.diff(np.log(densities)), np.log(0.01) / 4)


@pytest.mark.parametrize("importance", ["snip", "grasp", "drive"])
@pytest.mark.parametrize(("scope", "rounds"), [("layer", 1), ("global", 1), ("global", 3)])
def test_gradient_pass_prunes_to_the_sparsity(importance: str, scope: str, rounds: int) -> None:
    proto = _random_mlp(sizes=(6, 24, 4))
    model = to_ir(proto)
    arrays = _data(proto, classes=4)
    config = GradientPruneConfig(sparsity=0.7, importance=importance, scope=scope, rounds=rounds)
    result = GradientPrunePass(config, _context(model, arrays))(model)
    assert result.modified
    sizes = {w.name: w.size for w in find_weights(model)}
    zeros = {name: int(np.count_nonzero(v == 0)) for name, v in _weights(model).items()}
    assert abs(sum(zeros.values()) - round(0.7 * sum(sizes.values()))) <= 1
    if scope == "layer":
        assert all(abs(zeros[n] - round(0.7 * sizes[n])) <= 1 for n in sizes)
    assert np.all(np.isfinite(ort_run(model, {"x": arrays["x"]})["logits"]))


def test_gradient_pass_is_deterministic() -> None:
    proto = _random_mlp(sizes=(6, 24, 4))
    arrays = _data(proto, classes=4)
    kept = []
    for rounds in (1, 1):
        model = to_ir(proto)
        GradientPrunePass(GradientPruneConfig(sparsity=0.5, scope="global", rounds=rounds), _context(model, arrays))(
            model
        )
        kept.append(_weights(model))
    assert all(np.array_equal(kept[0][n], kept[1][n]) for n in kept[0])  # deterministic


def test_gradient_pass_at_zero_changes_nothing() -> None:
    proto = _random_mlp()
    model = to_ir(proto)
    before = _weights(model)
    result = GradientPrunePass(GradientPruneConfig(sparsity=0.0, importance="grasp"), _context(model, _data(proto)))(
        model
    )
    assert not result.modified
    assert all(np.array_equal(before[n], v) for n, v in _weights(model).items())


def test_gradient_pass_without_labels_refuses() -> None:
    proto = _random_mlp()
    model = to_ir(proto)
    with pytest.raises(CalibrationError, match="needs labels"):
        GradientPrunePass(GradientPruneConfig(sparsity=0.5), _context(model, _data(proto)))(model)
    with pytest.raises(RecipeError, match="gradient pass takes importance"):
        GradientPruneConfig(importance="magnitude")
    with pytest.raises(RecipeError, match="implemented by the 'gradient' pass"):
        UnstructuredPruneConfig(importance="snip")


def _cli(*args: object):
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


def test_cli_gradient_importance_labels_missing_exits_2_one_line(tmp_path: Path) -> None:
    proto = _random_mlp()
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    arrays = _data(proto, classes=4)
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=arrays["x"])
    args = ("--sparsity", "0.5", "--importance", "snip", "--calib", plain)
    result = _cli("prune", path, "-o", tmp_path / "o.onnx", *args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "labels" in lines[0]
    assert not (tmp_path / "o.onnx").exists()
    labelled = tmp_path / "labelled.npz"
    np.savez(labelled, x=arrays["x"], labels=arrays["labels"])
    args = ("--sparsity", "0.5", "--importance", "drive", "--scope", "global", "--calib", labelled)
    result = _cli("prune", path, "-o", tmp_path / "o.onnx", *args)
    assert result.exit_code == 0, result.output
    pruned = onnx.load(str(tmp_path / "o.onnx"))
    values = [numpy_helper.to_array(t) for t in pruned.graph.initializer if t.name in ("w1", "w2")]
    assert abs(sum(int(np.count_nonzero(v == 0)) for v in values) / sum(v.size for v in values) - 0.5) < 0.02


# --------------------------------------------------------------------------- i-SpaSP


def _ispasp_reference(h: np.ndarray, w2: np.ndarray, keep: int, iterations: int) -> np.ndarray:
    """The official loop on explicit hidden activations, gradients by torch autograd."""
    hidden = torch.tensor(h, dtype=torch.float64)
    weight = torch.tensor(w2, dtype=torch.float64)
    agg = hidden.sum(0)
    support: set[int] = set()
    for _ in range(iterations):
        hid = hidden.clone().requires_grad_()
        dense = hid @ weight.T
        index = sorted(support)
        pruned = (hid[:, index] @ weight[:, index].T).detach() if support else torch.zeros_like(dense)
        (0.5 * ((dense - pruned) ** 2).sum()).backward()
        importance = hid.grad.sum(0)
        omega = set(torch.argsort(importance, descending=True, stable=True)[: 2 * keep].tolist()) | support
        ordered = torch.tensor(sorted(omega))
        support = set(ordered[torch.argsort(agg[ordered], descending=True, stable=True)[:keep]].tolist())
    return np.array(sorted(support))


@pytest.mark.parametrize("seed", range(4))
def test_ispasp_support_matches_the_official_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h = np.maximum(rng.normal(size=(50, 20)), 0)
    w2 = rng.normal(size=(5, 20))
    consumer = Consumer(w2, h.sum(0), np.arange(20))
    support, _ = ispasp_support([consumer], 20, 6, 1)
    np.testing.assert_array_equal(support, _ispasp_reference(h, w2, 6, 1))
    support, _ = ispasp_support([consumer], 20, 6, 20)
    reference = _ispasp_reference(h, w2, 6, 20)
    np.testing.assert_array_equal(support, reference)


def test_ispasp_conv_residual_gradient_matches_autograd_without_padding() -> None:
    from onnxprune.calibration.stats import ConvGeometry, unfold_conv_input

    rng = np.random.default_rng(0)
    h = np.maximum(rng.normal(size=(3, 4, 6, 6)), 0)
    w = rng.normal(size=(5, 4, 3, 3))
    removed = np.array([True, False, True, False])
    hid = torch.tensor(h, requires_grad=True)
    kept = torch.tensor(h * ~removed[None, :, None, None])
    conv = torch.nn.functional.conv2d
    weight = torch.tensor(w)
    (0.5 * ((conv(hid, weight) - conv(kept, weight)) ** 2).sum()).backward()
    expected = hid.grad.sum(dim=(0, 2, 3)).numpy()
    sums = unfold_conv_input(h, ConvGeometry((3, 3))).sum(0)
    consumer = Consumer(w.reshape(5, -1), sums, np.repeat(np.arange(4), 9), kernel=9)
    np.testing.assert_allclose(consumer.residual_gradient(removed, 4), expected, rtol=1e-9)


def test_ispasp_keeps_the_live_units_and_the_output() -> None:
    """Hidden units that never fire (dead on the data) but carry large weights: L2 keeps them, i-SpaSP does not."""
    rng = np.random.default_rng(0)
    hidden, live = 16, 4
    w1 = rng.normal(size=(hidden, 6))
    b1 = np.zeros(hidden)
    w1[live:] *= 5.0
    b1[live:] = -1e3  # never active
    w2 = rng.normal(size=(3, hidden))
    w2[:, live:] *= 5.0
    proto = mlp(w1, b1, w2, np.zeros(3))
    arrays = _data(proto, n=64)
    before = ort_run(proto, {"x": arrays["x"]})["logits"]
    outputs = {}
    for importance in ("ispasp", "l2"):
        model = to_ir(proto)
        config = ChannelPruneConfig(ratio=0.75, importance=importance, reconstruct=False, max_ratio=0.9)
        result = ChannelPrunePass(config, _context(model, arrays))(model)
        assert result.modified
        assert result.report.changed[0]["importance"] == importance
        outputs[importance] = ort_run(model, {"x": arrays["x"]})["logits"]
        assert model.graph.initializers["w1"].const_value.shape[0] == live
    np.testing.assert_allclose(outputs["ispasp"], before, rtol=1e-5, atol=1e-5)
    assert np.abs(outputs["l2"] - before).max() > 1e-2


def test_ispasp_on_conv_runs_and_zero_ratio_changes_nothing() -> None:
    proto = _random_conv()
    arrays = _data(proto)
    before = ort_run(proto, {"x": arrays["x"]})["logits"]
    model = to_ir(proto)
    result = ChannelPrunePass(ChannelPruneConfig(ratio=0.0, importance="ispasp"), _context(model, arrays))(model)
    assert not result.modified
    np.testing.assert_array_equal(ort_run(model, {"x": arrays["x"]})["logits"], before)
    model = to_ir(proto)
    config = ChannelPruneConfig(ratio=0.5, importance="ispasp", reconstruct=False, verify=True)
    result = ChannelPrunePass(config, _context(model, arrays))(model)
    assert result.modified and result.report.changed[0]["importance"] == "ispasp"
    assert model.graph.initializers["wc"].const_value.shape[0] == 2
    assert np.all(np.isfinite(ort_run(model, {"x": arrays["x"]})["logits"]))


def test_ispasp_falls_back_on_a_consumer_it_cannot_model() -> None:
    """A hidden value read by a ConvTranspose: the group is scored by L2 and reported so."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ConvTranspose", ["r", "w2"], ["y"], name="up", strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "up",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [_init("w1", rng.normal(size=(4, 2, 3, 3))), _init("w2", rng.normal(size=(4, 3, 2, 2)))],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model = to_ir(proto)
    result = ChannelPrunePass(ChannelPruneConfig(ratio=0.5, importance="ispasp"), _context(model, _data(proto)))(model)
    assert [entry["importance"] for entry in result.report.changed] == ["l2"]


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", ["ispasp", "nnrelief", "snip", "grasp", "drive"])
def test_scorer_presets_run_as_recipes(tmp_path: Path, name: str) -> None:
    from onnxprune.presets import PRESETS
    from onnxprune.recipe import Recipe, run_recipe

    preset = PRESETS[name]
    assert "calibration" in preset.needs
    assert ("labels" in preset.needs) == (name in ("snip", "grasp", "drive"))
    proto = _random_mlp(sizes=(6, 24, 4))
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    arrays = _data(proto, n=48, classes=4)
    calib = tmp_path / "calib.npz"
    np.savez(calib, **arrays)
    passes = [{"name": p["name"], "config": dict(p["config"])} for p in preset.passes]
    if name == "drive":
        passes[0]["config"]["rounds"] = 3  # a smoke-sized schedule
    recipe = Recipe.from_dict(
        {"model": str(path), "output": str(tmp_path / "o.onnx"), "passes": passes, "calibration": {"path": str(calib)}}
    )
    result = run_recipe(recipe)
    out = onnx.load(str(result.output))
    logits = ort_run(out, {"x": arrays["x"]})["logits"]
    assert logits.shape == (48, 4) and np.all(np.isfinite(logits))
    if name == "ispasp":
        assert next(t for t in out.graph.initializer if t.name == "w1").dims[0] < 24
    else:
        values = [numpy_helper.to_array(t) for t in out.graph.initializer if t.name in ("w1", "w2")]
        assert sum(int(np.count_nonzero(v == 0)) for v in values) > 0


def test_cli_channels_with_ispasp(tmp_path: Path) -> None:
    proto = _random_mlp(sizes=(6, 24, 4))
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    calib = tmp_path / "c.npz"
    np.savez(calib, **_data(proto))
    args = ("--channels", "0.5", "--importance", "ispasp", "--calib", calib, "--no-reconstruct")
    result = _cli("prune", path, "-o", tmp_path / "o.onnx", *args)
    assert result.exit_code == 0, result.output
    assert next(t for t in onnx.load(str(tmp_path / "o.onnx")).graph.initializer if t.name == "w1").dims[0] == 12


def test_gradient_pass_without_torch_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxprune.errors import OnnxPruneError

    proto = _random_mlp()
    model = to_ir(proto)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(OnnxPruneError, match="importance 'grasp' needs torch: pip install onnxprune"):
        GradientPrunePass(GradientPruneConfig(importance="grasp"), _context(model, _data(proto, classes=4)))(model)
