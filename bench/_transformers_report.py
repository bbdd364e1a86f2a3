"""``transformers.md``: the transformer benchmark's rows as one table per case, goals marked met/missed."""

from __future__ import annotations

from typing import Any

from _transformers_cases import BY_NAME, FUSION, MODELS, Case

MARK = {True: "met", False: "**missed**", None: "–"}
TITLES = {"ts": "TorchScript export", "dynamo": "dynamo export"}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _spearman(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _speed(row: dict[str, Any], threads: str) -> str:
    lat = row.get("latency", {}).get(threads)
    if lat is None:
        return "–"
    return f"{lat['speedup']:.2f}× ({lat['ref_ms']:.2f} → {lat['cand_ms']:.2f} ms)"


def _untouched(row: dict[str, Any]) -> str:
    return " (nothing pruned)" if row["params_kept"] >= 1 and row["macs_kept"] >= 1 else ""


def _seconds(row: dict[str, Any]) -> str:
    prune = row.get("prune", {}).get("wall_s")
    tune = row.get("finetune", {}).get("wall_s")
    parts = [f"prune {prune:.0f}"] if prune is not None else []
    parts += [f"fine-tune {tune:.0f}"] if tune is not None else []
    return ", ".join(parts + [f"all {row['seconds']:.0f}"]) if "seconds" in row else "–"


def _table(case: Case, rows: list[dict[str, Any]]) -> list[str]:
    goals = case.goals.describe()
    head = ["export", "params kept", "MACs kept", "speedup 1 thread", "speedup 2 threads", "Spearman dense",
            "one-shot", "fine-tuned", *goals.values(), "seconds"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if "error" in row:
            failed = f"**failed**: `{row['error']}`"
            lines.append(f"| {row['model']} | {failed} |" + " – |" * (len(head) - 2))
            continue
        tuned = row.get("finetune")
        finetuned = _spearman(row.get("finetuned")) if tuned is None or "finetuned" in row else "**failed**"
        cells = [row["model"], _pct(row["params_kept"]), _pct(row["macs_kept"]), _speed(row, "1"), _speed(row, "2"),
                 _spearman(row["dense_metric"]), _spearman(row["one_shot"]) + _untouched(row), finetuned,
                 *(MARK[row["goals"].get(name)] for name in goals), _seconds(row)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    """Per export: the commands that reproduce the row, fused ops, why groups were left alone, failures."""
    lines = []
    for row in rows:
        source = f", sources `{row['code']}`" if "code" in row else ""
        lines.append(f"- **{row['model']}** ({TITLES.get(row['model'], row['model'])}{source}):")
        for step, command in row.get("commands", {}).items():
            prefix = "made by `onnxprune ... --dump-recipe`, channels options set, from" if step == "recipe" else step
            lines.append(f"  - {prefix}: `onnxprune {command}`")
        if row.get("fused_ops") is not None:
            ops = ", ".join(f"{op} ×{n}" for op, n in sorted(row["fused_ops"].items())) or "none"
            lines.append(f"  - fused ops in the dense graph: {ops}")
        if row.get("skipped"):
            reasons = "; ".join(f"{reason} (×{n})" for reason, n in row["skipped"])
            lines.append(f"  - most frequent reasons groups were not pruned: {reasons}")
        summary = next((p["summary"] for p in row.get("passes", []) if p["name"] == "channels"), None)
        if summary:
            lines.append(
                f"  - channel groups: {summary.get('pruned_groups')} pruned of {summary.get('prunable_groups')} "
                f"prunable of {summary.get('groups')}; {summary.get('channels_removed')} channels removed"
            )
        tuned = row.get("finetune")
        if tuned and "error" in tuned:
            lines.append(f"  - fine-tune failed: `{tuned['error']}`")
        elif tuned and "summary" in tuned:
            s = tuned["summary"]
            lines.append(
                f"  - fine-tune: {s.get('steps')} steps, lr {s.get('lr', float('nan')):.2g}, kept step "
                f"{s.get('kept_step', 'last')}, held-out loss {s.get('heldout_start', float('nan')):.4g} → "
                f"{s.get('heldout_kept', float('nan')):.4g}{'; ' + s['note'] if s.get('note') else ''}"
            )
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The whole report: how it was measured and reproduced, then one table per case."""
    env, latency = results["environment"], results["latency"]
    models = sorted({r["model"] for r in results["rows"]}, key=list(MODELS).index)
    cases = [c for c in BY_NAME if any(r["case"] == c for r in results["rows"])]
    codes = ", ".join(f"`{c}`" for c in sorted({r.get("code", results["code"]) for r in results["rows"]}))
    fusion = ", ".join(f"{k}={v!r}" for k, v in FUSION.items())
    lines = [
        "# Transformer benchmark: all-MiniLM-L6-v2",
        "",
        "all-MiniLM-L6-v2 (sentence-transformers, 6 layers, 12 heads, hidden 384, FFN 1536) exported at sequence 32 "
        "by the TorchScript (`ts`) and the dynamo (`dynamo`) exporter (`bench/_real_models.py`), pruned through the "
        "`onnxprune` CLI as each heading says, with its 64 calibration sentences (calibration refit on, as by "
        "default); cases that say so are then fine-tuned by `onnxprune finetune` (distillation from the dense model "
        f"on the same unlabeled calibration sentences, {results['steps']} steps). Columns:",
        "",
        "- **params kept / MACs kept**: after / before, from the prune command's report;",
        "- **speedup**: batch-1 latency dense / pruned in onnxruntime CPU at 1 and 2 intra-op threads, both sessions "
        f"in one process run alternately (spinning off), median over {latency['rounds']} rounds of "
        f"{latency['runs'] // latency['rounds']} runs (`bench/_structured_common.py: latency`); the speed goal "
        "must hold at both thread counts (the milliseconds are those of a loaded machine: compare the ratios; rows "
        "with the same MACs kept have the same shapes, so their spread is the measurement's noise);",
        "- **Spearman**: correlation of all pairwise cosine similarities of the mean-pooled embeddings against the "
        "dense torch model's, on 100 evaluation sentences disjoint from the calibration ones "
        "(`bench/_real_metrics.py: similarity_spearman`); *dense* is the unpruned ONNX graph of the row;",
        "- **goals**: the issue's targets for the case, met or missed (– when not measured);",
        f"- the *fused* case prunes `onnxruntime.transformers.optimizer.optimize_model({fusion})` of each export "
        "and times it against that fused dense graph.",
        "",
        "Nothing in the benchmark says what is prunable: the figures are whatever the CLI does with these flags, "
        "so they change when the channel analysis does. Below each table: the exact commands of each row "
        "(run from the repository root; output paths are under the gitignored cache), and the most frequent "
        "reasons the CLI gave for leaving channel groups alone.",
        "",
        "Reproduce: `nice -n 10 python bench/bench_transformers.py --models "
        f"{' '.join(models)} --cases {' '.join(cases)} --steps {results['steps']}` (cached per case under "
        f"`bench/_models/transformers/<hash of the onnxprune sources>/`; rows measured with sources {codes}; "
        "`--fresh` remeasures, `--cached-only --code HASH` rewrites these files from a cache).",
        "",
        f"Written {results['date']}: Python {env['python']} on {env['platform']} ({env['machine']}), "
        f"{env['cpu_count']} cores shared with other jobs (load average at the end {results.get('loadavg_end')}); "
        f"onnxruntime {env['onnxruntime']}, onnx {env['onnx']}, onnx-ir {env['onnx_ir']}, numpy {env['numpy']}, "
        f"torch {env['torch']}; prune commands with `--threads {results['prune_threads']}`; the cases took "
        f"{sum(r.get('seconds', 0) for r in results['rows']) / 60:.1f} min in all.",
    ]
    for name in cases:
        case = BY_NAME[name]
        rows = [r for r in results["rows"] if r["case"] == name]
        lines += ["", f"## {case.title}", "", *_table(case, rows), "", *_notes(rows)]
    return "\n".join(lines) + "\n"
