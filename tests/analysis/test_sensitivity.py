"""Sensitivity analysis: suffix measurements equal full-model runs, dense feeds give zero error, cache reuse."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

from onnxprune.analysis.channels import analyze_channels, mask
from onnxprune.analysis.sensitivity import Settings, analyze, write_plot
from onnxprune.analysis.sensitivity import _engine as engine
from onnxprune.analysis.sensitivity._suffix import Frontier, GraphCut, Measure, Samples, SuffixSession
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.analysis.weights import find_weights, read_weight, write_weight
from onnxprune.calibration.sources import ArraySource, input_specs
from onnxprune.errors import CalibrationError
from onnxprune.passes._allocate import Allocation, GroupScores, allocate
from tests.conftest import ort_run, to_ir
from tests.models.exported import tiny_cnn_onnx
from tests.models.handbuilt import conv_model


def _source(model: ir.Model, n: int = 12, seed: int = 0, labels: np.ndarray | None = None) -> ArraySource:
    spec = input_specs(model)[0]
    shape = [d if d is not None else 1 for d in spec.shape][1:]
    x = np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)
    arrays = {spec.name: x} if labels is None else {spec.name: x, "label": labels}
    return ArraySource(arrays, [spec], "test")


def _error(model: ir.Model, changed: ir.Model, source: ArraySource) -> float:
    feed = next(iter(source.batches(100)))
    a, b = ort_run(model, feed), ort_run(changed, feed)
    errors = []
    for name in a:
        x, y = a[name].reshape(len(a[name]), -1), b[name].reshape(len(a[name]), -1)
        errors.append(np.linalg.norm(x - y, axis=1) / np.linalg.norm(x, axis=1))
    return float(np.concatenate(errors).mean())


def test_unit_errors_equal_full_model_runs() -> None:
    model = to_ir(tiny_cnn_onnx())
    source = _source(model)
    table = analyze(model, source, settings=Settings(kinds=("unstructured", "lowrank"), grid=(0.5, 0.9), batch_size=5))
    weights = {w.name: w for w in find_weights(model)}
    for unit in table.units:
        point = unit.points[1]  # 0.9
        changed = model.clone()
        weight = {w.name: w for w in find_weights(changed)}[unit.name]
        values = read_weight(weights[unit.name])
        if unit.kind == "unstructured":
            threshold = np.sort(np.abs(values).ravel())[int(round(0.9 * values.size)) - 1]
            write_weight(weight, np.where(np.abs(values) > threshold, values, 0))
        else:
            from onnxprune.passes._gram import from_matrix, to_matrix

            u, s, vt = np.linalg.svd(to_matrix(weight, values.astype(np.float64)), full_matrices=False)
            rank = max(1, int(round(0.1 * s.size)))
            write_weight(weight, from_matrix(weight, (u[:, :rank] * s[:rank]) @ vt[:rank]).astype(np.float32))
        assert point.error == pytest.approx(_error(model, changed, source), rel=1e-4, abs=1e-6), unit.name
        assert point.metric is not None and 0.0 <= point.metric <= 1.0


def test_channel_units_equal_masked_models() -> None:
    model = to_ir(conv_model())
    source = _source(model)
    table = analyze(model, source, settings=Settings(kinds=("channels",), grid=(0.5,)))
    assert table.units
    for unit in table.units:
        changed = model.clone()
        analysis = analyze_channels(changed, complete_shapes(changed))
        gid = next(g.id for g in analysis.groups.roots() if g.producers[0] == unit.name)
        group = analysis.groups[gid]
        from onnxprune.analysis.channels import record
        from onnxprune.passes._importance import group_scores

        scores, _ = group_scores(analysis, record(analysis), [gid])
        keep = allocate({gid: GroupScores(group.units, group.block, scores[gid])}, 0.5, Allocation())
        mask(analysis, keep)
        assert unit.points[0].error == pytest.approx(_error(model, changed, source), rel=1e-4), unit.name


def test_dense_values_give_zero_error() -> None:
    """Ratio 0 (the dense tensors fed to the suffix) reproduces the model's outputs."""
    model = to_ir(conv_model())
    samples = Samples.read(_source(model), 4)
    frontier = Frontier(GraphCut(model), [samples], None)
    for weight in find_weights(model):
        suffix = SuffixSession(frontier, {weight.name: read_weight(weight)})
        outputs = next(suffix.run({weight.name: read_weight(weight)}))
        measure = Measure.of(samples, outputs)
        assert measure.error < 1e-6 and measure.metric == 1.0  # float32 rounding only (other kernels)


def test_cache_is_reused_and_keyed_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = to_ir(conv_model())
    source = _source(model)
    settings = Settings(kinds=("unstructured",), grid=(0.5,))
    first = analyze(model, source, settings=settings, cache=tmp_path)
    assert len(list(tmp_path.glob("sensitivity-*.json"))) == 1

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured again despite the cache")

    with monkeypatch.context() as patch:
        patch.setattr(engine, "Frontier", fail)
        again = analyze(model, source, settings=settings, cache=tmp_path)
    assert again == first
    other = analyze(model, _source(model, seed=1), settings=settings, cache=tmp_path)  # other data: new entry
    assert other.key != first.key and len(list(tmp_path.glob("sensitivity-*.json"))) == 2


def test_labels_that_do_not_fit_are_refused() -> None:
    model = to_ir(conv_model())
    with pytest.raises(CalibrationError, match="10 classes"):
        analyze(model, _source(model), data=_source(model, labels=np.full(12, 10)), settings=Settings(grid=(0.5,)))


def test_top1_with_labels() -> None:
    model = to_ir(conv_model())
    calib = _source(model)
    feed = next(iter(_source(model, seed=3).batches(100)))
    labels = ort_run(model, feed)["y"].argmax(axis=1)  # the dense model is right on every sample
    table = analyze(model, calib, data=_source(model, seed=3, labels=labels), settings=Settings(grid=(0.25,)))
    assert table.metric_name == "top1" and table.dense_metric == 1.0


def test_plot_is_skipped_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = to_ir(conv_model())
    table = analyze(model, _source(model), settings=Settings(grid=(0.5,)))
    assert write_plot(table, tmp_path / "a.png") == tmp_path / "a.png"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert write_plot(table, tmp_path / "b.png") is None and not (tmp_path / "b.png").exists()
