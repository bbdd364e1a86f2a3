"""Seed allocators and importances: PCA width (M4), SiPP (M6), K-FAC neurons (M25), PQI (M33).

Each is checked against a direct computation (numpy loops or the formula by hand) and in onnxruntime.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner

from onnxprune.analysis.weights import find_weights, read_weight
from onnxprune.calibration.collect import conv_geometry
from onnxprune.calibration.sources import ArraySource, input_specs
from onnxprune.calibration.stats import sample_rows
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.errors import RecipeError
from onnxprune.passes import (
    ChannelPruneConfig,
    ChannelPrunePass,
    SparseGPTConfig,
    UnstructuredPruneConfig,
    UnstructuredPrunePass,
)
from onnxprune.passes._allocators import ALLOCATORS, AllocUnit
from onnxprune.passes._kfac import kfac_factors, spectral_radius
from onnxprune.passes._pca_width import pca_width
from onnxprune.passes._pqi import pq_index, pqi_prune_count
from onnxprune.passes._sipp import sensitivities
from tests.conftest import ort_run, to_ir
from tests.models.handbuilt import conv_model
from tests.models.seed_alloc import low_rank_mlp, two_gemm_mlp


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path / "cache"))


def _data(model: ir.Model | onnx.ModelProto, n: int = 48, positive: bool = False) -> np.ndarray:
    spec = input_specs(to_ir(model) if isinstance(model, onnx.ModelProto) else model)[0]
    shape = [d if isinstance(d, int) else 1 for d in spec.shape][1:]
    x = np.random.default_rng(1).standard_normal((n, *shape)).astype(np.float32)
    return np.abs(x) if positive else x


def _context(model: ir.Model, x: np.ndarray, labels: np.ndarray | None = None) -> PassContext:
    spec = input_specs(model)[0]
    arrays = {spec.name: x} if labels is None else {spec.name: x, "labels": labels}
    return PassContext(calibration=ArraySource(arrays, [spec], "test"), batch_size=16)


def _weights(model: ir.Model) -> dict[str, np.ndarray]:
    return {w.name: read_weight(w).copy() for w in find_weights(model)}


def test_registered_with_their_kinds() -> None:
    for name in ("pca", "sipp", "pqi"):
        assert name in ALLOCATORS.names()
    assert ALLOCATORS["pca"].kinds == ("channels",) and ALLOCATORS["sipp"].needs_data
    assert not ALLOCATORS["pqi"].needs_data and not ALLOCATORS["pqi"].uses_budget
    with pytest.raises(RecipeError, match="has no option 'nope'"):
        UnstructuredPruneConfig(allocation="pqi", allocation_options={"nope": 1})
    with pytest.raises(RecipeError, match="must be a float"):
        UnstructuredPruneConfig(allocation="pqi", allocation_options={"p": "half"})
    with pytest.raises(RecipeError, match="0 < p < q"):
        UnstructuredPruneConfig(allocation="pqi", allocation_options={"p": 2})
    with pytest.raises(RecipeError, match="variance must be in"):
        ChannelPruneConfig(allocation="pca", allocation_options={"variance": 1.5})
    with pytest.raises(RecipeError, match="set its option fit"):
        ChannelPruneConfig(allocation="pca", target_flops=0.5)
    with pytest.raises(RecipeError, match="ranks weights by 'sipp'"):
        UnstructuredPruneConfig(allocation="sipp", importance="wanda")
    assert UnstructuredPruneConfig(allocation="sipp").importance == "sipp"
    with pytest.raises(RecipeError, match="use the unstructured pass"):
        SparseGPTConfig(allocation="pqi")


# --------------------------------------------------------------------------- PQI (M33)


def test_pqi_count_matches_the_formula_by_hand() -> None:
    w = np.array([10.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    # (Σ|w|^½ / 8)² = ((3.16228 + 7·0.316228) / 8)² = 0.451562; Σ|w| / 8 = 1.3375
    index = 1 - ((math.sqrt(10) + 7 * math.sqrt(0.1)) / 8) ** 2 / 1.3375
    assert pq_index(w) == pytest.approx(index) and index == pytest.approx(0.66238, abs=1e-5)
    m = math.ceil(8 * (1 - index))  # (1+η)^{q/(p-q)} = 1, exponent qp/(q-p) = 1
    assert m == 3
    assert pqi_prune_count(w, 0.5, 1.0, 0.0, 1.0, 0.9) == math.floor(8 * (1 - 3 / 8)) == 5
    assert pqi_prune_count(w, 0.5, 1.0, 0.0, 1.0, 0.5) == 4  # capped by β
    assert pqi_prune_count(np.ones(6), 0.5, 1.0, 0.0, 1.0, 0.9) == 0  # flat: incompressible


def test_pqi_prunes_each_neuron_its_own_count() -> None:
    model = to_ir(two_gemm_mlp())
    before = _weights(model)
    result = UnstructuredPrunePass(UnstructuredPruneConfig(allocation="pqi"), PassContext())(model)
    after = _weights(model)
    for name in ("w1", "w2"):
        for row_before, row_after in zip(before[name], after[name], strict=True):  # Gemm transB: rows are neurons
            count = pqi_prune_count(row_before, 0.5, 1.0, 0.0, 1.0, 0.9)
            assert np.count_nonzero(row_after == 0) == count
            if count:
                assert np.abs(row_after[row_after != 0]).min() >= np.abs(row_before[row_after == 0]).max()
    assert result.report.summary["requested_sparsity"] is None
    assert 0 < result.report.summary["achieved_sparsity"] < 0.9


def test_pqi_zero_gamma_changes_nothing_and_fit_meets_the_sparsity() -> None:
    proto = two_gemm_mlp()
    model = to_ir(proto)
    config = UnstructuredPruneConfig(allocation="pqi", allocation_options={"gamma": 0.0})
    UnstructuredPrunePass(config, PassContext())(model)
    x = _data(model)
    np.testing.assert_array_equal(ort_run(model, {"x": x})["y"], ort_run(proto, {"x": x})["y"])
    for scope in ("neuron", "layer", "global"):
        fitted = to_ir(proto)
        options = {"fit": True, "scope": scope}
        config = UnstructuredPruneConfig(sparsity=0.6, allocation="pqi", allocation_options=options)
        result = UnstructuredPrunePass(config, PassContext())(fitted)
        assert result.report.summary["achieved_sparsity"] == pytest.approx(0.6, abs=0.03), scope


# --------------------------------------------------------------------------- SiPP (M6)


def _brute_sensitivity(w: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Loops over points, patches, neurons and inputs: ``points [P, patches, fan-in]``."""
    if (points < 0).any():
        points = np.concatenate([np.maximum(points, 0), np.maximum(-points, 0)])
    out = np.zeros_like(w, dtype=np.float64)
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            same = np.sign(w[i]) == np.sign(w[i, j])
            for point in points:
                shares = []
                for a in point:
                    total = float(np.sum(np.abs(w[i]) * a * same))
                    shares.append(abs(w[i, j]) * a[j] / total if total > 1e-12 else 0.0)
                out[i, j] = max(out[i, j], float(np.mean(shares)) if w[i, j] != 0 else 0.0)
    return out


