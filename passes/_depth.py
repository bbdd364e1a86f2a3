"""Measuring residual units for depth pruning: output error with units dropped, and angular distance.

Both run onnxruntime on a fixed list of calibration batches. The output error of a candidate is
measured on a clone of the model with its blocks bypassed, against the dense outputs: relative
MSE (``Σ‖y − y₀‖² / Σ‖y₀‖²`` over float outputs) and ``1 − cos`` (per sample, averaged). The
angular distance (ShortGPT's block influence) is ``1 − cos`` between a unit's input and output
feature vectors (per token, or per pixel over channels), from one run of the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune import _ort
from onnxprune.analysis.blocks import Unit, bypass
from onnxprune.fidelity import sample_cosine
from onnxprune.verify import run_model

__all__ = ["ERRORS", "Errors", "OutputErrors", "angular_distances"]

Feed = dict[str, np.ndarray]

#: The output errors a budget can bound (``max_error``) and rank by.
ERRORS = ("rel_mse", "cosine")


@dataclasses.dataclass(frozen=True)
class Errors:
    """Output error against the dense model: relative MSE and mean ``1 − cos`` per sample."""

    rel_mse: float
    cosine: float

    def of(self, which: str) -> float:
        """The error named ``which`` (one of :data:`ERRORS`)."""
        return self.rel_mse if which == "rel_mse" else self.cosine


def _float_outputs(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in outputs.items() if np.issubdtype(v.dtype, np.floating) and v.size}


def compare(dense: Sequence[Feed], got: Sequence[Feed]) -> Errors:
    """Relative MSE and mean ``1 − cos`` of ``got`` against ``dense`` (batch by batch, float outputs)."""
    diff = norm = 0.0
    cosines = []
    for ref_batch, got_batch in zip(dense, got, strict=True):
        for name, ref in _float_outputs(ref_batch).items():
            a, b = ref.astype(np.float64), got_batch[name].astype(np.float64)
            diff += float(np.square(a - b).sum())
            norm += float(np.square(a).sum())
            cosines.append(sample_cosine(a, b))
    cosine = 1.0 - float(np.concatenate(cosines).mean()) if cosines else 0.0
    return Errors(diff / max(norm, 1e-300), max(cosine, 0.0))


class OutputErrors:
    """The model's outputs on ``batches`` once, then the error of any set of units dropped."""

    def __init__(self, model: ir.Model, batches: Sequence[Feed], threads: int | None = None) -> None:
        self.model = model
        self.batches = batches
        self.threads = threads
        session = _ort.session(model, threads=threads, what="model")
        self.dense = [run_model(session, b) for b in batches]
        self.runs = 0
        self._known: dict[frozenset[str], Errors] = {}

    def of(self, units: Sequence[Unit]) -> Errors:
        """Output error with every block of ``units`` bypassed (on a clone; each set is measured once)."""
        key = frozenset(b.output for u in units for b in u.blocks)
        if not key:
            return Errors(0.0, 0.0)
        if key not in self._known:
            copy = self.model.clone()
            bypass(copy, [b for u in units for b in u.blocks])
            session = _ort.session(copy, threads=self.threads, what="model without the blocks", lean=True)
            self.runs += 1
            self._known[key] = compare(self.dense, [run_model(session, b) for b in self.batches])
        return self._known[key]


def _rows(array: np.ndarray) -> np.ndarray:
    """Feature vectors: the channel axis of ``[N, C, H, W]``, else the last axis."""
    a = np.moveaxis(array, 1, -1) if array.ndim == 4 else array
    return a.reshape(-1, a.shape[-1]).astype(np.float64) if a.ndim >= 2 else a.reshape(1, -1).astype(np.float64)


def _ends(model: ir.Model, unit: Unit) -> tuple[str, str]:
    """The unit's input (the first block's skip as the model has it now) and output (the last sum)."""
    first, last = unit.blocks[0], unit.blocks[-1]
    by_name = {v.name: v for node in model.graph for v in node.outputs if v.name}
    add = by_name[first.output].producer()
    assert add is not None
    skip = add.inputs[first.skip_index]
    assert skip is not None and skip.name is not None
    return skip.name, last.output


def angular_distances(
    model: ir.Model, units: Sequence[Unit], batches: Sequence[Feed], threads: int | None = None
) -> dict[str, float]:
    """Per unit label: mean ``1 − cos`` between the unit's input and output feature vectors (one run)."""
    ends = {u.label: _ends(model, u) for u in units}
    names = sorted({n for pair in ends.values() for n in pair})
    session = _ort.session(model, names, threads=threads, what="model", lean=True)
    sums = dict.fromkeys(ends, 0.0)
    counts = dict.fromkeys(ends, 0)
    for batch in batches:
        values = dict(zip(names, session.run(names, dict(batch)), strict=True))
        for label, (first, last) in ends.items():
            a, b = _rows(values[first]), _rows(values[last])
            na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
            cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-300)
            sums[label] += float((1.0 - np.where((na == 0) & (nb == 0), 1.0, cos)).sum())
            counts[label] += len(cos)
    return {label: sums[label] / max(counts[label], 1) for label in ends}
