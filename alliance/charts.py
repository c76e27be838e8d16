"""Charts of the figures pages, drawn on the server as inline SVG (no script, no CDN).

Each chart scales to its container through its viewBox and is sized for a 390 px phone;
it is an image with a title and a description for screen readers, every bar carries its
value as a tooltip title, and the table under it holds the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import count

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from alliance.figures import Chart

WIDTH = 340
PALETTE = ("#1d4ed8", "#0d9488", "#d97706", "#dc2626", "#7c3aed", "#475569", "#db2777", "#65a30d")
FONT = 'font-family="inherit" font-size="12"'
# Estimated text widths at that size: CJK characters are about twice as wide as Latin ones.
LATIN_WIDTH, WIDE_WIDTH = 7.0, 12.5
_ids = count(1)


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value` (axis top)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def text_width(text: str) -> float:
    return sum(LATIN_WIDTH if ord(ch) < 0x2E80 else WIDE_WIDTH for ch in text)


def fit(text: str, width: float) -> str:
    """The text, cut with an ellipsis to about `width` (the whole text stays in the tooltip)."""
    if text_width(text) <= width:
        return text
    while text and text_width(text + "…") > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:,.1f}"


def _optional(value: float | None) -> str:
    return "—" if value is None else _number(value)


def render(chart: Chart, title: str) -> SafeString:
    if chart.kind == "columns":
        return _columns(chart, title)
    return _bars(chart, title)


def _frame(title: str, summary: str, height: float, body: list[str], legend: list[str]) -> SafeString:
    uid = next(_ids)
    svg = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
        f'aria-labelledby="chart{uid}-t chart{uid}-d" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="chart{uid}-t">{escape(title)}</title><desc id="chart{uid}-d">{escape(summary)}</desc>'
        + "".join(legend)
        + "".join(body)
        + "</svg>"
    )
    return mark_safe(svg)  # noqa: S308  every text in it went through escape()


def _legend(names: Sequence[str], extra: str = "") -> tuple[list[str], float]:
    """Swatches and names, wrapped over as many lines as the width needs; returns its height."""
    parts, x, y = [], 4.0, 12.0
    entries = [(name, PALETTE[i % len(PALETTE)], "rect") for i, name in enumerate(names)]
    if extra:
        entries.append((extra, "#111827", "line"))
    for name, colour, shape in entries:
        width = 16 + text_width(name) + 12
        if x + width > WIDTH and x > 4:
            x, y = 4.0, y + 16
        if shape == "rect":
            parts.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{colour}"/>')
        else:
            parts.append(
                f'<line x1="{x + 5:.1f}" x2="{x + 5:.1f}" y1="{y - 10:.1f}" y2="{y + 1:.1f}" '
                f'stroke="{colour}" stroke-width="2" stroke-dasharray="3 2"/>'
            )
        parts.append(f'<text x="{x + 14:.1f}" y="{y:.1f}" {FONT} fill="#374151">{escape(name)}</text>')
        x += width
    return parts, y + 10


def _columns(chart: Chart, title: str) -> SafeString:
    names = [str(series.name) for series in chart.series]
    legend, top = _legend(names)
    n = max(len(chart.categories), 1)
    totals = [sum(s.values[i] or 0 for s in chart.series) for i in range(len(chart.categories))]
    ceiling = nice_ceiling(max(totals, default=0))
    # room for the widest tick label ("3.8" is wider than the top's "5")
    left, plot_h = 10 + max(text_width(_number(ceiling * step / 4)) for step in range(5)), 150.0
    plot_w = WIDTH - left - 6
    slot = plot_w / n
    longest = max((text_width(c) for c in chart.categories), default=0)
    rotate = longest > slot - 4
    bottom = 16 + (longest * 0.72 if rotate else 6)
    scale = plot_h / ceiling
    base = top + 8 + plot_h
    body = _y_axis(left, base, plot_h, ceiling)
    bar = max(min(slot * 0.7, 40), 2)
    unit = f" {chart.unit}" if chart.unit else ""
    for i, category in enumerate(chart.categories):
        x = left + slot * i + (slot - bar) / 2
        y = base
        for k, series in enumerate(chart.series):
            value = series.values[i] or 0
            if value <= 0:
                continue
            h = value * scale
            y -= h
            tip = escape(f"{category} · {series.name}: {_number(value)}{unit}")
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{PALETTE[k % len(PALETTE)]}">'
                f"<title>{tip}</title></rect>"
            )
        cx, cy = x + bar / 2, base + 8
        if rotate:
            body.append(
                f'<text x="{cx:.1f}" y="{cy:.1f}" {FONT} fill="#374151" text-anchor="end" '
                f'transform="rotate(-45 {cx:.1f} {cy:.1f})">{escape(category)}</text>'
            )
        else:
            body.append(
                f'<text x="{cx:.1f}" y="{cy + 6:.1f}" {FONT} fill="#374151" text-anchor="middle">'
                f"{escape(category)}</text>"
            )
    summary = "; ".join(f"{c}: {_number(t)}{unit}" for c, t in zip(chart.categories, totals, strict=True))
    return _frame(title, summary, base + bottom, body, legend)


def _y_axis(left: float, base: float, plot_h: float, ceiling: float) -> list[str]:
    parts = []
    for step in range(5):
        value = ceiling * step / 4
        y = base - plot_h * step / 4
        parts.append(f'<line x1="{left:.1f}" x2="{WIDTH - 4}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(
            f'<text x="{left - 4:.1f}" y="{y + 4:.1f}" {FONT} fill="#6b7280" text-anchor="end">{_number(value)}</text>'
        )
    return parts


def _bars(chart: Chart, title: str) -> SafeString:
    names = [str(series.name) for series in chart.series]
    legend, top = _legend(names, str(chart.marker_label) if chart.markers else "")
    # Long names (an institution's, in two languages) keep at most 40% of the width: cut, with
    # the whole name in the bar's tooltip, so that the bars keep room to be read.
    label_room = WIDTH * 0.4
    left = 10 + min(max((text_width(c) for c in chart.categories), default=0), label_room)
    right, bar, gap = 44.0, 12.0, 10.0
    plot_w = WIDTH - left - right
    values = [v for s in chart.series for v in s.values if v is not None]
    ceiling = nice_ceiling(max([*values, *(m for m in chart.markers if m is not None)], default=0))
    scale = plot_w / ceiling
    unit = f" {chart.unit}" if chart.unit else ""
    body: list[str] = []
    y = top + 6
    group = bar * len(chart.series)
    for i, category in enumerate(chart.categories):
        marker = chart.markers[i] if i < len(chart.markers) else None
        body.append(
            f'<text x="{left - 6:.1f}" y="{y + group / 2 + 4:.1f}" {FONT} fill="#111827" text-anchor="end">'
            f"<title>{escape(category)}</title>{escape(fit(category, label_room))}</text>"
        )
        for k, series in enumerate(chart.series):
            value = series.values[i]
            by = y + bar * k
            if value is None:
                body.append(f'<text x="{left + 2:.1f}" y="{by + 10:.1f}" {FONT} fill="#6b7280">—</text>')
                continue
            w = max(value * scale, 1)
            tip = escape(f"{category} · {series.name}: {_number(value)}{unit}")
            label_x = left + w + 3
            if marker is not None and label_x - 4 <= left + marker * scale <= label_x + text_width(_number(value)):
                label_x = left + marker * scale + 5  # the value would sit on the deadline line
            body.append(
                f'<rect x="{left:.1f}" y="{by:.1f}" width="{w:.1f}" height="{bar - 2:.1f}" '
                f'fill="{PALETTE[k % len(PALETTE)]}"><title>{tip}</title></rect>'
                f'<text x="{label_x:.1f}" y="{by + 9:.1f}" {FONT} fill="#374151">{_number(value)}</text>'
            )
        if marker is not None:
            mx = left + marker * scale
            tip = escape(f"{category} · {chart.marker_label}: {_number(marker)}{unit}")
            body.append(
                f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{y - 3:.1f}" y2="{y + group + 1:.1f}" stroke="#111827" '
                f'stroke-width="2" stroke-dasharray="3 2"><title>{tip}</title></line>'
            )
        y += group + gap
    summary = "; ".join(
        f"{c}: " + ", ".join(f"{s.name} {_optional(s.values[i])}" for s in chart.series)
        for i, c in enumerate(chart.categories)
    )
    return _frame(title, summary + (f" ({chart.unit})" if chart.unit else ""), y + 4, body, legend)
