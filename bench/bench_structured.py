"""Benchmark structured (channel) pruning: real-size speed, accuracy on a trained CNN, onnxsim comparison.

Three sections, all in one process (``--sections`` picks some):

1. ``speed``: ResNet-18-like, MobileNetV2-like and EfficientNet-B0-like at 224x224, each exported by the
   TorchScript exporter and by dynamo (``tests/models/vision_zoo.py``, bias-free Convs) (plus the small
   architectures of ``tests/models/structured_zoo.py`` at their default sizes), each with 50% of every
   channel group removed (``ChannelPrunePass``, importance l2, uniform, no reconstruction; the named
   models also with ``round_to=8`` and ``round_to=16``): MACs and params kept, batch-1 onnxruntime CPU
   latency of the dense and the pruned model with 1 and 2 intra-op threads (same process, runs
   interleaved by ``onnxprune.verify.measure_latency``, intra-op spinning off), and efficiency = latency
   speedup / FLOPs speedup (target >= 0.9 for the named models); for the named models also the
   2-thread latency with spinning on (interleaved, and one session alive at a time) and an onnxruntime
   profile of where the time goes.
2. ``digits``: top-1 accuracy of the trained ``examples/data/digits_cnn.onnx`` on its labelled test set at
   25/50/75% of the channels removed (l2 and wanda, reconstruction off and on), and onnxsim 0.8.1's own
   structured pruning (``apply_structured_pruning``, ``apply_structured_wanda_pruning``) on the same model,
   each matched by an onnxprune run with ``target_flops`` = the MACs fraction onnxsim reached.
3. ``onnxsim``: onnxsim ``apply_structured_pruning(sparsity=0.5)`` on the 224 ResNet-18-like, then onnxprune
   at onnxsim's MACs fraction (reconstruction off, and on with random-normal calibration inputs): output
   fidelity against the dense (untrained) model on other random inputs, and latency ratios.

Usage: python bench/bench_structured.py --out bench/results [--models resnet18,mobilenetv2,...] [--quick]

``--models`` takes ``resnet18``, ``mobilenetv2``, ``efficientnet_b0`` (TorchScript exports), their dynamo exports
``resnet18_dynamo``, ``mobilenetv2_dynamo``, ``efficientnet_b0_dynamo`` and the zoo's architecture names
(default: all). ``--quick`` cuts the latency runs and the calibration/evaluation samples for a smoke run.
Exported models are cached in ``bench/_models/`` (``--reexport`` rebuilds them); the zoo module is polled
for up to ``--zoo-wait`` seconds if it is not there yet. Writes ``structured.json`` and ``structured.md``
into ``--out`` and prints the summary tables.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import environment, loadavg, setup_logging, write_json
from _structured_common import NAMED, TARGET_EFFICIENCY, ZOO_EFFICIENTNET, import_zoo, logger, zoo_archs
from _structured_report import markdown, summary

SECTIONS = ("speed", "digits", "onnxsim")


def _environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    env = environment()
    try:  # onnxruntime's NCHWc conv kernels use 16-channel blocks with AVX-512F, 8 with AVX2
        env["avx512f"] = "avx512f" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        env["avx512f"] = None
    try:
        env["onnxsim"] = version("onnxsim")
    except PackageNotFoundError:
        env["onnxsim"] = None
    return env


def _model_names(requested: str, zoo: Any | None) -> tuple[list[str], list[str]]:
    """(known names to run, problems) for the ``--models`` argument."""
    archs = zoo_archs(zoo)
    if requested == "all":
        names = [*NAMED, *archs]
    else:
        names = [m.strip() for m in requested.split(",") if m.strip()]
    problems = []
    known = []
    for name in names:
        name = "efficientnet_b0" if name == ZOO_EFFICIENTNET else name
        if name in NAMED or name in archs:
            known.append(name)
        else:
            problems.append(
                f"unknown or unavailable model '{name}' (named: {', '.join(NAMED)}; zoo: {', '.join(archs)})"
            )
    if zoo is None and requested == "all":
        problems.append("tests/models/structured_zoo.py unavailable: EfficientNet-B0-like and the zoo were skipped")
    return list(dict.fromkeys(known)), problems


def _collect_errors(results: dict[str, Any]) -> list[str]:
    """One line per failed run, for the report's "Problems" list."""
    errors = list(results.get("model_problems", []))
    for row in results.get("speed", {}).get("rows", []):
        if "error" in row:
            errors.append(f"speed {row['model']} {row.get('config', '')}: {row['error']}")
    digits = results.get("digits", {})
    for row in digits.get("onnxprune", []):
        if "error" in row:
            errors.append(f"digits onnxprune {row['config']}: {row['error']}")
    for comp in digits.get("comparisons", []):
        for row in [comp["onnxsim"], *comp["onnxprune_matched"]]:
            if "error" in row:
                errors.append(f"digits {row.get('function', row.get('config'))}: {row['error']}")
    o = results.get("onnxsim", {})
    for row in [o.get("onnxsim", {}), *o.get("onnxprune", [])]:
        if "error" in row:
            errors.append(f"resnet18 onnxsim comparison {row.get('config', 'onnxsim')}: {row['error']}")
    for section, message in results.get("section_errors", {}).items():
        errors.append(f"section {section} failed: {message}")
    return errors