def test_sipp_sensitivity_matches_brute_force_on_gemm_and_conv() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 6))
    points = rng.standard_normal((5, 1, 6))
    np.testing.assert_allclose(sensitivities(w, points), _brute_sensitivity(w, points), rtol=1e-10)
    model = to_ir(conv_model())
    conv = next(n for n in model.graph if n.name == "conv1")
    weight = np.asarray(conv.inputs[1].const_value.numpy(), dtype=np.float64)
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    rows = sample_rows(x, 1, conv_geometry(conv, (3, 3)), 3, 64)  # 8x8 outputs: all 64 patches
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.stack(
        [[padded[n, :, i : i + 3, j : j + 3].ravel() for i in range(8) for j in range(8)] for n in range(3)]
    )
    np.testing.assert_array_equal(rows, patches)
    flat = weight.reshape(8, -1)
    np.testing.assert_allclose(sensitivities(flat, patches), _brute_sensitivity(flat, patches), rtol=1e-9)


def test_sipp_allocation_is_one_global_top_k_over_sensitivities() -> None:
    proto = two_gemm_mlp()
    model = to_ir(proto)
    x = _data(model, n=20)
    w1, b1 = (np.asarray(onnx.numpy_helper.to_array(t), np.float64) for t in proto.graph.initializer[:2])
    relu = np.maximum(x @ w1.T + b1, 0)
    scores = {
        "w1": _brute_sensitivity(w1, x[:, None, :]),
        "w2": _brute_sensitivity(_weights(model)["w2"], relu[:, None]),
    }
    flat = np.concatenate([s.ravel() for s in scores.values()])
    n = int(round(0.5 * flat.size))
    threshold = np.sort(flat)[n - 1]
    context = _context(model, x)
    result = UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5, allocation="sipp"), context)(model)
    assert result.report.summary["achieved_sparsity"] == pytest.approx(0.5, abs=1e-9)
    for name, weight in _weights(model).items():
        kept = weight != 0
        assert (scores[name][kept] >= threshold - 1e-9).all() and (scores[name][~kept] <= threshold + 1e-9).all()


