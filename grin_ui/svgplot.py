"""Static SVG charts for the audit report: small, self-contained, printable, no script.

    svg = heatmap([0, 1], ["q_proj", "k_proj"], [[0.1, 0.2], [None, 0.3]], title="…", scale="reds", vmin=0)
    svg = lines([Series("forget loss", steps, ys, "#d62728")], title="…", vlines=[VLine(12, "stopped")])
    svg = bars(["forget hit rate", …], [Series("original", None, ys, "#4c78a8"), …], title="…")
    svg = histogram(edges, counts, title="…", vline=(x, "label"), log_y=True)

The dashboard draws the same numbers with plotly (grin_ui.plots); the report uses these instead so that
report.html stays a few hundred kB, opens offline, prints crisply and renders byte-identically from report.json
(every number is written with fixed precision). Each function returns one ``<svg>`` element string; None / NaN
values are left out (heatmap cells stay blank).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Sequence

FONT = "system-ui,-apple-system,'Segoe UI',sans-serif"
PALETTES = {  # anchor colours, low to high
    "viridis": ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"],
    "reds": ["#fff5f0", "#fcbba1", "#fb6a4a", "#cb181d", "#67000d"],
    "rdylgn": ["#d73027", "#fc8d59", "#fee08b", "#d9ef8b", "#91cf60", "#1a9850"],
}


@dataclass
class Series:
    name: str
    x: Sequence | None
    y: Sequence
    color: str = "#4c78a8"
    dash: bool = False
    markers: bool = False


@dataclass
class VLine:
    x: float
    label: str
    color: str = "#d62728"


@dataclass
class _Frame:
    width: int = 720
    height: int = 300
    left: int = 62
    right: int = 16
    top: int = 34
    bottom: int = 46
    parts: list[str] = field(default_factory=list)

    @property
    def w(self) -> int:
        return self.width - self.left - self.right

    @property
    def h(self) -> int:
        return self.height - self.top - self.bottom


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def finite_or_none(v) -> float | None:
    """``v`` as a finite float, or None (missing, not a number, NaN or infinite; booleans are not numbers)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def _text(x, y, s, size=11, anchor="start", color="#222", weight="normal", rotate=None) -> str:
    rot = f" transform='rotate({rotate} {_f(x)} {_f(y)})'" if rotate is not None else ""
    bold = " font-weight='bold'" if weight != "normal" else ""
    return (f"<text x='{_f(x)}' y='{_f(y)}' font-size='{size}' text-anchor='{anchor}' fill='{color}'{bold}{rot}>"
            f"{_esc(s)}</text>")


def _svg(frame: _Frame, title: str, aria: str) -> str:
    head = (f"<svg xmlns='http://www.w3.org/2000/svg' class='chart' viewBox='0 0 {frame.width} {frame.height}' "
            f"width='{frame.width}' height='{frame.height}' role='img' aria-label='{_esc(aria or title)}' "
            f"font-family=\"{FONT}\">")
    return head + f"<title>{_esc(aria or title)}</title>" + _text(4, 18, title, 13, weight="bold") + \
        "".join(frame.parts) + "</svg>"


def color_at(t: float, palette: str = "viridis") -> str:
    """The palette's colour at t in [0, 1] (linear between anchors)."""
    anchors = PALETTES[palette]
    t = min(1.0, max(0.0, t)) * (len(anchors) - 1)
    i = min(int(t), len(anchors) - 2)
    a, b = anchors[i], anchors[i + 1]
    mix = [round(int(a[k:k + 2], 16) + (t - i) * (int(b[k:k + 2], 16) - int(a[k:k + 2], 16))) for k in (1, 3, 5)]
    return "#" + "".join(f"{c:02x}" for c in mix)


def _dark(color: str) -> bool:
    r, g, b = (int(color[k:k + 2], 16) for k in (1, 3, 5))
    return 0.299 * r + 0.587 * g + 0.114 * b < 140


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks, v = [], start
    while v <= hi + 1e-9 * step:
        if v >= lo - 1e-9 * step:
            ticks.append(round(v, 12))
        v += step
    return ticks


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:.4g}"


