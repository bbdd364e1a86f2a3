"""Peak RSS of whole CLI commands, validation on, on a 576 MiB model with external data.

The model is built in code (fixed seed): an MLP of 36 dense 2048x2048 float32 layers (MatMul+Add and
Gemm alternately, ReLU between), input ``x [N, 2048]``, every weight in one external-data file. Each
case runs ``onnxprune prune`` in its own process under ``/usr/bin/time -v``, so the peak is what a user
sees ("Maximum resident set size" of the whole command: load, calibration, pass, validation, save,
report). The goal (issue 11) is a peak of at most 1.5x the model's bytes + 300 MB. Random weights and
data: memory and time only, nothing about accuracy.

    python bench/bench_memory.py --out bench/results [--only 2:4]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import clock_seconds, time_v, write_results

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "_models" / "memory"
WIDTH, LAYERS, SAMPLES, SEED = 2048, 36, 64, 0
GOAL_FACTOR, GOAL_EXTRA_MB = 1.5, 300
CASES: dict[str, list[str]] = {
    "sparsity-0.5": ["prune", "--sparsity", "0.5"],
    "pattern-2:4": ["prune", "--pattern", "2:4"],
}

logger = logging.getLogger("bench_memory")


def build(folder: Path) -> tuple[Path, Path]:
    """Write the MLP (``mlp.onnx`` + ``mlp.onnx.data``) and 64 calibration samples; reuse them if present."""
    model, calib = folder / "mlp.onnx", folder / "calib.npz"
    if model.is_file() and calib.is_file():
        return model, calib
    import numpy as np
    import onnx_ir as ir

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    x = ir.val("x", ir.DataType.FLOAT, ir.Shape(["N", WIDTH]))
    nodes, initializers, current = [], [], x
    for i in range(LAYERS):
        weight = (rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) * np.float32((2 / WIDTH) ** 0.5)).astype(
            np.float32
        )
        w = ir.Value(name=f"w{i}", const_value=ir.tensor(weight, name=f"w{i}"))
        b = ir.Value(name=f"b{i}", const_value=ir.tensor(np.full(WIDTH, 0.01, np.float32), name=f"b{i}"))
        initializers += [w, b]
        if i % 2:
            node = ir.node("Gemm", [current, w, b], {"transB": 1}, name=f"gemm{i}")
        else:
            mm = ir.node("MatMul", [current, w], name=f"matmul{i}")
            nodes.append(mm)
            node = ir.node("Add", [mm.outputs[0], b], name=f"add{i}")
        nodes.append(node)
        current = node.outputs[0]
        if i < LAYERS - 1:
            relu = ir.node("Relu", [current], name=f"relu{i}")
            nodes.append(relu)
            current = relu.outputs[0]
    current.name, current.type, current.shape = "y", ir.TensorType(ir.DataType.FLOAT), ir.Shape(["N", WIDTH])
    graph = ir.Graph([x], [current], nodes=nodes, initializers=initializers, opset_imports={"": 17}, name="mlp")
    tmp = folder / "tmp.onnx"
    ir.save(ir.Model(graph, ir_version=8), tmp, external_data="mlp.onnx.data", size_threshold_bytes=1024)
    tmp.replace(model)
    np.savez(calib, x=rng.standard_normal((SAMPLES, WIDTH), dtype=np.float32))
    return model, calib


def run_case(name: str, args: list[str], model: Path, calib: Path, threads: int, cli: list[str]) -> dict[str, Any]:
    """Run one CLI command (``cli``: the program) under ``/usr/bin/time -v``: peak RSS, wall time, exit status."""
    model_bytes = sum(p.stat().st_size for p in (model, model.with_name(model.name + ".data")))
    with tempfile.TemporaryDirectory(prefix="bench-memory-", dir=model.parent) as tmp:
        report = Path(tmp) / "report.json"
        command = [
            *cli, "-q", args[0], str(model), "-o", str(Path(tmp) / "out.onnx"), *args[1:],
            "--calib", str(calib), "--threads", str(threads), "--report", str(report),
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=False)
        outer = time.perf_counter() - started
        row: dict[str, Any] = {
            "case": name,
            "command": " ".join(["onnxprune", args[0], "MODEL", "-o", "OUT", *args[1:], "--calib", "CALIB"])
            + f" --threads {threads}",
            "rc": done.returncode,
            "model_mb": model_bytes / 1e6,
            "peak_rss_mb": int(time_v(done.stderr, "Maximum resident set size (kbytes)") or 0) * 1024 / 1e6,
            "wall_s": clock_seconds(time_v(done.stderr, "Elapsed (wall clock) time (h:mm:ss or m:ss)") or str(outer)),
        }
        row["ratio"] = row["peak_rss_mb"] / row["model_mb"]
        row["goal_mb"] = GOAL_FACTOR * row["model_mb"] + GOAL_EXTRA_MB
        row["meets_goal"] = done.returncode == 0 and row["peak_rss_mb"] <= row["goal_mb"]
        if done.returncode != 0:
            row["error"] = [line for line in done.stderr.splitlines() if line.strip()][:3]
        elif report.is_file():
            data = json.loads(report.read_text())
            validation = data.get("validation") or {}
            row["validated"] = bool(validation)
            row["validation_samples"] = validation.get("samples")
            row["latency_ref_ms"] = validation.get("latency_ref_ms")
            row["latency_cand_ms"] = validation.get("latency_cand_ms")
            row["pass_s"] = sum(p.get("seconds", 0.0) for p in data.get("passes", []))
            row["out_mb"] = data["after"]["bytes"] / 1e6
    logger.info(
        "%s: rc %d, peak %.0f MB (%.2fx model), %.0f s",
        name,
        row["rc"],
        row["peak_rss_mb"],
        row["ratio"],
        row["wall_s"],
    )
    return row


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The results table."""
    lines = [
        "# Peak memory of the CLI, validation on, on a 576 MiB external-data model",
        "",
        f"Model: MLP of {LAYERS} float32 {WIDTH}x{WIDTH} layers (MatMul+Add / Gemm, ReLU), every weight in "
        f"one external-data file, {meta['model_mb']:.0f} MB on disk; {SAMPLES} random calibration samples "
        f"(also the validation data); `--threads {meta['threads']}`; default importance (SparseGPT with "
        f"data), validation on. Peak RSS is `/usr/bin/time -v`'s maximum resident set size of the whole "
        f"command. Goal: at most {GOAL_FACTOR}x the model's bytes + {GOAL_EXTRA_MB} MB. "
        f"On {meta['machine']}, {meta['date']}.",
        "",
        "| case | command | exit | peak RSS MB | × model | goal MB | meets goal | wall s | pass s |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | `{r['command']}` | {r['rc']} | {r['peak_rss_mb']:.0f} | {r['ratio']:.2f} | "
            f"{r['goal_mb']:.0f} | {'yes' if r['meets_goal'] else 'no'} | {r['wall_s']:.0f} | "
            f"{r.get('pass_s', float('nan')):.0f} |"
        )
    lines += ["", "Reproduce: `python bench/bench_memory.py --out bench/results`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--only", help="run only cases whose name contains this")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--build-only", action="store_true", help="write the model and data, run nothing")
    parser.add_argument("--cli", help="the onnxprune program to measure (default: this checkout's .venv/bin/onnxprune)")
    parser.add_argument("--tag", default="", help="suffix of the result files (memory<TAG>.md/.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # Built in a child process: this one stays small while the measured commands run.
    subprocess.run(
        [sys.executable, "-c", "import bench_memory as b; b.build(b.CACHE)"], cwd=Path(__file__).parent, check=True
    )
    model, calib = CACHE / "mlp.onnx", CACHE / "calib.npz"
    if args.build_only:
        return
    exe = ROOT / ".venv" / "bin" / "onnxprune"
    cli = (
        shlex.split(args.cli)
        if args.cli
        else [str(exe if exe.is_file() else Path(sys.executable).with_name("onnxprune"))]
    )
    rows = [
        run_case(n, a, model, calib, args.threads, cli) for n, a in CASES.items() if not args.only or args.only in n
    ]
    meta = {
        "threads": args.threads,
        "model_mb": rows[0]["model_mb"] if rows else 0.0,
        "machine": f"{platform.machine()} Linux, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
    }
    write_results(args.out, f"memory{args.tag}", meta, rows, markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
