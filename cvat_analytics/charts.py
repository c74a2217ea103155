"""Charts drawn server-side as inline SVG: time series (lines or stacked bars) and
horizontal bar charts. No script, no web font: the page works offline.

Input is a query result (column names, rows) shaped as Grafana expects it:
- time series: a time column first, then optional text columns naming the series
  (Grafana's long format) and numeric value columns;
- bar chart: a text category column first, then one numeric column per series.
Every drawn value is an SVG element with a <title> (the browser's tooltip), and
the <svg> carries data-points="N" so a test can tell an empty chart from a drawn one.
A legend is [(label, colour, link or None)]; with `link`, series labels are links.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from html import escape
from typing import Callable, Optional

# label -> the URL a series' label links to (the page filtered to it), or None
Link = Optional[Callable[[str], Optional[str]]]

PALETTE = ["#3274d9", "#ff9830", "#56a64b", "#e02f44", "#a352cc", "#f2b90c", "#1fb5ad", "#ff7383",
           "#8f6c4a", "#6e7d9c"]
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\""


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _num(v) -> float | None:
    if v is None or isinstance(v, (str, bytes, datetime)):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _nice_max(v: float) -> float:
    step = _nice_step(v / 4)
    return step * max(math.ceil(v / step), 1)


def _nice_step(v: float) -> float:
    """1, 2 or 5 times a power of ten, at least v (gridlines at round numbers)."""
    if v <= 0:
        return 0.25
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 5, 10):
        if v <= m * exp * 1.0000001:
            return m * exp
    return 10 * exp


def fmt_number(v: float) -> str:
    if v is None:
        return ""
    if abs(v) >= 1e6:
        return f"{v / 1e6:.1f}M".replace(".0M", "M")
    if abs(v) >= 1e4:
        return f"{v / 1e3:.0f}k"
    if float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.3g}" if abs(v) < 1 else f"{v:,.2f}"


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def series_of(columns: list[str], rows: list[tuple]) -> list[tuple[str, list[tuple[datetime, float]]]]:
    """Time-series rows -> [(label, [(time, value), ...]), ...] (long format pivoted to wide)."""
    if not rows:
        return []
    sample = rows[0]
    text_cols = [i for i in range(1, len(columns)) if isinstance(sample[i], str)]
    value_cols = [i for i in range(1, len(columns)) if i not in text_cols]
    out: dict[str, list] = {}
    for row in rows:
        key = " ".join(str(row[i]) for i in text_cols)
        for i in value_cols:
            label = key if key and len(value_cols) == 1 else " ".join(p for p in (key, columns[i]) if p)
            v = _num(row[i])
            out.setdefault(label, [])
            if v is not None and isinstance(row[0], datetime):
                out[label].append((_utc(row[0]), v))
    return list(out.items())


def timeseries_svg(columns, rows, time_from: datetime, time_to: datetime, bars: bool = False,
                   width: int = 900, height: int = 240, link: Link = None) -> tuple[str, list[tuple]]:
    """The chart and its legend [(label, colour)]."""
    series = series_of(columns, rows)
    left, right, top, bottom = 48, 12, 10, 24
    pw, ph = width - left - right, height - top - bottom
    t0, t1 = _utc(time_from).timestamp(), _utc(time_to).timestamp()
    span = max(t1 - t0, 1)

    def x(t: datetime) -> float:
        return left + (t.timestamp() - t0) / span * pw

    times = sorted({t for _, pts in series for t, _ in pts})
    if bars:  # stacked: the top of each stack decides the scale
        stack: dict[datetime, float] = {}
        for _, pts in series:
            for t, v in pts:
                stack[t] = stack.get(t, 0) + max(v, 0)
        top_value = max(stack.values(), default=0)
    else:
        top_value = max((v for _, pts in series for _, v in pts), default=0)
    step = _nice_step(top_value / 4)
    if all(float(v).is_integer() for _, pts in series for _, v in pts):
        step = max(step, 1)  # counts: no gridline at 2.5 events
    ymax = step * max(math.ceil(top_value / step), 1)

    def y(v: float) -> float:
        return top + ph - v / ymax * ph

    parts = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff"/>']
    for i in range(round(ymax / step) + 1):  # horizontal grid and y labels
        v = step * i
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e6e8ec"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="ax">{fmt_number(v)}</text>')
    for t in _time_ticks(time_from, time_to):
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{top + ph}" stroke="#f0f1f4"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{height - 6}" text-anchor="middle" class="ax">'
                     f'{_tick_label(t, span)}</text>')

    drawn = 0
    if bars:
        step = min((b - a).total_seconds() for a, b in zip(times, times[1:])) if len(times) > 1 else span / 50
        bw = max(step / span * pw * 0.8, 1.0)
        base: dict[datetime, float] = {}
        for si, (label, pts) in enumerate(series):
            for t, v in pts:
                if v <= 0:
                    continue
                b0 = base.get(t, 0)
                base[t] = b0 + v
                x0 = max(x(t) + (step / span * pw - bw) / 2, left)
                parts.append(f'<rect x="{x0:.1f}" y="{y(b0 + v):.1f}" width="{bw:.1f}" height="{y(b0) - y(b0 + v):.1f}" '
                             f'fill="{color(si)}"><title>{escape(label)} {t:%Y-%m-%d %H:%M}: {fmt_number(v)}</title></rect>')
                drawn += 1
    else:
        for si, (label, pts) in enumerate(series):
            if not pts:
                continue
            coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{color(si)}" stroke-width="2" '
                         f'stroke-linejoin="round"/>')
            dots = len(pts) <= 200
            for t, v in pts:
                r = 2.5 if dots else 0
                parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="{r}" fill="{color(si)}">'
                             f'<title>{escape(label)} {t:%Y-%m-%d %H:%M}: {fmt_number(v)}</title></circle>')
                drawn += 1
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#9aa0ab"/>')
    svg = (f'<svg class="chart" data-points="{drawn}" viewBox="0 0 {width} {height}" '
           f'preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg" {FONT}>' + "".join(parts) + "</svg>")
    return svg, [(label, color(i), link(label) if link else None) for i, (label, _) in enumerate(series)]


def _time_ticks(time_from: datetime, time_to: datetime) -> list[datetime]:
    t0, t1 = _utc(time_from), _utc(time_to)
    span = (t1 - t0).total_seconds()
    day = 86400
    for step in (300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, day, 2 * day, 7 * day, 14 * day,
                 30 * day, 91 * day, 182 * day, 365 * day, 5 * 365 * day, 10 * 365 * day, 25 * 365 * day):
        if span / step <= 8:
            break
    first = datetime.fromtimestamp(math.ceil(t0.timestamp() / step) * step, timezone.utc)
    ticks, t = [], first
    while t <= t1:
        ticks.append(t)
        t += timedelta(seconds=step)
    return ticks


def _tick_label(t: datetime, span: float) -> str:
    if span <= 2 * 86400:
        return t.strftime("%H:%M") if (t.hour or t.minute) else t.strftime("%b %d")
    if span > 365 * 86400:
        return t.strftime("%Y-%m-%d")
    return t.strftime("%b %d") if not t.hour else t.strftime("%d %H:%M")


def barchart_svg(columns, rows, width: int = 600, height: int = 200, link: Link = None) -> tuple[str, list[tuple]]:
    """Horizontal bars: one group per category (first column), one bar per numeric column.
    Few categories get thicker bars, up to filling `height`; many scroll."""
    value_cols = [i for i in range(1, len(columns))]
    n_series = len(value_cols)
    fit = (height - 8) / max(len(rows), 1) - 8
    bar_h = int(min(max(fit / n_series, 10 if n_series > 1 else 14), 26))
    group_h = bar_h * n_series + 8
    label_w = 170
    height = max(len(rows) * group_h + 8, 40)
    font = min(12 + (bar_h - 14) // 4, 14)
    vmax = _nice_max(max((_num(r[i]) or 0 for r in rows for i in value_cols), default=0))
    pw = width - label_w - 56
    parts, drawn = [], 0
    for ri, row in enumerate(rows):
        g_y = 4 + ri * group_h
        label = "—" if row[0] is None or str(row[0]).strip() == "" else str(row[0])
        fits = int((label_w - 12) / (font * 0.56))  # characters the label column holds at this size
        short = label if len(label) <= fits else label[:fits - 1] + "…"
        parts.append(_linked(f'<text x="{label_w - 8}" y="{g_y + group_h / 2 + 2:.1f}" text-anchor="end" class="lb" '
                             f'style="font-size:{font}px"><title>{escape(label)}</title>{escape(short)}</text>', label, link))
        for si, i in enumerate(value_cols):
            v = _num(row[i]) or 0
            w = v / vmax * pw
            by = g_y + si * bar_h
            parts.append(f'<rect x="{label_w}" y="{by}" width="{max(w, 0.5):.1f}" height="{bar_h - 2}" rx="2" '
                         f'fill="{color(si)}"><title>{escape(label)} · {escape(columns[i])}: {fmt_number(v)}</title></rect>')
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{by + bar_h / 2 + 3:.1f}" class="vl">{fmt_number(v)}</text>')
            drawn += 1
    svg = (f'<svg class="chart" data-points="{drawn}" viewBox="0 0 {width} {height}" width="100%" '
           f'xmlns="http://www.w3.org/2000/svg" {FONT}>' + "".join(parts) + "</svg>")
    legend = [(columns[i], color(si), None) for si, i in enumerate(value_cols)] if n_series > 1 else []
    return svg, legend


def heatmap_svg(columns, rows, time_from: datetime, time_to: datetime, interval_s: int,
                width: int = 900, height: int = 240, link: Link = None) -> tuple[str, list[tuple]]:
    """Many series (activity per user): one row per series, one cell per interval, darker = more.
    Fourteen overlapping lines say nothing; a grid shows who worked when at a glance."""
    series = series_of(columns, rows)
    left, right, top, bottom = 130, 12, 4, 24
    pw = width - left - right
    row_h = max(min((height - top - bottom) / max(len(series), 1), 26), 12)
    height = int(top + bottom + row_h * len(series))
    t0, t1 = _utc(time_from).timestamp(), _utc(time_to).timestamp()
    span = max(t1 - t0, 1)
    vmax = max((v for _, pts in series for _, v in pts), default=1) or 1
    cell_w = max(interval_s / span * pw, 1.0)
    parts, drawn = [], 0
    for si, (label, pts) in enumerate(series):
        y0 = top + si * row_h
        short = label if len(label) <= 20 else label[:19] + "…"
        parts.append(_linked(f'<text x="{left - 8}" y="{y0 + row_h / 2 + 4:.1f}" text-anchor="end" class="lb" '
                             f'style="font-size:11px"><title>{escape(label)}</title>{escape(short)}</text>', label, link))
        parts.append(f'<rect x="{left}" y="{y0 + 1:.1f}" width="{pw}" height="{row_h - 2:.1f}" fill="#f3f5f9"/>')
        for t, v in pts:
            if v <= 0:
                continue
            x0 = left + (t.timestamp() - t0) / span * pw
            opacity = 0.18 + 0.82 * (v / vmax) ** 0.6
            parts.append(f'<rect x="{max(x0, left):.1f}" y="{y0 + 1:.1f}" width="{cell_w:.1f}" height="{row_h - 2:.1f}" '
                         f'fill="{PALETTE[0]}" fill-opacity="{opacity:.2f}"><title>{escape(label)} '
                         f'{t:%Y-%m-%d %H:%M}: {fmt_number(v)}</title></rect>')
            drawn += 1
    for t in _time_ticks(time_from, time_to):
        x = left + (t.timestamp() - t0) / span * pw
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" class="ax">{_tick_label(t, span)}</text>')
    svg = (f'<svg class="chart" data-points="{drawn}" viewBox="0 0 {width} {height}" width="100%" '
           f'xmlns="http://www.w3.org/2000/svg" {FONT}>' + "".join(parts) + "</svg>")
    legend = [(f"darker = more {columns[-1]} (up to {fmt_number(vmax)} per cell)", PALETTE[0], None)]
    return svg, legend


def _linked(element: str, label: str, link: Link) -> str:
    href = link(label) if link else None
    return f'<a href="{escape(href)}" class="series-link">{element}</a>' if href else element
