"""Time and peak memory of the data-fitted passes on a torchvision-style ResNet-18 at 224 (64 samples).

Each case runs the CLI in its own process under ``/usr/bin/time``, so the figures are what a user sees:
wall seconds and peak RSS of the whole command (load, calibration, pruning, validation, save). Speed
and memory only: the model is a random-init export and the calibration images are random, which says
nothing about accuracy (that is ``bench_real.py``'s job).

    python bench/bench_sequential.py --out bench/results [--only sparsegpt]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_results

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "_models"
SAMPLES = 64
CASES: dict[str, list[str]] = {
    "sparsegpt-50%-sequential": ["prune", "--sparsity", "0.5", "--importance", "sparsegpt", "--sequential"],
    "sparsegpt-50%-one-shot": ["prune", "--sparsity", "0.5", "--importance", "sparsegpt", "--one-shot"],
    "sparsegpt-2:4-sequential": ["prune", "--pattern", "2:4", "--importance", "sparsegpt", "--sequential"],
    "wanda-50%-one-shot": ["prune", "--sparsity", "0.5", "--importance", "wanda", "--one-shot"],
    "lowrank-aware-energy0.9-sequential": ["lowrank", "--energy", "0.9", "--activation-aware", "--sequential"],
    "lowrank-aware-params0.5-sequential": ["lowrank", "--target-params", "0.5", "--activation-aware", "--sequential"],
    "channels-50%-refit-sequential": ["prune", "--channels", "0.5", "--sequential"],
    "analyze-unstructured,channels": ["analyze", "--no-cache"],
    "analyze-unstructured,channels,lowrank": ["analyze", "--no-cache", "--kinds", "unstructured,channels,lowrank"],
}

logger = logging.getLogger("bench_sequential")


def _prepare() -> tuple[Path, Path]:
    import numpy as np
    import onnx

    sys.path.insert(0, str(ROOT))
    from tests import models

    CACHE.mkdir(parents=True, exist_ok=True)
    model, calib = CACHE / "resnet18_1000.onnx", CACHE / "resnet18_1000_calib64.npz"
    if not model.is_file():
        onnx.save(models.resnet18_like_onnx(dynamo=False, opset=13, image=224, num_classes=1000), model)
    if not calib.is_file():
        rng = np.random.default_rng(0)
        np.savez(calib, x=rng.standard_normal((SAMPLES, 3, 224, 224)).astype(np.float32))
    return model, calib


def _run(name: str, args: list[str], model: Path, calib: Path, threads: int, memory_mb: int) -> dict:
    exe = Path(sys.executable).with_name("onnxprune")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.json"
        analyze = args[0] == "analyze"  # writes PREFIX.json/.csv/.png; no pass report, no memory budget
        command = [
            "/usr/bin/time", "-f", "%e %M", str(exe), "-q", args[0], str(model),
            "-o", str(Path(tmp) / ("sens" if analyze else "out.onnx")),
            *args[1:], "--calib", str(calib), "--threads", str(threads),
            *([] if analyze else ["--memory-mb", str(memory_mb), "--report", str(report)]),
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            return {"case": name, "error": done.stderr.strip().splitlines()[-2:]}
        seconds, kib = done.stderr.strip().splitlines()[-1].split()
        if analyze:
            units = len(json.loads((Path(tmp) / "sens.json").read_text()).get("units", []))
            return {
                "case": name,
                "command": " ".join(["onnxprune", *args[:1], "MODEL", *args[1:], "--calib", "CALIB"]),
                "wall_s": float(seconds),
                "wall_outer_s": wall,
                "peak_rss_mb": int(kib) / 1024,
                "pass_s": None,
                "blocks": f"{units} units",
            }
        data = json.loads(report.read_text())
    passes = data["passes"][0]
    return {
        "case": name,
        "command": " ".join(["onnxprune", args[0], "MODEL", "-o", "OUT", *args[1:], "--calib", "CALIB"]),
        "wall_s": float(seconds),
        "wall_outer_s": wall,
        "peak_rss_mb": int(kib) / 1024,
        "pass_s": passes["seconds"],
        "blocks": passes["summary"].get("blocks", passes["summary"].get("refit_blocks")),
        "params_after": data["after"]["params"],
        "params_before": data["before"]["params"],
    }


def _markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Data-fitted passes on ResNet-18 at 224 (64 samples): time and peak memory",
        "",
        f"Model: torchvision-style ResNet-18 (1000 classes, random init, {meta['model_mb']:.0f} MB), "
        f"{SAMPLES} random calibration images at 224, `--threads {meta['threads']}`, "
        f"`--memory-mb {meta['memory_mb']}`, on {meta['machine']} (load average at start {meta['load']}). "
        "Wall time and peak RSS are of the whole CLI command (load, calibration, pass, validation, save), "
        "measured with `/usr/bin/time`; `pass s` is the pass alone. Speed and memory only: random weights "
        "and data say nothing about accuracy.",
        "",
        "| case | command | wall s | pass s | peak RSS MB | blocks |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | failed: {' '.join(r['error'])} | | | | |")
        else:
            lines.append(
                f"| {r['case']} | `{r['command']}` | {r['wall_s']:.1f} | "
                f"{'–' if r['pass_s'] is None else format(r['pass_s'], '.1f')} | "
                f"{r['peak_rss_mb']:.0f} | {r['blocks']} |"
            )
    lines += ["", "Reproduce: `python bench/bench_sequential.py --out bench/results`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--only", help="run only cases whose name contains this")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-mb", type=int, default=1024)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    model, calib = _prepare()
    meta = {
        "threads": args.threads,
        "memory_mb": args.memory_mb,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load": [round(x, 1) for x in os.getloadavg()],
        "model_mb": model.stat().st_size / 2**20,
    }
    rows = []
    for name, case in CASES.items():
        if args.only and args.only not in name:
            continue
        logger.info("running %s", name)
        rows.append(_run(name, case, model, calib, args.threads, args.memory_mb))
        logger.info("%s", rows[-1])
    suffix = "" if not args.only else f"_{args.only}"
    write_results(args.out, f"sequential{suffix}", meta, rows, _markdown(rows, meta))


if __name__ == "__main__":
    main()
