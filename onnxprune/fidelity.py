"""Fidelity of one output, candidate against reference: differences, cosine, argmax agreement, accuracy.

An output has a *class axis* when it is floating point, of rank 2 or 3, and its last axis holds more
than one value: logits ``[N, C]`` and per-position scores ``[N, T, C]`` (sequence models, CTC
recognizers). For those, argmax agreement is the figure that catches a collapsed model: a large
shared offset keeps the cosine near 1 while every prediction changes. NaN or infinite values are never
hidden: those of the reference and those of the candidate where the reference is finite are counted;
they turn max |diff| into ``nan`` (reference) or ``inf`` (candidate), the mean cosine into ``nan``,
and count as disagreement (and as a wrong prediction) at their positions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from onnxprune.errors import CalibrationError

__all__ = ["CHUNK_BYTES", "OutputFidelity", "OutputTracker", "check_labels", "class_count", "sample_cosine"]

#: Float64 bytes of the samples :meth:`OutputTracker.add` compares at once (at least one sample).
CHUNK_BYTES = 32 << 20


@dataclasses.dataclass(frozen=True)
class OutputFidelity:
    """Agreement of one output.

    ``top1_agreement``: [N, C] outputs, fraction of samples with the same argmax. ``argmax_agreement``:
    every class-axis output, fraction of positions (samples x time steps) with the same argmax.
    ``sequence_agreement``: [N, T, C] outputs, fraction of samples whose every position agrees.
    ``nonfinite_ref``: reference values that are NaN/inf; ``nonfinite_cand``: candidate values that
    are NaN/inf where the reference is finite. Either fails validation (see :mod:`onnxprune.gates`).
    """

    name: str
    max_abs_diff: float
    mean_cosine: float
    top1_agreement: float | None
    accuracy_ref: float | None = None
    accuracy_cand: float | None = None
    argmax_agreement: float | None = None
    sequence_agreement: float | None = None
    nonfinite_ref: int = 0
    nonfinite_cand: int = 0


def class_count(array: np.ndarray) -> int | None:
    """The size C of the class axis of an ``[N, C]`` or ``[N, T, C]`` float output (``None``: no class axis)."""
    if array.ndim in (2, 3) and array.shape[-1] > 1 and np.issubdtype(array.dtype, np.floating):
        return int(array.shape[-1])
    return None


def check_labels(labels: np.ndarray, classes: Mapping[str, int]) -> tuple[str, ...]:
    """The ``[N, C]`` outputs (name -> C) whose class axis the labels fit; raise when none does."""
    if not classes:
        raise CalibrationError("the data holds 'label' but the model has no [N, C] class output to score it on")
    low, high = int(labels.min()), int(labels.max())
    fit = tuple(name for name, count in classes.items() if low >= 0 and high < count)
    if not fit:
        sizes = ", ".join(f"'{name}' has {count}" for name, count in classes.items())
        raise CalibrationError(f"labels range over [{low}, {high}] but no output has that many classes ({sizes})")
    return fit


def sample_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample cosine of two ``[N, ...]`` arrays (both zero: 1)."""
    a = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)
    b = b.reshape(a.shape)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-300)
    return np.where(both_zero, 1.0, cos)


class OutputTracker:
    """Accumulates the fidelity of one output over batches (samples along ``batch_axis``)."""

    def __init__(self, name: str, batch_axis: int = 0, *, score_labels: bool = False) -> None:
        self.name = name
        self.batch_axis = batch_axis
        self.score_labels = score_labels
        self.max_diff = 0.0
        self.nonfinite_ref = self.nonfinite_cand = 0
        self.cosines: list[np.ndarray] = []
        self.agree: list[np.ndarray] = []
        self.whole: list[np.ndarray] = []
        self.rank = 0
        self.correct: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, a: np.ndarray, b: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Compare one batch of reference ``a`` and candidate ``b`` (``labels``: one class per sample).

        The batch is compared a few samples at a time (:data:`CHUNK_BYTES` of float64 per chunk), so
        the float64 copies and masks of large outputs (a language model's logits) stay small.
        """
        if not np.issubdtype(a.dtype, np.number) or a.size == 0:
            return
        classes = class_count(a)
        if a.ndim <= 1:  # one sample (a 1-D output's cosine is taken over all of it)
            self._add(a.astype(np.float64), b.astype(np.float64), labels, classes)
            return
        axis = self.batch_axis if a.ndim > self.batch_axis else 0
        a, b = np.moveaxis(a, axis, 0), np.moveaxis(b, axis, 0)
        step = max(1, CHUNK_BYTES // (8 * a[0].size))
        for i in range(0, a.shape[0], step):
            chunk = slice(i, i + step)
            truth = labels[chunk] if labels is not None else None
            self._add(a[chunk].astype(np.float64), b[chunk].astype(np.float64), truth, classes)

    def _add(self, a: np.ndarray, b: np.ndarray, labels: np.ndarray | None, classes: int | None) -> None:
        """:meth:`add` for float64 samples along axis 0."""
        finite_a, finite_b = np.isfinite(a), np.isfinite(b)
        both = finite_a & finite_b
        self.nonfinite_ref += int((~finite_a).sum())
        self.nonfinite_cand += int((finite_a & ~finite_b).sum())
        a_clean, b_clean = np.where(both, a, 0.0), np.where(both, b, 0.0)
        diff = np.abs(a_clean - b_clean)
        self.max_diff = max(self.max_diff, float(diff.max()) if diff.size else 0.0)
        cos = sample_cosine(a_clean, b_clean)
        self.cosines.append(np.where((~both).reshape(cos.shape[0], -1).any(axis=1), np.nan, cos))
        if classes is None:
            return
        self.rank = a.ndim
        ref_ok, cand_ok = finite_a.all(axis=-1), finite_b.all(axis=-1)
        same = (a_clean.argmax(axis=-1) == b_clean.argmax(axis=-1)) & ref_ok & cand_ok
        self.agree.append(same.reshape(-1))
        if a.ndim == 3:
            self.whole.append(same.all(axis=1))
        if labels is not None and self.score_labels and a.ndim == 2:
            self.correct.append(
                ((a_clean.argmax(axis=1) == labels) & ref_ok, (b_clean.argmax(axis=1) == labels) & cand_ok)
            )

    def result(self) -> OutputFidelity:
        """The accumulated figures."""
        agree = float(np.concatenate(self.agree).mean()) if self.agree else None
        max_diff = np.nan if self.nonfinite_ref else np.inf if self.nonfinite_cand else self.max_diff
        return OutputFidelity(
            self.name,
            max_diff,
            float(np.concatenate(self.cosines).mean()) if self.cosines else 1.0,
            agree if self.rank == 2 else None,
            float(np.concatenate([r for r, _ in self.correct]).mean()) if self.correct else None,
            float(np.concatenate([c for _, c in self.correct]).mean()) if self.correct else None,
            agree,
            float(np.concatenate(self.whole).mean()) if self.whole else None,
            self.nonfinite_ref,
            self.nonfinite_cand,
        )
