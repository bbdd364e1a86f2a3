"""Helpers shared by the structured-pruning benchmark sections: models, counts, pruning, timing, fidelity.

Heavy modules (numpy, onnx, onnx_ir, onnxruntime, torch) are imported inside the functions so that the
orchestrating script starts fast and ``--help`` works without them.
"""

from __future__ import annotations

import importlib
import logging
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from _common import CACHE, ROOT, loadavg, model_path, rel

logger = logging.getLogger("bench_structured")

#: the dynamo exports of tests/models/vision_zoo.py (full size, torchvision's fresh initialization): benchmark
#: name -> vision-zoo name; every Conv is bias-free (dynamo drops the all-zero folded biases)
DYNAMO = {
    "resnet18_dynamo": "resnet18",
    "mobilenetv2_dynamo": "mobilenetv2",
    "efficientnet_b0_dynamo": "efficientnet_b0",
}
#: the real-size models the efficiency target applies to (benchmark name -> label): TorchScript exports, then dynamo
NAMED = {
    "resnet18": "ResNet-18-like",
    "mobilenetv2": "MobileNetV2-like",
    "efficientnet_b0": "EfficientNet-B0-like",
    "resnet18_dynamo": "ResNet-18 dynamo",
    "mobilenetv2_dynamo": "MobileNetV2 dynamo",
    "efficientnet_b0_dynamo": "EfficientNet-B0 dynamo",
}
#: the zoo architecture that *is* the named EfficientNet-B0-like (its default size is 224)
ZOO_EFFICIENTNET = "efficientnet_b0_like"
TARGET_EFFICIENCY = 0.9
THREADS = (1, 2)


def import_zoo(wait_s: float, poll_s: float = 60.0) -> Any | None:
    """``tests.models.structured_zoo`` once it exists and has ``zoo_onnx`` (polled), else ``None``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    deadline = time.monotonic() + wait_s
    while True:
        try:
            zoo = importlib.import_module("tests.models.structured_zoo")
            if hasattr(zoo, "zoo_onnx") and hasattr(zoo, "ARCHS"):
                return zoo
            problem = "has no zoo_onnx/ARCHS yet"
        except ImportError as e:
            problem = f"cannot be imported ({e})"
        if time.monotonic() + poll_s > deadline:
            logger.error("tests/models/structured_zoo.py %s; giving up on the zoo models", problem)
            return None
        logger.info("tests/models/structured_zoo.py %s; polling again in %.0f s", problem, poll_s)
        time.sleep(poll_s)
        importlib.invalidate_caches()
        sys.modules.pop("tests.models.structured_zoo", None)


def zoo_archs(zoo: Any | None) -> tuple[str, ...]:
    """The zoo's small architectures (the EfficientNet-B0-like one is benchmarked as a named model)."""
    return tuple(a for a in zoo.ARCHS if a != ZOO_EFFICIENTNET) if zoo is not None else ()


def _export(name: str, zoo: Any | None) -> Any:
    if name in DYNAMO:
        from tests.models.vision_zoo import vision_onnx

        return vision_onnx(DYNAMO[name], exporter="dynamo", size="full", norms="fresh")
    if name in ("resnet18", "mobilenetv2"):
        from tests import models

        builder = models.resnet18_like_onnx if name == "resnet18" else models.mobilenetv2_like_onnx
        return builder(dynamo=False, opset=13, image=224)
    if zoo is None:
        raise RuntimeError(f"{name} needs tests/models/structured_zoo.py, which is not available")
    if name == "efficientnet_b0":
        return zoo.zoo_onnx(ZOO_EFFICIENTNET, dynamo=False, opset=13, image=224)
    return zoo.zoo_onnx(name.removeprefix("zoo_"), dynamo=False, opset=13)


def cache_name(name: str) -> str:
    """Cache key of a benchmark model: zoo architectures get a ``zoo_`` prefix."""
    return name if name in NAMED else f"zoo_{name}"


