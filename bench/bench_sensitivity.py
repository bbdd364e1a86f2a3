"""Sensitivity analysis and allocation: analysis time on ResNet-18 at 224, and allocations compared on a trained model.

1. Time: ``analyze`` (default kinds: unstructured and channels, grid 0.25/0.5/0.75/0.9) on the
   torchvision-layout ResNet-18 (plain torch, 1000 classes, random init; a timing figure only) at
   224x224 with 64 random samples, no cache. The time of one dense pass over the 64 samples is
   measured in the same process, so that the figure can be read against the machine's load.
2. Fidelity: the trained digits CNN (``examples/data``), calibrated on ``digits_calib.npz`` and
   scored by top-1 on the held-out ``digits_test.npz``: ``--allocation uniform|global|owl|sensitivity``
   at sparsity 0.7 and 0.8 with magnitude and SparseGPT pruning, and ``uniform|global|sensitivity``
   for 50% of the channels (with ridge reconstruction).

Usage: python bench/bench_sensitivity.py --out bench/results [--skip-resnet] [--threads 2]
Writes ``sensitivity.json`` and ``sensitivity.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxprune import _io, _ort  # noqa: E402
from onnxprune.analysis.sensitivity import Settings, analyze  # noqa: E402
from onnxprune.calibration.sources import open_source  # noqa: E402
from onnxprune.context import PassContext  # noqa: E402
from onnxprune.passes import PASSES  # noqa: E402

DIGITS = ROOT / "examples" / "data"


def resnet_timing(threads: int, samples: int) -> dict[str, Any]:
    from tests.models.exported import resnet18_like_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet18.onnx"
        onnx.save(resnet18_like_onnx(num_classes=1000), path)
        x = np.random.default_rng(0).standard_normal((samples, 3, 224, 224)).astype(np.float32)
        np.savez(Path(tmp) / "calib.npz", x=x)
        model = _io.load(path)
        session = ort.InferenceSession(str(path), _ort.session_options(threads), providers=["CPUExecutionProvider"])
        session.run(None, {"x": x[:32]})
        start = time.perf_counter()
        for i in range(0, samples, 32):
            session.run(None, {"x": x[i : i + 32]})
        dense = time.perf_counter() - start
        source = open_source(Path(tmp) / "calib.npz", model)
        start = time.perf_counter()
        table = analyze(model, source, settings=Settings(kinds=("unstructured", "channels")), threads=threads)
        seconds = time.perf_counter() - start
    return {
        "model": "ResNet-18 (torchvision layout, 1000 classes), 224x224",
        "samples": samples,
        "threads": threads,
        "kinds": ["unstructured", "channels"],
        "units": {k: len(table.of_kind(k)) for k in ("unstructured", "channels")},
        "measurements": sum(len(u.points) for u in table.units),
        "seconds": round(seconds, 1),
        "dense_pass_seconds": round(dense, 2),
        "in_dense_passes": round(seconds / dense, 1),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }


def _top1(model: Any, test: dict[str, np.ndarray]) -> float:
    session = _ort.session(model)
    logits = session.run(None, {"input": test["input"]})[0]
    return float((logits.argmax(axis=1) == test["label"]).mean())


def digits_allocations() -> list[dict[str, Any]]:
    test = dict(np.load(DIGITS / "digits_test.npz"))
    rows = []
    cases: list[tuple[str, dict[str, Any], tuple[str, ...]]] = []
    for sparsity in (0.7, 0.8):
        cases.append(
            (
                "unstructured",
                {"sparsity": sparsity, "importance": "magnitude"},
                ("uniform", "global", "owl", "sensitivity"),
            )
        )
        cases.append(("sparsegpt", {"sparsity": sparsity}, ("uniform", "global", "owl", "sensitivity")))
    cases.append(("channels", {"ratio": 0.5}, ("uniform", "global", "sensitivity")))
    for name, config, allocations in cases:
        for allocation in allocations:
            model = _io.load(DIGITS / "digits_cnn.onnx")
            context = PassContext(calibration=open_source(DIGITS / "digits_calib.npz", model))
            cls = PASSES[name]
            result = cls(cls.config_class(**config, allocation=allocation), context)(model)
            summary = result.report.summary
            rows.append(
                {
                    "pass": name,
                    **config,
                    "allocation": allocation,
                    "top1": round(_top1(model, test), 4),
                    "achieved": round(summary.get("achieved_sparsity", summary.get("channels_removed", 0)), 4),
                }
            )
            print(rows[-1], flush=True)
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Sensitivity analysis and allocation", ""]
    timing = results.get("resnet18")
    if timing:
        lines += [
            "## analyze on ResNet-18 at 224, 64 samples",
            "",
            f"{timing['units']} units x 4 ratios = {timing['measurements']} measurements in {timing['seconds']} s "
            f"({timing['threads']} threads); one dense pass over the samples took {timing['dense_pass_seconds']} s "
            f"(analysis = {timing['in_dense_passes']} dense passes); load average {timing['loadavg']}.",
            "",
        ]
    lines += [
        "## digits CNN (trained), top-1 on the 360 held-out digits (dense 98.6%)",
        "",
        "| pass | budget | uniform | global | owl | sensitivity |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows = results["digits"]
    keys = dict.fromkeys((r["pass"], r.get("sparsity", r.get("ratio"))) for r in rows)
    for name, budget in keys:
        cells = []
        for allocation in ("uniform", "global", "owl", "sensitivity"):
            hit = [
                r
                for r in rows
                if r["pass"] == name and r.get("sparsity", r.get("ratio")) == budget and r["allocation"] == allocation
            ]
            cells.append(f"{100 * hit[0]['top1']:.1f}%" if hit else "-")
        lines.append(f"| {name} | {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--skip-resnet", action="store_true")
    args = parser.parse_args()
    os.environ["ONNXPRUNE_CACHE"] = tempfile.mkdtemp(prefix="onnxprune-bench-cache-")
    results: dict[str, Any] = {"digits": digits_allocations()}
    if not args.skip_resnet:
        results["resnet18"] = resnet_timing(args.threads, args.samples)
        print(results["resnet18"], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sensitivity.json").write_text(json.dumps(results, indent=2))
    (args.out / "sensitivity.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
