"""Plain inline SVG charts: grouped horizontal bars and line charts, every text escaped.

Charts are sized for a page about 1200 px wide; long category names are shortened in the middle
(the full name is the row's tooltip). Nothing here reads a report: callers hand in plain numbers.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Callable, Mapping, Sequence

__all__ = ["PALETTE", "BarChart", "LineChart", "bar_chart", "esc", "line_chart", "nice_ticks", "shorten"]

#: Series colours (colour-blind-safe Okabe-Ito order, then greys).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000", "#999999")
WIDTH = 1100
_FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"'
_ROW_PX = 14  # height of one bar
_LABEL_CHARS = 46  # category label budget, in characters
_LABEL_PX = 330  # room for the category labels


def esc(text: object) -> str:
    """``text`` safe in SVG/HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def shorten(text: str, limit: int = _LABEL_CHARS) -> str:
    """``text`` cut in the middle to at most ``limit`` characters (node names differ at both ends)."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return f"{text[:head]}…{text[len(text) - (limit - 1 - head) :]}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]``."""
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low] if math.isfinite(low) else [0.0]
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = [round(first, 12)]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


def _span(values: Sequence[float]) -> tuple[float, float]:
    """``(low, high)`` of ``values``, widened around a single value."""
    low, high = min(values), max(values)
    if high > low:
        return low, high
    pad = abs(low) * 0.1 or 1.0
    return low - pad, high + pad


def _log_ticks(lo: int, hi: int) -> list[float]:
    """Powers of ten from ``10**lo`` to ``10**hi``; with 2 and 5 times each when the range is two decades or less."""
    steps = (1, 2, 5) if hi - lo <= 2 else (1,)
    return [float(m * 10**e) for e in range(lo, hi + 1) for m in steps if m * 10**e <= 10**hi]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2g}"
    return f"{value:.4g}"


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    parts, offset = [], 0.0
    for i, name in enumerate(names):
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<rect x="{x + offset:.1f}" y="{y - 10}" width="12" height="12" fill="{color}"/>')
        parts.append(f'<text x="{x + offset + 16:.1f}" y="{y}" font-size="13">{esc(name)}</text>')
        offset += 16 + 7.5 * len(name) + 24
    return parts


def _frame(width: float, height: float, title: str, body: list[str], css_class: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{esc(title)}" {_FONT}>'
        f"<title>{esc(title)}</title>"
        f'<rect width="100%" height="100%" fill="#ffffff"/>'
        f'<text x="12" y="22" font-size="16" font-weight="600">{esc(title)}</text>' + "".join(body) + "</svg>"
    )


@dataclasses.dataclass(frozen=True)
class BarChart:
    """Grouped horizontal bars: one row per category, one bar per series.

    ``values[series][i]`` belongs to ``categories[i]``; ``None`` leaves a gap. ``marks`` draws a
    dashed vertical line per named value (e.g. the requested ratio).
    """

    title: str
    categories: Sequence[str]
    values: Mapping[str, Sequence[float | None]]
    x_label: str
    fmt: Callable[[float], str] = _fmt
    marks: Mapping[str, float] = dataclasses.field(default_factory=dict)
    x_max: float | None = None
    #: Per-category tooltip (default: the category).
    tooltips: Sequence[str] | None = None


def bar_chart(chart: BarChart, width: int = WIDTH) -> str:
    """The chart as one ``<svg>`` element."""
    names = list(chart.values)
    group = _ROW_PX * len(names) + 8
    top, bottom = 58 + 16 * len(chart.marks), 46
    height = top + group * len(chart.categories) + bottom
    left, right = _LABEL_PX, 90
    plot_w = width - left - right
    numbers = [v for series in chart.values.values() for v in series if v is not None and math.isfinite(v)]
    high = chart.x_max if chart.x_max is not None else max([*numbers, *chart.marks.values(), 0.0])
    low = min(0.0, *numbers) if numbers else 0.0
    ticks = nice_ticks(low, high if high > low else low + 1.0)
    low, high = min(low, ticks[0]), max(high, ticks[-1])

    def x_of(value: float) -> float:
        return left + (value - low) / (high - low) * plot_w

    body = _legend(names, left, 44) if len(names) > 1 else []
    zero = x_of(0.0 if low <= 0 else low)
    axis_y = top + group * len(chart.categories)
    for tick in ticks:
        x = x_of(tick)
        body.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" stroke="#e3e3e3"/>')
        body.append(f'<text x="{x:.1f}" y="{axis_y + 16}" font-size="12" text-anchor="middle">{esc(_fmt(tick))}</text>')
    for i, category in enumerate(chart.categories):
        y0 = top + i * group + 4
        label = esc(shorten(category))
        body.append(f"<g><title>{esc(chart.tooltips[i] if chart.tooltips else category)}</title>")
        body.append(
            f'<text x="{left - 8}" y="{y0 + group / 2 + 0.5:.1f}" font-size="12" text-anchor="end" '
            f'dominant-baseline="middle">{label}</text>'
        )
        for j, name in enumerate(names):
            value = chart.values[name][i]
            if value is None or not math.isfinite(value):
                continue
            x0, x1 = sorted((zero, x_of(value)))
            y = y0 + j * _ROW_PX
            color = PALETTE[j % len(PALETTE)]
            body.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 0.8):.1f}" height="{_ROW_PX - 2}" fill="{color}"/>'
            )
            body.append(
                f'<text x="{x1 + 4:.1f}" y="{y + _ROW_PX / 2:.1f}" font-size="11" '
                f'dominant-baseline="middle">{esc(chart.fmt(value))}</text>'
            )
        body.append("</g>")
    body.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#333"/>')
    body.append(f'<line x1="{zero:.1f}" y1="{top - 4}" x2="{zero:.1f}" y2="{axis_y}" stroke="#333"/>')
    for k, (name, value) in enumerate(chart.marks.items()):
        x = x_of(value)
        body.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" stroke="#D55E00" stroke-dasharray="5 4"/>'
        )
        body.append(
            f'<text x="{x:.1f}" y="{top - 8 - 16 * k}" font-size="12" text-anchor="middle" '
            f'fill="#D55E00">{esc(name)}</text>'
        )
    body.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 10}" font-size="13" text-anchor="middle">'
        f"{esc(chart.x_label)}</text>"
    )
    return _frame(width, height, chart.title, body, "chart bars")