def _axes(fr: _Frame, xlo, xhi, ylo, yhi, xlabel="", ylabel="", xticks=None, yticks=None, log_y=False,
          xtick_text=None) -> tuple:
    """Draw the grid and axes; returns (sx, sy) mapping data to pixels."""
    def sx(x):
        return fr.left + (x - xlo) / (xhi - xlo or 1) * fr.w

    def sy(y):
        if log_y:
            y = math.log10(max(y, 10 ** ylo))
        return fr.top + fr.h - (y - ylo) / (yhi - ylo or 1) * fr.h

    p = fr.parts
    for t in yticks if yticks is not None else nice_ticks(ylo, yhi):
        y = fr.top + fr.h - (t - ylo) / (yhi - ylo or 1) * fr.h
        p.append(f"<line x1='{fr.left}' x2='{fr.left + fr.w}' y1='{_f(y)}' y2='{_f(y)}' stroke='#e5e5e5'/>")
        p.append(_text(fr.left - 5, y + 4, _tick_label(10 ** t) if log_y else _tick_label(t), 10, "end", "#555"))
    for i, t in enumerate(xticks if xticks is not None else nice_ticks(xlo, xhi, 8)):
        x = sx(t)
        p.append(f"<line x1='{_f(x)}' x2='{_f(x)}' y1='{fr.top + fr.h}' y2='{fr.top + fr.h + 4}' stroke='#888'/>")
        label = xtick_text[i] if xtick_text is not None else _tick_label(t)
        p.append(_text(x, fr.top + fr.h + 16, label, 10, "middle", "#555"))
    p.append(f"<rect x='{fr.left}' y='{fr.top}' width='{fr.w}' height='{fr.h}' fill='none' stroke='#bbb'/>")
    if xlabel:
        p.append(_text(fr.left + fr.w / 2, fr.height - 8, xlabel, 11, "middle", "#333"))
    if ylabel:
        p.append(_text(14, fr.top + fr.h / 2, ylabel, 11, "middle", "#333", rotate=-90))
    return sx, sy


def _legend(fr: _Frame, entries: list[tuple[str, str, bool]], y: float | None = None) -> None:
    """One row of legend entries (name, colour, dashed) at the top right of the plot area."""
    x = fr.left + fr.w
    y = fr.top - 10 if y is None else y
    for name, color, dash in reversed(entries):
        width = 7 * len(name) + 30
        x -= width
        d = " stroke-dasharray='5 3'" if dash else ""
        fr.parts.append(f"<line x1='{_f(x)}' x2='{_f(x + 18)}' y1='{_f(y - 4)}' y2='{_f(y - 4)}' stroke='{color}' "
                        f"stroke-width='3'{d}/>")
        fr.parts.append(_text(x + 22, y, name, 10, color="#333"))


# ---------------------------------------------------------------------------------------------- charts


