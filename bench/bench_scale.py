"""2:4 SparseGPT and Wanda, block-sequential, on a 1.2 GB Llama-like decoder in external data: time and memory.

The decoder (``bench/_decoder.py``, random init, fixed seed): hidden 2048, 4 layers, 16 query heads over
4 key/value heads, SwiGLU 5632, vocabulary 32000, sequence 128; 1.25 GB of float32 weights in one
external-data file, built under ``bench/_models/scale/`` when absent, with 16 calibration samples of
random token ids. Each case runs the whole CLI command in its own process under ``/usr/bin/time -v``
(peak RSS of the command: load, calibration, pass, validation, save, report), then checks that the
output runs in onnxruntime and that every pruned weight holds the 2:4 pattern. Goals (the issue):
at most 45 minutes and at most 1.5x the model's bytes + 1 GB peak RSS. Random weights and data:
time, memory and correctness only, nothing about accuracy.

    python bench/bench_scale.py --out bench/results [--only wanda] [--layers 1]

``--only`` reruns one importance and keeps the other's row of the existing results.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT, clock_seconds, environment, loadavg, time_v, write_results

CACHE = ROOT / "bench" / "_models" / "scale"
SAMPLES = 16
GOAL_MINUTES, GOAL_FACTOR, GOAL_EXTRA_MB = 45, 1.5, 1000
IMPORTANCES = ("sparsegpt", "wanda")

logger = logging.getLogger("bench_scale")


def build(folder: Path, layers: int) -> tuple[Path, Path, dict[str, Any]]:
    """The decoder and its calibration data (reused when present); built in a child process that holds one tensor."""
    tag = f"decoder{'' if layers == 4 else f'-l{layers}'}"
    model, calib = folder / f"{tag}.onnx", folder / f"{tag}-calib.npz"
    code = (
        "import sys, json, numpy as np, pathlib, _decoder as d\n"
        f"c = d.DecoderConfig(layers={layers})\n"
        f"m, k = pathlib.Path({str(model)!r}), pathlib.Path({str(calib)!r})\n"
        "if not (m.is_file() and k.is_file()):\n"
        "    d.build_decoder(c, m); np.savez(k, **d.calibration_ids(c, samples=%d))\n"
        "import dataclasses; print(json.dumps(dataclasses.asdict(c)))\n" % SAMPLES
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True, check=True
    )
    return model, calib, json.loads(done.stdout)


def check_output(out: Path, calib: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Run the output in onnxruntime (one sample) and count the 2:4 violations of every projection and the LM head."""
    import numpy as np
    import onnx_ir as ir
    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).parent))
    import _decoder

    decoder = _decoder.DecoderConfig(**config)
    model = ir.load(out)
    names = _decoder.projection_names(decoder)
    bad: dict[str, int] = {}
    zeros = 0
    for name in names:
        w = model.graph.initializers[name].const_value.numpy()
        bad.update(_decoder.nm_violations({name: w}, 2, 4))
        zeros += int(w.size - np.count_nonzero(w))
        del w
    total = sum(model.graph.initializers[n].const_value.size for n in names)
    del model
    ids = np.load(calib)["input_ids"][:1]
    logits = ort.InferenceSession(str(out)).run(None, {"input_ids": ids})[0]
    return {
        "output_runs": bool(np.isfinite(logits).all() and logits.shape == (1, decoder.seq, decoder.vocab)),
        "pattern_weights": len(names),
        "pattern_violations": bad,
        "pattern_holds": not bad,
        "pruned_fraction": zeros / total,
    }