def load_proto(name: str, zoo: Any | None, reexport: bool = False) -> tuple[Any, Path, float | None]:
    """The exported model ``name`` (TorchScript exporter, opset 13; dynamo, opset 20), cached in ``bench/_models/``.

    ResNet-18-like and MobileNetV2-like share the sparsify benchmark's cache files (same export call).
    Returns (ModelProto, cache path, export seconds or ``None`` when the cache was used).
    """
    import onnx

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    path = CACHE / f"{name}_op20.onnx" if name in DYNAMO else model_path(cache_name(name))
    if path.is_file() and not reexport:
        logger.info("%s: using cached %s", name, rel(path))
        return onnx.load(str(path)), path, None
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    proto = _export(cache_name(name), zoo)
    export_s = time.perf_counter() - started
    onnx.save(proto, str(path.with_suffix(".tmp")))
    path.with_suffix(".tmp").replace(path)
    logger.info("%s: exported in %.1f s to %s", name, export_s, rel(path))
    return proto, path, export_s


def batch1_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Input name -> shape with every dynamic dim (the batch) set to 1."""
    from onnxprune.calibration.sources import input_specs

    return {s.name: tuple(1 if d is None else int(d) for d in s.shape) for s in input_specs(model)}


def random_inputs(model: Any, samples: int, seed: int) -> dict[str, Any]:
    """Standard-normal float inputs stacked along the batch axis (``samples`` of them)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal((samples, *shape[1:]), dtype=np.float32)
        for name, shape in batch1_shapes(model).items()
    }


def array_source(model: Any, arrays: dict[str, Any], origin: str) -> Any:
    """An onnxprune :class:`ArraySource` over ``arrays``."""
    from onnxprune.calibration.sources import ArraySource, input_specs

    return ArraySource(arrays, input_specs(model), origin)