@dataclasses.dataclass(frozen=True)
class LineChart:
    """Lines through points: ``series[name] = (xs, ys)``; non-finite points are left out.

    ``log_y`` draws the y axis in powers of ten (non-positive values are left out). The legend lists
    at most ``legend_max`` series (each line's name is its tooltip).
    """

    title: str
    series: Mapping[str, tuple[Sequence[float], Sequence[float | None]]]
    x_label: str
    y_label: str
    log_y: bool = False
    legend_max: int = 12
    markers: bool = True


def _points(chart: LineChart) -> dict[str, list[tuple[float, float]]]:
    kept = {}
    for name, (xs, ys) in chart.series.items():
        pts = [
            (float(x), float(y))
            for x, y in zip(xs, ys, strict=True)
            if y is not None and math.isfinite(x) and math.isfinite(y) and (y > 0 or not chart.log_y)
        ]
        kept[name] = sorted(pts)
    return kept


def line_chart(chart: LineChart, width: int = WIDTH, height: int = 380) -> str:
    """The chart as one ``<svg>`` element."""
    series = _points(chart)
    shown = [name for name in series if series[name]][: chart.legend_max]
    legend_rows = math.ceil(len(shown) / 4) if len(series) > 1 else 0
    top, bottom, left, right = 40 + 18 * legend_rows, 52, 80, 30
    height += 18 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    if not xs:
        xs, ys = [0.0, 1.0], [1.0, 10.0] if chart.log_y else [0.0, 1.0]
    x_ticks = nice_ticks(*_span(xs))
    x_low, x_high = x_ticks[0], x_ticks[-1]
    if chart.log_y:
        lo, hi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
        hi = hi if hi > lo else lo + 1
        y_ticks = _log_ticks(lo, hi)

        def y_pos(v: float) -> float:
            return (math.log10(v) - lo) / (hi - lo)
    else:
        y_ticks = nice_ticks(*_span([0.0, *ys]))

        def y_pos(v: float) -> float:
            return (v - y_ticks[0]) / (y_ticks[-1] - y_ticks[0])

    def px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x_low) / (x_high - x_low) * plot_w, top + plot_h - y_pos(y) * plot_h

    body = []
    for tick in y_ticks:
        _, y = px(x_low, tick)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="12" text-anchor="end">{esc(_fmt(tick))}</text>')
    for tick in x_ticks:
        x, _ = px(tick, y_ticks[0])
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#e3e3e3"/>')
        body.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" font-size="12" text-anchor="middle">{esc(_fmt(tick))}</text>'
        )
    body.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    for i, (name, pts) in enumerate(series.items()):
        if not pts:
            continue
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (px(*p) for p in pts))
        body.append(f'<g><title>{esc(name)}</title><polyline points="{coords}" fill="none" stroke="{color}" ')
        body.append('stroke-width="1.8"/>')
        if chart.markers:
            for x, y in (px(*p) for p in pts):
                body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
        body.append("</g>")
    for k, name in enumerate(shown if len(series) > 1 else []):
        color = PALETTE[list(series).index(name) % len(PALETTE)]
        x, y = left + (k % 4) * (plot_w / 4), 44 + 18 * (k // 4)
        body.append(f'<rect x="{x:.1f}" y="{y - 10}" width="12" height="12" fill="{color}"/>')
        body.append(f'<text x="{x + 16:.1f}" y="{y}" font-size="12">{esc(shorten(name, 36))}</text>')
    if len(series) > len(shown) and len(series) > 1:
        body.append(
            f'<text x="{left + plot_w}" y="{top - 6}" font-size="12" text-anchor="end">'
            f"{len(series) - len(shown)} more lines (names as tooltips)</text>"
        )
    body.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 12}" font-size="13" text-anchor="middle">'
        f"{esc(chart.x_label)}</text>"
    )
    y_label = chart.y_label + (" (log)" if chart.log_y else "")
    body.append(
        f'<text x="16" y="{top + plot_h / 2:.1f}" font-size="13" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">{esc(y_label)}</text>'
    )
    return _frame(width, height, chart.title, body, "chart lines")