def heatmap(blocks: Sequence, modules: Sequence[str], values, title: str, scale: str = "viridis",
            vmin: float | None = None, vmax: float | None = None, fmt: str = ".2g", unit: str = "",
            aria: str = "") -> str:
    """Block × module grid (block 0 on top), each cell coloured by its value and labelled with it; a colour bar."""
    rows = values.tolist() if hasattr(values, "tolist") else values
    z = [[finite_or_none(v) for v in row] for row in rows]
    flat = [v for row in z for v in row if v is not None]
    lo = vmin if vmin is not None else (min(flat) if flat else 0.0)
    hi = vmax if vmax is not None else (max(flat) if flat else 1.0)
    if hi <= lo:
        hi = lo + 1e-12
    cw = max(44, min(80, 560 // max(1, len(modules))))
    ch = 18 if len(blocks) <= 32 else 12
    fr = _Frame(width=70 + cw * len(modules) + 90, height=40 + ch * len(blocks) + 30, left=70, top=40, right=90,
                bottom=30)
    p = fr.parts
    for j, m in enumerate(modules):
        p.append(_text(fr.left + j * cw + cw / 2, fr.top - 6, m, 10, "middle", "#333"))
    for i, b in enumerate(blocks):
        y = fr.top + i * ch
        p.append(_text(fr.left - 6, y + ch / 2 + 4, f"block {b}", 10, "end", "#333"))
        for j in range(len(modules)):
            v = z[i][j] if j < len(z[i]) else None
            x = fr.left + j * cw
            if v is None:
                p.append(f"<rect x='{x}' y='{y}' width='{cw - 1}' height='{ch - 1}' fill='#f4f4f4'/>")
                continue
            c = color_at((v - lo) / (hi - lo), scale)
            p.append(f"<rect x='{x}' y='{y}' width='{cw - 1}' height='{ch - 1}' fill='{c}'/>")
            if ch >= 14:
                p.append(_text(x + cw / 2, y + ch / 2 + 3.5, format(v, fmt), 9, "middle",
                               "#fff" if _dark(c) else "#111"))
    # colour bar
    bx, by, bh = fr.left + cw * len(modules) + 16, fr.top, max(60, ch * len(blocks))
    steps = 24
    for k in range(steps):
        t = 1 - (k + 0.5) / steps
        p.append(f"<rect x='{bx}' y='{_f(by + k * bh / steps)}' width='14' height='{_f(bh / steps + 0.6)}' "
                 f"fill='{color_at(t, scale)}'/>")
    p.append(_text(bx + 18, by + 9, format(hi, fmt) + unit, 10, color="#333"))
    p.append(_text(bx + 18, by + bh, format(lo, fmt) + unit, 10, color="#333"))
    fr.height = max(fr.height, fr.top + bh + 20)
    return _svg(fr, title, aria)


def lines(series: Sequence[Series], title: str, xlabel: str = "", ylabel: str = "",
          vlines: Sequence[VLine] = (), points: Sequence[tuple[float, float, str, str]] = (), aria: str = "",
          height: int = 300) -> str:
    """Line chart of several series over a shared x axis; dashed vertical lines with labels; extra ``points``
    (x, y, colour, label) drawn as open circles (e.g. the stopping checks)."""
    fr = _Frame(height=height, top=40)
    xs = [finite_or_none(x) for s in series for x in (s.x or range(len(s.y)))] + [finite_or_none(v.x) for v in vlines]
    ys = [finite_or_none(y) for s in series for y in s.y] + [finite_or_none(p[1]) for p in points]
    xs, ys = [x for x in xs if x is not None], [y for y in ys if y is not None]
    if not xs or not ys:
        fr.parts.append(_text(fr.width / 2, fr.height / 2, "nothing recorded", 12, "middle", "#777"))
        return _svg(fr, title, aria)
    ylo, yhi = min(0.0, min(ys)), max(ys)
    yt = nice_ticks(ylo, yhi)
    ylo, yhi = min(yt[0], ylo), max(yt[-1], yhi)
    xlo, xhi = min(xs), max(xs)
    if xhi - xlo < 1e-12:  # one point: give it room
        xlo, xhi = xlo - 1, xhi + 1
    xt = nice_ticks(xlo, xhi, 8)
    if all(float(x).is_integer() for x in xs):  # steps: integer ticks only
        xt = [t for t in xt if float(t).is_integer()] or [xlo, xhi]
    sx, sy = _axes(fr, xlo, xhi, ylo, yhi, xlabel, ylabel, xticks=xt, yticks=yt)
    for s in series:
        pts = [(sx(finite_or_none(x)), sy(finite_or_none(y))) for x, y in zip(s.x or range(len(s.y)), s.y)
               if finite_or_none(x) is not None and finite_or_none(y) is not None]
        if not pts:
            continue
        d = " stroke-dasharray='5 3'" if s.dash else ""
        fr.parts.append(f"<polyline fill='none' stroke='{s.color}' stroke-width='2'{d} points='"
                        + " ".join(f"{_f(x)},{_f(y)}" for x, y in pts) + "'/>")
        if s.markers:
            fr.parts += [f"<circle cx='{_f(x)}' cy='{_f(y)}' r='2.5' fill='{s.color}'/>" for x, y in pts]
    for x, y, color, label in points:
        if finite_or_none(x) is not None and finite_or_none(y) is not None:
            fr.parts.append(f"<circle cx='{_f(sx(x))}' cy='{_f(sy(y))}' r='4' fill='#fff' stroke='{color}' "
                            f"stroke-width='2'><title>{_esc(label)}</title></circle>")
    for v in vlines:
        x = sx(v.x)
        fr.parts.append(f"<line x1='{_f(x)}' x2='{_f(x)}' y1='{fr.top}' y2='{fr.top + fr.h}' stroke='{v.color}' "
                        "stroke-width='2' stroke-dasharray='6 4'/>")
        anchor = "end" if x > fr.left + fr.w * 0.7 else "start"
        fr.parts.append(_text(x + (-4 if anchor == "end" else 4), fr.top + 12, v.label, 10, anchor, v.color))
    _legend(fr, [(s.name, s.color, s.dash) for s in series])
    return _svg(fr, title, aria)


def bars(categories: Sequence[str], series: Sequence[Series], title: str, ylabel: str = "",
         ymax: float | None = None, aria: str = "", value_fmt: str = ".2f") -> str:
    """Grouped bars: one group per category, one bar per series (its ``y`` aligned with ``categories``).
    Category labels may contain a newline (two lines under the axis)."""
    fr = _Frame(width=max(720, 78 * len(categories) + 80), height=320, bottom=52, top=44)
    vals = [finite_or_none(v) for s in series for v in s.y]
    top = ymax if ymax is not None else max([v for v in vals if v is not None] + [1e-12]) * 1.1
    yt = nice_ticks(0.0, top)
    sx, sy = _axes(fr, 0, len(categories), 0.0, max(top, yt[-1]), "", ylabel, xticks=[], yticks=yt)
    group = fr.w / max(1, len(categories))
    bw = min(28.0, group * 0.8 / max(1, len(series)))
    for i, cat in enumerate(categories):
        x0 = fr.left + i * group + (group - bw * len(series)) / 2
        for k, s in enumerate(series):
            v = finite_or_none(s.y[i]) if i < len(s.y) else None
            if v is None:
                continue
            y = sy(max(v, 0.0))
            fr.parts.append(f"<rect x='{_f(x0 + k * bw)}' y='{_f(y)}' width='{_f(bw - 1)}' "
                            f"height='{_f(fr.top + fr.h - y)}' fill='{s.color}'><title>{_esc(s.name)} · "
                            f"{_esc(cat)}: {format(v, '.4g')}</title></rect>")
            if len(series) <= 3:
                fr.parts.append(_text(x0 + k * bw + bw / 2, y - 3, format(v, value_fmt), 8, "middle", "#444"))
        for n, part in enumerate(str(cat).split("\n")):
            fr.parts.append(_text(fr.left + i * group + group / 2, fr.top + fr.h + 14 + 12 * n, part, 10,
                                  "middle", "#333"))
    _legend(fr, [(s.name, s.color, False) for s in series])
    return _svg(fr, title, aria)


def histogram(edges: Sequence[float], counts: Sequence[float], title: str, xlabel: str = "", ylabel: str = "",
              vline: tuple[float, str] | None = None, log_y: bool = False, colors=None, log10_x_ticks: bool = False,
              aria: str = "") -> str:
    """Bars between consecutive ``edges`` (len(edges) == len(counts) + 1). ``colors``: one per bar, or a function
    of the bar's centre. ``log10_x_ticks``: x is log10 of a quantity; ticks at integer decades labelled 10^k."""
    fr = _Frame(height=300, top=40)
    e = [float(v) for v in edges]
    c = [float(v) for v in counts]
    if not c or max(c) <= 0:
        fr.parts.append(_text(fr.width / 2, fr.height / 2, "nothing to show", 12, "middle", "#777"))
        return _svg(fr, title, aria)
    used = [i for i, v in enumerate(c) if v > 0]
    lo_i, hi_i = max(0, used[0] - 2), min(len(c) - 1, used[-1] + 2)
    xlo, xhi = e[lo_i], e[hi_i + 1]
    if vline is not None:
        xlo, xhi = min(xlo, vline[0]), max(xhi, vline[0])
    if log_y:
        ylo, yhi = 0.0, math.ceil(math.log10(max(c)) + 0.1)
        yt = list(range(0, int(yhi) + 1))
    else:
        yt = nice_ticks(0.0, max(c))
        ylo, yhi = 0.0, max(yt[-1], max(c))
    xt, xtt = None, None
    if log10_x_ticks:
        xt = list(range(math.ceil(xlo), math.floor(xhi) + 1))
        xtt = [f"{10.0 ** k:g}" for k in xt]
    sx, sy = _axes(fr, xlo, xhi, ylo, yhi, xlabel, ylabel, xticks=xt, yticks=yt, log_y=log_y, xtick_text=xtt)
    base = fr.top + fr.h
    for i in range(lo_i, hi_i + 1):
        if c[i] <= 0:
            continue
        mid = (e[i] + e[i + 1]) / 2
        col = colors(mid) if callable(colors) else colors[i] if colors else "#4c78a8"
        x0, x1 = sx(e[i]), sx(e[i + 1])
        y = sy(c[i]) if not log_y else sy(max(c[i], 1.0))
        if log_y and c[i] < 1:
            continue
        fr.parts.append(f"<rect x='{_f(x0)}' y='{_f(y)}' width='{_f(max(0.8, x1 - x0 - 0.3))}' "
                        f"height='{_f(base - y)}' fill='{col}'><title>{format(e[i], '.3g')} … "
                        f"{format(e[i + 1], '.3g')}: {c[i]:,.0f}</title></rect>")
    if vline is not None:
        x = sx(vline[0])
        fr.parts.append(f"<line x1='{_f(x)}' x2='{_f(x)}' y1='{fr.top}' y2='{base}' stroke='#d62728' "
                        "stroke-width='2' stroke-dasharray='6 4'/>")
        anchor = "end" if x > fr.left + fr.w * 0.6 else "start"  # the label sits above the plot area
        fr.parts.append(_text(x + (-4 if anchor == "end" else 4), fr.top - 5, vline[1], 10, anchor, "#d62728"))
    return _svg(fr, title, aria)
