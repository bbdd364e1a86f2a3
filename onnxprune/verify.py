"""Validation with onnxruntime: checker, output fidelity and interleaved latency of two models."""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxprune import _io, _ort
from onnxprune._memory import release_free_memory
from onnxprune._ort import session
from onnxprune._providers import Provider
from onnxprune.calibration.collect import ProgressFn
from onnxprune.calibration.readers import CalibrationDataReader, as_source
from onnxprune.calibration.sources import CalibrationSource
from onnxprune.errors import MetricError, ModelLoadError, OnnxPruneError, ValidationError
from onnxprune.fidelity import OutputFidelity, OutputTracker, check_labels, class_count
from onnxprune.metric import MetricResult, TaskMetric

__all__ = [
    "RANDOM_NOTE",
    "Comparison",
    "RecordedOutputs",
    "OutputFidelity",
    "Validation",
    "affordable_runs",
    "assert_numerically_equal",
    "check_model",
    "compare_outputs",
    "measure_latencies",
    "measure_latency",
    "measure_latency_alternating",
    "record_outputs",
    "run_model",
    "session",
    "validate",
]

logger = logging.getLogger(__name__)

#: What a report says when validation ran on random inputs.
RANDOM_NOTE = "random inputs: fidelity not measured (pass --data PATH with real samples)"
#: Above these weight bytes (reference + result), latency is not measured on two default sessions
#: alive at once (each holds a prepacked copy of its weights, and building it reads every weight
#: besides) but on lean sessions (no arena, no prepacking), one at a time, alternately.
INTERLEAVED_LATENCY_BYTES = 256_000_000
#: Above :data:`INTERLEAVED_LATENCY_BYTES`, the timed runs (warm-up included, both models) are
#: fewer than asked where they would take longer than this, at the speed the fidelity runs showed
#: (at least one per round): a 1.2 GB decoder runs a sample in seconds, and 30 runs of each model
#: would take longer than its calibration.
LATENCY_SECONDS = 60.0


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
    latency_mode: str = "interleaved"

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


def smoke_test(model: ir.Model, source: CalibrationSource, *, origin: str, threads: int | None = None) -> None:
    """Run the input model on one sample of ``source``: a defect only a run reveals is the input's, up front.

    Raises:
        ModelLoadError: onnxruntime cannot load or run the model (the message names ``origin``).
    """
    try:
        sess = _ort.session(model, threads=threads, what="input model", lean=True)
        first = next(iter(source.batches(1)), None)
        if first is not None:
            _run_named(sess, first, "the input model on the first sample")
    except ValidationError as e:
        raise ModelLoadError(f"{origin}: {e}") from e
    finally:
        release_free_memory()


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


@dataclasses.dataclass(frozen=True)
class RecordedOutputs:
    """A model's outputs over all batches, kept so that its session can be released before the next."""

    names: tuple[str, ...]
    axes: Mapping[str, int]
    batches: tuple[Mapping[str, np.ndarray], ...]


def record_outputs(
    sess: ort.InferenceSession, batches: Iterable[Mapping[str, np.ndarray]], max_bytes: int
) -> RecordedOutputs | None:
    """Run ``sess`` on every batch and keep its outputs (``None`` once they would exceed ``max_bytes``)."""
    kept, held = [], 0
    for feed in batches:
        out = run_model(sess, feed)
        held += sum(np.asarray(a).nbytes for a in out.values())
        if held > max_bytes:
            return None
        kept.append(out)
    return RecordedOutputs(tuple(o.name for o in sess.get_outputs()), _batch_axes(sess), tuple(kept))


def _concat(parts: list[np.ndarray], axis: int) -> np.ndarray:
    return np.concatenate(parts, axis=axis if parts[0].ndim > axis else 0) if parts[0].ndim else np.stack(parts)


