"""Validation with onnxruntime: checker, output fidelity and interleaved latency of two models."""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxprune import _io, _ort
from onnxprune._ort import session
from onnxprune.calibration.collect import ProgressFn
from onnxprune.calibration.sources import CalibrationSource
from onnxprune.errors import MetricError, OnnxPruneError, ValidationError
from onnxprune.fidelity import OutputFidelity, OutputTracker, check_labels, class_count
from onnxprune.metric import MetricResult, TaskMetric

__all__ = [
    "RANDOM_NOTE",
    "Comparison",
    "OutputFidelity",
    "Validation",
    "assert_numerically_equal",
    "check_model",
    "compare_outputs",
    "measure_latency",
    "run_model",
    "session",
    "validate",
]

logger = logging.getLogger(__name__)

#: What a report says when validation ran on random inputs.
RANDOM_NOTE = "random inputs: fidelity not measured (pass --data PATH with real samples)"


@dataclasses.dataclass(frozen=True)
class Validation:
    """Result of :func:`validate` (``random_inputs``: the figures say nothing about fidelity on real data)."""

    checker: str
    samples: int
    outputs: tuple[OutputFidelity, ...]
    latency_ref_ms: float
    latency_cand_ms: float
    latency_runs: int
    random_inputs: bool = False
    metric: MetricResult | None = None

    @property
    def speedup(self) -> float:
        """Reference latency / candidate latency."""
        return self.latency_ref_ms / self.latency_cand_ms if self.latency_cand_ms > 0 else float("nan")

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (``note`` says when the inputs were random and fidelity was not measured)."""
        data = {**dataclasses.asdict(self), "speedup": self.speedup}
        data["metric"] = None if self.metric is None else self.metric.as_dict()
        if self.random_inputs:
            data["note"] = RANDOM_NOTE
        return data


def check_model(model: ir.Model, what: str = "model") -> None:
    """Run the onnx checker; raise :class:`ValidationError` with its first line on failure."""
    _io.check_model(model, what, needs_file=_ort.needs_file(model))


def run_model(sess: ort.InferenceSession, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a session and return its outputs by name."""
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feed)), strict=True))


