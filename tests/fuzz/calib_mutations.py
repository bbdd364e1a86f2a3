"""Mutations of a calibration ``.npz``: keys, dtypes, shapes, values, labels, pickles and bytes."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

__all__ = ["CalibEdit", "nonfinite_input", "calib_edits", "write_mutated"]

LABEL_EDITS = ("wrong_len", "float", "nan", "negative", "2d", "huge")
DTYPES = ("float16", "float64", "int32", "int64", "uint8", "bool", "complex64", "<U3", "S3", "object")


@dataclasses.dataclass(frozen=True)
class CalibEdit:
    """One edit of the arrays (or, for ``file_*`` kinds, of the written file)."""

    kind: str
    value: Any = None
    position: float = 0.0

    def __repr__(self) -> str:
        return f"{self.kind}({self.value!r}, {self.position:.3f})"


def _edit(arrays: dict[str, np.ndarray], key: str, edit: CalibEdit) -> str:
    """Apply one array edit in place; what it did."""
    x = arrays.get(key)
    kind, value = edit.kind, edit.value
    if kind == "rename" and x is not None:
        arrays[value] = arrays.pop(key)
        return f"'{key}' stored as {value!r}"
    if kind == "extra":
        arrays[value] = np.arange(8, dtype=np.float32) if value != "label" else np.arange(8) % 3
        return f"extra array {value!r}"
    if kind == "drop" and x is not None:
        del arrays[key]
        return f"'{key}' removed"
    if x is None or x.ndim < 2 or x.shape[0] == 0 or x.dtype.kind not in "fc":
        return ""  # the edits below start from a float array holding samples
    if kind == "dtype":
        arrays[key] = x.astype(value) if value != "object" else np.array(list(x), dtype=object)
        return f"'{key}' as {value}"
    if kind == "shape":
        reshaped = {
            "rank+1": x[..., None],
            "rank-1": x.reshape(x.shape[0], -1)[:, : max(1, x.shape[-1])] if x.ndim > 2 else x[:, 0],
            "wrong_dim": np.concatenate([x, x], axis=-1),
            "zero_samples": x[:0],
            "one_unbatched": x[0],
            "scalar": np.float32(1.0),
            "empty": np.zeros((0,), np.float32),
            "huge_count": np.broadcast_to(x[:1], (50_000, *x.shape[1:])),
        }[value]
        arrays[key] = np.ascontiguousarray(reshaped)
        return f"'{key}' reshaped ({value}) to {list(np.shape(reshaped))}"
    if kind == "value":
        flat = x.reshape(-1).copy()
        at = int(edit.position * (flat.size - 1))
        flat[at] = value
        arrays[key] = flat.reshape(x.shape)
        return f"'{key}' element {at} (sample {at // max(1, flat.size // x.shape[0])}) = {value}"
    if kind == "label":
        labels = {
            "wrong_len": np.arange(3),
            "float": np.linspace(0, 1, len(x)).astype(np.float32),
            "nan": np.full(len(x), np.nan),
            "negative": -np.arange(len(x)) - 1,
            "2d": np.zeros((len(x), 2), np.int64),
            "huge": np.full(len(x), 2**62, np.int64),
        }[value]
        arrays["label"] = labels
        return f"'label' {value}"
    return ""


def _bytes(edit: CalibEdit, blob: bytes) -> tuple[bytes, str]:
    kind = edit.kind
    if kind == "file_truncate":
        at = int(len(blob) * edit.position)
        return blob[:at], f"npz truncated to {at} of {len(blob)} bytes"
    if kind == "file_garbage":
        return bytes((i * 37 + edit.value) % 256 for i in range(200)), "200 bytes of garbage"
    if kind == "file_empty":
        return b"", "empty file"
    if kind == "file_npy":
        buffer = io.BytesIO()
        np.save(buffer, np.zeros((8, 16), np.float32))
        return buffer.getvalue(), "an .npy file under the .npz name"
    if kind == "file_zip_text":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            z.writestr("x.npy", "not an array")
        return buffer.getvalue(), "a zip whose x.npy is text"
    if kind == "file_flip" and blob:
        at = int((len(blob) - 1) * edit.position)
        return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1 :], f"npz byte {at} flipped"
    return blob, ""


def write_mutated(path: Path, arrays: dict[str, np.ndarray], key: str, edits: list[CalibEdit]) -> tuple[dict, list]:
    """Write ``arrays`` with the edits applied to ``path``; the final arrays and what was done."""
    arrays = dict(arrays)
    done = [_edit(arrays, key, e) for e in edits if not e.kind.startswith("file_")]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # object arrays are pickled: the tool must refuse them
    blob = buffer.getvalue()
    for edit in (e for e in edits if e.kind.startswith("file_")):
        blob, what = _bytes(edit, blob)
        done.append(what)
    path.write_bytes(blob)
    return arrays, [d for d in done if d]


def nonfinite_input(arrays: dict[str, np.ndarray], key: str) -> bool:
    """The model input ``key`` holds NaN or Inf (the data must then be refused)."""
    x = arrays.get(key)
    return x is not None and x.dtype.kind in "fc" and not bool(np.isfinite(x).all())


def calib_edits() -> st.SearchStrategy[CalibEdit]:
    """One edit of the calibration file."""
    pos = st.floats(0, 1, allow_nan=False)
    values = st.sampled_from((float("nan"), float("inf"), -float("inf"), 3.4e38, 1e-45, -0.0))
    return st.one_of(
        st.builds(CalibEdit, st.just("rename"), st.sampled_from(("X", "", "input", "x ", "label", "labels"))),
        st.builds(CalibEdit, st.just("extra"), st.sampled_from(("extra", "label", "labels", "y"))),
        st.builds(CalibEdit, st.just("drop")),
        st.builds(CalibEdit, st.just("dtype"), st.sampled_from(DTYPES)),
        st.builds(
            CalibEdit,
            st.just("shape"),
            st.sampled_from(
                ("rank+1", "rank-1", "wrong_dim", "zero_samples", "one_unbatched", "scalar", "empty", "huge_count")
            ),
        ),
        st.builds(CalibEdit, st.just("value"), values, pos),
        st.builds(CalibEdit, st.just("label"), st.sampled_from(LABEL_EDITS)),
        st.builds(CalibEdit, st.just("file_truncate"), st.none(), pos),
        st.builds(CalibEdit, st.just("file_flip"), st.none(), pos),
        st.builds(CalibEdit, st.just("file_garbage"), st.integers(0, 255)),
        st.builds(CalibEdit, st.sampled_from(("file_empty", "file_npy", "file_zip_text"))),
    )
