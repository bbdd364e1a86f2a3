"""Run ``onnxprune prune --channels`` (CLI) on every export variant of the vision zoo and the PaddleOCR models.

For each model: a random-normal calibration npz of the model's input size, then three CLI runs,
``--channels 0.5 --calib C --verify``, the same with ``--importance wanda``, and
``--target-flops 0.5 --calib C --verify``.  A run passes when the CLI exits 0 and wrote the model;
the report records the exit code, the last error line, ``verify_max_rel_diff`` and the MACs kept.

Models: ``tests/models/vision_zoo.py`` (ResNet-18, MobileNetV2, EfficientNet-B0; ``--size`` small or
full; every exporter and weight state) and, when ``rapidocr_onnxruntime`` is installed, its
PP-OCRv4 det/rec and PP-OCR v2.0 cls models (``tests/models/paddleocr.py``; det at 320x320, rec 48x320,
cls 48x192).

Usage: python bench/sweep_structured_exports.py --out bench/results [--size small] [--only resnet18,ocr_det]
[--runs channels-0.5,wanda-0.5,target-flops-0.5].  Writes ``structured_exports[_full].json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, SEED, setup_logging, write_json

sys.path.insert(0, str(ROOT))

CALIB_SAMPLES = 8
RUNS = {
    "channels-0.5": ["--channels", "0.5"],
    "wanda-0.5": ["--channels", "0.5", "--importance", "wanda"],
    "target-flops-0.5": ["--target-flops", "0.5"],
}


def _models(size: str, tmp: Path, only: set[str]) -> Iterator[tuple[str, Path, tuple[int, ...]]]:
    import onnx

    from tests.models.paddleocr import paddleocr_models
    from tests.models.vision_zoo import EXPORTERS, NORMS, SIZES, VISION, vision_onnx

    side = SIZES[size][0]
    for name in VISION:
        for exporter in EXPORTERS:
            for norms in NORMS:
                label = f"{name}/{exporter}/{norms}"
                if only and not any(label.startswith(o) for o in only):
                    continue
                path = tmp / f"{name}_{exporter}_{norms}.onnx"
                onnx.save(vision_onnx(name, exporter=exporter, size=size, norms=norms), path)
                yield label, path, (3, side, side)
    for short, (path, shape) in paddleocr_models().items():
        if not only or any(short.startswith(o) for o in only):
            yield short, path, shape


def _cli(args: list[str]) -> tuple[int, str]:
    from click.testing import CliRunner

    from onnxprune.cli import cli

    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    text = result.output + (repr(result.exception) if result.exception and result.exit_code not in (0, 1, 2) else "")
    return result.exit_code, text


def sweep(size: str, only: set[str], runs: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Every CLI run over every model; one row per run."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxprune_sweep_") as tmp_name:
        tmp = Path(tmp_name)
        for label, path, shape in _models(size, tmp, only):
            calib = tmp / f"calib_{'x'.join(map(str, shape))}.npz"
            if not calib.exists():
                x = np.random.default_rng(SEED).standard_normal((CALIB_SAMPLES, *shape)).astype(np.float32)
                np.savez(calib, x=x)
            for run, flags in runs.items():
                out, report = tmp / "out.onnx", tmp / "report.json"
                for stale in (out, report):
                    stale.unlink(missing_ok=True)
                start = time.perf_counter()
                args = ["prune", str(path), "-o", str(out), *flags, "--calib", str(calib), "--verify"]
                code, text = _cli([*args, "--report", str(report)])
                row: dict[str, Any] = {"model": label, "run": run, "exit": code, "seconds": time.perf_counter() - start}
                if code == 0 and report.exists():
                    row.update(_summary(json.loads(report.read_text())))
                else:
                    row["error"] = next((ln for ln in reversed(text.strip().splitlines()) if ln.strip()), "")
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """The channels pass figures and the MACs kept from a ``--report`` JSON."""
    found: dict[str, Any] = {}
    for entry in report.get("passes", []):
        if entry.get("name") == "channels":
            s = entry.get("summary", {})
            keys = ("pruned_groups", "prunable_groups", "refitted", "verify_max_rel_diff", "macs_kept")
            found.update({k: s.get(k) for k in keys})
    before, after = report.get("before", {}), report.get("after", {})
    if before.get("macs") and "macs" in after:
        found["macs_ratio"] = after["macs"] / before["macs"]
    return found


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Structured pruning over real export variants",
        "",
        f"`{command}`: every model through the CLI (`onnxprune prune M -o OUT <flags> --calib C --verify`, "
        f"{CALIB_SAMPLES} random-normal calibration samples). Random-init / untrained weights: this shows that "
        "the runs complete and that the shrunk model equals the masked model (`verify`), not accuracy.",
        "",
        "| model | run | exit | groups pruned / prunable | refitted | verify max rel diff | MACs kept | s | error |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        verify = f"{r['verify_max_rel_diff']:.1e}" if r.get("verify_max_rel_diff") is not None else ""
        macs = f"{r['macs_ratio']:.3f}" if r.get("macs_ratio") is not None else ""
        groups = f"{r.get('pruned_groups')} / {r.get('prunable_groups')}" if "pruned_groups" in r else ""
        lines.append(
            f"| {r['model']} | {r['run']} | {r['exit']} | {groups} | {r.get('refitted', '')} | {verify} | {macs} "
            f"| {r['seconds']:.1f} | {r.get('error', '')} |"
        )
    failed = [r for r in rows if r["exit"] != 0]
    lines += ["", f"{len(rows) - len(failed)} of {len(rows)} runs passed."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--size", default="small", choices=("small", "full"))
    parser.add_argument(
        "--only", default="", help="comma-separated model-label prefixes (resnet18, mobilenetv2/dynamo, ocr_det, ...)"
    )
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    args = parser.parse_args(argv)
    setup_logging("[sweep]")
    only = {o.strip() for o in args.only.split(",") if o.strip()}
    runs = {r.strip(): RUNS[r.strip()] for r in args.runs.split(",") if r.strip()}
    rows = sweep(args.size, only, runs)
    command = f"python bench/sweep_structured_exports.py --size {args.size}" + (f" --only {args.only}" if only else "")
    command += f" --runs {','.join(runs)}" if list(runs) != list(RUNS) else ""
    out = Path(args.out)
    stem = "structured_exports" + ("_full" if args.size == "full" else "")
    write_json({"command": command, "rows": rows}, out / f"{stem}.json")
    (out / f"{stem}.md").write_text(markdown(rows, command))
    return 1 if any(r["exit"] != 0 for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