def compare_outputs(
    ref: ort.InferenceSession | RecordedOutputs,
    cand: ort.InferenceSession,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    progress: ProgressFn | None = None,
    total: int = 0,
    labels: np.ndarray | None = None,
    keep_outputs: bool = False,
) -> Comparison:
    """Run both sessions on the same batches; return per-output fidelity and the sample count.

    ``ref`` may be the reference's outputs recorded on the same batches (:func:`record_outputs`).

    With ``labels`` (one class per sample, in batch order), the ``[N, C]`` outputs whose class axis
    the labels fit also get the top-1 accuracy of both models. ``keep_outputs`` keeps both models'
    outputs over all batches, concatenated along each output's batch axis.
    """
    recorded = iter(ref.batches) if isinstance(ref, RecordedOutputs) else None
    names = list(ref.names) if isinstance(ref, RecordedOutputs) else [o.name for o in ref.get_outputs()]
    cand_names = [o.name for o in cand.get_outputs()]
    if cand_names != names:
        raise ValidationError(f"outputs differ: reference has {names}, candidate has {cand_names}")
    axes = ref.axes if isinstance(ref, RecordedOutputs) else _batch_axes(ref)
    trackers: dict[str, OutputTracker] = {}
    kept: tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]] = ({}, {})
    samples = 0
    for feed in batches:
        out_ref = next(recorded) if recorded is not None else _run_named(ref, feed, "the reference model")  # type: ignore[arg-type]
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
    ref_ms, cand_ms = measure_latencies((ref, cand), feed, runs, warmup)
    return ref_ms, cand_ms


def measure_latencies(
    sessions: Sequence[ort.InferenceSession],
    feed: Mapping[str, np.ndarray],
    runs: int = 30,
    warmup: int = 3,
) -> list[float]:
    """Median latency (ms) of each session on one feed, runs interleaved run by run.

    The order rotates from one run to the next, so that no session always follows the same one
    (for two sessions: reference first in even runs, candidate first in odd ones).
    """
    feed = dict(feed)
    for _ in range(warmup):
        for sess in sessions:
            sess.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    count = len(sessions)
    for i in range(runs):
        for k in range(count):
            j = (k + i) % count
            start = time.perf_counter()
            sessions[j].run(None, feed)
            times[j].append(time.perf_counter() - start)
    return [1000 * statistics.median(t) for t in times]


def measure_latency_alternating(
    ref: Callable[[], ort.InferenceSession],
    cand: Callable[[], ort.InferenceSession],
    feed: Mapping[str, np.ndarray],
    runs: int = 30,
    warmup: int = 3,
    rounds: int = 3,
) -> tuple[float, float]:
    """Median latency (ms) of two models with one session alive at a time.

    For models too large for two sessions at once: ``rounds`` rounds (reference first in even
    rounds, result first in odd ones), each creating a model's session, warming it up, timing its
    share of ``runs`` and releasing it, so that slow drift of the machine hits both alike.
    """
    feed = dict(feed)
    times: tuple[list[float], list[float]] = ([], [])
    rounds = max(1, min(rounds, runs))
    for i in range(rounds):
        share = runs // rounds + (1 if i < runs % rounds else 0)
        for side in (0, 1) if i % 2 == 0 else (1, 0):
            sess = (ref, cand)[side]()
            for _ in range(warmup):
                sess.run(None, feed)
            for _ in range(share):
                start = time.perf_counter()
                sess.run(None, feed)
                times[side].append(time.perf_counter() - start)
            del sess
            release_free_memory()
    return 1000 * statistics.median(times[0]), 1000 * statistics.median(times[1])


