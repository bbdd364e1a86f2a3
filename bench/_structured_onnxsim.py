"""Section "onnxsim": onnxsim's structured pruning of ResNet-18-like at 224 vs onnxprune at the same MACs.

onnxsim 0.8.1 ``apply_structured_pruning(sparsity=0.5)`` prunes only producer -> consumer chains it can
follow (in a ResNet, the first conv of each basic block); its achieved MACs fraction is then given to
onnxprune as ``target_flops`` (importance ``l2``, uniform scope): without and with reconstruction on
random-normal calibration inputs, and without reconstruction but with ``round_to`` 8 and 16 (channel
counts that suit the convolution kernels, as onnxsim's halving of 64..512-channel layers happens to
give). The model is untrained, so fidelity is measured against the dense model's outputs on other random
inputs, not as accuracy.
"""

from __future__ import annotations

import argparse
import time
import traceback
from typing import Any

from _common import SEED
from _structured_common import (
    array_source,
    batch1_shapes,
    counts,
    deserialize,
    fidelity,
    latencies,
    load_proto,
    logger,
    prune,
    random_inputs,
)

MODEL = "resnet18"
SPARSITY = 0.5


def _changed_weights(dense: Any, pruned: Any) -> list[str]:
    """``node: old shape -> new shape`` for every weight (rank >= 2) whose shape changed."""
    before = {i.name: list(i.dims) for i in dense.graph.initializer if len(i.dims) > 1}
    users = {}
    for node in dense.graph.node:
        for name in node.input:
            users.setdefault(name, node.name)
    return [
        f"{users.get(i.name, i.name)}: {before[i.name]} -> {list(i.dims)}"
        for i in pruned.graph.initializer
        if i.name in before and list(i.dims) != before[i.name]
    ]


def _measure(ref: Any, model: Any, shapes: dict, dense: dict, evals: dict, args: argparse.Namespace) -> dict:
    pruned = counts(model, shapes)
    row: dict[str, Any] = {
        "macs_ratio": pruned["macs"] / dense["macs"],
        "params_ratio": pruned["params"] / dense["params"],
        "fidelity": fidelity(ref, model, evals),
    }
    logger.info(
        "  MACs %.4f, params %.4f, rel L2 %.4f, top-1 agreement %.3f",
        row["macs_ratio"],
        row["params_ratio"],
        row["fidelity"]["rel_l2"],
        row["fidelity"]["top1_agreement"],
    )
    row["latency"] = latencies(ref, model, random_inputs(ref, 1, SEED + 2), args.runs, args.rounds)
    return row


def run_onnxsim(args: argparse.Namespace, zoo: Any | None) -> dict[str, Any]:
    """onnxsim at sparsity 0.5 on ResNet-18-like, then onnxprune at onnxsim's MACs fraction."""
    import onnx
    from onnxsim.pruning import apply_structured_pruning

    proto, _, _ = load_proto(MODEL, zoo, args.reexport)
    ref = deserialize(proto)
    shapes = batch1_shapes(ref)
    dense = counts(ref, shapes)
    evals = random_inputs(ref, args.eval_samples, SEED + 1)
    result: dict[str, Any] = {
        "model": MODEL,
        "dense": dense,
        "eval_inputs": f"{args.eval_samples} standard-normal inputs (seed {SEED + 1}); the model is untrained",
        "calibration": f"{args.calib_samples} standard-normal inputs (seed {SEED})",
    }

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    logger.info("onnxsim apply_structured_pruning(sparsity=%s) on %s", SPARSITY, MODEL)
    started = time.perf_counter()
    try:
        sim_proto = apply_structured_pruning(copy, sparsity=SPARSITY)
    except Exception as e:
        logger.exception("onnxsim failed on %s", MODEL)
        result["onnxsim"] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}
        return result
    sim: dict[str, Any] = {"function": f"apply_structured_pruning(sparsity={SPARSITY})"}
    sim["seconds"] = time.perf_counter() - started
    sim["changed_weights"] = _changed_weights(proto, sim_proto)
    sim.update(_measure(ref, deserialize(sim_proto), shapes, dense, evals, args))
    result["onnxsim"] = sim
    if sim["macs_ratio"] >= 0.999:
        logger.warning("onnxsim left the MACs of %s unchanged; no matched onnxprune runs", MODEL)
        result["onnxprune"] = []
        return result

    source = array_source(ref, random_inputs(ref, args.calib_samples, SEED), "random-normal calibration")
    rows = []
    for reconstruct, round_to in ((False, 1), (True, 1), (False, 8), (False, 16)):
        config = {
            "target_flops": sim["macs_ratio"],
            "importance": "l2",
            "scope": "layer",
            "reconstruct": reconstruct,
            "round_to": round_to,
        }
        logger.info("onnxprune %s on %s", config, MODEL)
        run = prune(proto, config, source)
        row: dict[str, Any] = {"config": config, "seconds": run["seconds"]}
        if "error" in run:
            rows.append({**row, "error": run["error"], "traceback": run["traceback"]})
            continue
        summary = run["summary"]
        row.update(
            ratio_used=summary.get("ratio"),
            macs_kept_reported=summary.get("macs_kept"),
            channels_removed=summary.get("channels_removed"),
            channels_in_prunable_groups=summary.get("channels_in_prunable_groups"),
            refitted=summary.get("refitted"),
            refit_error_before=summary.get("refit_error_before"),
            refit_error_after=summary.get("refit_error_after"),
            kept=run["kept"],
        )
        row.update(_measure(ref, run["model"], shapes, dense, evals, args))
        rows.append(row)
    result["onnxprune"] = rows
    return result
