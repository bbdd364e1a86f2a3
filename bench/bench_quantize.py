"""INT8 after pruning on trained models: bytes on disk, task metric and latency through the ``onnxprune`` CLI.

Each case optionally prunes the trained model (``onnxprune prune``), then quantizes the result
(``onnxprune quantize --reference ORIGINAL``: QDQ, symmetric per-channel INT8 weights, calibrated on
the case's calibration digits/lines), in subprocesses. Recorded: the task metric of the original, the
pruned float and the INT8 model on the held-out evaluation data, bytes on disk of all three, and the
batch-1 latency ratios the quantize report measured (interleaved runs, see ``onnxprune.verify``).

Goal (issue 13): pruned + INT8 <= 25% of the original's bytes with <= 1 point of task loss.

Usage: python bench/bench_quantize.py --out bench/results [--only mnist_cnn] [--threads 1]
Writes ``quantize.json`` and ``quantize.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT, environment, rel, setup_logging, write_results

logger = logging.getLogger("bench_quantize")

#: Points of task loss (metric x 100) and the fraction of the original's bytes the goal allows.
GOAL_POINTS, GOAL_BYTES = 1.0, 0.25
WORK = ROOT / "bench" / "_models" / "real" / "out" / "quantize"


@dataclasses.dataclass(frozen=True)
class Case:
    """A prepared model (a key of ``_real_models.PREPARE``), a label and the prune words (empty: INT8 only)."""

    model: str
    label: str
    prune: str = ""
    quantize: str = ""

    @property
    def slug(self) -> str:
        return "".join(ch if ch.isalnum() else "_" for ch in f"{self.model}/{self.label}")


CASES = (
    Case("mnist_cnn", "INT8 only"),
    Case("mnist_cnn", "2:4 sparsegpt + INT8", "--pattern 2:4"),
    Case("mnist_cnn", "channels 20% + INT8", "--channels 0.2"),
    Case("mnist_cnn", "channels 30% + INT8", "--channels 0.3"),
    Case("ocr_rec", "INT8 only"),
    Case("ocr_rec", "channels 25% + INT8", "--channels 0.25"),
    Case("ocr_rec", "INT8 only, percentile ranges", quantize="--calibrate-method percentile"),
    Case("ocr_rec", "channels 10% + INT8, percentile", "--channels 0.1", "--calibrate-method percentile"),
    Case("ocr_rec", "channels 15% + INT8, percentile", "--channels 0.15", "--calibrate-method percentile"),
)


def _onnxprune(*words: str) -> tuple[list[str], float]:
    """Run the CLI (``--quiet``); return its argument words (for the table) and its wall time."""
    command = [str(Path(sys.executable).parent / "onnxprune"), "--quiet", *words]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"onnxprune {' '.join(words[:1])} failed: {done.stderr.strip()[-400:]}")
    return ["onnxprune", *words], time.perf_counter() - start


def run_case(case: Case, threads: int) -> dict[str, Any]:
    """Prune (if asked), quantize, evaluate; one row of figures."""
    from _real_models import evaluate, prepare

    real = prepare(case.model)
    WORK.mkdir(parents=True, exist_ok=True)
    common = ["--calib", rel(real.calib), "--threads", str(threads)]
    commands, seconds = [], 0.0
    float_model = real.model
    if case.prune:
        float_model = WORK / f"{case.slug}.pruned.onnx"
        words, took = _onnxprune("prune", rel(real.model), "-o", rel(float_model), *shlex.split(case.prune), *common)
        commands.append(words)
        seconds += took
    int8, report = WORK / f"{case.slug}.int8.onnx", WORK / f"{case.slug}.int8.json"
    reference = ["--reference", rel(real.model)] if case.prune else []
    words, took = _onnxprune(
        "quantize",
        rel(float_model),
        "-o",
        rel(int8),
        *common,
        *shlex.split(case.quantize),
        "--data",
        rel(real.data),
        *reference,
        "--report",
        rel(report),
    )
    commands.append(words)
    seconds += took
    data = json.loads(report.read_text())
    versus_original = data["references"][0]["validation"] if case.prune else data["validation"]
    dense, pruned, quantized = evaluate(real.model, real), evaluate(float_model, real), evaluate(int8, real)
    sizes = {"original": real.model.stat().st_size, "float": float_model.stat().st_size, "int8": int8.stat().st_size}
    return {
        "id": f"{case.model}/{case.label}",
        "model": rel(real.model),
        "metric": real.metric_name,
        "metric_dense": dense,
        "metric_pruned_float": pruned,
        "metric_int8": quantized,
        "drop_points": 100 * (dense - quantized),
        "drop_points_int8_vs_float": 100 * (pruned - quantized),
        "bytes_original": sizes["original"],
        "bytes_pruned_float": sizes["float"],
        "bytes_int8": sizes["int8"],
        "bytes_ratio": sizes["int8"] / sizes["original"],
        "latency_original_ms": versus_original["latency_ref_ms"],
        "latency_int8_ms": versus_original["latency_cand_ms"],
        "speedup_vs_original": versus_original["speedup"],
        "speedup_vs_float": data["validation"]["speedup"],
        "int8_zeros_kept": data["passes"][0]["summary"]["zeros_kept"],
        "goal_met": sizes["int8"] <= GOAL_BYTES * sizes["original"] and 100 * (dense - quantized) <= GOAL_POINTS,
        "seconds": seconds,
        "commands": [shlex.join(c) for c in commands],
    }


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The Markdown report."""
    lines = [
        "# INT8 after pruning (onnxprune quantize)",
        "",
        f"Generated by `{meta['command']}` ({meta['threads']} onnxruntime thread(s); latency: batch 1, median"
        " of interleaved runs, from the quantize report). Goal: INT8 bytes <= 25% of the original's with <= 1"
        " point of task loss.",
        "",
        "| case | metric | dense | pruned float | INT8 | loss (points) | bytes orig → INT8 | INT8/orig |"
        " speedup vs orig | vs float | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['id']} | error: {r['error']} |" + " |" * 9)
            continue
        lines.append(
            f"| {r['id']} | {r['metric']} | {r['metric_dense']:.4f} | {r['metric_pruned_float']:.4f} | "
            f"**{r['metric_int8']:.4f}** | {r['drop_points']:+.2f} | {r['bytes_original']:,} → {r['bytes_int8']:,} | "
            f"**{r['bytes_ratio']:.3f}** | {r['speedup_vs_original']:.2f}x ({r['latency_original_ms']:.3g} → "
            f"{r['latency_int8_ms']:.3g} ms) | {r['speedup_vs_float']:.2f}x | {'yes' if r['goal_met'] else 'no'} |"
        )
    lines += ["", "Commands:", ""]
    for r in rows:
        lines += [f"- {r['id']}: " + "; ".join(f"`{c}`" for c in r.get("commands", []))]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--only", help="Run only the cases whose id contains this text (the others keep their stored rows)."
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    setup_logging("bench_quantize")
    sys.path.insert(0, str(ROOT / "bench"))
    rows = []
    for case in CASES:
        if args.only and args.only not in f"{case.model}/{case.label}":
            continue
        logger.info("running %s/%s", case.model, case.label)
        try:
            rows.append(run_case(case, args.threads))
        except Exception as e:  # one failing case is a row with its error, not a lost run
            logger.exception("%s/%s failed", case.model, case.label)
            rows.append({"id": f"{case.model}/{case.label}", "error": str(e)[:300]})
    command = "python bench/bench_quantize.py"
    stored = args.out / "quantize.json"
    if args.only and stored.is_file():  # the other cases keep their stored rows, in the cases' order
        fresh = {r["id"]: r for r in rows}
        kept = {r["id"]: r for r in json.loads(stored.read_text())["rows"]}
        ids = [f"{c.model}/{c.label}" for c in CASES]
        rows = [fresh.get(i) or kept[i] for i in ids if i in fresh or i in kept]
    meta = {"command": command, "threads": args.threads, "environment": environment()}
    write_results(args.out, "quantize", meta, rows, render(rows, meta))
    logger.info("wrote %s", rel(args.out / "quantize.md"))


if __name__ == "__main__":
    main()
