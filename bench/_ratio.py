"""Stage "ratio": ``collect_stats`` against a plain onnxruntime pass, and a cProfile breakdown.

Alternating the order every repetition, one process times: a plain pass with a warm session, the same
with a fresh session, ``collect_stats`` for the Wanda requests, and only fetching the requested
activations (a fresh calibration session, no statistics: the floor for any NumPy statistics code). The
fetch-only floor runs at the batch ``collect_stats`` itself runs (``_batch_within_budget`` shrinks the
requested batch so that one batch of activations stays under ``memory_mb``); the plain passes run at
the requested batch. Where the ratio exceeds the target, one ``collect_stats`` run is profiled.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import TARGET_RATIO, logger, model_path, rel
from _prepare import load_source


def _profile_collect(run: Callable[[], Any], out: Path) -> dict[str, Any]:
    """cProfile one ``collect_stats`` run (``run``); return where the time goes and save the listing."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    run()
    profiler.disable()
    total = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(25)
    out.write_text(text.getvalue())

    def find(pred: Callable[[tuple[str, int, str]], bool]) -> list[tuple[tuple[str, int, str], tuple]]:
        return [(k, v) for k, v in stats.stats.items() if pred(k)]  # type: ignore[attr-defined]

    update = find(lambda k: k[0].endswith(os.path.join("calibration", "stats.py")) and k[2] == "update")
    ort_run = find(lambda k: "onnxruntime" in k[2] and k[2].rstrip(">}").endswith(".run"))
    session = find(lambda k: k[0].endswith(os.path.join("onnxprune", "_ort.py")) and k[2] == "session")
    batches = find(lambda k: k[0].endswith(os.path.join("calibration", "sources.py")) and k[2] == "batches")
    breakdown: dict[str, Any] = {"profiled_total_s": total}
    breakdown["session_build_s"] = sum(v[3] for _, v in session)
    breakdown["onnxruntime_run_s"] = sum(v[2] for _, v in ort_run)
    breakdown["batches_s"] = sum(v[3] for _, v in batches)
    if update:
        key, value = update[0]
        breakdown["update_calls"] = value[1]
        breakdown["update_cumulative_s"] = value[3]
        breakdown["update_self_s"] = value[2]
        callees = {}
        for callee, data in stats.stats.items():  # type: ignore[attr-defined]
            edge = data[4].get(key)
            if edge is not None:
                callees[callee[2].strip("<>")] = round(edge[3], 4)
        breakdown["update_callees_s"] = dict(sorted(callees.items(), key=lambda kv: -kv[1])[:8])
    breakdown["other_s"] = (
        total
        - breakdown["session_build_s"]
        - breakdown["onnxruntime_run_s"]
        - breakdown.get("update_cumulative_s", 0.0)
    )
    return breakdown


def _alternate(variants: dict[str, Callable[[], Any]], reps: int, name: str) -> dict[str, list[float]]:
    """Time every variant ``reps`` times, reversing the order on odd repetitions."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(reps):
        order = list(variants.items()) if rep % 2 == 0 else list(reversed(variants.items()))
        for label, fn in order:
            started = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - started)
        logger.info("%s rep %d: %s", name, rep + 1, ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
    return times


def stage_ratio(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate collect_stats and a plain onnxruntime pass; profile collect_stats if over the target."""
    from onnxprune import _io, _ort
    from onnxprune.analysis.weights import find_weights
    from onnxprune.calibration.collect import _batch_within_budget, collect_stats
    from onnxprune.passes._scores import input_requests

    name = args.model
    model = _io.load(model_path(name))
    source = load_source(name, model, args.samples)
    requests = [r for w in find_weights(model) for r in input_requests(w)]
    values = {r.value for r in requests}
    inputs = {v.name for v in model.graph.inputs}
    fetch = [v for v in dict.fromkeys(r.value for r in requests) if v not in inputs]  # collect_stats' order
    bs, threads = args.batch_size, args.threads
    memory_mb = inspect.signature(collect_stats).parameters["memory_mb"].default
    started = time.perf_counter()
    runs = [(_ort.session(model, fetch, threads=threads), fetch)]
    collect_bs = _batch_within_budget(runs, source, bs, memory_mb << 20)
    sizing_s = time.perf_counter() - started
    logger.info(
        "%s: %d Wanda requests over %d distinct activations (%d fetched); collect_stats batch %d (requested %d, "
        "memory_mb %d)",
        name,
        len(requests),
        len(values),
        len(fetch),
        collect_bs,
        bs,
        memory_mb,
    )

    plain_sess = _ort.session(model, threads=threads)

    def plain() -> None:
        for batch in source.batches(bs):
            plain_sess.run(None, batch)

    def plain_cold() -> None:
        sess = _ort.session(model, threads=threads)
        for batch in source.batches(bs):
            sess.run(None, batch)

    def collect() -> Any:
        return collect_stats(model, source, requests, batch_size=bs, threads=threads, memory_mb=memory_mb)

    def fetch_only() -> int:
        """Fetch the requested activations at the collector's batch; return the largest batch in bytes."""
        sess = _ort.session(model, fetch, threads=threads, what="model for calibration")
        largest = 0
        for batch in source.batches(collect_bs):
            largest = max(largest, sum(a.nbytes for a in sess.run(fetch, batch)))
        return largest

    # warm-up: the plain session's first runs, and one run of each fresh-session variant
    plain()
    collect()
    fetched_mb = fetch_only() / 1e6
    variants: dict[str, Callable[[], Any]] = {
        "plain": plain,
        "collect_stats": collect,
        "plain_cold": plain_cold,
        "fetch_only": fetch_only,
    }
    times = _alternate(variants, args.reps, name)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["collect_stats"] / med["plain"]
    result: dict[str, Any] = {
        "model": name,
        "samples": source.num_samples,
        "batch_size": bs,
        "collect_batch_size": collect_bs,
        "collect_memory_mb": memory_mb,
        "batch_sizing_s": sizing_s,
        "fetched_mb_per_batch": fetched_mb,
        "threads": threads,
        "reps": args.reps,
        "requests": len(requests),
        "activations": len(values),
        "median_s": med,
        "all_s": times,
        "ratio": ratio,
        "ratio_vs_cold_plain": med["collect_stats"] / med["plain_cold"],
        "ratio_floor_fetch_only": med["fetch_only"] / med["plain"],
        "target": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
    }
    logger.info(
        "%s: collect_stats %.2f s / plain %.2f s = %.2fx (target <= %.1fx); fetch-only floor %.2fx at batch %d",
        name,
        med["collect_stats"],
        med["plain"],
        ratio,
        TARGET_RATIO,
        result["ratio_floor_fetch_only"],
        collect_bs,
    )
    profile_file = Path(args.out) / f"profile_collect_{name}.txt"
    if ratio > TARGET_RATIO or args.always_profile:
        result["profile"] = _profile_collect(collect, profile_file)
        result["profile"]["listing"] = rel(profile_file)
    else:  # a listing from an earlier run would describe code that is no longer measured
        profile_file.unlink(missing_ok=True)
    return result
