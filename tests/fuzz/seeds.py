"""The valid inputs the fuzzers start from: tiny models built in code, with their calibration data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from tests.models.handbuilt import conv_model, mlp_model

__all__ = ["SEEDS", "SeedFiles", "make_external", "seed_model", "write_calibration", "write_model"]

#: base model name -> (builder, input name, per-sample input shape)
SEEDS = {
    "cnn": (conv_model, "x", (3, 8, 8)),  # Conv+Relu+Conv+GlobalAveragePool+Flatten+Gemm
    "mlp": (mlp_model, "x", (16,)),  # MatMul+Add+Relu+Gemm
    "mlp_ext": (mlp_model, "x", (16,)),  # the MLP with every weight in an external data file
}

#: the external data file of ``mlp_ext`` (beside the model)
DATA_NAME = "weights.data"
SAMPLES = 8


@dataclasses.dataclass(frozen=True)
class SeedFiles:
    """The files of one seed written into a folder."""

    model: Path
    calib: Path
    input_name: str


def seed_model(name: str) -> onnx.ModelProto:
    """A fresh copy of the base model ``name`` (external data not yet split off)."""
    return SEEDS[name][0]()


def make_external(model: onnx.ModelProto, folder: Path) -> None:
    """Move every initializer's data into ``folder/weights.data`` (offsets 16-byte aligned)."""
    blob = bytearray()
    for tensor in model.graph.initializer:
        raw = numpy_helper.to_array(tensor).tobytes()
        blob.extend(b"\0" * (-len(blob) % 16))
        offset = len(blob)
        blob.extend(raw)
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", DATA_NAME), ("offset", str(offset)), ("length", str(len(raw)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    (folder / DATA_NAME).write_bytes(bytes(blob))


def write_model(model: onnx.ModelProto, path: Path) -> None:
    """Serialize without touching external data (the proto's fields are written as they are)."""
    path.write_bytes(model.SerializeToString())


def write_calibration(name: str, path: Path, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a clean calibration ``.npz`` for the seed model and return its arrays."""
    _, input_name, shape = SEEDS[name]
    arrays = {input_name: np.random.default_rng(seed).standard_normal((SAMPLES, *shape)).astype(np.float32)}
    np.savez(path, **arrays)
    return arrays
