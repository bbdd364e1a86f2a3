"""Transformer benchmark: all-MiniLM-L6-v2 pruned by the ``onnxprune`` CLI, then fine-tuned by distillation.

Both exports of the real-model benchmark (``bench/_real_models.py``: TorchScript and dynamo, sequence 32;
64 calibration sentences, 100 other evaluation sentences) go through every case of
``bench/_transformers_cases.py``: ``onnxprune prune MODEL -o OUT FLAGS --calib CALIB`` (calibration refit on,
as by default), then, for the cases that ask for it, ``onnxprune finetune OUT --teacher MODEL --calib CALIB
--steps N`` (distillation from the dense model on the calibration sentences). Measured: parameters and MACs
kept (the command's report), batch-1 latency speedup dense/pruned at 1 and 2 threads (both sessions in this
process, run alternately: ``_structured_common.latency``), and the similarity Spearman of mean-pooled
embeddings against the dense torch model on the evaluation sentences (``_real_metrics.similarity_spearman``),
one-shot and after the fine-tune. Each case is judged against the issue's goals.

Results are cached per case under ``bench/_models/transformers/<hash of the onnxprune sources>/``, so a rerun
after any change to the tool measures afresh and an unchanged tool reuses them (``--fresh`` to remeasure).

Usage: nice -n 10 python bench/bench_transformers.py [--models ts dynamo] [--cases channels flops ...]
[--steps 200] [--fresh]. Writes ``bench/results/transformers.json`` (rows of other models/cases kept) and
``bench/results/transformers.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT, environment, loadavg, rel, setup_logging, write_json
from _transformers_cases import BY_NAME, MODELS, WORK, Case, code_hash, custom_ops, fused_model, shell

RESULTS = ROOT / "bench" / "results"
logger = logging.getLogger("bench_transformers")
PRUNE_THREADS = 2


def _exe() -> str:
    return str(Path(sys.executable).with_name("onnxprune"))


def _prune_help() -> str:
    return subprocess.run([_exe(), "prune", "--help"], capture_output=True, text=True, check=True).stdout


def _recipe(case: Case, prune: list[str], folder: Path) -> list[str]:
    """Write the recipe of ``prune`` with the case's ``channels`` options set; the ``run`` words for it."""
    import yaml

    dumped = subprocess.run([_exe(), *prune, "--dump-recipe"], cwd=ROOT, capture_output=True, text=True, check=True)
    recipe = yaml.safe_load(dumped.stdout)
    passes = [p for p in recipe["passes"] if p["name"] == "channels"]
    if not passes:
        raise ValueError(f"the recipe of {shell(prune)} has no channels pass")
    passes[0]["config"].update(dict(case.channels_config))
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return ["run", rel(path)]


def _commands(case: Case, dense: Path, calib: Path, folder: Path, help_text: str) -> dict[str, list[str]]:
    """The ``onnxprune`` words of the case's prune run (and ``recipe``: how its recipe was made, if one is)."""
    out, report = rel(folder / "pruned.onnx"), rel(folder / "prune.json")
    prune = ["prune", rel(dense), "-o", out, *case.words, "--calib", rel(calib)]
    flags = case.flags()
    if all(flag in help_text.split() for flag in flags if flag.startswith("--")):
        return {"prune": [*prune, *flags, "--report", report, "--threads", str(PRUNE_THREADS)]}
    with_threads = [*prune, "--threads", str(PRUNE_THREADS)]
    return {"prune": [*_recipe(case, with_threads, folder), "--report", report], "recipe": with_threads}