def run_case(importance: str, model: Path, calib: Path, config: dict[str, Any], cli: str) -> dict[str, Any]:
    """Run the CLI under ``/usr/bin/time -v`` and check its output."""
    out = CACHE / "out" / f"{model.stem}-{importance}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = out.with_suffix(".json")
    args = ["prune", str(model), "-o", str(out), "--pattern", "2:4", "--importance", importance, "--sequential"]
    args += ["--calib", str(calib)]
    model_bytes = sum(p.stat().st_size for p in (model, model.with_name(model.name + ".data")))
    row: dict[str, Any] = {
        "importance": importance,
        "command": " ".join(["onnxprune", "prune", "MODEL", "-o", "OUT", *args[4:-1], "CALIB"]),
        "model_mb": model_bytes / 1e6,
        "loadavg_before": loadavg(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "started": time.strftime("%Y-%m-%d %H:%M"),
    }
    logger.info("running %s", row["command"])
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", cli, "-q", *args, "--report", str(report)], capture_output=True, text=True, check=False
    )
    row["rc"] = done.returncode
    row["wall_s"] = clock_seconds(time_v(done.stderr, "Elapsed (wall clock) time (h:mm:ss or m:ss)") or "0") or (
        time.perf_counter() - started
    )
    row["peak_rss_mb"] = int(time_v(done.stderr, "Maximum resident set size (kbytes)") or 0) * 1024 / 1e6
    row["cpu_percent"] = time_v(done.stderr, "Percent of CPU this job got")
    row["loadavg_after"] = loadavg()
    row["goal_rss_mb"] = GOAL_FACTOR * row["model_mb"] + GOAL_EXTRA_MB
    row["goal_wall_s"] = GOAL_MINUTES * 60
    if done.returncode != 0:
        row["error"] = [line for line in done.stderr.splitlines() if line.strip()][:5]
    else:
        data = json.loads(report.read_text())
        row["pass_s"] = sum(p.get("seconds", 0.0) for p in data["passes"])
        row["blocks"] = next((p["summary"].get("blocks") for p in data["passes"] if "blocks" in p["summary"]), None)
        row["pruned_tensors"] = sum(len(p["changed"]) for p in data["passes"])
        row["validation"] = {
            k: (data["validation"] or {}).get(k)
            for k in ("samples", "latency_mode", "latency_ref_ms", "latency_cand_ms")
        }
        row.update(check_output(out, calib, config))
    row["meets_time"] = row["rc"] == 0 and row["wall_s"] <= row["goal_wall_s"]
    row["meets_memory"] = row["rc"] == 0 and row["peak_rss_mb"] <= row["goal_rss_mb"]
    row["meets_correctness"] = bool(row["rc"] == 0 and row.get("output_runs") and row.get("pattern_holds"))
    for path in out.parent.glob(f"{out.name}*"):
        path.unlink()
    logger.info(
        "%s: rc %d, %.0f s, peak %.0f MB (goal %.0f), pattern holds %s",
        importance,
        row["rc"],
        row["wall_s"],
        row["peak_rss_mb"],
        row["goal_rss_mb"],
        row.get("pattern_holds"),
    )
    return row


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The results table."""
    c = meta["config"]
    yes = {True: "yes", False: "**no**"}
    lines = [
        "# 2:4 SparseGPT / Wanda, block-sequential, on a 1.2 GB Llama-like decoder (external data)",
        "",
        f"Model (`bench/_decoder.py`, random init): hidden {c['hidden']}, {c['layers']} layers, {c['heads']} query "
        f"heads over {c['kv_heads']} KV heads, SwiGLU {c['ffn']}, vocabulary {c['vocab']}, sequence {c['seq']}; "
        f"{meta['model_mb']:.0f} MB on disk, every weight in one external-data file. Calibration (also the "
        f"validation data): {SAMPLES} samples of random token ids. Each command runs alone under "
        "`/usr/bin/time -v` (peak RSS of the whole command: load, calibration, pass, validation, save); the "
        "output is then run in onnxruntime and every projection and the LM head is checked for 2:4. Goals: "
        f"at most {GOAL_MINUTES} min and {GOAL_FACTOR}x the model's bytes + {GOAL_EXTRA_MB} MB. On "
        f"{meta['machine']} ({meta['cpus']} CPUs, shared: load averages in the JSON), {meta['date']}. Random "
        "weights and data: time, memory and correctness only, nothing about accuracy.",
        "",
        "| importance | exit | wall s | pass s | CPU | peak RSS MB | goal MB | x model | output runs | 2:4 holds "
        "| meets time | meets memory |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['importance']} | {r['rc']} | {r['wall_s']:.0f} | {r.get('pass_s', float('nan')):.0f} | "
            f"{r['cpu_percent']} | {r['peak_rss_mb']:.0f} | {r['goal_rss_mb']:.0f} | "
            f"{r['peak_rss_mb'] / r['model_mb']:.2f} | {yes[bool(r.get('output_runs'))]} | "
            f"{yes[bool(r.get('pattern_holds'))]} ({r.get('pattern_weights', 0)} weights) | "
            f"{yes[r['meets_time']]} | {yes[r['meets_memory']]} |"
        )
    lines += ["", "Commands (MODEL, CALIB: the files above; OUT: a scratch file):", ""]
    lines += [f"- `{r['command']}`" for r in rows]
    lines += ["", "Reproduce: `python bench/bench_scale.py --out bench/results`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--only", choices=IMPORTANCES, help="run one importance only")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (4: 1.25 GB; fewer for a quick look)")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--tag", default="", help="suffix of the result files (scale<TAG>.md/.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    model, calib, config = build(CACHE, args.layers)
    if args.build_only:
        return
    exe = ROOT / ".venv" / "bin" / "onnxprune"
    cli = str(exe if exe.is_file() else Path(sys.executable).with_name("onnxprune"))
    rows = [run_case(i, model, calib, config, cli) for i in IMPORTANCES if args.only in (None, i)]
    previous = args.out / f"scale{args.tag}.json"
    if args.only and previous.is_file():  # keep the other importance's figures from the last full run
        kept = [r for r in json.loads(previous.read_text())["rows"] if r["importance"] != args.only]
        rows = sorted(kept + rows, key=lambda r: IMPORTANCES.index(r["importance"]))
    meta = {
        "config": config,
        "model_mb": rows[0]["model_mb"],
        "machine": f"{platform.machine()} Linux",
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "environment": environment(),
        "goals": {"wall_s": GOAL_MINUTES * 60, "rss": f"{GOAL_FACTOR}x model bytes + {GOAL_EXTRA_MB} MB"},
    }
    write_results(args.out, f"scale{args.tag}", meta, rows, markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
