"""Stage "config": one pruning configuration, alone in a fresh process (time and peak memory)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from _common import CONFIGS, logger, maxrss_mb, model_path, vmhwm_mb
from _prepare import load_source


def stage_config(args: argparse.Namespace) -> dict[str, Any]:
    """Mirror :func:`onnxprune.recipe.run_recipe` step by step, timing pipeline and validation apart."""
    rss_start = maxrss_mb()
    from onnxprune import _io
    from onnxprune.context import PassContext
    from onnxprune.pipeline import Pipeline
    from onnxprune.recipe import PassSpec, build_pass
    from onnxprune.verify import validate

    name, config = args.model, args.config
    pass_name, pass_config = CONFIGS[config]
    rss_imports = maxrss_mb()
    started = time.perf_counter()
    model = _io.load(model_path(name))
    reference = _io.load(model_path(name))
    source = load_source(name, model, args.samples)
    load_s = time.perf_counter() - started
    context = PassContext(calibration=source, batch_size=args.batch_size, threads=args.threads)
    passes = [build_pass(PassSpec(pass_name, pass_config), context)]
    rss_before = maxrss_mb()
    hwm_before = vmhwm_mb()

    started = time.perf_counter()
    result = Pipeline(passes, context)(model)
    pipeline_s = time.perf_counter() - started
    rss_pipeline = maxrss_mb()
    hwm_pipeline = vmhwm_mb()

    started = time.perf_counter()
    validation = validate(
        reference, model, source, batch_size=args.batch_size, latency_runs=30, threads=args.threads
    ).as_dict()
    validate_s = time.perf_counter() - started
    rss_validation = maxrss_mb()
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
