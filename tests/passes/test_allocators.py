"""Allocators: budgets met exactly, sensitive units left dense by measurement, OWL's mean held, passes wired."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.weights import find_weights, read_weight
from onnxprune.calibration.sequential import SequentialOptions
from onnxprune.calibration.sources import ArraySource, input_specs, open_source
from onnxprune.context import PassContext
from onnxprune.errors import CalibrationError, RecipeError
from onnxprune.passes import (
    ChannelPruneConfig,
    ChannelPrunePass,
    SparseGPTConfig,
    SparseGPTPass,
    UnstructuredPruneConfig,
    UnstructuredPrunePass,
)
from onnxprune.passes._allocators import ALLOCATORS, AllocUnit, hull_segments, owl_ratios, sensitivity_ratios
from tests.conftest import to_ir
from tests.models.exported import tiny_cnn_onnx


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path / "cache"))


def _two_layer(seed: int = 0) -> ir.Model:
    """x[N,64] -> MatMul(big[64,64]) -> Relu -> MatMul(small[64,8]) -> y.

    ``big`` is heavy-tailed (most entries near zero: magnitude pruning barely moves the output);
    ``small`` has entries of equal magnitude (every pruned weight costs): sensitive by measurement.
    """
    rng = np.random.default_rng(seed)
    big = (rng.standard_normal((64, 64)) * (rng.random((64, 64)) < 0.15) + 1e-3 * rng.standard_normal((64, 64))) / 3
    small = np.sign(rng.standard_normal((64, 8))) / 8
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "big"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "small"], ["y"]),
        ],
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [
            numpy_helper.from_array(big.astype(np.float32), "big"),
            numpy_helper.from_array(small.astype(np.float32), "small"),
        ],
    )
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _context(model: ir.Model, n: int = 64, sequential: bool | None = None) -> PassContext:
    spec = input_specs(model)[0]
    shape = [d if d is not None else 1 for d in spec.shape][1:]
    x = np.random.default_rng(1).standard_normal((n, *shape)).astype(np.float32)
    source = ArraySource({spec.name: x}, [spec], "test")
    return PassContext(calibration=source, sequential=SequentialOptions(sequential))


def _sparsity(model: ir.Model) -> dict[str, float]:
    return {w.name: float(np.mean(read_weight(w) == 0)) for w in find_weights(model)}


def test_registry_declares_needs() -> None:
    assert ALLOCATORS.names()[:4] == ("uniform", "global", "sensitivity", "owl")
    assert ALLOCATORS["sensitivity"].needs_sensitivity and ALLOCATORS["owl"].needs_data
    assert not ALLOCATORS["uniform"].needs_data and not ALLOCATORS["global"].needs_sensitivity
    with pytest.raises(RecipeError, match="allocation must be one of"):
        UnstructuredPruneConfig(allocation="best")
    with pytest.raises(RecipeError, match="unstructured pruning, not channels"):
        ChannelPruneConfig(allocation="owl")
    with pytest.raises(RecipeError, match="disagree"):
        UnstructuredPruneConfig(scope="global", allocation="owl")
    assert UnstructuredPruneConfig(scope="global") == UnstructuredPruneConfig(allocation="global")
    assert ChannelPruneConfig(scope="global") == ChannelPruneConfig(allocation="global")


def test_hull_is_monotone_and_convex() -> None:
    segments = hull_segments(np.array([0, 0.25, 0.5, 0.75]), np.array([0, 0.3, 0.2, 0.9]))
    slopes = [s for _, _, s in segments]
    assert segments[0][0] == 0 and segments[-1][1] == 0.75
    assert all(a <= b for a, b in zip(slopes, slopes[1:], strict=False))


def test_sensitivity_meets_budget_and_keeps_steep_units_dense() -> None:
    grid = np.array([0.0, 0.25, 0.5, 0.75, 0.9])
    curves = {"flat": (grid, grid**2 * 0.01), "mid": (grid, grid**2 * 0.1), "steep": (grid, grid * 100.0)}
    units = [AllocUnit("flat", 1000), AllocUnit("mid", 1000), AllocUnit("steep", 200)]
    ratios = sensitivity_ratios(units, 0.5, curves)
    assert sum(ratios[u.name] * u.cost for u in units) == pytest.approx(0.5 * 2200)
    assert ratios["steep"] == 0.0 and ratios["flat"] >= ratios["mid"] > 0
    with pytest.raises(RecipeError, match="beyond the measured grid"):
        sensitivity_ratios(units, 0.95, curves)


def test_owl_keeps_the_mean_and_spreads_by_outliers() -> None:
    units = [AllocUnit("a", 100), AllocUnit("b", 300), AllocUnit("c", 600)]
    ratios = owl_ratios(units, 0.7, np.array([0.01, 0.05, 0.002]))
    mean = sum(ratios[u.name] * u.cost for u in units) / 1000
    assert mean == pytest.approx(0.7) and ratios["b"] < ratios["a"] < ratios["c"]
    assert max(ratios.values()) - min(ratios.values()) <= 0.16 + 1e-9


def test_unstructured_sensitivity_leaves_the_sensitive_layer_dense() -> None:
    model = _two_layer()
    config = UnstructuredPruneConfig(sparsity=0.5, allocation="sensitivity")
    result = UnstructuredPrunePass(config, _context(model))(model)
    got = _sparsity(model)
    assert got["small"] == 0.0 and got["big"] == pytest.approx(0.5 * (4096 + 512) / 4096, abs=1 / 4096)
    assert result.report.summary["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("allocation", ["owl", "global", "sensitivity"])
def test_unstructured_allocations_meet_the_budget(allocation: str) -> None:
    model = to_ir(tiny_cnn_onnx())
    result = UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.6, allocation=allocation), _context(model))(model)
    assert result.report.summary["achieved_sparsity"] == pytest.approx(0.6, abs=2e-3)
    assert len({round(s, 3) for s in _sparsity(model).values()}) > 1  # not uniform


@pytest.mark.parametrize("allocation", ["owl", "global", "sensitivity"])
def test_sparsegpt_per_layer_sparsity(allocation: str) -> None:
    model = to_ir(tiny_cnn_onnx())
    # one-shot: sequentially, SparseGPT also zeroes the weights of inputs that upstream pruning silenced
    context = _context(model, sequential=False)
    result = SparseGPTPass(SparseGPTConfig(sparsity=0.6, allocation=allocation), context)(model)
    assert result.report.summary["achieved_sparsity"] == pytest.approx(0.6, abs=2e-3)
    assert len({round(e["sparsity"], 3) for e in result.report.changed}) > 1


def test_channels_sensitivity_spends_the_mean_ratio() -> None:
    model = to_ir(tiny_cnn_onnx())
    config = ChannelPruneConfig(ratio=0.5, allocation="sensitivity", reconstruct=False)
    result = ChannelPrunePass(config, _context(model))(model)
    entries = result.report.changed
    removed = result.report.summary["channels_removed"]
    assert removed == pytest.approx(0.5 * result.report.summary["channels_in_prunable_groups"], abs=len(entries) + 1)
    summary = result.report.summary
    fractions = {e["kept"] / e["units"] for e in entries} | (
        {1.0} if summary["pruned_groups"] < summary["prunable_groups"] else set()
    )
    assert len(fractions) > 1  # per-group ratios, not one for all


def test_data_aware_allocation_refuses_random_inputs() -> None:
    model = to_ir(tiny_cnn_onnx())
    context = PassContext(calibration=open_source(None, model, samples=4))
    with pytest.raises(CalibrationError, match="needs calibration data"):
        UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5, allocation="owl"), context)(model)
