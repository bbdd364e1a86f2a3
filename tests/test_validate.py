"""Validation that catches collapse: argmax agreement, sequences, NaN/inf, labels, task metrics, gates, MACs."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxprune import fidelity
from onnxprune import passes as passes_module
from onnxprune.calibration.sources import ArraySource, input_specs, open_source, sample_shapes
from onnxprune.errors import CalibrationError, FidelityError, MetricError, OptionError
from onnxprune.fidelity import OutputTracker, check_labels
from onnxprune.gates import Gate, low_agreement, missed_gates, nonfinite_outputs, parse_fail_below
from onnxprune.metric import load_metric, resolve_metric_spec
from onnxprune.passes import OnnxPrunePass, PruneResult
from onnxprune.recipe import CalibrationSpec, PassSpec, Recipe, run_recipe
from onnxprune.report import model_stats, write_json
from onnxprune.verify import LATENCY_SECONDS, RANDOM_NOTE, affordable_runs, validate
from tests.conftest import ort_run, to_ir
from tests.models.recognizers import OCR_HEIGHT, ocr_macs, ocr_recognizer, offset_classifier


def _features(n: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)


def _images(n: int = 12, width: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, OCR_HEIGHT, width)).astype(np.float32)


def _source(model: object, name: str, array: np.ndarray, **extra: np.ndarray) -> ArraySource:
    return ArraySource({name: array, **extra}, input_specs(model), "test data")


def test_collapsed_classifier_has_high_cosine_but_low_agreement() -> None:
    ref, cand = to_ir(offset_classifier()), to_ir(offset_classifier(collapsed=True))
    x = _features()
    result = validate(ref, cand, _source(ref, "x", x), latency_runs=1).as_dict()
    logits = result["outputs"][0]
    expected = np.mean(ort_run(ref, {"x": x})["logits"].argmax(1) == ort_run(cand, {"x": x})["logits"].argmax(1))
    assert logits["mean_cosine"] > 0.99
    assert logits["top1_agreement"] == logits["argmax_agreement"] == pytest.approx(expected)
    assert logits["argmax_agreement"] < 0.3 and logits["sequence_agreement"] is None
    assert low_agreement(result) and "argmax agreement" in low_agreement(result)[0]
    assert missed_gates(result, parse_fail_below("cos=0.99,agree=0.95")) == [
        f"agree {logits['argmax_agreement']:.4g} < 0.95 (output 'logits')"
    ]


def test_random_inputs_say_fidelity_is_not_measured() -> None:
    ref, cand = to_ir(offset_classifier()), to_ir(offset_classifier(collapsed=True))
    result = validate(ref, cand, open_source(None, ref, samples=4), latency_runs=1).as_dict()
    assert result["random_inputs"] is True and result["note"] == RANDOM_NOTE
    assert low_agreement(result) == []  # no verdict on random inputs


def test_sequence_outputs_agree_per_position_and_per_sequence() -> None:
    ref, cand = to_ir(ocr_recognizer()), to_ir(ocr_recognizer(collapsed=True))
    images = _images()
    a, b = (ort_run(m, {"image": images})["logits"] for m in (ref, cand))
    same = a.argmax(-1) == b.argmax(-1)
    assert a.shape == (12, 32, 6) and 0.2 < same.mean() < 0.8  # the collapsed model reads blank everywhere
    result = validate(ref, cand, _source(ref, "image", images), batch_size=5, latency_runs=1).as_dict()
    logits = result["outputs"][0]
    assert logits["mean_cosine"] > 0.99
    assert logits["argmax_agreement"] == pytest.approx(same.mean())
    assert logits["sequence_agreement"] == pytest.approx(same.all(axis=1).mean())
    assert logits["top1_agreement"] is None
    same_model = validate(ref, to_ir(ocr_recognizer()), _source(ref, "image", images), latency_runs=1)
    assert same_model.outputs[0].argmax_agreement == 1.0 and same_model.outputs[0].sequence_agreement == 1.0


def test_time_major_sequences_are_scored_per_sample() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 3, 5))  # [T, N, C]
    b = a.copy()
    b[2, 1] = -b[2, 1]  # one step of sample 1 changes its argmax
    tracker = OutputTracker("ctc", batch_axis=1)
    tracker.add(a, b)
    result = tracker.result()
    assert result.argmax_agreement == pytest.approx(20 / 21)
    assert result.sequence_agreement == pytest.approx(2 / 3)


def test_nan_outputs_are_a_failure_never_hidden(tmp_path: Path) -> None:
    proto = offset_classifier()
    proto.graph.initializer[0].float_data[:] = []
    weight = np.frombuffer(proto.graph.initializer[0].raw_data, np.float32).copy()
    weight[3] = np.nan
    proto.graph.initializer[0].raw_data = weight.tobytes()
    ref, cand = to_ir(offset_classifier()), to_ir(proto)
    result = validate(ref, cand, _source(ref, "x", _features()), latency_runs=1).as_dict()
    logits = result["outputs"][0]
    assert logits["nonfinite_cand"] > 0 and logits["nonfinite_ref"] == 0
    assert math.isinf(logits["max_abs_diff"]) and math.isnan(logits["mean_cosine"])
    assert nonfinite_outputs(result) and "NaN/inf" in nonfinite_outputs(result)[0]
    assert missed_gates(result, parse_fail_below("cos=0.5")) == ["cos nan < 0.5 (output 'logits')"]
    written = json.loads(write_json(result, tmp_path / "v.json").read_text())
    assert written["outputs"][0]["mean_cosine"] is None and written["outputs"][0]["max_abs_diff"] is None


def test_labels_must_match_samples_and_class_axis() -> None:
    ref = to_ir(offset_classifier())
    x = _features(8)
    with pytest.raises(CalibrationError, match=r"one integer per sample \(8\)"):
        _source(ref, "x", x, label=np.zeros(7, np.int64))
    with pytest.raises(CalibrationError, match="one integer per sample"):
        _source(ref, "x", x, label=np.zeros(8, np.float32))
    out_of_range = _source(ref, "x", x, label=np.full(8, 12, np.int64))
    with pytest.raises(CalibrationError, match=r"labels range over \[12, 12\].*'logits' has 10"):
        validate(ref, ref, out_of_range, latency_runs=1)
    with pytest.raises(CalibrationError, match="no \\[N, C\\] class output"):
        check_labels(np.zeros(3, np.int64), {})
    labelled = _source(ref, "x", x, label=ort_run(ref, {"x": x})["logits"].argmax(1))
    assert validate(ref, ref, labelled.limited(5), latency_runs=1).outputs[0].accuracy_ref == 1.0


def _metric_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "task_metric.py"
    path.write_text("import numpy as np\n\n\ndef score(outputs, data_path):\n" + body)
    return path


def test_task_metric_sees_all_outputs_in_order(tmp_path: Path) -> None:
    ref, cand = to_ir(offset_classifier()), to_ir(offset_classifier(collapsed=True))
    x = _features(40)
    labels = ort_run(ref, {"x": x})["logits"].argmax(1)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, label=labels)
    path = _metric_file(
        tmp_path,
        "    truth = np.load(data_path)['label']\n    return float((outputs['logits'].argmax(1) == truth).mean())\n",
    )
    metric = load_metric(f"{path}:score")
    source = open_source(data, ref)
    result = validate(ref, cand, source, batch_size=16, latency_runs=1, metric=metric, data_path=str(data))
    truth = float(np.mean(ort_run(cand, {"x": x})["logits"].argmax(1) == labels))
    assert result.metric is not None
    assert result.metric.reference == 1.0 and result.metric.candidate == pytest.approx(truth)
    assert result.as_dict()["metric"]["drop"] == pytest.approx(1.0 - truth)
    assert result.outputs[0].accuracy_cand == pytest.approx(truth)
    with pytest.raises(MetricError, match="needs real data"):
        validate(ref, cand, open_source(None, ref, samples=2), metric=metric, data_path=None)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("    raise KeyError('width')\n", "raised KeyError"),
        ("    return float('nan')\n", "returned nan; expected a finite number"),
        ("    return 'high'\n", "returned 'high'"),
        ("    return True\n", "returned True"),
    ],
)
def test_metric_that_fails_names_the_problem(tmp_path: Path, body: str, fragment: str) -> None:
    metric = load_metric(f"{_metric_file(tmp_path, body)}:score")
    with pytest.raises(MetricError, match=fragment):
        metric({"y": np.zeros(2)}, "data.npz")
    scalar = _metric_file(tmp_path, "    return np.float32(0.5)\n")
    assert load_metric(f"{scalar}:score")({}, "d") == 0.5


def test_metric_specs(tmp_path: Path) -> None:
    assert load_metric("math:fsum").function is math.fsum
    for spec, fragment in [
        ("nocolon", "expected module:function"),
        ("no_such_module_xyz:f", "cannot import no_such_module_xyz"),
        ("math:no_such_function", "has no function 'no_such_function'"),
        (f"{tmp_path / 'missing.py'}:f", "no such file"),
    ]:
        with pytest.raises(MetricError, match=fragment):
            load_metric(spec)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(MetricError, match="cannot import .*RuntimeError: boom"):
        load_metric(f"{broken}:f")
    assert resolve_metric_spec("m.py:f", tmp_path) == f"{tmp_path / 'm.py'}:f"
    assert resolve_metric_spec("pkg.mod:f", tmp_path) == "pkg.mod:f"


def test_fail_below_vocabulary() -> None:
    assert parse_fail_below("cos=0.99, agree=0.95,metric-drop=0.01") == (
        Gate("cos", 0.99),
        Gate("agree", 0.95),
        Gate("metric-drop", 0.01),
    )
    for spec, fragment in [
        ("cosine=0.9", "unknown key 'cosine'"),
        ("cos", "expected cos=NUMBER"),
        ("cos=high", "expected cos=NUMBER"),
        ("cos=nan", "expected cos=NUMBER"),
    ]:
        with pytest.raises(OptionError, match=fragment):
            parse_fail_below(spec)
    with pytest.raises(OptionError, match="no --metric"):
        parse_fail_below("metric=0.5", metric=False)
    report = {
        "outputs": [{"name": "y", "mean_cosine": 0.999, "argmax_agreement": None, "accuracy_ref": None}],
        "metric": {"spec": "m:f", "reference": 0.9, "candidate": 0.8, "drop": 0.1},
    }
    assert missed_gates(report, parse_fail_below("cos=0.99,metric-drop=0.2,metric=0.75")) == []
    assert missed_gates(report, parse_fail_below("metric-drop=0.05")) == [
        "metric-drop 0.1 > 0.05 (metric 'm:f': 0.9 -> 0.8)"
    ]
    with pytest.raises(OptionError, match="no output has a class axis"):
        missed_gates(report, parse_fail_below("agree=0.9"))
    with pytest.raises(OptionError, match="no 'label'"):
        missed_gates(report, parse_fail_below("acc-drop=0.01"))


def test_macs_use_real_widths_and_name_assumed_dims() -> None:
    model = to_ir(ocr_recognizer())
    unknown = model_stats(model)
    assert unknown.assumed_dims == ("'width' (input 'image', axis 3)",)
    assert unknown.macs < ocr_macs(64) / 10
    source = _source(model, "image", _images(width=64))
    assert sample_shapes(source) == {"image": (1, 1, OCR_HEIGHT, 64)}
    real = model_stats(model, sample_shapes(source))
    assert real.macs == ocr_macs(64) and real.assumed_dims == ()
    assert real.as_dict()["assumed_dims"] == []


@dataclasses.dataclass(frozen=True)
class _PoisonConfig:
    tensor: str = "W"


class _PoisonPass(OnnxPrunePass):
    """Writes one NaN into a weight: the result must never be written."""

    name = "poison"
    config_class = _PoisonConfig

    def call(self, model: ir.Model) -> PruneResult:
        value = model.graph.initializers[self.config.tensor]
        array = value.const_value.numpy().copy()
        array.flat[0] = np.nan
        value.const_value = ir.Tensor(array, name=value.name)
        return PruneResult(model, True, self.new_report())


def test_results_with_nan_outputs_are_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(passes_module.PASSES, "poison", _PoisonPass)
    model, data, out = tmp_path / "m.onnx", tmp_path / "d.npz", tmp_path / "o.onnx"
    onnx.save(offset_classifier(), model)
    np.savez(data, x=_features(8))
    recipe = Recipe(str(model), str(out), (PassSpec("poison"),), calibration=CalibrationSpec(str(data)))
    with pytest.raises(FidelityError, match="NaN/inf values where the reference is finite; nothing written"):
        run_recipe(recipe)
    assert not out.exists()


def test_latency_runs_of_large_models_fit_the_time_budget() -> None:
    assert affordable_runs(30, 0.01) == (30, 3)  # fast models: as asked
    for seconds in (1.0, 3.0, 10.0, 100.0):
        timed, warmup = affordable_runs(30, seconds)
        assert 3 <= timed < 30 and 1 <= warmup <= 3
        assert timed == 3 or 2 * seconds * (timed + 3 * warmup) <= LATENCY_SECONDS  # at least one per round
    assert affordable_runs(1, 100.0) == (1, 1)


def test_large_outputs_are_compared_a_few_samples_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((7, 5, 11)).astype(np.float32)
    cand = ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.5
    cand[2, 1, 3] = np.nan
    whole = OutputTracker("logits")
    whole.add(ref, cand)
    monkeypatch.setattr(fidelity, "CHUNK_BYTES", 8 * 5 * 11 * 2)  # two samples at a time
    chunked = OutputTracker("logits")
    chunked.add(ref[:4], cand[:4])
    chunked.add(ref[4:], cand[4:])
    assert len(chunked.cosines) == 4
    a, b = whole.result(), chunked.result()
    assert dataclasses.asdict(a).keys() == dataclasses.asdict(b).keys()
    for key, value in dataclasses.asdict(a).items():
        other = dataclasses.asdict(b)[key]
        if isinstance(value, float):
            np.testing.assert_allclose(other, value, rtol=1e-12, err_msg=key)  # NaN where NaN
        else:
            assert other == value, key
    assert math.isnan(a.mean_cosine) and a.nonfinite_cand == 1 and a.argmax_agreement is not None