def run(args: argparse.Namespace) -> int:
    """Run the chosen sections and write the reports."""
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        logger.error("unknown section(s) %s (choose from %s)", ", ".join(unknown), ", ".join(SECTIONS))
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_start = loadavg()
    needs_zoo = "speed" in sections and (
        args.models == "all" or any(m.strip() not in ("resnet18", "mobilenetv2") for m in args.models.split(","))
    )
    zoo = import_zoo(args.zoo_wait) if needs_zoo else None
    names, problems = _model_names(args.models, zoo) if "speed" in sections else ([], [])
    for problem in problems:
        logger.warning("%s", problem)
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/bench_structured.py --out {} --models {} --sections {}{}{}".format(
            args.out, args.models, ",".join(sections), " --quick" if args.quick else "", args.overrides
        ),
        "runs": args.runs,
        "rounds": args.rounds,
        "calib_samples": args.calib_samples,
        "eval_samples": args.eval_samples,
        "target_efficiency": TARGET_EFFICIENCY,
        "environment": _environment(),
        "model_problems": problems,
        "section_errors": {},
    }
    for section in sections:
        logger.info("section %s", section)
        section_start = time.perf_counter()
        try:
            if section == "speed":
                from _structured_speed import run_speed

                results["speed"] = run_speed(args, names, zoo)
            elif section == "digits":
                from _structured_digits import run_digits

                results["digits"] = run_digits(args)
            else:
                from _structured_onnxsim import run_onnxsim

                results["onnxsim"] = run_onnxsim(args, zoo)
        except Exception as e:  # keep the other sections' results
            logger.exception("section %s failed", section)
            results["section_errors"][section] = f"{type(e).__name__}: {e}"
        results.setdefault("section_s", {})[section] = time.perf_counter() - section_start
        logger.info("section %s done in %.0f s", section, results["section_s"][section])
    results["loadavg_start"] = load_start
    results["loadavg_end"] = loadavg()
    results["wall_s"] = time.perf_counter() - started
    results["errors"] = _collect_errors(results)
    write_json(results, out / "structured.json")
    (out / "structured.md").write_text(markdown(results))
    logger.info("wrote %s and %s in %.0f s", out / "structured.json", out / "structured.md", results["wall_s"])
    print(summary(results))  # the final summary (everything else goes through logging)
    return 1 if results["section_errors"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results", help="folder for structured.json / structured.md")
    parser.add_argument(
        "--models", default="all", help=f"comma-separated subset of {','.join(NAMED)} and the zoo architectures"
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer latency runs and samples")
    parser.add_argument(
        "--round-to", default="1,8,16", help="comma-separated round_to values for the named models (default 1,8,16)"
    )
    parser.add_argument("--runs", type=int, help="latency runs per model and thread count (default 50; quick 10)")
    parser.add_argument("--rounds", type=int, help="measure_latency calls the runs are split into (default 5; quick 2)")
    parser.add_argument("--calib-samples", type=int, help="random calibration inputs, section onnxsim (default 64)")
    parser.add_argument(
        "--eval-samples", type=int, help="random inputs for output fidelity, section onnxsim (default 64)"
    )
    parser.add_argument(
        "--zoo-wait", type=float, default=1200, help="seconds to poll for tests/models/structured_zoo.py"
    )
    parser.add_argument(
        "--reexport", action="store_true", help="export the models again instead of using bench/_models"
    )
    args = parser.parse_args(argv)
    defaults = {"runs": (50, 10), "rounds": (5, 2), "calib_samples": (64, 8), "eval_samples": (64, 16)}
    args.overrides = ""
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
        else:
            args.overrides += f" --{key.replace('_', '-')} {getattr(args, key)}"
    args.rounds = max(1, min(args.rounds, args.runs))
    args.round_to = tuple(int(v) for v in args.round_to.split(",") if v.strip())
    if args.round_to != (1, 8, 16):
        args.overrides += f" --round-to {','.join(map(str, args.round_to))}"
    setup_logging("[structured]")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
