"""SiPP (M6) modes: the reference's deterministic rule by brute force, the error-bound budget program, the
draw counts, unbiased reweighting, seeded sampling, the budget met, bad options, and the CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.analysis.weights import find_weights, read_weight
from onnxprune.calibration.sources import ArraySource, input_specs
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.errors import RecipeError
from onnxprune.passes import UnstructuredPruneConfig, UnstructuredPrunePass
from onnxprune.passes._allocators import ALLOCATORS
from onnxprune.passes._sipp import sensitivities
from onnxprune.passes._sipp_sample import (
    allocate_sizes,
    draws_for,
    error_bound,
    expected_unique,
    probabilities,
    sampled_gains,
)
from tests.conftest import ort_run, to_ir
from tests.models.seed_alloc import two_gemm_mlp

MODES = ("deterministic", "random", "hybrid")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path / "cache"))


def _mlp(inputs: int = 40, hidden: int = 8) -> onnx.ModelProto:
    return two_gemm_mlp(inputs=inputs, hidden=hidden, outputs=4)  # fan-ins 40 and 8


def _x(n: int = 32, inputs: int = 40) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((n, inputs)).astype(np.float32)


def _prune(proto: onnx.ModelProto, x: np.ndarray, sparsity: float, **options: object) -> tuple[dict, dict]:
    model = to_ir(proto)
    spec = input_specs(model)[0]
    context = PassContext(calibration=ArraySource({spec.name: x}, [spec], "test"), batch_size=16)
    config = UnstructuredPruneConfig(sparsity=sparsity, allocation="sipp", allocation_options=options)
    result = UnstructuredPrunePass(config, context)(model)
    return {w.name: read_weight(w).copy() for w in find_weights(model)}, result.report.summary


def _layer_sensitivities(proto: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    w1, b1, w2, _ = (np.asarray(onnx.numpy_helper.to_array(t), np.float64) for t in proto.graph.initializer)
    relu = np.maximum(x.astype(np.float64) @ w1.T + b1, 0)
    return {"w1": sensitivities(w1, x[:, None, :]), "w2": sensitivities(w2, relu[:, None, :])}


def test_deterministic_matches_the_reference_rule_by_brute_force() -> None:
    """torchprune SiPPAllocator: top-k over [sens⁺ | sens⁻] of all layers → counts per (neuron, sign) → top per side."""
    proto, x = _mlp(), _x()
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.name in ("w1", "w2")}
    sens = _layer_sensitivities(proto, x)
    sides = {n: (np.where(weights[n] > 0, s, 0.0), np.where(weights[n] < 0, s, 0.0)) for n, s in sens.items()}
    flat = np.concatenate([side.ravel() for pair in sides.values() for side in pair])
    total = sum(w.size for w in weights.values())
    keep_n = total - int(round(0.7 * total))
    chosen = np.zeros(flat.size, dtype=bool)
    chosen[np.argsort(-flat, kind="stable")[:keep_n]] = True
    expected, at = {}, 0
    for name, pair in sides.items():
        mask = np.zeros(weights[name].shape, dtype=bool)
        for side in pair:
            picked = chosen[at : at + side.size].reshape(side.shape)
            at += side.size
            for i, count in enumerate(picked.sum(axis=1)):  # the sparsifier: top `count` of this side
                mask[i, np.argsort(-side[i], kind="stable")[:count]] = True
        expected[name] = mask
    got, summary = _prune(proto, x, 0.7)
    assert summary["achieved_sparsity"] == pytest.approx(0.7, abs=0.5 / total)
    assert {n: int((expected[n] != (got[n] != 0)).sum()) for n in expected} == {"w1": 0, "w2": 0}
    assert (got["w1"] != 0).mean() != pytest.approx((got["w2"] != 0).mean())  # no per-layer normalization


@pytest.mark.parametrize("mode", MODES)
def test_sparsity_zero_changes_nothing(mode: str) -> None:
    proto, x = _mlp(), _x()
    model = to_ir(proto)
    spec = input_specs(model)[0]
    context = PassContext(calibration=ArraySource({spec.name: x}, [spec], "test"), batch_size=16)
    config = UnstructuredPruneConfig(sparsity=0.0, allocation="sipp", allocation_options={"mode": mode})
    UnstructuredPrunePass(config, context)(model)
    np.testing.assert_array_equal(ort_run(model, {"x": x})["y"], ort_run(proto, {"x": x})["y"])
    assert ALLOCATORS["sipp"].configured({"mode": mode}).ratios([], 0.0) == {}


def _objective(x: np.ndarray, alpha: np.ndarray, lead: np.ndarray) -> float:
    return float((lead * error_bound(x, alpha)).sum())


def test_budget_program_is_optimal_and_spends_a_binding_budget() -> None:
    alpha = np.array([40.0, 5.0, 120.0])
    lead = np.array([1 / 2, 1 / 2, 1.0])
    nnz = np.array([30.0, 30.0, 12.0])
    budget = 35.0
    x = allocate_sizes(alpha, lead, nnz, budget)
    assert x.sum() == pytest.approx(budget, rel=1e-9) and (x >= 0).all() and (x <= nnz + 1e-9).all()
    best = _objective(x, alpha, lead)
    grid = np.linspace(0.05, 30, 600)
    brute = min(
        _objective(np.array([a, b, budget - a - b]), alpha, lead)
        for a, b in itertools.product(grid, grid)
        if 0 < budget - a - b <= 12
    )
    assert best <= brute + 1e-9 and best == pytest.approx(brute, rel=1e-3)
    for i, j in itertools.permutations(range(3), 2):  # moving a little budget between sides never helps
        moved = x.copy()
        moved[i] += 1e-3
        moved[j] -= 1e-3
        if (moved <= nnz).all() and (moved > 0).all():
            assert _objective(moved, alpha, lead) >= best - 1e-12
    loose = allocate_sizes(alpha, lead, nnz, 1e6)  # not binding: every side takes all it has
    np.testing.assert_array_equal(loose, nnz)
    np.testing.assert_array_equal(allocate_sizes(np.array([0.0, 3.0]), np.ones(2), np.array([5.0, 5.0]), 4), [0, 4])


def test_draw_counts_hit_the_expected_unique_count() -> None:
    rng = np.random.default_rng(0)
    p = probabilities(rng.random((6, 50)) ** 3)
    sizes = np.array([2, 5, 10, 25, 40, 49])
    m = draws_for(p, sizes)
    target = np.minimum(sizes, np.count_nonzero(p, axis=1) - 1)
    assert (np.ceil(expected_unique(p, m) - 1e-9) >= target).all()
    assert (np.ceil(expected_unique(p, m - 1) - 1e-9) < target).all()  # the fewest draws that do
    np.testing.assert_array_equal(draws_for(p[:2], np.array([0, 1])), [0, 1])


def test_reweighting_is_unbiased() -> None:
    p = np.array([0.3, 0.25, 0.2, 0.15, 0.1, 0.0])
    n = 100_000
    gains = sampled_gains(np.tile(p, (n, 1)), np.full(n, 3), np.full(n, 6), np.random.default_rng(7))
    np.testing.assert_allclose(gains[:, :5].mean(axis=0), 1.0, atol=0.025)
    assert (gains[:, 5] == 0).all() and (np.count_nonzero(gains, axis=1) <= 3).all()


@pytest.mark.parametrize("mode", ("random", "hybrid"))
def test_sampled_modes_are_seeded_and_meet_the_sparsity(mode: str) -> None:
    proto, x = _mlp(inputs=60, hidden=30), _x(48, inputs=60)
    first, summary = _prune(proto, x, 0.8, mode=mode, seed=3)
    again, _ = _prune(proto, x, 0.8, mode=mode, seed=3)
    other, _ = _prune(proto, x, 0.8, mode=mode, seed=4)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    total = sum(w.size for w in first.values())
    kept = sum(np.count_nonzero(w) for w in first.values())
    assert summary["achieved_sparsity"] == pytest.approx(1 - kept / total)
    assert abs(kept - 0.2 * total) <= max(1, 0.002 * 0.2 * total)  # the budget search's tolerance
    if mode == "random":
        assert any(not np.array_equal(first[n], other[n]) for n in first)
        dense = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
        changed = (first["w1"] != 0) & (first["w1"] != dense["w1"])
        assert changed.any()  # kept weights are reweighted, not just masked


def test_random_mean_over_seeds_approaches_the_dense_layer() -> None:
    """Averaged over seeds, the sampled model's first layer tends to the dense one (unbiased per side)."""
    proto, x = _mlp(inputs=20, hidden=4), _x(24, inputs=20)
    dense = onnx.numpy_helper.to_array(proto.graph.initializer[0]).astype(np.float64)
    mean = np.mean([_prune(proto, x, 0.5, mode="random", seed=s)[0]["w1"] for s in range(60)], axis=0)
    assert np.abs(mean - dense).mean() < 0.35 * np.abs(dense).mean()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "sampled"}, "mode must be one of"),
        ({"C": -1.0}, "sipp needs C > 0"),
        ({"delta": 2.0}, "0 < delta < 1"),
        ({"seed": "one"}, "must be a int"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message) as err:
        UnstructuredPruneConfig(sparsity=0.5, allocation="sipp", allocation_options=options)
    assert "\n" not in str(err.value)


def test_cli_random_mode(tmp_path: Path) -> None:
    proto = _mlp()
    model, calib, out = tmp_path / "m.onnx", tmp_path / "c.npz", tmp_path / "o.onnx"
    onnx.save(proto, str(model))
    np.savez(calib, x=_x())
    args = ["prune", str(model), "-o", str(out), "--sparsity", "0.5", "--allocation", "sipp"]
    result = CliRunner().invoke(cli, [*args, "--allocation-option", "mode=random", "--calib", str(calib)])
    assert result.exit_code == 0, result.output
    pruned = onnx.load(str(out))
    weights = [onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer if t.name in ("w1", "w2")]
    assert sum(np.count_nonzero(w) for w in weights) == pytest.approx(0.5 * sum(w.size for w in weights), abs=2)
    bad = CliRunner().invoke(cli, [*args, "--allocation-option", "mode=nope", "--calib", str(calib)])
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "mode must be one of" in lines[0], bad.output
