"""Small inline-SVG charts for the report: no JavaScript, no network, one self-contained file."""
from __future__ import annotations

from html import escape
from typing import Sequence

import numpy as np

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
W, H = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 44


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    return list(np.linspace(lo, hi, n))


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.3g}"


class _Frame:
    """Maps data to pixels and draws the axes."""

    def __init__(self, xlim, ylim, x_label, y_label):
        self.x0, self.x1 = xlim if xlim[1] > xlim[0] else (xlim[0], xlim[0] + 1)
        self.y0, self.y1 = ylim if ylim[1] > ylim[0] else (ylim[0], ylim[0] + 1)
        self.parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" class="chart">']
        pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
        self.px = lambda x: LEFT + (np.asarray(x, float) - self.x0) / (self.x1 - self.x0) * pw
        self.py = lambda y: TOP + ph - (np.asarray(y, float) - self.y0) / (self.y1 - self.y0) * ph
        for t in _ticks(self.y0, self.y1):
            y = float(self.py(t))
            self.parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            self.parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_fmt(t)}</text>')
        self.parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}" stroke="#333"/>')
        self.parts.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle" font-size="12">{escape(x_label)}</text>')
        self.parts.append(f'<text x="14" y="{TOP + ph / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 14 {TOP + ph / 2})">{escape(y_label)}</text>')

    def x_ticks(self):
        for t in _ticks(self.x0, self.x1):
            x = float(self.px(t))
            self.parts.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 15}" text-anchor="middle" font-size="11">{_fmt(t)}</text>')

    def legend(self, names):
        for i, name in enumerate(names):
            y = TOP + 6 + 15 * i
            self.parts.append(f'<rect x="{W - RIGHT - 150}" y="{y - 8}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>')
            self.parts.append(f'<text x="{W - RIGHT - 136}" y="{y + 1}" font-size="11">{escape(str(name))}</text>')

    def svg(self) -> str:
        return "".join(self.parts) + "</svg>"


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], x_label: str, y_label: str,
               marker: tuple[float, float, str] | None = None, points: bool = False) -> str:
    """Lines (or dots with points=True), one per series; an optional labelled marker point."""
    xs = np.concatenate([np.asarray(x, float) for x, _ in series.values()] or [np.zeros(1)])
    ys = np.concatenate([np.asarray(y, float) for _, y in series.values()] or [np.zeros(1)])
    f = _Frame((xs.min(), xs.max()), (min(ys.min(), 0) if ys.min() >= 0 else ys.min(), ys.max() * 1.05 or 1), x_label, y_label)
    f.x_ticks()
    for i, (name, (x, y)) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        px, py = f.px(x), f.py(y)
        if points:
            f.parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{color}" opacity="0.7"/>' for a, b in zip(px, py)]
        else:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py))
            f.parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
    if marker is not None:
        mx, my, text = marker
        cx, cy = float(f.px(mx)), float(f.py(my))
        f.parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="none" stroke="#000" stroke-width="2"/>')
        f.parts.append(f'<text x="{cx + 8:.1f}" y="{cy - 8:.1f}" font-size="11">{escape(text)}</text>')
    if len(series) > 1:
        f.legend(series)
    return f.svg()


def bar_chart(labels: Sequence[str], values: Sequence[float], y_label: str) -> str:
    """Vertical bars with their values printed on top."""
    values = np.asarray(values, float)
    f = _Frame((0, max(len(values), 1)), (0, (values.max() if len(values) else 1) * 1.15 or 1), "", y_label)
    slot = (W - LEFT - RIGHT) / max(len(values), 1)
    for i, (label, v) in enumerate(zip(labels, values)):
        x = LEFT + i * slot + slot * 0.15
        y = float(f.py(v))
        f.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{H - BOTTOM - y:.1f}" fill="{PALETTE[i % len(PALETTE)]}"/>')
        f.parts.append(f'<text x="{x + slot * 0.35:.1f}" y="{y - 4:.1f}" text-anchor="middle" font-size="11">{v:.4g}</text>')
        f.parts.append(f'<text x="{x + slot * 0.35:.1f}" y="{H - BOTTOM + 15}" text-anchor="middle" font-size="10">{escape(str(label))[:22]}</text>')
    return f.svg()


def histogram(samples: dict[str, Sequence[float]], x_label: str, bins: int = 30) -> str:
    """Overlaid step histograms (share of each sample per bin)."""
    allv = np.concatenate([np.asarray(v, float) for v in samples.values()] or [np.zeros(1)])
    edges = np.linspace(allv.min(), allv.max() if allv.max() > allv.min() else allv.min() + 1, bins + 1)
    series = {}
    for name, v in samples.items():
        counts, _ = np.histogram(np.asarray(v, float), edges)
        share = counts / max(len(v), 1)
        series[name] = (np.repeat(edges, 2)[1:-1], np.repeat(share, 2))
    return line_chart(series, x_label, "share of images")


def heatmap(matrix: np.ndarray, labels: Sequence[str]) -> str:
    """A square matrix (e.g. correlations) as coloured cells with values."""
    n = len(labels)
    cell = min(60, 360 // max(n, 1))
    pad = 150
    size = pad + cell * n + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" width="{size}" height="{size}" class="chart">']
    for i in range(n):
        parts.append(f'<text x="{pad - 6}" y="{pad + cell * i + cell / 2 + 4}" text-anchor="end" font-size="11">{escape(labels[i])[:22]}</text>')
        parts.append(f'<text x="{pad + cell * i + cell / 2}" y="{pad - 6}" text-anchor="start" font-size="11" transform="rotate(-45 {pad + cell * i + cell / 2} {pad - 6})">{escape(labels[i])[:22]}</text>')
        for j in range(n):
            v = float(matrix[i, j])
            shade = int(255 - 200 * max(0.0, min(1.0, v)))
            parts.append(f'<rect x="{pad + cell * j}" y="{pad + cell * i}" width="{cell}" height="{cell}" fill="rgb({shade},{shade},255)" stroke="#fff"/>')
            parts.append(f'<text x="{pad + cell * j + cell / 2}" y="{pad + cell * i + cell / 2 + 4}" text-anchor="middle" font-size="11">{v:.2f}</text>')
    return "".join(parts) + "</svg>"
