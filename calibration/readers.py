"""onnxruntime ``CalibrationDataReader`` objects as calibration sources.

A reader is anything with ``get_next() -> dict[input name, array] | None`` (and maybe ``rewind()``),
as ``onnxruntime.quantization`` takes. :class:`ReaderSource` reads it to the end once, re-batches
its feeds for the model, and rewinds it afterwards when it can, so the caller's reader is left as
it was given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import onnx_ir as ir

from onnxprune.calibration.sources import ArraySource, CalibrationSource, InputSpec, input_specs
from onnxprune.errors import CalibrationError

__all__ = ["CalibrationDataReader", "ReaderSource", "as_source", "is_reader"]

logger = logging.getLogger(__name__)


@runtime_checkable
class CalibrationDataReader(Protocol):
    """What onnxruntime's ``CalibrationDataReader`` provides: feeds one at a time, ``None`` at the end."""

    def get_next(self) -> Mapping[str, Any] | None:
        """The next feed (input name -> array), or ``None`` when the data is exhausted."""
        ...


def is_reader(data: object) -> bool:
    """Whether ``data`` is a calibration data reader (has ``get_next``) rather than a path or a source."""
    return callable(getattr(data, "get_next", None)) and not callable(getattr(data, "batches", None))


class ReaderSource(ArraySource):
    """A :class:`CalibrationDataReader` as a calibration source for ``model``.

    Each feed holds one sample (fixed-shape inputs) or a batch along the model's dynamic batch axis.
    At most ``samples`` samples are read (the reader is not read further).
    """

    def __init__(self, reader: CalibrationDataReader, model: ir.Model, *, samples: int | None = None) -> None:
        specs = input_specs(model)
        origin = f"{type(reader).__name__} (CalibrationDataReader)"
        feeds = _read_all(reader, specs, samples, origin)
        arrays = {spec.name: _join(spec, [feed[spec.name] for feed in feeds], origin) for spec in specs}
        super().__init__(arrays, specs, origin, kind="reader samples")
        if samples is not None:
            self._n = min(self._n, samples)


def _count(spec: InputSpec, array: np.ndarray) -> int:
    if spec.batch_axis is None or array.ndim <= spec.batch_axis:
        return 1
    return int(array.shape[spec.batch_axis])


def _read_all(
    reader: CalibrationDataReader, specs: list[InputSpec], samples: int | None, origin: str
) -> list[dict[str, np.ndarray]]:
    feeds: list[dict[str, np.ndarray]] = []
    have = 0
    names = [s.name for s in specs]
    try:
        while samples is None or have < samples:
            feed = reader.get_next()
            if feed is None:
                break
            if not isinstance(feed, Mapping):
                raise CalibrationError(f"{origin}: get_next() returned {type(feed).__name__}, expected a dict or None")
            missing = [n for n in names if n not in feed]
            if missing:
                raise CalibrationError(f"{origin}: feed {len(feeds)} lacks model input '{missing[0]}'")
            extra = sorted(set(feed) - set(names))
            if extra and not feeds:
                logger.warning("%s: ignoring feeds that are not model inputs: %s", origin, ", ".join(map(str, extra)))
            arrays = {n: np.asarray(feed[n]) for n in names}
            feeds.append(arrays)
            have += _count(specs[0], arrays[names[0]]) if specs else 1
    except CalibrationError:
        raise
    except Exception as e:
        raise CalibrationError(f"{origin}: get_next() failed ({type(e).__name__}: {e})") from e
    finally:
        rewind = getattr(reader, "rewind", None)
        if callable(rewind):
            rewind()
    if not feeds:
        raise CalibrationError(f"{origin}: no samples (the first get_next() returned None)")
    return feeds


def _join(spec: InputSpec, arrays: list[np.ndarray], origin: str) -> np.ndarray:
    """One input's feeds as one array: joined along the dynamic batch axis, else stacked as ``[N, *shape]``."""
    try:
        if spec.batch_axis is not None and all(a.ndim == len(spec.shape) for a in arrays):
            return np.concatenate(arrays, axis=spec.batch_axis)
        return np.stack(arrays)
    except ValueError as e:
        raise CalibrationError(f"{origin}: feeds of input '{spec.name}' do not stack ({e})") from e


def as_source(data: CalibrationSource | CalibrationDataReader, model: ir.Model) -> CalibrationSource:
    """``data`` itself when it is a source, a :class:`ReaderSource` when it is a reader."""
    if is_reader(data):
        return ReaderSource(data, model)  # type: ignore[arg-type]
    return data  # type: ignore[return-value]
