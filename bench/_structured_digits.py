"""Section "digits": top-1 accuracy of the trained digits CNN after channel pruning, onnxprune vs onnxsim.

onnxprune: 25/50/75% of every group's channels removed (uniform), importance ``l2`` and ``wanda``, with and
without reconstruction (ridge refit on the calibration set). onnxsim 0.8.1: ``apply_structured_pruning``
(L2) and ``apply_structured_wanda_pruning`` at the same sparsities; for each of its results onnxprune is
run again with ``target_flops`` equal to the MACs fraction onnxsim reached, so both keep the same MACs.
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable
from typing import Any

from _common import ROOT, rel
from _structured_common import batch1_shapes, counts, deserialize, logger, prune

MODEL = ROOT / "examples" / "data" / "digits_cnn.onnx"
CALIB = ROOT / "examples" / "data" / "digits_calib.npz"
TEST = ROOT / "examples" / "data" / "digits_test.npz"
RATIOS = (0.25, 0.5, 0.75)
IMPORTANCES = ("l2", "wanda")
ONNXSIM_BATCH = 32


def _evaluate(ref: Any, model: Any, test: Any, shapes: dict[str, tuple[int, ...]], dense: dict[str, int]) -> dict:
    """Accuracy on the labelled test set (through ``onnxprune.verify.validate``), MACs and params kept."""
    from onnxprune.verify import validate

    result = validate(ref, model, test, latency_runs=1)
    out = result.outputs[0]
    pruned = counts(model, shapes)
    return {
        "accuracy": out.accuracy_cand,
        "top1_agreement": out.top1_agreement,
        "macs_ratio": pruned["macs"] / dense["macs"],
        "params": pruned["params"],
        "params_ratio": pruned["params"] / dense["params"],
    }


def _onnxprune(
    proto: Any, config: dict[str, Any], calib: Any, ref: Any, test: Any, shapes: dict, dense: dict
) -> dict[str, Any]:
    run = prune(proto, {**config, "verify": True}, calib)
    row: dict[str, Any] = {"tool": "onnxprune", "config": run["config"], "seconds": run["seconds"]}
    if "error" in run:
        return {**row, "error": run["error"], "traceback": run["traceback"]}
    summary = run["summary"]
    row.update(_evaluate(ref, run["model"], test, shapes, dense))
    row.update(
        ratio_used=summary.get("ratio"),
        channels_removed=summary.get("channels_removed"),
        channels_in_prunable_groups=summary.get("channels_in_prunable_groups"),
        refit_error_before=summary.get("refit_error_before"),
        refit_error_after=summary.get("refit_error_after"),
        verify_max_rel_diff=summary.get("verify_max_rel_diff"),
    )
    logger.info("onnxprune %s: accuracy %.3f, MACs %.3f", _label(config), row["accuracy"] or 0.0, row["macs_ratio"])
    return row


def _label(config: dict[str, Any]) -> str:
    amount = f"flops={config['target_flops']:.3f}" if config.get("target_flops") else f"ratio={config['ratio']}"
    return f"{config['importance']} {amount} reconstruct={'on' if config['reconstruct'] else 'off'}"


def _onnxsim(
    name: str, fn: Callable[[Any], Any], proto: Any, ref: Any, test: Any, shapes: dict, dense: dict
) -> dict[str, Any]:
    """Run one onnxsim pruning call on a copy of ``proto``; record what it did, or its error."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    started = time.perf_counter()
    row: dict[str, Any] = {"tool": "onnxsim", "function": name}
    try:
        pruned_proto = fn(copy)
    except Exception as e:
        logger.exception("onnxsim %s failed", name)
        return {**row, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}
    row["seconds"] = time.perf_counter() - started
    model = deserialize(pruned_proto)
    row.update(_evaluate(ref, model, test, shapes, dense))
    row["weight_shapes"] = {init.name: list(init.dims) for init in pruned_proto.graph.initializer if len(init.dims) > 1}
    row["pruned_anything"] = row["macs_ratio"] < 1.0 or row["params_ratio"] < 1.0
    logger.info("onnxsim %s: accuracy %.3f, MACs %.3f", name, row["accuracy"] or 0.0, row["macs_ratio"])
    return row


def run_digits(args: argparse.Namespace) -> dict[str, Any]:
    """Accuracy of the digits CNN pruned by onnxprune and by onnxsim (see the module docstring)."""
    import numpy as np
    import onnx
    from onnxsim.pruning import apply_structured_pruning, apply_structured_wanda_pruning

    from onnxprune.calibration.sources import input_specs, open_source

    proto = onnx.load(str(MODEL))
    ref = deserialize(proto)
    spec = input_specs(ref)[0]
    calib = open_source(CALIB, ref)
    test = open_source(TEST, ref)
    shapes = batch1_shapes(ref)
    dense = counts(ref, shapes)
    baseline = _evaluate(ref, deserialize(proto), test, shapes, dense)["accuracy"]
    weight_shapes = {init.name: list(init.dims) for init in proto.graph.initializer if len(init.dims) > 1}
    logger.info("digits: input %s %s, dense accuracy %.4f, %d MACs", spec.name, spec.shape, baseline, dense["macs"])
    common = (ref, test, shapes, dense)

    rows = []
    for ratio in RATIOS:
        for importance in IMPORTANCES:
            for reconstruct in (False, True):
                config = {"ratio": ratio, "importance": importance, "reconstruct": reconstruct}
                rows.append(_onnxprune(proto, config, calib, *common))

    with np.load(CALIB, allow_pickle=False) as data:
        arrays = data[spec.name]
    batches = [{spec.name: arrays[i : i + ONNXSIM_BATCH]} for i in range(0, len(arrays), ONNXSIM_BATCH)]
    comparisons = []
    for sparsity in RATIOS:
        for importance, name, fn in (
            ("l2", "apply_structured_pruning", lambda m, s=sparsity: apply_structured_pruning(m, sparsity=s)),
            (
                "wanda",
                "apply_structured_wanda_pruning",
                lambda m, s=sparsity: apply_structured_wanda_pruning(m, calibration_data=batches, sparsity=s),
            ),
        ):
            sim = _onnxsim(f"{name}(sparsity={sparsity})", fn, proto, *common)
            sim.update(sparsity=sparsity, importance=importance)
            matched = []
            if "error" not in sim and sim["macs_ratio"] < 0.999:
                for reconstruct in (False, True):
                    config = {"target_flops": sim["macs_ratio"], "importance": importance, "reconstruct": reconstruct}
                    matched.append(_onnxprune(proto, config, calib, *common))
            elif "error" not in sim:
                logger.warning("onnxsim %s left the MACs unchanged; no matched onnxprune run", sim["function"])
            comparisons.append({"onnxsim": sim, "onnxprune_matched": matched})
    return {
        "model": rel(MODEL),
        "calibration": f"{rel(CALIB)} ({calib.num_samples} samples)",
        "test": f"{rel(TEST)} ({test.num_samples} labelled samples)",
        "input": {
            "name": spec.name,
            "shape": [d if d is not None else "N" for d in spec.shape],
            "dtype": str(spec.dtype),
        },
        "weight_shapes": weight_shapes,
        "dense": {**dense, "accuracy": baseline},
        "onnxsim_wanda_calibration": f"the calibration set as {len(batches)} batches of {ONNXSIM_BATCH}",
        "onnxprune": rows,
        "comparisons": comparisons,
    }
