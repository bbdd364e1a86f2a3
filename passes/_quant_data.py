"""Calibration sources as onnxruntime ``CalibrationDataReader``s, for ``onnxruntime.quantization``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from onnxprune.calibration.collect import ProgressFn
from onnxprune.calibration.sources import CalibrationSource

__all__ = ["SourceReader"]


class SourceReader(CalibrationDataReader):
    """Feeds a :class:`CalibrationSource` to onnxruntime's calibrator, batch by batch.

    Each :meth:`get_next` returns one batch of at most ``batch_size`` samples (the source decides:
    models without a dynamic batch axis get one sample at a time); ``None`` once the source is done.
    :meth:`rewind` starts over (onnxruntime reads a reader once per calibration pass).
    """

    def __init__(self, source: CalibrationSource, batch_size: int = 32, progress: ProgressFn | None = None) -> None:
        self.source = source
        self.batch_size = batch_size
        self.progress = progress
        self._batches: Iterator[dict[str, np.ndarray]] = iter(())
        self._done = 0
        self.rewind()

    def rewind(self) -> None:
        """Start again from the first sample."""
        self._batches = iter(self.source.batches(self.batch_size))
        self._done = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch of model inputs, or ``None`` when every sample was given."""
        batch = next(self._batches, None)
        if batch is None:
            return None
        self._done += next(iter(batch.values())).shape[0] if batch else 1
        if self.progress is not None:
            total = self.source.num_samples
            self.progress(min(self._done, total), total)
        return batch

    def __len__(self) -> int:
        return self.source.num_samples
