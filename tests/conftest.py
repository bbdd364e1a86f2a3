"""Shared test helpers: models as onnx-ir, onnxruntime runs, file hashes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxprune import _ort
from onnxprune.verify import run_model

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "data"


def to_ir(proto: onnx.ModelProto) -> ir.Model:
    """An onnx-ir model from a proto (the proto is not shared)."""
    return ir.serde.deserialize_model(proto)


def ort_run(model: ir.Model | onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a model in onnxruntime and return its outputs by name."""
    if isinstance(model, onnx.ModelProto):
        model = to_ir(model)
    return run_model(_ort.session(model), feeds)


def sha256(path: Path) -> str:
    """Hash of a file, to prove inputs are never modified."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def data_files_of(out: Path) -> list[Path]:
    """The external-data files ``onnxprune.save`` wrote beside ``out`` (``OUT.onnx.<token>.data``)."""
    return sorted(
        p for p in Path(out).parent.iterdir() if p.name.startswith(f"{Path(out).name}.") and p.suffix == ".data"
    )


def weight_array(model: ir.Model, name: str) -> np.ndarray:
    """The values of an initializer by name."""
    return model.graph.initializers[name].const_value.numpy()


@pytest.fixture
def digits_model(tmp_path: Path) -> Path:
    """A private copy of the bundled digits CNN."""
    path = tmp_path / "digits.onnx"
    path.write_bytes((DIGITS / "digits_cnn.onnx").read_bytes())
    return path


@pytest.fixture
def digits_calib() -> Path:
    """The bundled calibration samples (128 digits)."""
    return DIGITS / "digits_calib.npz"
