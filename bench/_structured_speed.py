"""Section "speed": 50% of the channels removed, MACs/params kept and onnxruntime CPU latency at batch 1."""

from __future__ import annotations

import argparse
from typing import Any

from _common import SEED, rel
from _structured_common import (
    NAMED,
    TARGET_EFFICIENCY,
    array_source,
    batch1_shapes,
    counts,
    deserialize,
    latencies,
    latency,
    load_proto,
    logger,
    prune,
    random_inputs,
)

#: the pruning configuration of this section (``round_to`` is added per row)
BASE_CONFIG: dict[str, Any] = {
    "ratio": 0.5,
    "importance": "l2",
    "scope": "layer",
    "reconstruct": False,
    "verify": True,
}
VERIFY_SAMPLES = 4
#: kept-channel multiples tried on the named models: 8 as asked, 16 = onnxruntime's NCHWc block on AVX-512
ROUND_TO = (1, 8, 16)


def _row(name: str, proto: Any, round_to: int, args: argparse.Namespace) -> dict[str, Any]:
    ref = deserialize(proto)
    shapes = batch1_shapes(ref)
    dense = counts(ref, shapes)
    config = {**BASE_CONFIG, "round_to": round_to}
    # a few random inputs for ``verify`` (shrunk == masked), so that no "NO CALIBRATION DATA" source is built
    source = array_source(ref, random_inputs(ref, VERIFY_SAMPLES, SEED), f"{VERIFY_SAMPLES} random samples")
    run = prune(proto, config, source)
    row: dict[str, Any] = {
        "model": name,
        "label": NAMED.get(name, name),
        "named": name in NAMED,
        "input_shapes": {k: list(v) for k, v in shapes.items()},
        "config": config,
        "prune_s": run["seconds"],
        "dense": dense,
    }
    if "error" in run:
        return {**row, "error": run["error"], "traceback": run["traceback"]}
    model = run.pop("model")
    pruned = counts(model, shapes)
    macs_ratio = pruned["macs"] / max(dense["macs"], 1)
    summary = run["summary"]
    row.update(
        pruned=pruned,
        macs_ratio=macs_ratio,
        params_ratio=pruned["params"] / max(dense["params"], 1),
        groups=summary.get("groups"),
        prunable_groups=summary.get("prunable_groups"),
        pruned_groups=summary.get("pruned_groups"),
        channels_removed=summary.get("channels_removed"),
        channels_in_prunable_groups=summary.get("channels_in_prunable_groups"),
        verify_max_rel_diff=summary.get("verify_max_rel_diff"),
        skipped=run["skipped"],
    )
    if pruned["macs"] == dense["macs"]:
        logger.warning("%s: nothing pruned (%s)", name, "; ".join(run["skipped"]) or "no reason reported")
    logger.info(
        "%s round_to=%d: MACs %.3f, params %.3f of dense (pruned in %.2f s)",
        name,
        round_to,
        macs_ratio,
        row["params_ratio"],
        run["seconds"],
    )
    feed = random_inputs(ref, 1, SEED + 2)
    row["latency"] = latencies(ref, model, feed, args.runs, args.rounds)
    if row["named"]:  # 2 threads measured the other two ways (see _structured_common.latency)
        for mode in ("interleaved-spinning", "alone-spinning"):
            row[f"latency_2_{mode}"] = other = latency(ref, model, feed, 2, args.runs, args.rounds, mode=mode)
            logger.info(
                "  2 threads, %s: %.2f ms -> %.2f ms, speedup %.2fx",
                mode,
                other["ref_ms"],
                other["cand_ms"],
                other["speedup"],
            )
    if row["named"] and round_to == 1:
        from _structured_profile import breakdown

        row["profile"] = breakdown(ref, model, feed, shapes)
    flops_speedup = 1 / macs_ratio if macs_ratio > 0 else float("nan")
    row["flops_speedup"] = flops_speedup
    row["efficiency"] = {t: lat["speedup"] / flops_speedup for t, lat in row["latency"].items()}
    if "latency_2_alone-spinning" in row:
        row["efficiency_2_alone_spinning"] = row["latency_2_alone-spinning"]["speedup"] / flops_speedup
    if row["named"]:
        row["meets_target"] = all(e >= TARGET_EFFICIENCY for e in row["efficiency"].values())
    return row


def run_speed(args: argparse.Namespace, names: list[str], zoo: Any | None) -> dict[str, Any]:
    """Prune every model in ``names`` by 50% (the named ones also with ``round_to`` 8 and 16); time them."""
    rows = []
    models = {}
    for name in names:
        try:
            proto, path, export_s = load_proto(name, zoo, args.reexport)
        except Exception as e:
            logger.exception("%s: export failed", name)
            rows.append({"model": name, "label": NAMED.get(name, name), "named": name in NAMED, "error": repr(e)})
            continue
        models[name] = {"file": rel(path), "export_s": export_s}
        for round_to in getattr(args, "round_to", ROUND_TO) if name in NAMED else (1,):
            rows.append(_row(name, proto, round_to, args))
    return {
        "config": BASE_CONFIG,
        "runs": args.runs,
        "rounds": args.rounds,
        "target_efficiency": TARGET_EFFICIENCY,
        "models": models,
        "rows": rows,
    }