def _run_named(sess: ort.InferenceSession, feed: Mapping[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """:func:`run_model`, its failure naming the model that failed."""
    try:
        return run_model(sess, feed)
    except Exception as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValidationError(f"onnxruntime fails running {what}: {message}") from e


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare_outputs`; the output arrays over all batches only when asked for."""

    outputs: tuple[OutputFidelity, ...]
    samples: int
    ref_outputs: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    cand_outputs: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)


def _batch_axes(sess: ort.InferenceSession) -> dict[str, int]:
    """Per output, the axis named like an input's batch axis (first dynamic dim), else 0."""
    batch = set()
    for arg in sess.get_inputs():
        first = next((d for d in arg.shape if not isinstance(d, int)), None)
        if isinstance(first, str):
            batch.add(first)
    axes = {}
    for arg in sess.get_outputs():
        shape = arg.shape if isinstance(arg.shape, list) else []
        axes[arg.name] = next((i for i, d in enumerate(shape) if isinstance(d, str) and d in batch), 0)
    return axes


def _concat(parts: list[np.ndarray], axis: int) -> np.ndarray:
    return np.concatenate(parts, axis=axis if parts[0].ndim > axis else 0) if parts[0].ndim else np.stack(parts)


def compare_outputs(
    ref: ort.InferenceSession,
    cand: ort.InferenceSession,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    progress: ProgressFn | None = None,
    total: int = 0,
    labels: np.ndarray | None = None,
    keep_outputs: bool = False,
) -> Comparison:
    """Run both sessions on the same batches; return per-output fidelity and the sample count.

    With ``labels`` (one class per sample, in batch order), the ``[N, C]`` outputs whose class axis
    the labels fit also get the top-1 accuracy of both models. ``keep_outputs`` keeps both models'
    outputs over all batches, concatenated along each output's batch axis.
    """
    names = [o.name for o in ref.get_outputs()]
    cand_names = [o.name for o in cand.get_outputs()]
    if cand_names != names:
        raise ValidationError(f"outputs differ: reference has {names}, candidate has {cand_names}")
    axes = _batch_axes(ref)
    trackers: dict[str, OutputTracker] = {}
    kept: tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]] = ({}, {})
    samples = 0
    for feed in batches:
        out_ref = _run_named(ref, feed, "the reference model")
        out_cand = _run_named(cand, feed, "the result")
        if not trackers:
            classes = {n: c for n in names if (c := class_count(np.asarray(out_ref[n]))) and out_ref[n].ndim == 2}
            scored = check_labels(labels, classes) if labels is not None else ()
            trackers = {n: OutputTracker(n, axes[n], score_labels=n in scored) for n in names}
        count = next(iter(feed.values())).shape[0] if feed else 1
        truth = labels[samples : samples + count] if labels is not None else None
        for name in names:
            a, b = np.asarray(out_ref[name]), np.asarray(out_cand[name])
            if a.shape != b.shape:
                raise ValidationError(f"output '{name}' has shape {b.shape}, reference {a.shape}")
            trackers[name].add(a, b, truth)
            if keep_outputs:
                kept[0].setdefault(name, []).append(a)
                kept[1].setdefault(name, []).append(b)
        samples += count
        if progress is not None:
            progress(min(samples, total or samples), total or samples)
    ref_out, cand_out = ({n: _concat(parts, axes[n]) for n, parts in side.items()} for side in kept)
    outputs = tuple(trackers[n].result() if n in trackers else OutputTracker(n).result() for n in names)
    return Comparison(outputs, samples, ref_out, cand_out)


def measure_latency(
    ref: ort.InferenceSession,
    cand: ort.InferenceSession,
    feed: Mapping[str, np.ndarray],
    runs: int = 30,
    warmup: int = 3,
) -> tuple[float, float]:
    """Median latency (ms) of both sessions on one feed, runs interleaved in this process."""
    feed = dict(feed)
    for _ in range(warmup):
        ref.run(None, feed)
        cand.run(None, feed)
    times_ref, times_cand = [], []
    for i in range(runs):
        order = ((ref, times_ref), (cand, times_cand)) if i % 2 == 0 else ((cand, times_cand), (ref, times_ref))
        for sess, times in order:
            start = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times_ref), 1000 * statistics.median(times_cand)


def validate(
    ref: ir.Model,
    cand: ir.Model,
    source: CalibrationSource,
    *,
    batch_size: int = 32,
    latency_runs: int = 30,
    threads: int | None = None,
    progress: ProgressFn | None = None,
    metric: TaskMetric | None = None,
    data_path: str | None = None,
) -> Validation:
    """Check ``cand`` and compare it with ``ref`` in onnxruntime on the same inputs.

    With ``metric``, the task metric is evaluated on both models' outputs over all samples of
    ``data_path`` (the file ``source`` reads).

    Raises:
        ValidationError: the candidate fails the checker, cannot be loaded or run by onnxruntime,
            or its outputs differ in names or shapes.
        CalibrationError: the data's labels do not fit the model's class outputs.
        MetricError: a metric on random inputs, or a metric that fails (see :class:`TaskMetric`).
    """
    random_inputs = bool(getattr(source, "random", False))
    if metric is not None and (random_inputs or data_path is None):
        raise MetricError(f"--metric '{metric.spec}' needs real data (--data PATH)")
    try:
        check_model(cand, "result")
    except ValidationError:
        check_model(ref, "reference model")  # a defect of the input is not the result's fault
        raise
    ref_sess = _ort.session(ref, threads=threads, what="reference model", lean=True)
    cand_sess = _ort.session(cand, threads=threads, what="result", lean=True)
    try:
        comparison = compare_outputs(
            ref_sess,
            cand_sess,
            source.batches(batch_size),
            progress=progress,
            total=source.num_samples,
            labels=getattr(source, "labels", None),
            keep_outputs=metric is not None,
        )
    except OnnxPruneError:
        raise
    except Exception as e:
        raise ValidationError(f"onnxruntime fails running the result: {str(e).strip().splitlines()[0]}") from e
    scores = None
    if metric is not None and data_path is not None:
        scores = MetricResult(
            metric.spec, metric(comparison.ref_outputs, data_path), metric(comparison.cand_outputs, data_path)
        )
    del ref_sess, cand_sess  # latency on sessions as deployed (arena, prepacked weights)
    ref_sess = _ort.session(ref, threads=threads, what="reference model")
    cand_sess = _ort.session(cand, threads=threads, what="result")
    first = next(iter(source.batches(1)))
    ref_ms, cand_ms = measure_latency(ref_sess, cand_sess, first, runs=latency_runs)
    return Validation(
        "passed", comparison.samples, comparison.outputs, ref_ms, cand_ms, latency_runs, random_inputs, scores
    )


def assert_numerically_equal(
    ref: ir.Model, cand: ir.Model, feeds: Sequence[Mapping[str, np.ndarray]], *, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    """Assert that both models give the same outputs (within tolerances) in onnxruntime."""
    ref_sess, cand_sess = _ort.session(ref), _ort.session(cand)
    for feed in feeds:
        a, b = run_model(ref_sess, feed), run_model(cand_sess, feed)
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=rtol, atol=atol, err_msg=f"output '{name}'")