def counts(model: Any, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """MACs (Conv/Gemm/MatMul), parameters and nodes without static shapes, at ``shapes``."""
    from onnxprune.analysis.flops import count_model
    from onnxprune.analysis.shapes import complete_shapes

    result = count_model(model, complete_shapes(model, shapes))
    return {"macs": result.macs, "params": result.params, "nodes_without_shapes": len(result.unknown)}


def deserialize(proto: Any) -> Any:
    """A fresh ``onnx_ir`` model from a ModelProto (the proto is left untouched)."""
    import onnx_ir as ir

    return ir.serde.deserialize_model(proto)


def prune(proto: Any, config: dict[str, Any], calibration: Any = None, threads: int | None = 2) -> dict[str, Any]:
    """Run :class:`ChannelPrunePass` with ``config`` on a copy of ``proto``.

    Returns ``model`` (the pruned ``ir.Model``), ``summary``, ``skipped`` (first reasons), ``seconds``;
    on an exception, ``error`` (one line) and ``traceback`` instead of a model.
    """
    from onnxprune.context import PassContext
    from onnxprune.passes import ChannelPruneConfig, ChannelPrunePass

    model = deserialize(proto)
    started = time.perf_counter()
    try:
        result = ChannelPrunePass(ChannelPruneConfig(**config), PassContext(calibration=calibration, threads=threads))(
            model
        )
    except Exception as e:  # an API problem to report, not a reason to stop the benchmark
        logger.exception("ChannelPrunePass(%s) failed", config)
        return {
            "config": config,
            "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
            "traceback": traceback.format_exc(limit=8),
            "seconds": time.perf_counter() - started,
        }
    report = result.report
    return {
        "config": config,
        "model": result.model,
        "summary": report.summary,
        "skipped": [f"{s['node']}: {s['reason']}" for s in report.skipped[:4]],
        "kept": [[int(c["units"]), int(c["kept"])] for c in report.changed if "units" in c and "kept" in c],
        "seconds": time.perf_counter() - started,
    }


def timing_session(model: Any, threads: int, spinning: bool = False) -> Any:
    """An onnxruntime CPU session for latency measurement.

    ``spinning=True`` is ``onnxprune._ort.session(model, threads=threads)`` as is. Otherwise the same
    options (``_ort.session_options``) plus ``session.intra_op.allow_spinning = 0``: with two sessions in
    one process run alternately, the idle intra-op workers of one session spin on the cores the other
    session needs, which inflates every multi-thread latency (the dense ResNet-18-like runs as slowly
    with 2 threads as with 1).
    """
    import onnx_ir as ir
    import onnxruntime as ort

    from onnxprune import _ort

    if spinning:
        return _ort.session(model, threads=threads)
    options = _ort.session_options(threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(ir.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"])


def _alone_median(model: Any, feed: dict[str, Any], threads: int, runs: int) -> float:
    """Median ms of ``runs`` runs of a fresh default session (spinning on) that is the only one alive."""
    sess = timing_session(model, threads, spinning=True)
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - started)
    del sess
    return 1000 * statistics.median(times)


def latency(
    ref: Any, cand: Any, feed: dict[str, Any], threads: int, runs: int, rounds: int, mode: str = "interleaved"
) -> dict[str, Any]:
    """Batch-1 latency of two models with ``threads`` intra-op threads, in ``rounds`` rounds.

    ``mode``:

    * ``"interleaved"`` (the benchmark's figure): both sessions (:func:`timing_session`, spinning off) live
      in this process and :func:`onnxprune.verify.measure_latency` alternates them run by run;
    * ``"interleaved-spinning"``: the same with ``onnxprune._ort.session`` as is (spinning on);
    * ``"alone-spinning"``: one default session at a time (spinning on, the other model's session not
      alive), the two models' blocks of runs alternating round by round.

    Each round has ``runs // rounds`` runs per model (so a burst of load from another process spoils one
    round, not the figure); the speedup is the median over rounds of (reference median / candidate
    median), with the spread over rounds beside it.
    """
    from onnxprune.verify import measure_latency

    load_before = loadavg()
    per_round = max(1, runs // rounds)
    ref_ms, cand_ms = [], []
    if mode == "alone-spinning":
        for i in range(rounds):
            order = ((ref, ref_ms), (cand, cand_ms)) if i % 2 == 0 else ((cand, cand_ms), (ref, ref_ms))
            for model, times in order:
                times.append(_alone_median(model, feed, threads, per_round))
    else:
        spinning = mode == "interleaved-spinning"
        ref_sess, cand_sess = timing_session(ref, threads, spinning), timing_session(cand, threads, spinning)
        for i in range(rounds):
            r, c = measure_latency(ref_sess, cand_sess, feed, runs=per_round, warmup=5 if i == 0 else 1)
            ref_ms.append(r)
            cand_ms.append(c)
    ratios = [r / c for r, c in zip(ref_ms, cand_ms, strict=True)]
    return {
        "threads": threads,
        "mode": mode,
        "runs": per_round * rounds,
        "rounds": rounds,
        "ref_ms": statistics.median(ref_ms),
        "cand_ms": statistics.median(cand_ms),
        "speedup": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "ref_ms_rounds": ref_ms,
        "cand_ms_rounds": cand_ms,
        "loadavg_before_after": [load_before, loadavg()],
    }


def latencies(ref: Any, cand: Any, feed: dict[str, Any], runs: int, rounds: int) -> dict[str, dict[str, Any]]:
    """:func:`latency` for every thread count of :data:`THREADS` (keys are the counts as strings)."""
    out = {}
    for threads in THREADS:
        out[str(threads)] = result = latency(ref, cand, feed, threads, runs, rounds)
        logger.info(
            "  %d thread(s): %.2f ms -> %.2f ms, speedup %.2fx (rounds %.2f-%.2f)",
            threads,
            result["ref_ms"],
            result["cand_ms"],
            result["speedup"],
            result["speedup_min"],
            result["speedup_max"],
        )
    return out


def fidelity(ref: Any, cand: Any, inputs: dict[str, Any], batch: int = 16) -> dict[str, float]:
    """Output agreement of ``cand`` with ``ref`` on ``inputs`` (first output, e.g. logits).

    ``rel_l2``: ||y_cand - y_ref|| / ||y_ref|| over all samples (Frobenius); ``top1_agreement``: fraction
    of samples with the same argmax; ``mean_cosine``: mean per-sample cosine similarity;
    ``ref_distinct_top1``: how many classes the reference predicts at all (1 makes the agreement void).
    """
    import numpy as np

    from onnxprune import _ort

    ref_sess, cand_sess = _ort.session(ref, threads=2), _ort.session(cand, threads=2)
    n = len(next(iter(inputs.values())))
    ys_ref, ys_cand = [], []
    for start in range(0, n, batch):
        feed = {k: v[start : start + batch] for k, v in inputs.items()}
        ys_ref.append(ref_sess.run(None, feed)[0].astype(np.float64))
        ys_cand.append(cand_sess.run(None, feed)[0].astype(np.float64))
    a, b = np.concatenate(ys_ref).reshape(n, -1), np.concatenate(ys_cand).reshape(n, -1)
    cosine = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)
    return {
        "samples": n,
        "rel_l2": float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-300)),
        "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
        "mean_cosine": float(cosine.mean()),
        "ref_distinct_top1": int(len(np.unique(a.argmax(1)))),
    }
