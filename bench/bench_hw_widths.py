"""Benchmark hardware-aware widths: latency efficiency at 50% channels, and a latency budget.

For the MobileNetV2-like and EfficientNet-B0-like models of the structured benchmark (224x224, batch 1,
TorchScript exports cached in ``bench/_models/``), at 1 and 2 intra-op threads:

* ``round_to=1`` and ``round_to=16``: ``ChannelPrunePass(ratio=0.5)``, every group keeps half its channels
  rounded (the structured benchmark's rows);
* ``measured``: ``ChannelPrunePass(ratio=0.5, widths='measured')``: a latency table is measured for that
  thread count (its build time is shown; a cold cache is used) and each group's half is moved to the widest
  measured width no slower than it;
* ``target``: ``ChannelPrunePass(target_latency=T)`` with T = the ``round_to=16`` model's measured latency:
  the measured widths keeping the most importance within it (predicted and measured latency shown).

Latency as in ``bench_structured.py``: dense and pruned sessions in one process, runs interleaved by
``onnxprune.verify.measure_latency`` (spinning off), in rounds; efficiency = latency speedup / FLOPs speedup.

Usage: python bench/bench_hw_widths.py [--out bench/results] [--models mobilenetv2,efficientnet_b0] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from _common import SEED, environment, loadavg, setup_logging, write_results
from _structured_common import (
    NAMED,
    TARGET_EFFICIENCY,
    batch1_shapes,
    counts,
    deserialize,
    latency,
    load_proto,
    logger,
    prune,
    random_inputs,
    timing_session,
)

MODELS = ("mobilenetv2", "efficientnet_b0")
THREADS = (1, 2)
BASE = {"ratio": 0.5, "importance": "l2", "scope": "uniform", "reconstruct": False}


def _best_of(ref: Any, cand: Any, feed: dict[str, Any], threads: int, runs: int) -> tuple[float, float]:
    """Fastest run (ms) of each model, runs interleaved: the run least disturbed by other processes."""
    sessions = [timing_session(ref, threads), timing_session(cand, threads)]
    for sess in sessions:
        for _ in range(3):
            sess.run(None, feed)
    best = [float("inf"), float("inf")]
    for i in range(runs):
        for j in (0, 1) if i % 2 == 0 else (1, 0):
            started = time.perf_counter()
            sessions[j].run(None, feed)
            best[j] = min(best[j], 1000 * (time.perf_counter() - started))
    return best[0], best[1]


def _row(proto: Any, name: str, label: str, config: dict[str, Any], threads: int, args: argparse.Namespace) -> dict:
    ref = deserialize(proto)
    shapes = batch1_shapes(ref)
    dense = counts(ref, shapes)
    run = prune(proto, config, None, threads=threads)
    row: dict[str, Any] = {"model": name, "label": NAMED[name], "row": label, "threads": threads, "config": config}
    if "error" in run:
        return {**row, "error": run["error"]}
    model = run.pop("model")
    pruned = counts(model, shapes)
    summary = run["summary"]
    flops_speedup = dense["macs"] / max(pruned["macs"], 1)
    feed = random_inputs(ref, 1, SEED + 2)
    lat = latency(ref, model, feed, threads, args.runs, args.rounds)
    best = _best_of(ref, model, feed, threads, args.runs)
    row.update(
        prune_s=run["seconds"],
        macs_kept=pruned["macs"] / max(dense["macs"], 1),
        channels_removed=summary.get("channels_removed"),
        channels=summary.get("channels_in_prunable_groups"),
        flops_speedup=flops_speedup,
        latency=lat,
        efficiency=lat["speedup"] / flops_speedup,
        best_ms=list(best),
        best_efficiency=best[0] / best[1] / flops_speedup,
        kept=run["kept"],
        **{
            k: summary.get(k)
            for k in (
                "latency_table_seconds",
                "groups_measured",
                "latency_dense_ms",
                "latency_predicted_ms",
                "latency_measured_ms",
                "target_latency_ms",
                "target_latency_met",
                "tries",
            )
            if k in summary
        },
    )
    logger.info(
        "%s %s %d thread(s): MACs %.3f, %s/%s channels removed, %.2f -> %.2f ms, speedup %.2fx, efficiency %.2f",
        name,
        label,
        threads,
        row["macs_kept"],
        row["channels_removed"],
        row["channels"],
        lat["ref_ms"],
        lat["cand_ms"],
        lat["speedup"],
        row["efficiency"],
    )
    return row


def _markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    env = meta["environment"]
    lines = [
        "# Hardware-aware widths benchmark",
        "",
        f"{meta['date']}; {env['cpu_count']} CPU cores ({env['machine']}), onnxruntime {env['onnxruntime']};"
        f" load average at start / end {meta['loadavg_start']} / {meta['loadavg_end']};"
        f" whole run {meta['wall_s']:.0f} s."
        f" Command: `{meta['command']}`.",
        "",
        "50% of the channels of every group (`ratio=0.5`, importance l2, no reconstruction), batch 1, 224x224.",
        "*round_to=N*: kept counts rounded to multiples of N; *measured*: `widths='measured'`, each group's half"
        " moved to the widest measured width no slower than it (table measured at that thread count, cold cache,"
        " build time in *table s*); *target*: `target_latency` = the round_to=16 row's measured pruned latency."
        " *efficiency* = latency speedup / FLOPs speedup (target >= 0.9). *predicted / measured*: the pass's"
        " own additive prediction from the table and its measurement (dense and pruned interleaved), in ms.",
        "",
        "*best-of*: the fastest of the same number of interleaved runs of each model (the run least disturbed by"
        " the other processes on this shared machine), and the efficiency from it.",
        "",
        "| model | threads | widths | channels removed | MACs kept | FLOPs speedup | ms dense -> pruned | speedup"
        " | efficiency | best-of ms, efficiency | table s | pass: predicted / measured ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | {r['threads']} | {r['row']} | error: {r['error']} | | | | | | | | |")
            continue
        lat = r["latency"]
        pass_ms = ""
        if r.get("latency_measured_ms") is not None:
            pass_ms = f"{r.get('latency_predicted_ms') or float('nan'):.2f} / {r['latency_measured_ms']:.2f}"
            if r.get("target_latency_ms") is not None:
                pass_ms += f" (target {r['target_latency_ms']:.2f}, {'met' if r['target_latency_met'] else 'NOT met'})"
        table_s = f"{r['latency_table_seconds']:.0f}" if r.get("latency_table_seconds") is not None else ""
        eff = r["efficiency"]
        mark = f"**{eff:.2f}**" if r["row"] == "measured" else f"{eff:.2f}"
        lines.append(
            f"| {r['label']} | {r['threads']} | {r['row']} | {r['channels_removed']} / {r['channels']}"
            f" | {100 * r['macs_kept']:.1f}% | {r['flops_speedup']:.2f}x | {lat['ref_ms']:.2f} -> {lat['cand_ms']:.2f}"
            f" | {lat['speedup']:.2f}x ({lat['speedup_min']:.2f}-{lat['speedup_max']:.2f}) | {mark}"
            f" | {r['best_ms'][0]:.2f} -> {r['best_ms'][1]:.2f}, {r['best_efficiency']:.2f} | {table_s}"
            f" | {pass_ms} |"
        )
    measured = [r for r in rows if r["row"] == "measured" and "error" not in r]
    lines += ["", "## Goal", ""]
    for r in measured:
        verdict = "met" if r["efficiency"] >= TARGET_EFFICIENCY else "NOT met"
        lines.append(
            f"- {r['label']}, {r['threads']} thread(s): efficiency {r['efficiency']:.2f} (best-of"
            f" {r['best_efficiency']:.2f}) with measured widths -> target (>= {TARGET_EFFICIENCY}) {verdict}"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results", help="folder for hw_widths.json / hw_widths.md")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer latency runs")
    parser.add_argument("--runs", type=int, help="latency runs per model (default 50; quick 10)")
    parser.add_argument("--rounds", type=int, help="rounds the runs are split into (default 5; quick 2)")
    args = parser.parse_args(argv)
    args.runs = args.runs or (10 if args.quick else 50)
    args.rounds = args.rounds or (2 if args.quick else 5)
    setup_logging("[hw_widths]")
    logging.getLogger("onnxprune.analysis.channels.graph").setLevel(logging.WARNING)  # one line per width measured
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": f"python bench/bench_hw_widths.py --models {args.models}{' --quick' if args.quick else ''}",
        "environment": environment(),
        "loadavg_start": loadavg(),
        "runs": args.runs,
        "rounds": args.rounds,
    }
    from _structured_common import import_zoo

    zoo = import_zoo(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxprune-hw-bench-") as cache:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            if name not in MODELS:
                logger.error("unknown model %s (choose from %s)", name, ", ".join(MODELS))
                return 2
            proto, _, _ = load_proto(name, zoo)
            for threads in THREADS:
                for label, extra in (("round_to=1", {}), ("round_to=16", {"round_to": 16})):
                    rows.append(_row(proto, name, label, {**BASE, **extra}, threads, args))
                measured = {**BASE, "widths": "measured", "latency_cache": cache}
                rows.append(_row(proto, name, "measured", measured, threads, args))
                budget = rows[-2].get("latency", {}).get("cand_ms")
                if budget:
                    config = {**BASE, "target_latency": round(budget, 3), "latency_cache": cache}
                    rows.append(_row(proto, name, "target", config, threads, args))
    meta["loadavg_end"] = loadavg()
    meta["wall_s"] = time.perf_counter() - started
    from pathlib import Path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, "hw_widths", meta, rows, _markdown(meta, rows))
    print(_markdown(meta, rows))  # the summary (everything else goes through logging)
    return 0


if __name__ == "__main__":
    sys.exit(main())
