"""Evaluate a model with a few tensors replaced, running only the nodes from the first one that reads them.

The model is cut before the first node that reads a replaced tensor. The dense values crossing
the cut (the *frontier*) are computed once, cut after cut in topological order (a segment model
carries them from one cut to the next), and the suffix model -- the nodes after the cut, with the
replaced tensors as graph inputs -- is built once per set of tensors and fed each candidate
value. Sessions are never rebuilt per measurement and the prefix is never rerun.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from onnxprune import _ort
from onnxprune._io import GraphCut
from onnxprune.calibration.sources import CalibrationSource
from onnxprune.errors import ValidationError

__all__ = ["Frontier", "GraphCut", "Measure", "Samples", "SuffixSession"]

logger = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]


def _session(data: bytes, threads: int | None, what: str) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(data, _ort.session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValidationError(f"onnxruntime cannot load the {what}: {message}") from e


@dataclasses.dataclass
class Samples:
    """One data set split into batches: its inputs, the dense outputs and (optionally) labels."""

    batches: list[Feed]
    dense: list[Feed]
    labels: np.ndarray | None = None

    @classmethod
    def read(cls, source: CalibrationSource, batch_size: int, labels: np.ndarray | None = None) -> Samples:
        return cls([dict(b) for b in source.batches(batch_size)], [], labels)


class Frontier:
    """The dense values crossing the current cut, for every batch of every data set; moved forward cut by cut."""

    def __init__(self, cut: GraphCut, sets: Sequence[Samples], threads: int | None) -> None:
        self.graph = cut
        self.sets = sets
        self.threads = threads
        self.position = 0
        self.values: list[list[Feed]] = [[dict(b) for b in s.batches] for s in sets]
        full = cut.submodel(0, len(cut.nodes), self.dtypes(), cut.outputs)
        sess = _session(full, threads, "model")
        for s, batches in zip(sets, self.values, strict=True):
            s.dense = [dict(zip(cut.outputs, sess.run(cut.outputs, b), strict=True)) for b in batches]

    def dtypes(self) -> dict[str, np.dtype]:
        first = self.values[0][0] if self.values and self.values[0] else {}
        return {name: array.dtype for name, array in first.items()}

    def advance(self, target: int) -> None:
        """Move the frontier to cut ``target`` (at or after the current one)."""
        if target < self.position:
            raise ValueError("the frontier only moves forward")
        if target == self.position:
            return
        wanted = self.graph.frontier(target)
        computed = [n for n in wanted if n not in self.dtypes()]
        if computed:
            data = self.graph.submodel(self.position, target, self.dtypes(), computed)
            sess = _session(data, self.threads, "model segment")
            names = {i.name for i in sess.get_inputs()}
            for batches in self.values:
                for feed in batches:
                    feed.update(
                        zip(computed, sess.run(computed, {k: v for k, v in feed.items() if k in names}), strict=True)
                    )
        for batches in self.values:
            for i, feed in enumerate(batches):
                batches[i] = {n: feed[n] for n in wanted}
        self.position = target


class SuffixSession:
    """The nodes from the first reader of ``tensors`` on, with ``tensors`` fed as inputs."""

    def __init__(self, frontier: Frontier, tensors: Mapping[str, np.ndarray]) -> None:
        graph = frontier.graph
        cut = graph.first_reader(tensors)
        frontier.advance(cut)
        self.frontier = frontier
        self.outputs = [n for n in graph.outputs if graph.producer.get(n, -1) >= cut]
        inputs = {**frontier.dtypes(), **{n: a.dtype for n, a in tensors.items()}}
        self.session = _session(graph.submodel(cut, len(graph.nodes), inputs, self.outputs), frontier.threads, "suffix")
        self.fed = {i.name for i in self.session.get_inputs()}

    def run(self, replaced: Mapping[str, np.ndarray]) -> Iterator[list[Feed]]:
        """Per data set, the model's outputs for every batch with ``replaced`` fed."""
        extra = {k: v for k, v in replaced.items() if k in self.fed}
        for s, batches in zip(self.frontier.sets, self.frontier.values, strict=True):
            results = []
            for feed, dense in zip(batches, s.dense, strict=True):
                got = self.session.run(self.outputs, {**{k: v for k, v in feed.items() if k in self.fed}, **extra})
                results.append({**dense, **dict(zip(self.outputs, got, strict=True))})
            yield results


def _classifier(outputs: Feed) -> str | None:
    """The first output that looks like class scores ``[N, classes]``."""
    return next(
        (n for n, a in outputs.items() if a.ndim == 2 and a.shape[1] > 1 and np.issubdtype(a.dtype, np.floating)), None
    )


@dataclasses.dataclass(frozen=True)
class Measure:
    """Output error of a candidate against the dense model, and its task metric."""

    error: float
    metric: float | None

    @staticmethod
    def of(samples: Samples, outputs: Sequence[Feed]) -> Measure:
        """Mean relative L2 error over samples and float outputs; top-1 (with labels) or argmax agreement."""
        errors, hits, seen = [], [], 0
        for dense, got in zip(samples.dense, outputs, strict=True):
            for name, ref in dense.items():
                if not np.issubdtype(ref.dtype, np.floating) or ref.size == 0:
                    continue
                a = ref.reshape(ref.shape[0], -1).astype(np.float64) if ref.ndim > 1 else ref[None].astype(np.float64)
                b = got[name].reshape(a.shape).astype(np.float64)
                errors.append(np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(a, axis=1), 1e-12))
            name = _classifier(dense)
            if name is not None:
                pred = got[name].argmax(axis=1)
                truth = (
                    dense[name].argmax(axis=1) if samples.labels is None else samples.labels[seen : seen + len(pred)]
                )
                hits.append(pred == truth)
                seen += len(pred)
        error = float(np.concatenate(errors).mean()) if errors else 0.0
        return Measure(error, float(np.concatenate(hits).mean()) if hits else None)