def test_sipp_at_zero_changes_nothing() -> None:
    proto = two_gemm_mlp()
    model = to_ir(proto)
    x = _data(model)
    UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.0, allocation="sipp"), _context(model, x))(model)
    np.testing.assert_array_equal(ort_run(model, {"x": x})["y"], ort_run(proto, {"x": x})["y"])


# --------------------------------------------------------------------------- PCA width (M4)


def test_pca_width_counts_components() -> None:
    assert pca_width(np.array([5.0, 3.0, 2.0, 0.0]), 0.999) == 3
    assert pca_width(np.array([5.0, 3.0, 2.0, 0.0]), 0.5) == 1
    assert pca_width(np.zeros(4), 0.99) == 0


def test_pca_keeps_the_rank_of_the_activations_and_the_output() -> None:
    proto = low_rank_mlp(rank=3, hidden=6)
    model = to_ir(proto)
    x = _data(model, positive=True)
    config = ChannelPruneConfig(ratio=0.0, allocation="pca", allocation_options={"variance": 0.999}, ridge=1e-9)
    result = ChannelPrunePass(config, _context(model, x))(model)
    assert [c["kept"] for c in result.report.changed] == [3]
    got, want = ort_run(model, {"x": x})["y"], ort_run(proto, {"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    unchanged = to_ir(proto)  # a zero ratio to fit: nothing removed
    config = ChannelPruneConfig(ratio=0.0, allocation="pca", allocation_options={"fit": True})
    assert not ChannelPrunePass(config, _context(unchanged, x))(unchanged).modified
    np.testing.assert_array_equal(ort_run(unchanged, {"x": x})["y"], want)


def test_pca_fit_solves_the_variance_for_the_ratio() -> None:
    spectra = {"a": np.array([8.0, 1, 0.5, 0.25]), "b": np.array([1.0, 1, 1, 1, 1, 1, 1, 1])}
    units = [AllocUnit(k, v.size, lambda v=v: v) for k, v in spectra.items()]
    fitted = ALLOCATORS["pca"].configured({"fit": True}).ratios(units, 0.5)
    assert (fitted["a"] * 4 + fitted["b"] * 8) / 12 == pytest.approx(0.5, abs=1 / 12)
    free = ALLOCATORS["pca"].ratios(units, 0.5)  # budget-free: from variance 0.99
    assert free == {"a": 0.0, "b": 0.0}


# --------------------------------------------------------------------------- K-FAC (M25)


def _direct_kfac(proto: onnx.ModelProto, x: np.ndarray, labels: np.ndarray | None) -> dict[str, np.ndarray]:
    w1, b1, w2, b2 = (np.asarray(onnx.numpy_helper.to_array(t), np.float64) for t in proto.graph.initializer)
    x = x.astype(np.float64)
    h = x @ w1.T + b1
    r = np.maximum(h, 0)
    y = r @ w2.T + b2
    if labels is None:
        d2 = y  # ½‖y‖² per sample
    else:
        p = np.exp(y - y.max(axis=1, keepdims=True))
        d2 = p / p.sum(axis=1, keepdims=True) - np.eye(y.shape[1])[labels]
    d1 = (d2 @ w2) * (h > 0)
    out = {}
    for name, inputs, delta, w, b in (("fc1", x, d1, w1, b1), ("fc2", r, d2, w2, b2)):
        a = np.concatenate([inputs, np.ones((len(x), 1))], axis=1)
        big_a, big_g = a.T @ a / len(x), delta.T @ delta / len(x)
        rows = np.concatenate([w, b[:, None]], axis=1)
        out[name] = np.array([0.5 * big_g[j, j] * rows[j] @ big_a @ rows[j] for j in range(len(rows))])
        out[name + ".radius"] = np.linalg.eigvalsh(big_a)[-1] * np.linalg.eigvalsh(big_g)[-1]
    return out


@pytest.mark.parametrize("with_labels", [False, True])
def test_kfac_saliency_matches_a_direct_computation(with_labels: bool) -> None:
    proto = two_gemm_mlp()
    model = to_ir(proto)
    x = _data(model, n=40)
    labels = np.arange(40) % 5 if with_labels else None
    context = _context(model, x, labels)
    nodes = [n for n in model.graph if n.op_type == "Gemm"]
    factors = kfac_factors(model, context.calibration, nodes, batch_size=16)  # type: ignore[arg-type]
    want = _direct_kfac(proto, x, labels)
    for name in ("fc1", "fc2"):
        np.testing.assert_allclose(factors[name].saliency, want[name], rtol=1e-4)
        radius = spectral_radius(factors[name].a) * spectral_radius(factors[name].g)
        assert radius == pytest.approx(want[name + ".radius"], rel=1e-4)
    assert factors["fc1"].loss == ("cross-entropy" if with_labels else "output sum of squares")


def test_kfac_channels_keep_the_most_salient_neurons() -> None:
    proto = two_gemm_mlp()
    model = to_ir(proto)
    x = _data(model, n=40)
    salience = _direct_kfac(proto, x, None)["fc1"]
    config = ChannelPruneConfig(ratio=0.5, importance="kfac", reconstruct=False)
    result = ChannelPrunePass(config, _context(model, x))(model)
    assert set(result.report.summary["spectral_radius"]) == {"fc1", "fc2"}
    w1 = _weights(model)["w1"]
    original = np.asarray(onnx.numpy_helper.to_array(proto.graph.initializer[0]))
    kept = [int(np.argmin(np.abs(original - row).sum(axis=1))) for row in w1]
    assert sorted(kept) == sorted(np.argsort(-salience)[:5].tolist())


# --------------------------------------------------------------------------- CLI


def _cli(*args: object) -> object:
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


def _files(tmp_path: Path, proto: onnx.ModelProto, positive: bool = False) -> tuple[Path, Path]:
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=_data(proto, positive=positive))
    return path, calib


def test_cli_end_to_end(tmp_path: Path) -> None:
    model, calib = _files(tmp_path, low_rank_mlp(), positive=True)
    out = tmp_path / "pca.onnx"
    result = _cli(
        "prune", model, "-o", out, "--allocation", "pca", "--allocation-option", "variance=0.999", "--calib", calib
    )
    assert result.exit_code == 0, result.output
    assert onnx.load(str(out)).graph.initializer[0].dims[0] == 3
    for args in (["--allocation", "sipp"], ["--allocation", "pqi", "--allocation-option", "scope=layer"]):
        result = _cli("prune", model, "-o", tmp_path / "u.onnx", "--sparsity", "0.5", *args, "--calib", calib)
        assert result.exit_code == 0, result.output
    result = _cli("prune", model, "-o", tmp_path / "u.onnx", "--allocation", "pqi")  # its own sparsity, no data
    assert result.exit_code == 0, result.output
    result = _cli("prune", model, "-o", out, "--channels", "0.5", "--importance", "kfac", "--calib", calib)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sparsity", "0.5", "--allocation", "pqi", "--allocation-option", "nope=1"], "has no option 'nope'"),
        (["--sparsity", "0.5", "--allocation", "pqi", "--allocation-option", "scope=row"], "scope must be one of"),
        (["--allocation", "pca", "--allocation-option", "variance=2"], "variance must be in"),
        (["--sparsity", "0.5", "--allocation-option", "p=1"], "give --allocation"),
        (["--target-flops", "0.5", "--allocation", "pca"], "set its option fit"),
        (["--allocation", "pqi", "--allocation-option", "fit=true"], "give exactly one of"),
    ],
)
def test_cli_bad_options_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    model, calib = _files(tmp_path, low_rank_mlp(), positive=True)
    result = _cli("prune", model, "-o", tmp_path / "o.onnx", *args, "--calib", calib)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert message in lines[0]


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", ["pca-width", "sipp", "kfac-neuron", "pqi"])
def test_presets_run_as_recipes(tmp_path: Path, name: str) -> None:
    import yaml

    from onnxprune.presets import PRESETS
    from tests.conftest import DIGITS

    preset = PRESETS[name]
    passes = [dict(p) for p in preset.passes]
    for p in passes:  # a short fine-tune keeps the test quick
        if p["name"] == "finetune":
            p["config"] = {**p["config"], "steps": 3}
    recipe = {
        "model": str(DIGITS / "digits_cnn.onnx"),
        "output": str(tmp_path / "out.onnx"),
        "passes": passes,
        "calibration": {"path": str(DIGITS / "digits_calib.npz")},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = _cli("run", path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.onnx").is_file()
