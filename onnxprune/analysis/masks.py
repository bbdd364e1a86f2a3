"""Zero-masks of pruned weights: similarity between two models (M5) and induced structure.

A weight's mask is where it is nonzero (kept). Two pruned models of the same graph are compared
tensor by tensor (matched by initializer name and shape): Jaccard similarity (IoU) of the kept sets and
Hamming distance (fraction of positions where the masks differ), per layer and over all matched
weights, each beside what two independent random masks of the same densities would give.

"Induced structure" (Paganini & Forde): an unstructured mask may leave whole kernels, filters or input
units at zero. At density ``d`` a random mask leaves a group of ``K`` weights all zero with probability
``(1 - d)^K``; a measured fraction far above it means the pruning found structure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.weights import Weight, find_weights, read_weight

__all__ = [
    "GROUPINGS",
    "LayerSimilarity",
    "MaskSimilarity",
    "StructureRow",
    "group_zero_fraction",
    "induced_structure",
    "mask_similarity",
    "random_iou",
]

#: Groups an unstructured mask may zero whole: ``kernel`` (one k×k kernel of a Conv, [out, in] pair),
#: ``filter`` (an output channel / neuron: everything along the output axis) and ``input`` (an input
#: channel / feature: everything along the reduction axis).
GROUPINGS = ("kernel", "filter", "input")


def random_iou(density_a: float, density_b: float) -> float:
    """Expected Jaccard similarity of two independent random masks of these densities."""
    union = density_a + density_b - density_a * density_b
    return density_a * density_b / union if union > 0 else 1.0


@dataclasses.dataclass(frozen=True)
class LayerSimilarity:
    """Masks of one weight in two models: sizes of the kept sets, their overlap, and the random baseline."""

    tensor: str
    size: int
    kept_a: int
    kept_b: int
    both: int
    either: int

    @property
    def jaccard(self) -> float:
        """|A ∧ B| / |A ∨ B| of the kept weights (1 when both keep nothing)."""
        return self.both / self.either if self.either else 1.0

    @property
    def hamming(self) -> float:
        """Fraction of positions kept in one model and pruned in the other."""
        return (self.either - self.both) / self.size if self.size else 0.0

    @property
    def random_jaccard(self) -> float:
        """:attr:`jaccard` expected of two independent random masks of the same densities."""
        return random_iou(self.kept_a / max(self.size, 1), self.kept_b / max(self.size, 1))

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form with the derived figures."""
        return {
            **dataclasses.asdict(self),
            "density_a": self.kept_a / max(self.size, 1),
            "density_b": self.kept_b / max(self.size, 1),
            "jaccard": self.jaccard,
            "random_jaccard": self.random_jaccard,
            "hamming": self.hamming,
        }


@dataclasses.dataclass(frozen=True)
class MaskSimilarity:
    """Per-layer and global mask similarity; ``unmatched`` names weights found in only one model (or reshaped)."""

    layers: tuple[LayerSimilarity, ...]
    unmatched: tuple[str, ...]

    @property
    def total(self) -> LayerSimilarity:
        """All matched weights as one mask."""
        sums = [sum(getattr(layer, f) for layer in self.layers) for f in ("size", "kept_a", "kept_b", "both", "either")]
        return LayerSimilarity("(global)", *sums)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {
            "global": self.total.as_dict(),
            "layers": [layer.as_dict() for layer in self.layers],
            "unmatched": list(self.unmatched),
        }


def _weights(model: ir.Model) -> dict[str, Weight]:
    return {w.name: w for w in find_weights(model)}


def mask_similarity(a: ir.Model, b: ir.Model) -> MaskSimilarity:
    """Compare the zero-masks of the prunable weights of ``a`` and ``b`` (matched by name and shape)."""
    weights_a, weights_b = _weights(a), _weights(b)
    layers, unmatched = [], []
    for name, wa in weights_a.items():
        wb = weights_b.get(name)
        if wb is None or wb.shape != wa.shape:
            unmatched.append(name)
            continue
        kept_a, kept_b = read_weight(wa) != 0, read_weight(wb) != 0
        layers.append(
            LayerSimilarity(
                name,
                int(kept_a.size),
                int(kept_a.sum()),
                int(kept_b.sum()),
                int((kept_a & kept_b).sum()),
                int((kept_a | kept_b).sum()),
            )
        )
    unmatched += [name for name in weights_b if name not in weights_a]
    return MaskSimilarity(tuple(layers), tuple(unmatched))


def _groups(kept: np.ndarray, weight: Weight) -> Iterator[tuple[str, np.ndarray]]:
    """``(grouping, [groups, K] mask)`` for each grouping that applies to the weight."""
    moved = np.moveaxis(kept, (weight.out_axis, weight.in_axis), (0, 1))
    out, inp = moved.shape[:2]
    if moved.ndim > 2 and moved[0, 0].size > 1:
        yield "kernel", moved.reshape(out * inp, -1)
    yield "filter", moved.reshape(out, -1)
    yield "input", np.swapaxes(moved, 0, 1).reshape(inp, -1)


def group_zero_fraction(kept: np.ndarray) -> tuple[float, float]:
    """(measured fraction of all-zero rows of ``kept`` [groups, K], random expectation (1 - d)^K)."""
    if kept.size == 0:
        return 0.0, 0.0
    density = float(kept.mean())
    return float((~kept.any(axis=1)).mean()), float((1 - density) ** kept.shape[1])


@dataclasses.dataclass(frozen=True)
class StructureRow:
    """Whole groups at zero in one weight: measured fraction vs the random expectation ``(1 - d)^K``."""

    tensor: str
    grouping: str
    groups: int
    group_size: int
    density: float
    zero_fraction: float
    random_fraction: float

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return dataclasses.asdict(self)


def induced_structure(model: ir.Model) -> list[StructureRow]:
    """For every prunable weight and grouping (:data:`GROUPINGS`), the fraction of all-zero groups."""
    rows = []
    for weight in find_weights(model):
        kept = read_weight(weight) != 0
        for grouping, groups in _groups(kept, weight):
            measured, expected = group_zero_fraction(groups)
            rows.append(
                StructureRow(
                    weight.name,
                    grouping,
                    groups.shape[0],
                    groups.shape[1],
                    float(kept.mean()) if kept.size else 0.0,
                    measured,
                    expected,
                )
            )
    return rows
