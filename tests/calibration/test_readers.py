"""onnxruntime CalibrationDataReader objects wherever the Python API takes calibration data."""

from __future__ import annotations

import numpy as np
import pytest
from onnxruntime.quantization import CalibrationDataReader

from onnxprune import PassContext, Pipeline
from onnxprune.analysis.sensitivity import Settings, analyze
from onnxprune.calibration import ArraySource, ReaderSource, input_specs, open_source
from onnxprune.errors import CalibrationError
from onnxprune.passes import UnstructuredPruneConfig, UnstructuredPrunePass
from onnxprune.verify import validate
from tests import models
from tests.conftest import to_ir, weight_array


class Feeds(CalibrationDataReader):
    """A reader over a list of feeds, as users write them for onnxruntime.quantization."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.rewinds = 0
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self.rewinds += 1
        self._iter = iter(self.feeds)


def _samples(n: int = 12) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 8, 8)).astype(np.float32)


def _wanda(model: object, calibration: object) -> object:
    config = UnstructuredPruneConfig(sparsity=0.5, importance="wanda")
    Pipeline([UnstructuredPrunePass(config)], PassContext(calibration=calibration))(model)
    return model


def test_pipeline_with_a_reader_prunes_as_with_the_arrays() -> None:
    x = _samples()
    reader = Feeds([{"x": x[i : i + 1]} for i in range(len(x))])
    by_reader = _wanda(to_ir(models.conv_model()), reader)
    reference = to_ir(models.conv_model())
    by_arrays = _wanda(reference, ArraySource({"x": x}, input_specs(reference), "x"))
    for name in ("conv1_w", "conv2_w", "fc_w"):
        assert np.array_equal(weight_array(by_reader, name), weight_array(by_arrays, name)), name
    assert (weight_array(by_reader, "conv2_w") == 0).mean() == pytest.approx(0.5, abs=0.01)
    assert reader.rewinds == 2  # read once, then left rewound for its owner


def test_reader_batches_are_regrouped_and_limited() -> None:
    x = _samples(10)
    model = to_ir(models.conv_model())
    source = ReaderSource(Feeds([{"x": x[:3]}, {"x": x[3:4]}, {"x": x[4:]}]), model)
    assert source.num_samples == 10
    assert [b["x"].shape[0] for b in source.batches(4)] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in source.batches(4)]), x)
    limited = open_source(Feeds([{"x": x[i : i + 1]} for i in range(10)]), model, samples=4)
    assert limited.num_samples == 4


def test_validate_and_analyze_take_readers() -> None:
    x = _samples(6)
    model = to_ir(models.conv_model())
    result = validate(model, model.clone(), Feeds([{"x": x[i : i + 1]} for i in range(6)]), latency_runs=1)
    assert result.samples == 6 and not result.random_inputs
    table = analyze(model, Feeds([{"x": x}]), settings=Settings(kinds=("unstructured",), grid=(0.5,)))
    assert table.units and all(np.isfinite(p.error) for u in table.units for p in u.points)


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ([], r"no samples \(the first get_next\(\) returned None\)"),
        ([{"y": np.zeros((1, 3, 8, 8), np.float32)}], r"feed 0 lacks model input 'x'"),
        ([{"x": np.zeros((1, 3, 8, 8), np.float64)}], r"input 'x' has dtype float64, model expects float32"),
        ([{"x": np.zeros((1, 3, 4, 4), np.float32)}], r"input 'x' has shape"),
    ],
)
def test_bad_readers_are_one_line_errors(feeds: list, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        ReaderSource(Feeds(feeds), to_ir(models.conv_model()))


def test_non_dict_feeds_and_other_objects_are_refused() -> None:
    class Odd:
        def get_next(self) -> object:
            return [1, 2]

    with pytest.raises(CalibrationError, match=r"get_next\(\) returned list, expected a dict or None"):
        open_source(Odd(), to_ir(models.conv_model()))
    with pytest.raises(CalibrationError, match=r"must be a path or a CalibrationDataReader, got int"):
        open_source(3, to_ir(models.conv_model()))
