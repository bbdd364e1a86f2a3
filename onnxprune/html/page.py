"""One self-contained HTML page for a run's report: tables, inline SVG figures and the recipe.

No script, no external stylesheet, font or image: the page opens the same offline. Every value
taken from the report (node names, paths, recipe text) is escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from onnxprune.html.figures import figures_of
from onnxprune.html.svg import BarChart, LineChart, bar_chart, esc, line_chart
from onnxprune.report import STAT_ROWS, human

__all__ = ["render_page"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1a1a1a;
       margin: 0; background: #f6f7f9; }
main { max-width: 1140px; margin: 0 auto; padding: 16px 20px 48px; background: #fff; }
h1 { font-size: 24px; margin: 8px 0 4px; } h2 { font-size: 19px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 16px; margin: 18px 0 6px; }
.meta { color: #555; font-size: 13px; word-break: break-all; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 14px; }
th, td { border: 1px solid #d8d8d8; padding: 4px 10px; text-align: right; vertical-align: top; }
th { background: #f0f2f5; } td:first-child, th:first-child { text-align: left; }
td.text { text-align: left; word-break: break-all; max-width: 640px; }
.good { color: #0a7d32; } .bad { color: #b3261e; font-weight: 600; }
.warn { background: #fff4d6; border: 1px solid #e6c25a; padding: 6px 10px; margin: 8px 0; }
svg.chart { display: block; margin: 10px 0 18px; max-width: 100%; height: auto; }
pre { background: #f4f4f4; border: 1px solid #ddd; padding: 10px; overflow-x: auto; font-size: 13px; }
details summary { cursor: pointer; margin: 6px 0; }
"""


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _table(head: Sequence[str] | None, rows: Sequence[Sequence[str]], text_cols: Sequence[int] = ()) -> str:
    """A table whose cells are already escaped HTML (``head``: column titles, or none)."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head) if head else ""
    body = "".join(
        "<tr>"
        + "".join(f'<td class="text">{c}</td>' if i in text_cols else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    thead = f"<thead><tr>{th}</tr></thead>" if th else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _ratio(before: float | None, after: float | None) -> str:
    return f"{after / before:.3f}" if before and after is not None else "–"


def _before_after(report: Mapping[str, Any]) -> str:
    before, after = report.get("before"), report.get("after")
    if not before or not after:
        return ""
    rows = [[esc(label), human(before[f]), human(after[f]), _ratio(before[f], after[f])] for label, f in STAT_ROWS]
    rows.append(["FLOPs", human(before["flops"]), human(after["flops"]), _ratio(before["flops"], after["flops"])])
    rows.append(["nodes", _num(before["nodes"]), _num(after["nodes"]), _ratio(before["nodes"], after["nodes"])])
    validation = report.get("validation") or {}
    ratios = {label: after[f] / before[f] for label, f in STAT_ROWS if before[f]}
    if validation.get("latency_ref_ms"):
        ref, cand = validation["latency_ref_ms"], validation["latency_cand_ms"]
        rows.append(["latency (ms, median of one sample)", f"{ref:.4g}", f"{cand:.4g}", _ratio(ref, cand)])
        ratios["latency"] = cand / ref
    html = [
        "<h2>Before / after</h2>",
        _table(["", "before", "after", "after / before"], rows),
    ]
    assumed = list(dict.fromkeys([*before.get("assumed_dims", []), *after.get("assumed_dims", [])]))
    if assumed:
        html.append(f'<p class="warn">MACs counted with dynamic dims at 1: {esc(", ".join(assumed))}</p>')
    chart = BarChart(
        "after / before (1 = unchanged)",
        list(ratios),
        {"after / before": list(ratios.values())},
        "ratio of the result's figure to the original's",
        lambda v: f"{v:.3f}",
        {"1.0": 1.0},
    )
    html.append(bar_chart(chart))
    return "".join(html)


def _output_rows(outputs: Sequence[Mapping[str, Any]]) -> str:
    columns = [
        ("max |Δ|", "max_abs_diff"),
        ("mean cosine", "mean_cosine"),
        ("top-1 agreement", "top1_agreement"),
        ("argmax agreement", "argmax_agreement"),
        ("whole-sequence agreement", "sequence_agreement"),
        ("accuracy (original)", "accuracy_ref"),
        ("accuracy (result)", "accuracy_cand"),
        ("NaN/inf (original)", "nonfinite_ref"),
        ("NaN/inf (result)", "nonfinite_cand"),
    ]
    shown = [(h, k) for h, k in columns if any(o.get(k) is not None for o in outputs)]
    rows = []
    for out in outputs:
        cells = [esc(out.get("name", "?"))]
        for _, key in shown:
            value = out.get(key)
            css = "bad" if key == "nonfinite_cand" and value else ""
            cells.append(f'<span class="{css}">{esc(_num(value, 5))}</span>' if css else esc(_num(value, 5)))
        rows.append(cells)
    return _table(["output", *[h for h, _ in shown]], rows, text_cols=(0,))


def _validation(report: Mapping[str, Any]) -> str:
    validation = report.get("validation")
    if not validation:
        return "<h2>Validation</h2><p>Validation was off for this run.</p>"
    html = ["<h2>Validation</h2>"]
    if validation.get("random_inputs"):
        html.append('<p class="warn">Validated on random inputs: fidelity not measured on real data.</p>')
    facts = [
        ["onnx checker", esc(validation.get("checker", "–"))],
        ["samples", _num(validation.get("samples"))],
        ["latency mode", esc(validation.get("latency_mode", "–"))],
        ["speedup (original / result latency)", _num(validation.get("speedup"), 3)],
    ]
    metric = validation.get("metric")
    if metric:
        facts.append(
            [
                f"task metric {esc(metric['spec'])} (original → result)",
                f"{_num(metric['reference'])} → {_num(metric['candidate'])} (drop {_num(metric['drop'])})",
            ]
        )
    html.append(_table(None, facts))
    html.append(_output_rows(validation.get("outputs", [])))
    return "".join(html)


def _budget_search(report: Mapping[str, Any]) -> str:
    search = report.get("budget_search")
    if not search:
        return ""
    trials = sorted(search.get("trials", []), key=lambda t: t["value"])
    xs = [t["value"] for t in trials]
    series = {
        f"measured drop ({search['measure']})": (xs, [t["drop"] for t in trials]),
        f"limit {search['max_drop']:g}": ([xs[0], xs[-1]], [search["max_drop"]] * 2) if xs else ([], []),
    }
    chart = LineChart(
        f"budget search: {search['field']} → drop (found {search['found']:.4g})",
        series,
        search["field"],
        f"drop ({search['measure']})",
    )
    return "<h2>Budget search</h2>" + line_chart(chart)


def _pass(report: Mapping[str, Any]) -> str:
    name = esc(report.get("name", "?"))
    html = [f'<h3>{name} <span class="meta">({_num(report.get("seconds", 0.0), 3)} s)</span></h3>']
    summary = report.get("summary") or {}
    if summary:
        rows = [[esc(k), esc(_num(v))] for k, v in summary.items()]
        html.append(_table(["summary", ""], rows, text_cols=(1,)))
    html.extend(figures_of(report))
    skipped = report.get("skipped") or []
    if skipped:
        rows = [[esc(s.get("tensor", "")), esc(s.get("op", "")), esc(s.get("reason", ""))] for s in skipped]
        html.append(
            f"<details><summary>{len(skipped)} skipped (tensor, op, reason)</summary>"
            + _table(["tensor", "op", "reason"], rows, text_cols=(0, 2))
            + "</details>"
        )
    return "".join(html)


def _op_latency(op_ms: Mapping[str, Mapping[str, float]] | None) -> str:
    if not op_ms:
        return "<h2>Latency by op type</h2><p>Not measured for this report.</p>"
    labels = list(op_ms)
    ops = sorted(
        {op for ms in op_ms.values() for op in ms}, key=lambda op: -max(ms.get(op, 0.0) for ms in op_ms.values())
    )
    chart = BarChart(
        "latency by op type (onnxruntime profiler, mean per run, one sample)",
        ops,
        {label: [op_ms[label].get(op) for op in ops] for label in labels},
        "milliseconds per run",
        lambda v: f"{v:.3g} ms",
    )
    totals = [[esc(label), f"{sum(op_ms[label].values()):.4g}"] for label in labels]
    return (
        "<h2>Latency by op type</h2>"
        + bar_chart(chart)
        + _table(["model", "kernel time (ms per run)"], totals, text_cols=(0,))
    )


def _recipe(report: Mapping[str, Any]) -> str:
    recipe = report.get("recipe")
    if not recipe:
        return ""
    text = yaml.safe_dump(recipe, sort_keys=False)
    return f"<h2>Recipe</h2><p>Reproduce with <code>onnxprune run recipe.yaml</code>:</p><pre>{esc(text)}</pre>"


def render_page(report: Mapping[str, Any], op_ms: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """The HTML page for a report (plain JSON data); ``op_ms``: milliseconds per op type for each model."""
    model, output = report.get("model", report.get("ref", "")), report.get("output", report.get("cand", ""))
    passes = report.get("passes") or []
    title = f"onnxprune report: {model}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>",
        "<h1>onnxprune report</h1>",
        f'<p class="meta">{esc(model)} → {esc(output)}'
        + (f" · {_num(report['seconds'], 3)} s" if isinstance(report.get("seconds"), float | int) else "")
        + "</p>",
        _before_after(report),
        _validation(report),
        _budget_search(report),
        "<h2>Passes</h2>" if passes else "",
        *(_pass(p) for p in passes),
        _op_latency(op_ms),
        _recipe(report),
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)
