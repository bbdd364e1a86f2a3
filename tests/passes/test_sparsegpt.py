"""SparseGPT: exact sparsity, N:M groups, and lower output error than magnitude pruning (onnxruntime)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import yaml
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.weights import find_weights, read_weight
from onnxprune.calibration.sources import ArraySource, input_specs
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.errors import CalibrationError, RecipeError
from onnxprune.passes import (
    PASSES,
    NMPruneConfig,
    NMPrunePass,
    SparseGPTConfig,
    SparseGPTPass,
    UnstructuredPruneConfig,
    UnstructuredPrunePass,
)
from onnxprune.passes import _select as select_module
from onnxprune.passes import sparsegpt as sparsegpt_module
from onnxprune.passes._linalg import upper_cholesky_of_inverse
from onnxprune.passes._scores import to_rows
from onnxprune.passes.sparsegpt import output_error, sparsegpt_prune
from tests.conftest import weight_array

F = TensorProto.FLOAT


# --------------------------------------------------------------------------- #
# tiny models and correlated data, built inline
# --------------------------------------------------------------------------- #


def _model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # fills in the output shapes
    onnx.checker.check_model(model, full_check=True)
    return model


def _weight(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))


def matmul_model(k: int = 32, out: int = 16, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [("x", ["N", k])],
        ["y"],
        {"w": _weight(rng, out, k).T},
    )


def gemm_model(trans_a: int = 0, trans_b: int = 1, k: int = 32, out: int = 16, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = _weight(rng, out, k)
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm", transA=trans_a, transB=trans_b, alpha=0.5)
    x_shape = [k, "N"] if trans_a else ["N", k]
    return _model(
        [node], [("x", x_shape)], ["y"], {"w": w if trans_b else w.T, "b": rng.standard_normal(out)}, opset=13
    )


def conv_model(cin: int = 8, out: int = 16, seed: int = 0, **attrs) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    attrs = {"pads": [1, 1, 1, 1], **attrs}
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", **attrs)
    return _model(
        [node], [("x", ["N", cin, 6, 6])], ["y"], {"w": _weight(rng, out, cin, 3, 3), "b": rng.standard_normal(out)}
    )


def correlated(shape: tuple[int, ...], feature_axis: int, seed: int) -> np.ndarray:
    """Samples whose features (along ``feature_axis``) are strongly correlated and unevenly scaled."""
    k = shape[feature_axis]
    mix_rng = np.random.default_rng(1234)  # the same correlation structure for calibration and test data
    mix = mix_rng.standard_normal((k, k)) * 0.2 + np.eye(k) + 0.8 * mix_rng.standard_normal((k, 1))
    mix *= np.exp(mix_rng.standard_normal((1, k)))
    z = np.random.default_rng(seed).standard_normal(shape)
    return np.moveaxis(np.moveaxis(z, feature_axis, -1) @ mix, -1, feature_axis).astype(np.float32)


def data_for(proto: onnx.ModelProto, samples: int, seed: int) -> dict[str, np.ndarray]:
    feeds = {}
    for i, value in enumerate(proto.graph.input):
        dims = [d.dim_value if d.HasField("dim_value") else samples for d in value.type.tensor_type.shape.dim]
        batch = next(j for j, d in enumerate(value.type.tensor_type.shape.dim) if not d.HasField("dim_value"))
        feature = 0 if batch == 1 else 1 if len(dims) > 2 else -1
        feeds[value.name] = correlated(tuple(dims), feature, seed + i)
    return feeds


def context(proto: onnx.ModelProto, model: ir.Model, samples: int = 256) -> PassContext:
    return PassContext(calibration=ArraySource(data_for(proto, samples, seed=0), input_specs(model), "calib"))


def run(model: ir.Model | onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def relative_error(proto: onnx.ModelProto, pruned: ir.Model, feeds: dict[str, np.ndarray]) -> float:
    ref, got = run(proto, feeds), run(pruned, feeds)
    num = sum(np.sum((ref[k].astype(np.float64) - got[k]) ** 2) for k in ref)
    den = sum(np.sum(ref[k].astype(np.float64) ** 2) for k in ref)
    return float(np.sqrt(num / den))


def prune(proto: onnx.ModelProto, pass_cls, config) -> tuple[ir.Model, object]:
    model = ir.serde.deserialize_model(proto)
    result = pass_cls(config, context(proto, model))(model)
    return model, result


MODELS = {
    "matmul": matmul_model,
    "gemm": gemm_model,
    "gemm_transB0": lambda: gemm_model(trans_b=0),
    "gemm_transA1": lambda: gemm_model(trans_a=1, trans_b=0),
    "conv": conv_model,
    "conv_strided": lambda: conv_model(strides=[2, 2], dilations=[1, 1]),
}


# --------------------------------------------------------------------------- #
# the pure function
# --------------------------------------------------------------------------- #


def test_sparsity_zero_returns_weights_unchanged() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 12))
    x = rng.standard_normal((50, 12))
    h = x.T @ x
    h[:, 3] = h[3, :] = 0  # even a dead input is left alone when nothing is pruned
    assert np.array_equal(sparsegpt_prune(w, h, 0.0), w)
    assert np.array_equal(sparsegpt_prune(w, h, 0.0, n=4, m=4), w)


def test_function_exact_counts_and_dead_inputs() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((10, 24))
    x = rng.standard_normal((200, 24)) @ rng.standard_normal((24, 24))
    x[:, 5] = 0
    h = x.T @ x
    for sparsity in (0.25, 0.5, 0.73):
        for blocksize in (7, 128):
            pruned = sparsegpt_prune(w, h, sparsity, blocksize=blocksize)
            assert np.count_nonzero(pruned == 0) == round(sparsity * w.size)
            assert np.all(pruned[:, 5] == 0)
    pruned = sparsegpt_prune(w, h, 0.0, n=1, m=4, blocksize=6)  # blocksize rounded up to a multiple of M
    assert np.all(np.count_nonzero(pruned.reshape(10, -1, 4), axis=-1) <= 1)
    with pytest.raises(ValueError, match="multiple of M"):
        sparsegpt_prune(w[:, :22], h[:22, :22], 0.0, n=2, m=4)


def _column_by_column(w: np.ndarray, h: np.ndarray, sparsity: float, n: int, m: int, blocksize: int) -> np.ndarray:
    """The reference implementation's sweep: every column's error reaches all later columns of its block at once."""
    weights, (rows, cols) = np.array(w, dtype=np.float64), w.shape
    dead = np.diag(h) == 0
    hinv = upper_cholesky_of_inverse(h, 0.01, unit=dead)
    weights[:, dead] = 0.0
    edges = list(range(0, cols, blocksize)) + [cols]
    upto = [int(round(sparsity * rows * e)) for e in edges]
    for b, i1 in enumerate(edges[:-1]):
        i2 = edges[b + 1]
        w1, q1, err1 = weights[:, i1:i2].copy(), np.zeros((rows, i2 - i1)), np.zeros((rows, i2 - i1))
        d1 = np.diag(hinv[i1:i2, i1:i2])
        mask1 = np.zeros(w1.shape, dtype=bool)
        if m == 0:
            flat = np.argsort((w1**2 / d1[None, :] ** 2).ravel(), kind="stable")[: upto[b + 1] - upto[b]]
            mask1.ravel()[flat] = True
        for i in range(i2 - i1):
            if m and i % m == 0:
                lowest = np.argsort(w1[:, i : i + m] ** 2 / d1[None, i : i + m] ** 2, axis=1, kind="stable")
                np.put_along_axis(mask1[:, i : i + m], lowest[:, : m - n], True, axis=1)
            q = np.where(mask1[:, i], 0.0, w1[:, i])
            err = (w1[:, i] - q) / d1[i]
            w1[:, i:] -= np.outer(err, hinv[i1 + i, i1 + i : i2])
            q1[:, i], err1[:, i] = q, err
        weights[:, i1:i2] = q1
        weights[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return weights


@pytest.mark.parametrize(("sparsity", "n", "m", "blocksize"), [(0.5, 0, 0, 32), (0.6, 0, 0, 128), (0.0, 2, 4, 32)])
def test_two_level_sweep_and_row_chunks_match_the_column_by_column_sweep(
    sparsity: float, n: int, m: int, blocksize: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    w = rng.standard_normal((37, 72)).astype(np.float32)
    x = rng.standard_normal((400, 72)) @ rng.standard_normal((72, 72))
    x[:, 9] = 0
    h = x.T @ x
    expected = _column_by_column(w, h, sparsity, n, m, blocksize)
    got = sparsegpt_prune(w, h, sparsity, n=n, m=m, blocksize=blocksize)
    assert np.array_equal(got == 0, expected == 0)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    monkeypatch.setattr(select_module, "ROW_CHUNK_BYTES", 8 * 72 * 5)  # 5 rows at a time (N:M only)
    chunked = sparsegpt_prune(w, h, sparsity, n=n, m=m, blocksize=blocksize, dtype=np.float32)
    assert chunked.dtype == np.float32
    np.testing.assert_array_equal(chunked, got.astype(np.float32))


def test_output_error_matches_definition() -> None:
    rng = np.random.default_rng(2)
    w, x = rng.standard_normal((6, 9)), rng.standard_normal((40, 9))
    pruned = sparsegpt_prune(w, x.T @ x, 0.5)
    direct = np.linalg.norm(x @ (w - pruned).T) / np.linalg.norm(x @ w.T)
    assert output_error(w, pruned, x.T @ x) == pytest.approx(direct, rel=1e-9)


# --------------------------------------------------------------------------- #
# the pass
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["matmul", "gemm", "conv"])
def test_pass_sparsity_zero_is_bit_identical(name: str) -> None:
    proto = MODELS[name]()
    model, result = prune(proto, SparseGPTPass, SparseGPTConfig(sparsity=0.0))
    assert not result.modified
    feeds = data_for(proto, 8, seed=5)
    before, after = run(proto, feeds), run(model, feeds)
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("sparsity", [0.3, 0.5])
def test_exact_unstructured_sparsity_per_tensor(name: str, sparsity: float) -> None:
    model, result = prune(MODELS[name](), SparseGPTPass, SparseGPTConfig(sparsity=sparsity, blocksize=16))
    assert result.modified and result.report.changed
    for entry in result.report.changed:
        assert entry["zeros"] == round(sparsity * entry["numel"]), entry
    for weight in find_weights(model):
        assert np.count_nonzero(read_weight(weight) == 0) == round(sparsity * weight.size)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (3, 8)])
def test_every_nm_group_holds(name: str, n: int, m: int) -> None:
    model, result = prune(MODELS[name](), SparseGPTPass, SparseGPTConfig(n=n, m=m))
    assert result.report.summary["pattern"] == f"{n}:{m}"
    for weight in find_weights(model):
        rows = to_rows(weight, read_weight(weight))  # groups of M consecutive weights along the input axis
        counts = np.count_nonzero(rows.reshape(rows.shape[0], -1, m), axis=-1)
        assert counts.max() <= n
        assert np.count_nonzero(rows == 0) == rows.size * (m - n) // m


@pytest.mark.parametrize("name", sorted(MODELS))
def test_beats_magnitude_on_held_out_data(name: str) -> None:
    proto = MODELS[name]()
    test = data_for(proto, 128, seed=99)
    ours, result = prune(proto, SparseGPTPass, SparseGPTConfig(sparsity=0.5))
    magnitude, _ = prune(proto, UnstructuredPrunePass, UnstructuredPruneConfig(sparsity=0.5, importance="magnitude"))
    ours_nm, _ = prune(proto, SparseGPTPass, SparseGPTConfig(n=2, m=4))
    magnitude_nm, _ = prune(proto, NMPrunePass, NMPruneConfig(n=2, m=4, importance="magnitude"))
    err, err_mag = relative_error(proto, ours, test), relative_error(proto, magnitude, test)
    err_nm, err_mag_nm = relative_error(proto, ours_nm, test), relative_error(proto, magnitude_nm, test)
    assert err < 0.8 * err_mag, (err, err_mag)
    assert err_nm < 0.8 * err_mag_nm, (err_nm, err_mag_nm)
    (entry,) = result.report.changed
    assert entry["reconstruction_error"] < entry["magnitude_error"]


def test_reported_error_is_the_calibration_output_error() -> None:
    proto = matmul_model()
    model, result = prune(proto, SparseGPTPass, SparseGPTConfig(sparsity=0.6))
    (entry,) = result.report.changed
    measured = relative_error(proto, model, data_for(proto, 256, seed=0))  # the calibration data itself
    assert entry["reconstruction_error"] == pytest.approx(measured, rel=1e-3)
    dense = numpy_helper.to_array(proto.graph.initializer[0]).astype(np.float64)
    x = data_for(proto, 256, seed=0)["x"].astype(np.float64)
    keep = np.abs(dense) > np.sort(np.abs(dense).ravel())[round(0.6 * dense.size) - 1]
    magnitude = np.linalg.norm(x @ (dense * ~keep)) / np.linalg.norm(x @ dense)
    assert entry["magnitude_error"] == pytest.approx(magnitude, rel=1e-6)


def test_nm_errors_of_tall_weights_are_measured_on_evenly_spaced_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    proto = matmul_model(k=32, out=96)
    whole, exact = prune(proto, SparseGPTPass, SparseGPTConfig(n=2, m=4))
    monkeypatch.setattr(sparsegpt_module, "ERROR_ROWS", 24)
    model, sampled = prune(proto, SparseGPTPass, SparseGPTConfig(n=2, m=4))
    (a,), (b,) = exact.report.changed, sampled.report.changed
    assert "error_rows" not in a and b["error_rows"] == 24
    assert b["reconstruction_error"] == pytest.approx(a["reconstruction_error"], rel=0.3)
    assert b["magnitude_error"] == pytest.approx(a["magnitude_error"], rel=0.3)
    assert b["reconstruction_error"] < b["magnitude_error"]
    assert np.array_equal(weight_array(model, "w"), weight_array(whole, "w"))  # the pruning itself is unchanged


def test_shared_weight_and_one_activation_with_two_geometries() -> None:
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("MatMul", ["a", "w"], ["ya"], name="mm_a"),
        helper.make_node("MatMul", ["b", "w"], ["yb"], name="mm_b"),
        helper.make_node("Conv", ["x", "k3"], ["y3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "k1"], ["y1"], name="conv1"),
    ]
    proto = _model(
        nodes,
        [("a", ["N", 16]), ("b", ["N", 16]), ("x", ["N", 4, 5, 5])],
        ["ya", "yb", "y3", "y1"],
        {"w": _weight(rng, 8, 16).T, "k3": _weight(rng, 6, 4, 3, 3), "k1": _weight(rng, 6, 4, 1, 1)},
    )
    model, result = prune(proto, SparseGPTPass, SparseGPTConfig(sparsity=0.5))
    changed = {e["tensor"]: e for e in result.report.changed}
    assert sorted(changed) == ["k1", "k3", "w"]
    assert changed["w"]["nodes"] == ["mm_a", "mm_b"]
    assert all(e["zeros"] == e["numel"] // 2 for e in changed.values())
    magnitude, _ = prune(proto, UnstructuredPrunePass, UnstructuredPruneConfig(sparsity=0.5))
    test = data_for(proto, 64, seed=7)
    assert relative_error(proto, model, test) < relative_error(proto, magnitude, test)


def test_unsupported_weights_are_skipped_with_reasons() -> None:
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("ConvTranspose", ["x", "wt"], ["y_t"], name="deconv"),
        helper.make_node("Conv", ["x", "wg"], ["y_g"], name="grouped", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "ws"], ["y_s"], name="same", auto_pad="SAME_UPPER"),
        helper.make_node("Conv", ["s", "w1"], ["y_1"], name="conv1d", pads=[1, 1]),
        helper.make_node("MatMul", ["v", "wm"], ["y_m"], name="odd"),
        helper.make_node("Conv", ["x", "wok"], ["y_ok"], name="fine", pads=[1, 1, 1, 1]),
    ]
    inits = {
        "wt": _weight(rng, 4, 4, 3, 3),
        "wg": _weight(rng, 4, 2, 3, 3),
        "ws": _weight(rng, 4, 4, 3, 3),
        "w1": _weight(rng, 4, 4, 3),
        "wm": _weight(rng, 5, 6).T,
        "wok": _weight(rng, 4, 4, 3, 3),
    }
    proto = _model(
        nodes,
        [("x", ["N", 4, 6, 6]), ("s", ["N", 4, 10]), ("v", ["N", 6])],
        ["y_t", "y_g", "y_s", "y_1", "y_m", "y_ok"],
        inits,
    )
    model, result = prune(proto, SparseGPTPass, SparseGPTConfig(n=2, m=4))
    reasons = {s["tensor"]: s["reason"] for s in result.report.skipped}
    assert "ConvTranspose is not supported" in reasons["wt"]
    assert "grouped Conv (group=2)" in reasons["wg"]
    assert "auto_pad=SAME_UPPER" in reasons["ws"]
    assert "1-D Conv is not supported" in reasons["w1"]
    assert "input dim 6 is not a multiple of M=4" in reasons["wm"]
    assert [e["tensor"] for e in result.report.changed] == ["wok"]
    assert result.report.summary["skipped_tensors"] == 5
    feeds = data_for(proto, 4, seed=1)
    before, after = run(proto, feeds), run(model, feeds)
    for key in ("y_t", "y_g", "y_s", "y_1", "y_m"):
        assert np.array_equal(before[key], after[key])


def test_selection_and_errors() -> None:
    proto = gemm_model()
    model = ir.serde.deserialize_model(proto)
    result = SparseGPTPass(SparseGPTConfig(exclude=("gemm",)), PassContext())(model)
    assert not result.modified and result.report.skipped[0]["reason"] == "matched an exclude glob"
    with pytest.raises(CalibrationError, match="sparsegpt needs calibration data"):
        SparseGPTPass(SparseGPTConfig(), PassContext())(model)
    for bad in ({"sparsity": 1.0}, {"n": 5, "m": 4}, {"n": 2}, {"blocksize": 0}, {"percdamp": -0.1}):
        with pytest.raises(RecipeError):
            SparseGPTConfig(**bad)
    assert PASSES["sparsegpt"] is SparseGPTPass


def test_cli_builds_a_sparsegpt_spec(tmp_path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(gemm_model(), model)
    runner = CliRunner()
    for args, config in ((["--sparsity", "0.5"], {"sparsity": 0.5}), (["--pattern", "2:4"], {"n": 2, "m": 4})):
        result = runner.invoke(
            cli,
            [
                "prune",
                str(model),
                "-o",
                str(tmp_path / "out.onnx"),
                *args,
                "--importance",
                "sparsegpt",
                "--dump-recipe",
            ],
        )
        assert result.exit_code == 0, result.output
        spec = yaml.safe_load(result.output)["passes"][0]
        assert spec["name"] == "sparsegpt"
        assert spec["config"].items() >= config.items()