def affordable_runs(runs: int, seconds_per_run: float, *, warmup: int = 3, rounds: int = 3) -> tuple[int, int]:
    """``(timed runs, warm-up runs)`` per model and round for :func:`measure_latency_alternating`.

    At most ``runs`` and ``warmup``, fewer where both models' runs would take longer than
    :data:`LATENCY_SECONDS`: first the timed runs (at least one per round), then the warm-up (at least one).
    """
    rounds = max(1, min(rounds, runs))
    fits = int(LATENCY_SECONDS / max(2 * seconds_per_run, 1e-9))
    timed = max(rounds, min(runs, fits - rounds * warmup))
    if timed + rounds * warmup > fits:
        warmup = max(1, min(warmup, (fits - timed) // rounds))
    if timed < runs:
        logger.info("latency: %d timed runs per model, not %d (%.1f s per run)", timed, runs, seconds_per_run)
    return timed, warmup


def _compare(
    ref: ir.Model,
    cand: ir.Model,
    source: CalibrationSource,
    batch_size: int,
    threads: int | None,
    progress: ProgressFn | None,
    keep_outputs: bool,
    providers: Sequence[Provider] = ("CPUExecutionProvider",),
) -> Comparison:
    """Fidelity of ``cand`` against ``ref`` on every batch of ``source``.

    The reference runs first and its outputs are kept while they take less memory than its weights;
    its session is released before the result's is built, so that one model's weights are mapped at
    a time. Otherwise both sessions run side by side, batch by batch.
    """
    ref_sess = _ort.session(ref, threads=threads, what="reference model", lean=True, providers=providers)
    labels = getattr(source, "labels", None)
    try:
        recorded = record_outputs(ref_sess, source.batches(batch_size), max(_io.model_nbytes(ref), 64 << 20))
    except OnnxPruneError:
        raise
    except Exception as e:
        message = str(e).strip().splitlines()[0]
        raise ValidationError(f"onnxruntime fails running the reference model: {message}") from e
    if recorded is not None:
        del ref_sess
        release_free_memory()
    cand_sess = _ort.session(cand, threads=threads, what="result", lean=True, providers=providers)
    try:
        return compare_outputs(
            recorded or ref_sess,
            cand_sess,
            source.batches(batch_size),
            progress=progress,
            total=source.num_samples,
            labels=labels,
            keep_outputs=keep_outputs,
        )
    except OnnxPruneError:
        raise
    except Exception as e:
        raise ValidationError(f"onnxruntime fails running the result: {str(e).strip().splitlines()[0]}") from e


def validate(
    ref: ir.Model,
    cand: ir.Model,
    source: CalibrationSource | CalibrationDataReader,
    *,
    batch_size: int = 32,
    latency_runs: int = 30,
    threads: int | None = None,
    progress: ProgressFn | None = None,
    metric: TaskMetric | None = None,
    data_path: str | None = None,
    providers: Sequence[Provider] = ("CPUExecutionProvider",),
) -> Validation:
    """Check ``cand`` and compare it with ``ref`` in onnxruntime on the same inputs.

    ``source`` may also be an onnxruntime ``CalibrationDataReader``. Both run on ``providers``
    (onnxruntime's list, first choice first; see ``_providers.resolve_ep``).

    With ``metric``, the task metric is evaluated on both models' outputs over all samples of
    ``data_path`` (the file ``source`` reads). Latency is measured on default sessions (arena,
    prepacked weights), interleaved run by run; when both models' weights exceed
    :data:`INTERLEAVED_LATENCY_BYTES`, on lean sessions, one at a time
    (:func:`measure_latency_alternating`; ``latency_mode`` says which).

    Raises:
        ValidationError: the candidate fails the checker, cannot be loaded or run by onnxruntime,
            or its outputs differ in names or shapes.
        CalibrationError: the data's labels do not fit the model's class outputs.
        MetricError: a metric on random inputs, or a metric that fails (see :class:`TaskMetric`).
    """
    source = as_source(source, ref)
    random_inputs = bool(getattr(source, "random", False))
    if metric is not None and (random_inputs or data_path is None):
        raise MetricError(f"--metric '{metric.spec}' needs real data (--data PATH)")
    try:
        check_model(cand, "result")
    except ValidationError:
        check_model(ref, "reference model")  # a defect of the input is not the result's fault
        raise
    started = time.perf_counter()
    comparison = _compare(
        ref, cand, source, batch_size, threads, progress, keep_outputs=metric is not None, providers=providers
    )
    per_sample = (time.perf_counter() - started) / max(2 * comparison.samples, 1)
    release_free_memory()
    scores = None
    if metric is not None and data_path is not None:
        scores = MetricResult(
            metric.spec, metric(comparison.ref_outputs, data_path), metric(comparison.cand_outputs, data_path)
        )
    first = next(iter(source.batches(1)))
    mode = "interleaved"
    if _io.model_nbytes(ref) + _io.model_nbytes(cand) <= INTERLEAVED_LATENCY_BYTES:
        ref_sess = _ort.session(ref, threads=threads, what="reference model", providers=providers)
        cand_sess = _ort.session(cand, threads=threads, what="result", providers=providers)
        ref_ms, cand_ms = measure_latency(ref_sess, cand_sess, first, runs=latency_runs)
        del ref_sess, cand_sess
    else:
        mode = "alternating lean sessions"
        latency_runs, warmup = affordable_runs(latency_runs, per_sample)
        ref_ms, cand_ms = measure_latency_alternating(
            lambda: _ort.session(ref, threads=threads, what="reference model", lean=True, providers=providers),
            lambda: _ort.session(cand, threads=threads, what="result", lean=True, providers=providers),
            first,
            runs=latency_runs,
            warmup=warmup,
        )
    release_free_memory()
    return Validation(
        "passed", comparison.samples, comparison.outputs, ref_ms, cand_ms, latency_runs, random_inputs, scores, mode
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
