"""Benchmark the sparsify passes on torch-exported ResNet-18-like, MobileNetV2-like and BERT-like models.

For every model (TorchScript exporter, ``dynamo=False``, opset 13; cached in ``bench/_models/``) and
128 random calibration samples (an :class:`ArraySource`), this measures:

1. Per configuration (magnitude 50% layer-wise, Wanda 50% layer-wise, 2:4 magnitude), each in a fresh
   subprocess: pipeline wall time (statistics collection + pruning), validation wall time (measured
   separately), and peak RSS from ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (absolute, and the
   growth over the RSS high-water mark reached before the pipeline started).
2. In one process, alternating the order every repetition: ``collect_stats`` for the Wanda requests
   against a plain onnxruntime pass (``onnxprune._ort.session(model)``, same threads, same batches);
   also the cost of only fetching the activations (a floor for any NumPy statistics code) and
   ``collect_stats`` with a faster scratch ``ChannelStats.update`` (patched in for the run only).
3. Where the ratio exceeds the target: a cProfile breakdown of ``collect_stats``, a statement-level
   timing of the current ``ChannelStats.update`` and a micro-benchmark of the scratch replacement on
   one batch of real activations.

The orchestrating process imports nothing but the standard library: on Linux a child started with
exec inherits its parent's RSS high-water mark in ``ru_maxrss``, so a heavy parent would inflate
every per-configuration figure. Each child also records ``VmHWM`` from ``/proc/self/status``.

Usage: python bench/bench_sparsify.py --out bench/results [--models resnet18,mobilenetv2,bert] [--samples 128]

Exported models and calibration arrays are cached in ``bench/_models/`` (delete it to re-export). Writes
``sparsify.json``, ``sparsify.md`` and, for models over the ratio target, ``profile_collect_<model>.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench_sparsify")

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "_models"
MODELS = ("resnet18", "mobilenetv2", "bert")
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "magnitude-50%": ("unstructured", {"sparsity": 0.5, "importance": "magnitude", "scope": "layer"}),
    "wanda-50%": ("unstructured", {"sparsity": 0.5, "importance": "wanda", "scope": "layer"}),
    "2:4-magnitude": ("nm", {"n": 2, "m": 4, "importance": "magnitude"}),
}
TARGET_RATIO = 1.5
SEED = 0


# --------------------------------------------------------------------------- #
# shared helpers (standard library only)
# --------------------------------------------------------------------------- #


def _setup_logging(prefix: str) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {prefix} %(name)s %(levelname)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _maxrss_mb() -> float:
    """``ru_maxrss`` of this process in MB (Linux reports KiB, macOS bytes)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / 2**20 if sys.platform == "darwin" else value / 1024


def _vmhwm_mb() -> float | None:
    """``VmHWM`` (this process's own RSS high-water mark) in MB, where /proc exists."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rel(path: Path) -> str:
    """``path`` relative to the repository root where it lies inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def _model_path(name: str) -> Path:
    return CACHE / f"{name}_ts_op13.onnx"


def _calib_path(name: str, samples: int) -> Path:
    return CACHE / f"{name}_calib_{samples}_seed{SEED}.npz"


