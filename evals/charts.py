"""Chart data and a small SVG interval chart.

matplotlib is not a dependency, and Gradio's native bar plot has no error bars, so the
"metric per arm with its 95% interval" chart is drawn here as a self-contained SVG (a dot
for the mean, a whisker for the interval), and the history chart is a plain table of rows
that the UI hands to gr.LinePlot."""

from __future__ import annotations

import html
import math

from .reports import HIGHER_IS_BETTER, METRIC_LABELS, RunSummary

_COLOURS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04"]


def interval_rows(summary: RunSummary, metric: str) -> list[dict]:
    rows = []
    for arm in summary.arms:
        e = summary.metrics.get(arm, {}).get(metric)
        if e is not None and not math.isnan(e.mean):
            rows.append({"arm": arm, "mean": e.mean, "lo": e.lo, "hi": e.hi, "n": e.n})
    return rows


def interval_chart_svg(summary: RunSummary, metric: str, width: int = 560) -> str:
    """One row per arm: the mean as a dot and the bootstrap 95% interval as a whisker, on a
    shared axis. Empty string when no arm has the metric."""
    rows = interval_rows(summary, metric)
    if not rows:
        return ""
    label_w, pad, row_h = 150, 16, 28
    lo = min(r["lo"] for r in rows)
    hi = max(r["hi"] for r in rows)
    if metric in ("semantic", "fact", "rouge_l", "f1", "exact_match", "abstained", "accuracy", "macro_f1"):
        lo, hi = min(0.0, lo), max(1.0, hi)  # proportions: show the whole 0..1 scale
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    plot_w = width - label_w - 2 * pad
    height = pad * 2 + row_h * len(rows) + 24

    def x(v: float) -> float:
        return label_w + pad + (v - lo) / (hi - lo) * plot_w

    title = METRIC_LABELS.get(metric, metric)
    better = "higher is better" if HIGHER_IS_BETTER.get(metric, True) else "lower is better"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)} per arm with 95% intervals" '
        f'style="font: 12px sans-serif">',
        f'<text x="{pad}" y="{pad}" font-weight="bold">{html.escape(title)} — mean and bootstrap 95% '
        f"interval ({better})</text>",
    ]
    axis_y = pad + 8 + row_h * len(rows) + 6
    for t in range(5):
        v = lo + (hi - lo) * t / 4
        parts.append(f'<line x1="{x(v):.1f}" y1="{pad + 8}" x2="{x(v):.1f}" y2="{axis_y}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{x(v):.1f}" y="{axis_y + 14}" text-anchor="middle" fill="#6b7280">{v:.3g}</text>')
    for i, r in enumerate(rows):
        y = pad + 8 + row_h * i + row_h / 2
        colour = _COLOURS[i % len(_COLOURS)]
        parts.append(f'<text x="{label_w}" y="{y + 4:.1f}" text-anchor="end">{html.escape(r["arm"])}</text>')
        parts.append(
            f'<line x1="{x(r["lo"]):.1f}" y1="{y:.1f}" x2="{x(r["hi"]):.1f}" y2="{y:.1f}" '
            f'stroke="{colour}" stroke-width="3"/>'
        )
        for v in (r["lo"], r["hi"]):
            parts.append(
                f'<line x1="{x(v):.1f}" y1="{y - 6:.1f}" x2="{x(v):.1f}" y2="{y + 6:.1f}" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
        parts.append(
            f'<circle cx="{x(r["mean"]):.1f}" cy="{y:.1f}" r="5" fill="{colour}">'
            f"<title>{html.escape(r['arm'])}: {r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}], "
            f"n={r['n']}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)