def _latency(dense: Path, pruned: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Batch-1 latency at 1 and 2 threads, the first evaluation sample (``_structured_common.latencies``)."""
    import numpy as np
    from _structured_common import latencies

    from onnxprune import _io

    ref, cand = _io.load(dense), _io.load(pruned)
    with np.load(data, allow_pickle=False) as arrays:
        feed = {v.name: arrays[v.name][:1] for v in ref.graph.inputs}
    keep = ("ref_ms", "cand_ms", "speedup", "speedup_min", "speedup_max")
    return {t: {k: r[k] for k in keep} for t, r in latencies(ref, cand, feed, args.runs, args.rounds).items()}


def skip_reasons(report: dict[str, Any], top: int = 4) -> list[tuple[str, int]]:
    """The most frequent reasons the prune passes gave for skipping a group (names as ``'…'``), with counts."""
    from collections import Counter

    skipped = [skip for p in report["passes"] for skip in p.get("skipped") or ()]
    reasons = Counter(re.sub(r"'[^']*'", "'…'", skip["reason"]) for skip in skipped if "reason" in skip)
    return reasons.most_common(top)


class Subjects:
    """The prepared exports (``_real_models.prepare_minilm``), their fused graphs and dense metrics, once each."""

    def __init__(self) -> None:
        self._real: dict[str, Any] = {}
        self._dense: dict[Path, float] = {}

    def get(self, model: str, graph: str) -> tuple[Any, Path, float]:
        """(prepared model, the dense ONNX file of ``graph``, its dense Spearman)."""
        from _real_models import evaluate, prepare_minilm

        if model not in self._real:
            self._real[model] = prepare_minilm(dynamo=MODELS[model])
        real = self._real[model]
        dense = fused_model(real.model) if graph == "fused" else real.model
        if dense not in self._dense:
            self._dense[dense] = evaluate(dense, real)
        return real, dense, self._dense[dense]


def run_case(model: str, case: Case, subjects: Subjects, args: argparse.Namespace, help_text: str) -> dict[str, Any]:
    """Prune (then fine-tune) ``model`` as ``case`` says; every figure of its row."""
    from _real_models import evaluate
    from bench_real import _run_cli

    started = time.perf_counter()
    row: dict[str, Any] = {"id": f"{model}/{case.name}", "model": model, "case": case.name, "graph": case.graph}
    try:
        real, dense, dense_metric = subjects.get(model, case.graph)
    except Exception as e:  # an optimizer or export failure is the row's figure
        return {**row, "error": f"{type(e).__name__}: {e}"[:300], "seconds": time.perf_counter() - started}
    if case.graph == "fused":
        row["fused_ops"] = custom_ops(dense)
    folder = args.work / f"{model}_{case.name}"
    folder.mkdir(parents=True, exist_ok=True)
    commands = _commands(case, dense, real.calib, folder, help_text)
    row.update(dense=rel(dense), dense_metric=dense_metric, commands={k: shell(v) for k, v in commands.items()})
    logger.info("%s: onnxprune %s", row["id"], row["commands"]["prune"])
    row["prune"] = _run_cli(commands["prune"], folder / "prune.time", args.timeout)
    pruned = folder / "pruned.onnx"
    if row["prune"]["rc"] != 0 or not pruned.is_file():
        row["error"] = row["prune"].get("error", "no output written")
        logger.warning("%s: prune FAILED (%s)", row["id"], row["error"])
        return {**row, "seconds": time.perf_counter() - started}
    report = json.loads((folder / "prune.json").read_text())
    before, after = report["before"], report["after"]
    row.update(
        params_kept=after["params"] / before["params"],
        macs_kept=after["macs"] / max(before["macs"], 1),
        passes=[{"name": p["name"], "seconds": p["seconds"], "summary": p["summary"]} for p in report["passes"]],
        skipped=skip_reasons(report),
        one_shot=evaluate(pruned, real),
        latency=_latency(dense, pruned, real.data, args),
    )
    if case.finetune:
        tuned = folder / "finetuned.onnx"
        words = ["finetune", rel(pruned), "-o", rel(tuned), "--teacher", rel(dense), "--calib", rel(real.calib)]
        words += ["--steps", str(args.steps), "--report", rel(folder / "finetune.json"), "--threads", "2"]
        row["commands"]["finetune"] = shell(words)
        logger.info("%s: onnxprune %s", row["id"], row["commands"]["finetune"])
        row["finetune"] = _run_cli(words, folder / "finetune.time", args.timeout)
        if row["finetune"]["rc"] == 0 and tuned.is_file():
            tuned_report = json.loads((folder / "finetune.json").read_text())
            row["finetune"]["summary"] = tuned_report["passes"][0]["summary"]
            row["finetuned"] = evaluate(tuned, real)
    speedups = [v["speedup"] for v in row["latency"].values()]
    figures = {"speedup": min(speedups), "params_kept": row["params_kept"], "one_shot": row["one_shot"]}
    row["goals"] = case.goals.check({**figures, "finetuned": row.get("finetuned")})
    row["seconds"] = time.perf_counter() - started
    logger.info(
        "%s: params %.3f, MACs %.3f, speedup %s, Spearman %.4f -> %s (%.0f s)",
        row["id"],
        row["params_kept"],
        row["macs_kept"],
        "/".join(f"{s:.2f}x" for s in speedups),
        row["one_shot"],
        f"{row['finetuned']:.4f}" if "finetuned" in row else "-",
        row["seconds"],
    )
    return row


def _cached(folder: Path, case: Case, steps: int) -> dict[str, Any] | None:
    """The case's row measured before with these sources (and, if it fine-tunes, as many steps)."""
    path = folder / "row.json"
    if not path.is_file():
        return None
    row = json.loads(path.read_text())
    return row if not case.finetune or row.get("steps") == steps else None


def _write(rows: list[dict[str, Any]], args: argparse.Namespace, extra: dict[str, Any]) -> str:
    """Merge ``rows`` into ``transformers.json`` (same id replaced), rewrite ``transformers.md``; its text."""
    from _transformers_report import markdown

    path = args.out / "transformers.json"
    old = json.loads(path.read_text()).get("rows", []) if path.is_file() else []
    by_id = {r["id"]: r for r in old} | {r["id"]: r for r in rows}
    order = {f"{m}/{c}": i for i, (c, m) in enumerate((c, m) for c in BY_NAME for m in MODELS)}
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "latency": {"threads": [1, 2], "runs": args.runs, "rounds": args.rounds},
        "prune_threads": PRUNE_THREADS,
        **extra,
        "loadavg_end": loadavg(),
        "rows": sorted(by_id.values(), key=lambda r: order.get(r["id"], len(order))),
    }
    write_json(results, path)
    text = markdown(results)
    (args.out / "transformers.md.tmp").write_text(text)
    (args.out / "transformers.md.tmp").replace(args.out / "transformers.md")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--cases", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    parser.add_argument("--steps", type=int, default=200, help="fine-tune steps (FinetuneConfig's default)")
    parser.add_argument("--runs", type=int, default=90, help="latency runs per model and thread count")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per onnxprune command")
    parser.add_argument("--fresh", action="store_true", help="remeasure cases cached for these sources")
    parser.add_argument("--cached-only", action="store_true", help="only rewrite the results from cached cases")
    parser.add_argument("--code", help="the cache of this source hash (default: the current sources')")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    if args.list:
        sys.stdout.write("".join(f"{c}: {BY_NAME[c].title}\n" for c in args.cases))
        return 0
    setup_logging("transformers")
    sys.path.insert(0, str(ROOT))
    args.work = WORK / (args.code or code_hash(ROOT))
    help_text, subjects = _prune_help(), Subjects()
    rows: list[dict[str, Any]] = []
    for name in args.cases:
        for model in args.models:
            row = None if args.fresh else _cached(args.work / f"{model}_{name}", BY_NAME[name], args.steps)
            if row is None and args.cached_only:
                logger.warning("%s/%s: not cached for sources %s, left out", model, name, args.work.name)
                continue
            if row is None:
                row = {**run_case(model, BY_NAME[name], subjects, args, help_text), "steps": args.steps}
                write_json(row, args.work / f"{model}_{name}" / "row.json")
            rows.append({"code": args.work.name, **row})
            _write(rows, args, {"code": args.work.name, "steps": args.steps})
    sys.stdout.write((args.out / "transformers.md").read_text() if rows else "no case measured\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
