"""Benchmark the sparsify passes on torch-exported ResNet-18-like, MobileNetV2-like and BERT-like models.

For every model (TorchScript exporter, ``dynamo=False``, opset 13; cached in ``bench/_models/``) and
128 random calibration samples (an :class:`ArraySource`), this measures:

1. Per configuration (magnitude 50% layer-wise, Wanda 50% layer-wise, 2:4 magnitude), each in a fresh
   subprocess (``_config.py``): pipeline wall time (statistics collection + pruning), validation wall
   time (measured separately), and peak RSS from ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
   (absolute, and the growth over the RSS high-water mark reached before the pipeline started).
2. In one process, alternating the order every repetition (``_ratio.py``): ``collect_stats`` for the
   Wanda requests against a plain onnxruntime pass (``onnxprune._ort.session(model)``, same threads,
   warm and cold session), and the cost of only fetching the activations at the batch ``collect_stats``
   really uses after fitting it to its memory budget (a floor for any NumPy statistics code).
3. Where the ratio exceeds the target: a cProfile breakdown of ``collect_stats``.

The orchestrating process imports nothing but the standard library: on Linux a child started with
exec inherits its parent's RSS high-water mark in ``ru_maxrss``, so a heavy parent would inflate
every per-configuration figure. Each child also records ``VmHWM`` from ``/proc/self/status``.

Usage: python bench/bench_sparsify.py --out bench/results [--models resnet18,mobilenetv2,bert] [--samples 128]

Exported models and calibration arrays are cached in ``bench/_models/`` (delete it to re-export). Writes
``sparsify.json``, ``sparsify.md`` and, for models over the ratio target, ``profile_collect_<model>.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import (
    CONFIGS,
    MODELS,
    ROOT,
    TARGET_RATIO,
    environment,
    loadavg,
    logger,
    maxrss_mb,
    setup_logging,
    write_json,
)
from _config import stage_config
from _prepare import stage_prepare
from _ratio import stage_ratio
from _report import markdown, summary

STAGES = {"prepare": stage_prepare, "ratio": stage_ratio, "config": stage_config}


def _child(stage: str, args: argparse.Namespace, extra: Sequence[str], out: Path) -> dict[str, Any]:
    """Run one stage of this script in a fresh interpreter and return the JSON it wrote."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--stage",
        stage,
        "--samples",
        str(args.samples),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
        "--reps",
        str(args.reps),
        "--out",
        str(args.out),
        "--result",
        str(out),
        *(["--always-profile"] if args.always_profile else []),
        *extra,
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    logger.info("stage %s %s finished in %.1f s", stage, " ".join(extra), time.perf_counter() - started)
    return json.loads(out.read_text())


def orchestrate(args: argparse.Namespace) -> int:
    """Run every stage in its own subprocess and write the JSON and Markdown reports."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "_stages"
    tmp.mkdir(exist_ok=True)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        logger.error("unknown model(s) %s (choose from %s)", ", ".join(unknown), ", ".join(MODELS))
        return 2
    started = time.perf_counter()
    load_start = loadavg()
    models: dict[str, Any] = {}
    for name in names:
        info = _child("prepare", args, ["--model", name], tmp / f"prepare_{name}.json")
        ratio = _child("ratio", args, ["--model", name], tmp / f"ratio_{name}.json")
        configs = {}
        for config in CONFIGS:
            slug = config.replace(":", "of").replace("%", "")
            configs[config] = _child(
                "config", args, ["--model", name, "--config", config], tmp / f"config_{name}_{slug}.json"
            )
        models[name] = {"info": info, "ratio": ratio, "configs": configs}
    command = "python bench/bench_sparsify.py --out {} --models {} --samples {}".format(
        args.out, ",".join(names), args.samples
    )
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "samples": args.samples,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "reps": args.reps,
        "target_ratio": TARGET_RATIO,
        "memory_method": (
            "ru_maxrss (RUSAGE_SELF) of a fresh python process per configuration; the orchestrator imports only "
            "the standard library because an exec'd child inherits its parent's RSS high-water mark in "
            "ru_maxrss on Linux; VmHWM from /proc/self/status is recorded as a cross-check"
        ),
        "orchestrator_maxrss_mb": maxrss_mb(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "wall_s": time.perf_counter() - started,
        "environment": environment(),
        "models": models,
    }
    write_json(results, out / "sparsify.json")
    (out / "sparsify.md").write_text(markdown(results))
    for stage_file in tmp.iterdir():
        stage_file.unlink()
    tmp.rmdir()
    logger.info("wrote %s and %s in %.0f s", out / "sparsify.json", out / "sparsify.md", results["wall_s"])
    print(summary(results))  # the final summary (everything else goes through logging)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results", help="folder for sparsify.json / sparsify.md")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--samples", type=int, default=128, help="calibration samples")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per onnxruntime call")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions for the ratio")
    parser.add_argument("--always-profile", action="store_true", help="profile collect_stats even under the target")
    parser.add_argument("--stage", choices=tuple(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--config", choices=tuple(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage is None:
        setup_logging("[main]")
        return orchestrate(args)
    label = f"[{args.stage} {args.model}{' ' + args.config if args.config else ''}]"
    setup_logging(label.replace("%", "%%"))
    write_json(STAGES[args.stage](args), Path(args.result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
