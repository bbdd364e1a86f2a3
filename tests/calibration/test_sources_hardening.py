"""Calibration files: only the samples needed are read, NaN/inf and bad labels are refused, shapes are checked."""

from __future__ import annotations

import logging
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from onnxprune.calibration import open_source
from onnxprune.errors import CalibrationError
from tests import models
from tests.conftest import to_ir

SAMPLE = (1, 3, 8, 8)  # one sample of the conv model's x [N, 3, 8, 8], stored as [N, 1, 3, 8, 8]


@pytest.fixture
def conv() -> object:
    return to_ir(models.conv_model())


def _write_large_npz(path: Path, samples: int, *, compress: bool) -> None:
    """An .npz whose 'x' holds ``samples`` samples (row i filled with i), written in chunks (never all in memory)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
    header["shape"] = (samples, *SAMPLE)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive, archive.open("x.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, header)
        for start in range(0, samples, 4096):
            rows = np.arange(start, min(start + 4096, samples), dtype=np.float32)
            member.write(np.broadcast_to(rows[:, None, None, None, None], (len(rows), *SAMPLE)).tobytes())


@pytest.mark.parametrize("compress", [False, True], ids=["stored", "deflated"])
def test_only_the_samples_needed_are_read_from_an_npz(tmp_path: Path, conv: object, compress: bool) -> None:
    path = tmp_path / "many.npz"
    _write_large_npz(path, 100_000, compress=compress)  # 76.8 MB of samples
    tracemalloc.start()
    try:
        source = open_source(path, conv, samples=16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, f"peak {peak} bytes to read 16 samples"
    assert source.num_samples == 16
    batch = next(iter(source.batches(16)))["x"]
    assert batch.shape == (16, 3, 8, 8)
    assert np.array_equal(batch[:, 0, 0, 0], np.arange(16, dtype=np.float32))


def test_only_the_samples_needed_are_read_from_an_npy(tmp_path: Path, conv: object) -> None:
    path = tmp_path / "many.npy"
    np.save(path, np.arange(20_000, dtype=np.float32)[:, None, None, None, None] * np.ones(SAMPLE, np.float32))
    tracemalloc.start()
    try:
        source = open_source(path, conv, samples=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert np.array_equal(next(iter(source.batches(8)))["x"][:, 0, 0, 0], np.arange(8, dtype=np.float32))


def test_a_folder_reads_only_the_files_it_needs(tmp_path: Path, conv: object) -> None:
    for i in range(3):
        np.savez(tmp_path / f"part{i}.npz", x=np.full((4, *SAMPLE), i, np.float32))
    (tmp_path / "part3.npz").write_bytes(b"not an npz: never opened for 8 samples")
    source = open_source(tmp_path, conv, samples=6)
    values = np.concatenate([b["x"][:, 0, 0, 0] for b in source.batches(4)])
    assert values.tolist() == [0, 0, 0, 0, 1, 1]


def test_arrays_that_are_not_inputs_are_not_read(
    tmp_path: Path, conv: object, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.npz"
    np.savez(path, x=np.zeros((4, *SAMPLE), np.float32), meta=np.array([{"evil": 1}], dtype=object))
    with caplog.at_level(logging.WARNING, logger="onnxprune.calibration.sources"):
        assert open_source(path, conv).num_samples == 4
    assert "meta" in caplog.text


@pytest.mark.parametrize(("value", "word"), [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_calibration_values_name_file_input_and_sample(
    tmp_path: Path, conv: object, value: float, word: str
) -> None:
    x = np.zeros((64, *SAMPLE), np.float32)
    x[37, 0, 1, 2, 3] = value  # one bad value among 12,288
    path = tmp_path / "c.npz"
    np.savez(path, x=x)
    with pytest.raises(CalibrationError, match=rf"c\.npz: input 'x' sample 37 holds {word}"):
        open_source(path, conv)
    assert open_source(path, conv, samples=37).num_samples == 37  # the samples used are all finite


def test_non_finite_values_in_a_folder_name_the_file_and_the_overall_sample(tmp_path: Path, conv: object) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((4, *SAMPLE), np.float32))
    bad = np.zeros((4, *SAMPLE), np.float32)
    bad[2, 0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "b.npz", x=bad)
    with pytest.raises(CalibrationError, match=r"b\.npz: input 'x' sample 6 holds NaN"):
        open_source(tmp_path, conv)


def test_non_finite_values_in_a_stacked_npy(tmp_path: Path, conv: object) -> None:
    x = np.zeros((5, 3, 8, 8), np.float32)  # stacked along the batch axis
    x[3, 1, 1, 1] = np.inf
    np.save(tmp_path / "c.npy", x)
    with pytest.raises(CalibrationError, match="sample 3 holds inf"):
        open_source(tmp_path / "c.npy", conv)


def test_negative_labels_are_refused(tmp_path: Path, conv: object) -> None:
    path = tmp_path / "c.npz"
    np.savez(path, x=np.zeros((4, *SAMPLE), np.float32), label=np.array([0, 1, -3, 2]))
    with pytest.raises(CalibrationError, match="'label' of sample 2 is negative"):
        open_source(path, conv)


def test_a_header_that_lies_about_its_size_is_refused(tmp_path: Path, conv: object) -> None:
    path = tmp_path / "c.npz"
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**9, *SAMPLE)}
    with zipfile.ZipFile(path, "w") as archive, archive.open("x.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, header)
        member.write(np.zeros((2, *SAMPLE), np.float32).tobytes())
    with pytest.raises(CalibrationError, match="declares"):
        open_source(path, conv, samples=4)


def test_a_truncated_npy_is_refused(tmp_path: Path, conv: object) -> None:
    path = tmp_path / "c.npy"
    np.save(path, np.zeros((8, 3, 8, 8), np.float32))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CalibrationError, match="c.npy"):
        open_source(path, conv, samples=8)


def test_unknown_input_shape_names_the_input_and_the_model_inputs(conv: object) -> None:
    with pytest.raises(CalibrationError, match=r"--input-shape 'image': the model has no such input \(inputs: x\)"):
        open_source(None, conv, input_shapes={"image": (1, 3, 8, 8)})
