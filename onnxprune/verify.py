"""Validation with onnxruntime: checker, output fidelity and interleaved latency of two models."""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxprune import _ort
from onnxprune._ort import session
from onnxprune.calibration.collect import ProgressFn
from onnxprune.calibration.sources import CalibrationSource
from onnxprune.errors import ValidationError

__all__ = [
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


@dataclasses.dataclass(frozen=True)
class OutputFidelity:
    """Agreement of one output: max |diff|, mean per-sample cosine, top-1 agreement (classifiers)."""

    name: str
    max_abs_diff: float
    mean_cosine: float
    top1_agreement: float | None
    accuracy_ref: float | None = None
    accuracy_cand: float | None = None


@dataclasses.dataclass(frozen=True)
class Validation:
    """Result of :func:`validate`."""

    checker: str
    samples: int
    outputs: tuple[OutputFidelity, ...]
    latency_ref_ms: float
    latency_cand_ms: float
    latency_runs: int

    @property
    def speedup(self) -> float:
        """Reference latency / candidate latency."""
        return self.latency_ref_ms / self.latency_cand_ms if self.latency_cand_ms > 0 else float("nan")

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {**dataclasses.asdict(self), "speedup": self.speedup}


def check_model(model: ir.Model, what: str = "model") -> None:
    """Run the onnx checker; raise :class:`ValidationError` with its first line on failure."""
    try:
        if _ort.needs_file(model):
            with _ort.model_file(model, ()) as path:
                onnx.checker.check_model(str(path))
        else:
            onnx.checker.check_model(ir.to_proto(model))
    except onnx.checker.ValidationError as e:
        raise ValidationError(f"onnx checker rejects the {what}: {str(e).strip().splitlines()[0]}") from e


def run_model(sess: ort.InferenceSession, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a session and return its outputs by name."""
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feed)), strict=True))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1).astype(np.float64) if a.ndim > 1 else a.reshape(1, -1).astype(np.float64)
    b = b.reshape(a.shape).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-300)
    return np.where(both_zero, 1.0, cos)


def compare_outputs(
    ref: ort.InferenceSession,
    cand: ort.InferenceSession,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    progress: ProgressFn | None = None,
    total: int = 0,
    labels: np.ndarray | None = None,
) -> tuple[tuple[OutputFidelity, ...], int]:
    """Run both sessions on the same batches; return per-output fidelity and the sample count.

    With ``labels`` (one class per sample, in batch order), classifier-like outputs also get the
    top-1 accuracy of both models.
    """
    names = [o.name for o in ref.get_outputs()]
    cand_names = [o.name for o in cand.get_outputs()]
    if cand_names != names:
        raise ValidationError(f"outputs differ: reference has {names}, candidate has {cand_names}")
    max_diff = dict.fromkeys(names, 0.0)
    cosines: dict[str, list[np.ndarray]] = {n: [] for n in names}
    agree: dict[str, list[np.ndarray]] = {n: [] for n in names}
    correct: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in names}
    samples = 0
    for feed in batches:
        out_ref = run_model(ref, feed)
        out_cand = run_model(cand, feed)
        for name in names:
            a, b = np.asarray(out_ref[name]), np.asarray(out_cand[name])
            if a.shape != b.shape:
                raise ValidationError(f"output '{name}' has shape {b.shape}, reference {a.shape}")
            if not np.issubdtype(a.dtype, np.number) or a.size == 0:
                continue
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            max_diff[name] = max(max_diff[name], float(np.nanmax(diff)) if diff.size else 0.0)
            cosines[name].append(_cosine(a, b))
            if a.ndim == 2 and a.shape[1] > 1 and np.issubdtype(a.dtype, np.floating):
                agree[name].append(a.argmax(axis=1) == b.argmax(axis=1))
                if labels is not None:
                    truth = labels[samples : samples + a.shape[0]]
                    correct[name].append((a.argmax(axis=1) == truth, b.argmax(axis=1) == truth))
        samples += next(iter(feed.values())).shape[0] if feed else 1
        if progress is not None:
            progress(min(samples, total or samples), total or samples)
    outputs = tuple(
        OutputFidelity(
            name,
            max_diff[name],
            float(np.concatenate(cosines[name]).mean()) if cosines[name] else 1.0,
            float(np.concatenate(agree[name]).mean()) if agree[name] else None,
            float(np.concatenate([r for r, _ in correct[name]]).mean()) if correct[name] else None,
            float(np.concatenate([c for _, c in correct[name]]).mean()) if correct[name] else None,
        )
        for name in names
    )
    return outputs, samples


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
) -> Validation:
    """Check ``cand`` and compare it with ``ref`` in onnxruntime on the same inputs.

    Raises:
        ValidationError: the candidate fails the checker, cannot be loaded or run by onnxruntime,
            or its outputs differ in names or shapes.
    """
    check_model(cand, "result")
    ref_sess = _ort.session(ref, threads=threads, what="reference model")
    cand_sess = _ort.session(cand, threads=threads, what="result")
    try:
        outputs, samples = compare_outputs(
            ref_sess,
            cand_sess,
            source.batches(batch_size),
            progress=progress,
            total=source.num_samples,
            labels=getattr(source, "labels", None),
        )
    except ValidationError:
        raise
    except Exception as e:
        raise ValidationError(f"onnxruntime fails running the result: {str(e).strip().splitlines()[0]}") from e
    first = next(iter(source.batches(1)))
    ref_ms, cand_ms = measure_latency(ref_sess, cand_sess, first, runs=latency_runs)
    return Validation("passed", samples, outputs, ref_ms, cand_ms, latency_runs)


def assert_numerically_equal(
    ref: ir.Model, cand: ir.Model, feeds: Sequence[Mapping[str, np.ndarray]], *, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    """Assert that both models give the same outputs (within tolerances) in onnxruntime."""
    ref_sess, cand_sess = _ort.session(ref), _ort.session(cand)
    for feed in feeds:
        a, b = run_model(ref_sess, feed), run_model(cand_sess, feed)
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=rtol, atol=atol, err_msg=f"output '{name}'")
