"""Latency by op type: onnxruntime's profiler over a few runs of a model, summed per executed op type.

The profile files go to an owned temporary folder, removed when the measurement ends. Op types are
the kernels onnxruntime ran (after its graph fusions: ``FusedConv``, ``FusedMatMul``, ...).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune import _ort, _scratch
from onnxprune.calibration.sources import CalibrationSource

__all__ = ["RUNS", "compare_op_latency", "op_latency", "profile_events"]

logger = logging.getLogger(__name__)

#: Profiled runs per model (after one warm-up run), fewer when a run is slow (see ``budget_s``).
RUNS = 10


def profile_events(events: list[dict[str, Any]]) -> dict[str, float]:
    """Mean milliseconds per run spent in each op type, from a profile's events (the first run left out).

    Runs are the profile's ``model_run`` events; kernel events (``*_kernel_time``) are assigned to
    the run they fall in.
    """
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    timed = runs[1:] if len(runs) > 1 else runs
    if not timed:
        return {}
    start = timed[0][0]
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if event["ts"] < start:
            continue
        op = event.get("args", {}).get("op_name", "?")
        totals[op] += event["dur"] / 1000.0
    return {op: ms / len(timed) for op, ms in sorted(totals.items(), key=lambda kv: -kv[1])}


def _profile_one(
    model: ir.Model, feeds: Mapping[str, np.ndarray], folder: Path, label: str, threads: int | None, budget_s: float
) -> dict[str, float]:
    sess = _ort.session(
        model, threads=threads, what=label, profile=str(folder / f"profile-{len(list(folder.iterdir()))}")
    )
    names = {i.name for i in sess.get_inputs()}
    feed = {k: v for k, v in feeds.items() if k in names}
    started = time.perf_counter()
    sess.run(None, feed)  # warm-up: left out of the figures
    for done in range(RUNS):
        sess.run(None, feed)
        if done >= 2 and time.perf_counter() - started > budget_s:
            break
    path = Path(sess.end_profiling())
    try:
        events = json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)
    return profile_events(events)


def op_latency(
    models: Mapping[str, ir.Model],
    feeds: Mapping[str, np.ndarray],
    *,
    threads: int | None = None,
    budget_s: float = 5.0,
) -> dict[str, dict[str, float]]:
    """For each labelled model, mean milliseconds per run by op type on ``feeds`` (one sample).

    At most :data:`RUNS` runs each (at least 3), stopping once ``budget_s`` seconds are spent.
    """
    result = {}
    with _scratch.temp_dir("profile") as folder:
        for label, model in models.items():
            result[label] = _profile_one(model, feeds, folder, label, threads, budget_s)
            logger.debug("profiled %s: %d op types", label, len(result[label]))
    return result


def compare_op_latency(
    original: ir.Model,
    result: ir.Model,
    data: CalibrationSource,
    *,
    threads: int | None = None,
    labels: tuple[str, str] = ("original", "result"),
) -> dict[str, dict[str, float]] | None:
    """:func:`op_latency` of both models on the data's first sample, for the HTML report.

    ``None``, with a warning, when onnxruntime's profiler fails: the model is already written, and
    the page says the figure is missing.
    """
    try:
        sample = next(iter(data.batches(1)))
        return op_latency(dict(zip(labels, (original, result), strict=True)), sample, threads=threads)
    except Exception as e:  # the profiler is a diagnostic: its failure must not turn a written run into an error
        logger.warning("latency by op type not measured (%s: %s)", type(e).__name__, str(e)[:200])
        return None
