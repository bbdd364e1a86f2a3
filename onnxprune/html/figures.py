"""Per-pass figures: small registered entries, each drawing what one kind of report entry holds.

An entry looks at a pass report (plain JSON data) and returns its charts, or nothing when the
report has no such data. Entries key on the data (``sparsity``, ``kept``, ``rank``, ``details``),
not on pass names, so a new pass whose entries hold those fields gets the charts too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from onnxprune.html.svg import BarChart, LineChart, bar_chart, line_chart

__all__ = ["FIGURES", "figures_of", "register"]

Report = Mapping[str, Any]
FigureFn = Callable[[Report], list[str]]

#: Registered figure makers, in page order.
FIGURES: dict[str, FigureFn] = {}

#: Rows drawn per chart; the rest are counted under it.
MAX_ROWS = 160


def register(name: str) -> Callable[[FigureFn], FigureFn]:
    """Register a figure maker under ``name`` (a duplicate name is a programming error)."""

    def add(fn: FigureFn) -> FigureFn:
        if name in FIGURES:
            raise ValueError(f"figure '{name}' is already registered")
        FIGURES[name] = fn
        return fn

    return add


def figures_of(report: Report) -> list[str]:
    """Every registered figure for one pass report (``<svg>`` elements, in registration order)."""
    return [svg for fn in FIGURES.values() for svg in fn(report)]


def _capped(chart: BarChart) -> list[str]:
    if len(chart.categories) <= MAX_ROWS:
        return [bar_chart(chart)]
    first = BarChart(
        f"{chart.title} (first {MAX_ROWS} of {len(chart.categories)})",
        chart.categories[:MAX_ROWS],
        {k: list(v)[:MAX_ROWS] for k, v in chart.values.items()},
        chart.x_label,
        chart.fmt,
        chart.marks,
        chart.x_max,
        list(chart.tooltips)[:MAX_ROWS] if chart.tooltips else None,
    )
    return [bar_chart(first)]


def _weight_label(entry: Mapping[str, Any]) -> str:
    """A weight's row label: its name, or its node's when the exporter generated the name (``onnx::MatMul_886``)."""
    tensor, nodes = str(entry.get("tensor", "?")), entry.get("nodes") or []
    return str(nodes[0]) if "::" in tensor and nodes else tensor


def _weight_tooltip(entry: Mapping[str, Any]) -> str:
    nodes = entry.get("nodes") or []
    return f"{entry.get('tensor', '?')} ({', '.join(map(str, nodes))})" if nodes else str(entry.get("tensor", "?"))


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


@register("sparsity")
def _sparsity(report: Report) -> list[str]:
    rows = [e for e in report.get("changed", []) if "sparsity" in e and "tensor" in e]
    if not rows:
        return []
    summary = report.get("summary", {})
    marks = {}
    if isinstance(summary.get("achieved_sparsity"), float | int):
        marks[f"overall {_percent(summary['achieved_sparsity'])}"] = float(summary["achieved_sparsity"])
    chart = BarChart(
        f"{report['name']}: sparsity per weight ({len(rows)} tensors)",
        [_weight_label(e) for e in rows],
        {"sparsity": [float(e["sparsity"]) for e in rows]},
        "fraction of the weight's values that are zero",
        _percent,
        marks,
        1.0,
        [_weight_tooltip(e) for e in rows],
    )
    return _capped(chart)


@register("channels")
def _channels(report: Report) -> list[str]:
    rows = [e for e in report.get("changed", []) if "kept" in e and "units" in e]
    if not rows:
        return []
    chart = BarChart(
        f"{report['name']}: kept width per channel group ({len(rows)} groups)",
        [f"group {e.get('group', '?')}: {(e.get('producers') or ['?'])[0]}" for e in rows],
        {"original": [float(e["units"]) for e in rows], "kept": [float(e["kept"]) for e in rows]},
        "channels (output width of the group's producers)",
        lambda v: f"{v:.0f}",
    )
    return _capped(chart)


@register("rank")
def _rank(report: Report) -> list[str]:
    rows = [e for e in report.get("changed", []) if "rank" in e and "full_rank" in e]
    if not rows:
        return []
    chart = BarChart(
        f"{report['name']}: rank per factorized layer ({len(rows)} layers)",
        [_weight_label(e) for e in rows],
        {"full rank": [float(e["full_rank"]) for e in rows], "kept rank": [float(e["rank"]) for e in rows]},
        "rank",
        lambda v: f"{v:.0f}",
        tooltips=[_weight_tooltip(e) for e in rows],
    )
    return _capped(chart)


@register("depth")
def _depth(report: Report) -> list[str]:
    units = report.get("details", {}).get("units") or []
    measured = [u for u in units if u.get("rel_mse") is not None]
    if not measured:
        return []
    chart = BarChart(
        f"{report['name']}: output error with each block dropped alone ({len(measured)} blocks)",
        [f"{u['unit']} ({u.get('kind', '')})" for u in measured],
        {
            "kept": [None if u.get("dropped") else float(u["rel_mse"]) for u in measured],
            "dropped": [float(u["rel_mse"]) if u.get("dropped") else None for u in measured],
        },
        "relative MSE of the model's outputs",
    )
    return _capped(chart)


@register("training")
def _training(report: Report) -> list[str]:
    curve = report.get("details", {}).get("curve") or []
    if not curve:
        return []
    steps = [float(p["step"]) for p in curve]
    series = {
        name: (steps, [p.get(name) for p in curve])
        for name in ("train", "heldout")
        if any(p.get(name) is not None for p in curve)
    }
    chart = LineChart(f"{report['name']}: distillation loss", series, "step", "loss", log_y=True, markers=False)
    return [line_chart(chart)]


@register("sensitivity")
def _sensitivity(report: Report) -> list[str]:
    """Measured error curves (``details.sensitivity[kind][unit] = {ratios, errors}``) of a sensitivity allocation."""
    kinds = report.get("details", {}).get("sensitivity") or {}
    charts = []
    for kind, curves in kinds.items():
        series = {name: (c["ratios"], c["errors"]) for name, c in curves.items()}
        x_label = "rank fraction removed" if kind == "lowrank" else "fraction removed"
        title = f"{report['name']}: measured sensitivity, {kind} ({len(series)} units, each pruned alone)"
        charts.append(line_chart(LineChart(title, series, x_label, "relative output error", log_y=True)))
    return charts