def _write_json(data: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _child(stage: str, args: argparse.Namespace, extra: Sequence[str], out: Path) -> dict[str, Any]:
    """Run one stage of this script in a fresh interpreter and return the JSON it wrote."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--stage",
        stage,
        "--samples",
        str(args.samples),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
        "--reps",
        str(args.reps),
        "--out",
        str(args.out),
        "--result",
        str(out),
        *(["--always-profile"] if args.always_profile else []),
        *extra,
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    logger.info("stage %s %s finished in %.1f s", stage, " ".join(extra), time.perf_counter() - started)
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- #
# stage "prepare": export models (torch) and write calibration data
# --------------------------------------------------------------------------- #


def _export(name: str) -> Any:
    sys.path.insert(0, str(ROOT))
    from tests import models

    if name == "resnet18":
        return models.resnet18_like_onnx(dynamo=False, opset=13, image=224)
    if name == "mobilenetv2":
        return models.mobilenetv2_like_onnx(dynamo=False, opset=13, image=224)
    if name == "bert":
        return models.bert_like_onnx(dynamo=False, opset=13, hidden=256, layers=4, seq=128)
    raise ValueError(f"unknown model {name!r}")


def stage_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Export (or reuse) the model, write (or reuse) its calibration arrays, describe both."""
    import numpy as np
    import onnx

    from onnxprune import _io
    from onnxprune.analysis.weights import find_weights
    from onnxprune.calibration.sources import input_specs

    name = args.model
    CACHE.mkdir(parents=True, exist_ok=True)
    path = _model_path(name)
    export_s = None
    if path.is_file():
        logger.info("%s: using cached %s", name, _rel(path))
    else:
        started = time.perf_counter()
        proto = _export(name)
        export_s = time.perf_counter() - started
        onnx.save(proto, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)
        logger.info("%s: exported in %.1f s to %s", name, export_s, _rel(path))
    model = _io.load(path)
    specs = input_specs(model)
    calib = _calib_path(name, args.samples)
    if not calib.is_file():
        rng = np.random.default_rng(SEED)
        arrays = {}
        for spec in specs:
            shape = (args.samples, *(d for d in spec.shape if d is not None))  # stacked along the batch axis
            if np.issubdtype(spec.dtype, np.floating):
                arrays[spec.name] = rng.standard_normal(shape, dtype=np.float32).astype(spec.dtype)
            else:  # token ids: uniform over the embedding table the input indexes
                vocab = _vocab(model, spec.name)
                arrays[spec.name] = rng.integers(0, vocab, size=shape).astype(spec.dtype)
        with open(calib.with_suffix(".tmp"), "wb") as f:
            np.savez(f, **arrays)
        calib.with_suffix(".tmp").replace(calib)
        logger.info("%s: wrote %d calibration samples to %s", name, args.samples, _rel(calib))
    params = sum(
        int(np.prod(v.const_value.shape, dtype=np.int64))
        for g in model.graphs()
        for v in g.initializers.values()
        if v.const_value is not None and v.const_value.dtype.is_floating_point()
    )
    weights = find_weights(model)
    opset = model.opset_imports.get("", None)
    return {
        "model": name,
        "file": _rel(path),
        "calibration_file": _rel(calib),
        "export_s": export_s,
        "opset": opset,
        "inputs": {
            s.name: {"dtype": str(s.dtype), "shape": [d if d is not None else "N" for d in s.shape]} for s in specs
        },
        "params": params,
        "prunable_tensors": len(weights),
        "prunable_params": sum(w.size for w in weights),
        "nodes": sum(1 for _ in model.graph),
    }


def _vocab(model: Any, input_name: str) -> int:
    """Row count of the embedding table a Gather indexes with ``input_name`` (else 1000)."""
    for node in model.graph:
        if node.op_type == "Gather" and len(node.inputs) > 1 and node.inputs[1] is not None:
            table = node.inputs[0]
            if node.inputs[1].name == input_name and table is not None and table.const_value is not None:
                return int(table.const_value.shape[0])
    return 1000


def _source(name: str, model: Any, samples: int) -> Any:
    import numpy as np

    from onnxprune.calibration.sources import ArraySource, input_specs

    with np.load(_calib_path(name, samples), allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return ArraySource(arrays, input_specs(model), f"{name} random calibration ({samples} samples)")


# --------------------------------------------------------------------------- #
# stage "config": one pruning configuration, alone in its process
# --------------------------------------------------------------------------- #


def stage_config(args: argparse.Namespace) -> dict[str, Any]:
    """Mirror :func:`onnxprune.recipe.run_recipe` step by step, timing pipeline and validation apart."""
    rss_start = _maxrss_mb()
    from onnxprune import _io
    from onnxprune.context import PassContext
    from onnxprune.pipeline import Pipeline
    from onnxprune.recipe import PassSpec, build_pass
    from onnxprune.verify import validate

    name, config = args.model, args.config
    pass_name, pass_config = CONFIGS[config]
    rss_imports = _maxrss_mb()
    started = time.perf_counter()
    model = _io.load(_model_path(name))
    reference = _io.load(_model_path(name))
    source = _source(name, model, args.samples)
    load_s = time.perf_counter() - started
    context = PassContext(calibration=source, batch_size=args.batch_size, threads=args.threads)
    passes = [build_pass(PassSpec(pass_name, pass_config), context)]
    rss_before = _maxrss_mb()
    hwm_before = _vmhwm_mb()

    started = time.perf_counter()
    result = Pipeline(passes, context)(model)
    pipeline_s = time.perf_counter() - started
    rss_pipeline = _maxrss_mb()
    hwm_pipeline = _vmhwm_mb()

    started = time.perf_counter()
    validation = validate(
        reference, model, source, batch_size=args.batch_size, latency_runs=30, threads=args.threads
    ).as_dict()
    validate_s = time.perf_counter() - started
    rss_validation = _maxrss_mb()
    report = result.reports[0]
    logger.info(
        "%s %s: pipeline %.2f s, validation %.2f s, peak RSS %.0f MB (+%.0f MB over %.0f MB before the pipeline)",
        name,
        config,
        pipeline_s,
        validate_s,
        rss_pipeline,
        rss_pipeline - rss_before,
        rss_before,
    )
    return {
        "model": name,
        "config": config,
        "pass": pass_name,
        "pass_config": pass_config,
        "load_s": load_s,
        "pipeline_s": pipeline_s,
        "pass_seconds": report.seconds,
        "validate_s": validate_s,
        "achieved_sparsity": report.summary.get("achieved_sparsity"),
        "pruned_tensors": report.summary.get("pruned_tensors"),
        "skipped_tensors": report.summary.get("skipped_tensors"),
        "validation": {
            "outputs": validation["outputs"],
            "latency_ref_ms": validation["latency_ref_ms"],
            "latency_cand_ms": validation["latency_cand_ms"],
        },
        "memory_mb": {
            "maxrss_at_start": rss_start,
            "maxrss_after_imports": rss_imports,
            "maxrss_before_pipeline": rss_before,
            "maxrss_after_pipeline": rss_pipeline,
            "pipeline_growth": rss_pipeline - rss_before,
            "maxrss_after_validation": rss_validation,
            "vmhwm_before_pipeline": hwm_before,
            "vmhwm_after_pipeline": hwm_pipeline,
        },
    }


# --------------------------------------------------------------------------- #
# stage "ratio": collect_stats vs a plain onnxruntime pass, profiling, scratch update
# --------------------------------------------------------------------------- #


def _fast_stats_class() -> type:
    """A ``ChannelStats`` whose ``update`` reduces in the array's own layout (the proposal).

    ``x`` ([..., C, ...], C-contiguous) is viewed without copying as ``[outer, C, inner]``. When
    ``inner > 1`` (NCHW activations) every statistic is a reduction over the contiguous last axis in
    float32 (pairwise ``add.reduce``, BLAS-style ``vecdot``), giving ``[outer, C]`` partial sums that
    are then added in float64; when ``inner == 1`` (channels last: Gemm/MatMul inputs) the
    reductions run over axis 0 of ``[outer, C]`` in float32 and are added to the float64 totals
    once per batch. No transposed copy and no float64 copy of the batch are made.
    """
    import numpy as np

    from onnxprune.calibration.stats import ChannelStats

    vecdot = getattr(np, "vecdot", None)  # NumPy >= 2.0

    class FastChannelStats(ChannelStats):
        def update(self, x: np.ndarray) -> None:
            axis = self.axis % x.ndim
            if x.dtype != np.float32 and x.dtype != np.float64:
                x = x.astype(np.float32)
            x = np.ascontiguousarray(x)
            channels = x.shape[axis]
            outer = int(np.prod(x.shape[:axis], dtype=np.int64))
            inner = int(np.prod(x.shape[axis + 1 :], dtype=np.int64))
            self.count += outer * inner
            if inner == 1:
                rows = x.reshape(outer, channels)
                self.sum_abs += np.add.reduce(np.abs(rows), axis=0)
                self.sum_sq += np.einsum("ij,ij->j", rows, rows)
                self.nonzero += np.count_nonzero(rows, axis=0)
            else:
                cube = x.reshape(outer, channels, inner)
                squares = vecdot(cube, cube) if vecdot is not None else np.einsum("ijk,ijk->ij", cube, cube)
                self.sum_abs += np.add.reduce(np.abs(cube), axis=2).sum(axis=0, dtype=np.float64)
                self.sum_sq += squares.sum(axis=0, dtype=np.float64)
                self.nonzero += np.count_nonzero(cube, axis=2).sum(axis=0)

    return FastChannelStats


def _timed_update_current(stats: Any, x: Any, times: dict[str, float]) -> None:
    """Statement-by-statement copy of the current ``ChannelStats.update``, timing each statement."""
    import numpy as np

    t0 = time.perf_counter()
    axis = stats.axis % x.ndim
    moved = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
    if moved.dtype != np.float32 and moved.dtype != np.float64:
        moved = moved.astype(np.float32)
    t1 = time.perf_counter()
    stats.count += moved.shape[0]
    stats.sum_abs += np.abs(moved).sum(axis=0, dtype=np.float64)
    t2 = time.perf_counter()
    stats.sum_sq += np.einsum("ij,ij->j", moved, moved, dtype=np.float64)
    t3 = time.perf_counter()
    stats.nonzero += np.count_nonzero(moved, axis=0)
    t4 = time.perf_counter()
    for key, dt in (
        ("moveaxis+reshape copy", t1 - t0),
        ("abs + sum(axis=0, float64)", t2 - t1),
        ("einsum ij,ij->j dtype=float64", t3 - t2),
        ("count_nonzero(axis=0)", t4 - t3),
    ):
        times[key] = times.get(key, 0.0) + dt


def _max_rel_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    worst = {"sum_sq": 0.0, "sum_abs": 0.0}
    exact = True
    for key, ref in a.items():
        other = b[key]
        for field in worst:
            x, y = getattr(ref, field), getattr(other, field)
            rel = np.abs(x - y) / np.maximum(np.abs(x), 1e-30)
            worst[field] = max(worst[field], float(rel.max(initial=0.0)))
        exact &= bool(np.array_equal(ref.nonzero, other.nonzero)) and ref.count == other.count
    return {
        "max_rel_diff_sum_sq": worst["sum_sq"],
        "max_rel_diff_sum_abs": worst["sum_abs"],
        "nonzero_and_count_equal": exact,
    }


def _profile_collect(model: Any, source: Any, requests: Any, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """cProfile one ``collect_stats`` run; return where the time goes and save the listing."""
    import cProfile
    import io
    import pstats

    from onnxprune.calibration.collect import collect_stats

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    collect_stats(model, source, requests, batch_size=args.batch_size, threads=args.threads)
    profiler.disable()
    total = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(25)
    out.write_text(text.getvalue())

    def find(pred: Callable[[tuple[str, int, str]], bool]) -> list[tuple[tuple[str, int, str], tuple]]:
        return [(k, v) for k, v in stats.stats.items() if pred(k)]  # type: ignore[attr-defined]

    update = find(lambda k: k[0].endswith(os.path.join("calibration", "stats.py")) and k[2] == "update")
    run = find(lambda k: "onnxruntime" in k[2] and k[2].rstrip(">}").endswith(".run"))
    session = find(lambda k: k[0].endswith(os.path.join("onnxprune", "_ort.py")) and k[2] == "session")
    batches = find(lambda k: k[0].endswith(os.path.join("calibration", "sources.py")) and k[2] == "batches")
    breakdown: dict[str, Any] = {"profiled_total_s": total}
    breakdown["session_build_s"] = sum(v[3] for _, v in session)
    breakdown["onnxruntime_run_s"] = sum(v[2] for _, v in run)
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


def _microbench(model: Any, source: Any, requests: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Time the current ``update`` (per statement) and the scratch one on one batch of real activations."""
    from concurrent.futures import ThreadPoolExecutor

    from onnxprune import _ort
    from onnxprune.calibration.stats import ChannelStats

    merged: dict[str, Any] = {}
    for request in requests:
        merged.setdefault(request.value, request)
    inputs = {v.name for v in model.graph.inputs}
    fetch = [n for n in merged if n not in inputs]
    sess = _ort.session(model, fetch, threads=args.threads)
    batch = next(iter(source.batches(args.batch_size)))
    values = dict(zip(fetch, sess.run(fetch, batch), strict=True))
    values.update({k: v for k, v in batch.items() if k in merged})
    del sess
    fast_cls = _fast_stats_class()

    def run_all(cls: type) -> dict[str, Any]:
        out = {}
        for key, x in values.items():
            entry = out[key] = cls(merged[key].axis, x.shape[merged[key].axis])
            entry.update(x)
        return out

    pool = ThreadPoolExecutor(args.threads)

    def run_threaded() -> None:
        def one(item: tuple[str, Any]) -> None:
            key, x = item
            fast_cls(merged[key].axis, x.shape[merged[key].axis]).update(x)

        list(pool.map(one, values.items()))

    variants = {
        "current": lambda: run_all(ChannelStats),
        "scratch": lambda: run_all(fast_cls),
        f"scratch_{args.threads}_threads": run_threaded,
    }
    for fn in variants.values():  # warm-up (page faults of first use)
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    lines: dict[str, float] = {}
    for rep in range(args.reps):
        for label, fn in variants.items() if rep % 2 == 0 else reversed(list(variants.items())):
            started = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - started)
        for key, x in values.items():
            _timed_update_current(ChannelStats(merged[key].axis, x.shape[merged[key].axis]), x, lines)
    pool.shutdown()
    accuracy = _max_rel_diff(run_all(ChannelStats), run_all(fast_cls))
    nbytes = sum(v.nbytes for v in values.values())
    shapes = {}
    for x in values.values():
        shapes[str(list(x.shape))] = shapes.get(str(list(x.shape)), 0) + 1
    return {
        "batch_size": args.batch_size,
        "values": len(values),
        "activation_mb_per_batch": nbytes / 1e6,
        "update_s_per_batch_median": {k: statistics.median(v) for k, v in times.items()},
        "update_s_per_batch_all": times,
        "current_update_statements_s_per_batch": {k: v / args.reps for k, v in lines.items()},
        "accuracy_vs_current": accuracy,
        "largest_shapes": dict(sorted(shapes.items(), key=lambda kv: -_numel(kv[0]))[:4]),
    }


def _numel(shape: str) -> int:
    """Element count of a ``[d0, d1, ...]`` string."""
    size = 1
    for d in json.loads(shape):
        size *= int(d)
    return size


def _patched_collect(fast_cls: type) -> Callable[..., Any]:
    """``collect_stats`` with ``ChannelStats`` replaced by ``fast_cls`` for the duration of one call."""
    import onnxprune.calibration.collect as collect_module

    def run(*a: Any, **k: Any) -> Any:
        original = collect_module.ChannelStats
        collect_module.ChannelStats = fast_cls
        try:
            return collect_module.collect_stats(*a, **k)
        finally:
            collect_module.ChannelStats = original

    return run


def stage_ratio(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate collect_stats and a plain onnxruntime pass; explain and improve the ratio if needed."""
    from onnxprune import _io, _ort
    from onnxprune.analysis.weights import find_weights
    from onnxprune.calibration.collect import collect_stats
    from onnxprune.passes._scores import input_requests

    name = args.model
    model = _io.load(_model_path(name))
    source = _source(name, model, args.samples)
    requests = [r for w in find_weights(model) for r in input_requests(w)]
    values = {r.value for r in requests}
    inputs = {v.name for v in model.graph.inputs}
    fetch = [v for v in dict.fromkeys(r.value for r in requests) if v not in inputs]
    bs, threads = args.batch_size, args.threads
    logger.info(
        "%s: %d Wanda requests over %d distinct activations (%d fetched)", name, len(requests), len(values), len(fetch)
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
        return collect_stats(model, source, requests, batch_size=bs, threads=threads)

    def fetch_only() -> None:
        sess = _ort.session(model, fetch, threads=threads, what="model for calibration")
        for batch in source.batches(bs):
            sess.run(fetch, batch)

    fast_cls = _fast_stats_class()
    fast_collect = _patched_collect(fast_cls)

    def collect_scratch() -> Any:
        return fast_collect(model, source, requests, batch_size=bs, threads=threads)

    # warm-up: the plain session's first runs; one run of each collector, also used to compare results
    plain()
    accuracy = _max_rel_diff(collect(), collect_scratch())
    variants: dict[str, Callable[[], Any]] = {
        "plain": plain,
        "collect_stats": collect,
        "plain_cold": plain_cold,
        "fetch_only": fetch_only,
        "collect_stats_scratch_update": collect_scratch,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(args.reps):
        order = list(variants.items()) if rep % 2 == 0 else list(reversed(variants.items()))
        for label, fn in order:
            started = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - started)
        logger.info("%s rep %d: %s", name, rep + 1, ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["collect_stats"] / med["plain"]
    result: dict[str, Any] = {
        "model": name,
        "samples": source.num_samples,
        "batch_size": bs,
        "threads": threads,
        "reps": args.reps,
        "requests": len(requests),
        "activations": len(values),
        "median_s": med,
        "all_s": times,
        "ratio": ratio,
        "ratio_vs_cold_plain": med["collect_stats"] / med["plain_cold"],
        "ratio_floor_fetch_only": med["fetch_only"] / med["plain"],
        "ratio_scratch_update": med["collect_stats_scratch_update"] / med["plain"],
        "target": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "scratch_update_accuracy_vs_current": accuracy,
    }
    logger.info(
        "%s: collect_stats %.2f s / plain %.2f s = %.2fx (target <= %.1fx); "
        "fetch-only floor %.2fx; scratch update %.2fx",
        name,
        med["collect_stats"],
        med["plain"],
        ratio,
        TARGET_RATIO,
        result["ratio_floor_fetch_only"],
        result["ratio_scratch_update"],
    )
    if ratio > TARGET_RATIO or args.always_profile:
        profile_file = Path(args.out) / f"profile_collect_{name}.txt"
        result["profile"] = _profile_collect(model, source, requests, args, profile_file)
        result["profile"]["listing"] = _rel(profile_file)
        result["update_microbench"] = _microbench(model, source, requests, args)
    return result


# --------------------------------------------------------------------------- #
# orchestration and reports (standard library only)
# --------------------------------------------------------------------------- #


def _markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        "# Sparsify benchmark",
        "",
        f"{results['samples']} random calibration samples, batch {results['batch_size']}, "
        f"onnxruntime CPU with {results['threads']} intra-op threads; {env['cpu_count']} CPU cores "
        f"({env['machine']}), onnxruntime {env.get('onnxruntime', '?')}, numpy {env.get('numpy', '?')}. "
        "Models exported from plain torch with the TorchScript exporter (`dynamo=False`, opset 13); "
        "images 224x224, BERT-like hidden 256, 4 layers, seq 128.",
        "",
        "*pipeline s*: statistics collection + pruning (`Pipeline(...)(model)`), wall time; validation is "
        "timed apart. *peak MB*: `ru_maxrss` of a fresh process per configuration at the end of the pipeline "
        "(interpreter, imports, model + reference copy, calibration arrays included); *+MB*: growth of that "
        "high-water mark during the pipeline. *stats/plain*: median `collect_stats` time for the Wanda "
        "requests over a plain onnxruntime pass on the same batches, same process, alternated "
        f"({results['reps']} repetitions; target <= {TARGET_RATIO}x).",
        "",
        "| model | params | config | pipeline s | validate s | peak MB | +MB | sparsity | stats/plain ratio |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in results["models"].items():
        info, ratio = entry["info"], entry["ratio"]
        for config, run in entry["configs"].items():
            mem = run["memory_mb"]
            ratio_cell = f"{ratio['ratio']:.2f}x" if config.startswith("wanda") else "n/a (no statistics)"
            lines.append(
                f"| {name} | {info['params'] / 1e6:.2f} M | {config} | {run['pipeline_s']:.2f} | "
                f"{run['validate_s']:.2f} | {mem['maxrss_after_pipeline']:.0f} | {mem['pipeline_growth']:.0f} | "
                f"{100 * (run['achieved_sparsity'] or 0):.1f}% | {ratio_cell} |"
            )
    lines += [
        "",
        "## Statistics collection vs a plain onnxruntime pass",
        "",
        "Medians in seconds. *plain*: `session.run` over all batches with a warm `_ort.session(model)`; "
        "*plain cold*: the same with a fresh session (built inside the timing); *fetch only*: a fresh "
        "calibration session returning the requested activations, no statistics (the floor for any NumPy "
        "statistics code); *scratch update*: `collect_stats` with the layout-preserving `update` from this "
        "script patched in.",
        "",
        "| model | activations (MB/batch) | plain | plain cold | collect_stats | ratio | fetch only | floor ratio "
        "| scratch update | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in results["models"].items():
        r = entry["ratio"]
        med = r["median_s"]
        mb = r.get("update_microbench", {}).get("activation_mb_per_batch")
        lines.append(
            f"| {name} | {'-' if mb is None else f'{mb:.0f}'} ({r['activations']} values) | {med['plain']:.2f} | "
            f"{med['plain_cold']:.2f} | {med['collect_stats']:.2f} | **{r['ratio']:.2f}x** | {med['fetch_only']:.2f} "
            f"| {r['ratio_floor_fetch_only']:.2f}x | {med['collect_stats_scratch_update']:.2f} | "
            f"{r['ratio_scratch_update']:.2f}x |"
        )
    profiled = [(n, e["ratio"]) for n, e in results["models"].items() if "profile" in e["ratio"]]
    if profiled:
        lines += [
            "",
            "## Where collect_stats spends its time (cProfile, one run)",
            "",
            "| model | total | session build | onnxruntime run | `ChannelStats.update` | of which: top callees |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name, r in profiled:
            p = r["profile"]
            callees = ", ".join(f"`{k}` {v:.2f}" for k, v in list(p.get("update_callees_s", {}).items())[:4])
            lines.append(
                f"| {name} | {p['profiled_total_s']:.2f} | {p['session_build_s']:.2f} | {p['onnxruntime_run_s']:.2f} "
                f"| {p.get('update_cumulative_s', 0):.2f} (self {p.get('update_self_s', 0):.2f}) | {callees} |"
            )
        lines += [
            "",
            "Current `ChannelStats.update`, statement by statement, and the scratch replacement, on one batch of "
            "the model's real activations (seconds per batch, medians):",
            "",
            "| model | moveaxis+reshape copy | abs+sum f64 | einsum f64 | count_nonzero | current | scratch "
            "| scratch, threads | max rel diff (sum_sq) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in profiled:
            mb = r["update_microbench"]
            st = mb["current_update_statements_s_per_batch"]
            upd = mb["update_s_per_batch_median"]
            threaded = next(v for k, v in upd.items() if k.endswith("threads"))
            lines.append(
                f"| {name} | {st['moveaxis+reshape copy']:.3f} | {st['abs + sum(axis=0, float64)']:.3f} | "
                f"{st['einsum ij,ij->j dtype=float64']:.3f} | {st['count_nonzero(axis=0)']:.3f} | "
                f"{upd['current']:.3f} | {upd['scratch']:.3f} | {threaded:.3f} | "
                f"{mb['accuracy_vs_current']['max_rel_diff_sum_sq']:.1e} |"
            )
    lines += ["", f"Reproduce: `{results['command']}`", ""]
    return "\n".join(lines)


def _summary(results: dict[str, Any]) -> str:
    rows = []
    for name, entry in results["models"].items():
        r = entry["ratio"]
        rows.append(
            f"{name:12s} stats/plain {r['ratio']:.2f}x (plain {r['median_s']['plain']:.2f}s, collect_stats "
            f"{r['median_s']['collect_stats']:.2f}s; fetch-only floor {r['ratio_floor_fetch_only']:.2f}x; "
            f"scratch update {r['ratio_scratch_update']:.2f}x)"
        )
        for config, run in entry["configs"].items():
            rows.append(
                f"  {config:14s} pipeline {run['pipeline_s']:6.2f}s  validate {run['validate_s']:6.2f}s  "
                f"peak {run['memory_mb']['maxrss_after_pipeline']:6.0f} MB (+{run['memory_mb']['pipeline_growth']:.0f})"
            )
    return "\n".join(rows)


def _environment() -> dict[str, Any]:
    versions = {}
    for package in ("onnxruntime", "numpy", "onnx", "onnx_ir", "torch"):
        try:
            from importlib.metadata import version

            versions[package] = version(package.replace("_", "-"))
        except Exception:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **versions,
    }


def orchestrate(args: argparse.Namespace) -> int:
    """Run every stage in its own subprocess and write the JSON and Markdown reports."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "_stages"
    tmp.mkdir(exist_ok=True)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        logger.error("unknown model(s) %s (choose from %s)", ", ".join(unknown), ", ".join(MODELS))
        return 2
    started = time.perf_counter()
    load_start = _loadavg()
    models: dict[str, Any] = {}
    for name in names:
        info = _child("prepare", args, ["--model", name], tmp / f"prepare_{name}.json")
        ratio = _child("ratio", args, ["--model", name], tmp / f"ratio_{name}.json")
        configs = {}
        for config in CONFIGS:
            slug = config.replace(":", "of").replace("%", "")
            configs[config] = _child(
                "config", args, ["--model", name, "--config", config], tmp / f"config_{name}_{slug}.json"
            )
        models[name] = {"info": info, "ratio": ratio, "configs": configs}
    command = "python bench/bench_sparsify.py --out {} --models {} --samples {}".format(
        args.out, ",".join(names), args.samples
    )
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "samples": args.samples,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "reps": args.reps,
        "target_ratio": TARGET_RATIO,
        "memory_method": (
            "ru_maxrss (RUSAGE_SELF) of a fresh python process per configuration; the orchestrator imports only "
            "the standard library because an exec'd child inherits its parent's RSS high-water mark in "
            "ru_maxrss on Linux; VmHWM from /proc/self/status is recorded as a cross-check"
        ),
        "orchestrator_maxrss_mb": _maxrss_mb(),
        "loadavg_start": load_start,
        "loadavg_end": _loadavg(),
        "wall_s": time.perf_counter() - started,
        "environment": _environment(),
        "models": models,
    }
    _write_json(results, out / "sparsify.json")
    (out / "sparsify.md").write_text(_markdown(results))
    for stage_file in tmp.iterdir():
        stage_file.unlink()
    tmp.rmdir()
    logger.info("wrote %s and %s in %.0f s", out / "sparsify.json", out / "sparsify.md", results["wall_s"])
    print(_summary(results))  # the final summary (everything else goes through logging)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results", help="folder for sparsify.json / sparsify.md")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--samples", type=int, default=128, help="calibration samples")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per onnxruntime call")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions for the ratio")
    parser.add_argument("--always-profile", action="store_true", help="profile collect_stats even under the target")
    parser.add_argument("--stage", choices=("prepare", "ratio", "config"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--config", choices=tuple(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage is None:
        _setup_logging("[main]")
        return orchestrate(args)
    label = f"[{args.stage} {args.model}{' ' + args.config if args.config else ''}]"
    _setup_logging(label.replace("%", "%%"))
    stage = {"prepare": stage_prepare, "ratio": stage_ratio, "config": stage_config}[args.stage]
    _write_json(stage(args), Path(args.result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
