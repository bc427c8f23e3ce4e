"""A small inline SVG line chart of the primary metric over time, one line per arm (no JavaScript, no CDN)."""

from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
WIDTH, HEIGHT, PAD = 640, 240, 44


def timeline_svg(timeline: dict[str, list[tuple[str, float]]], label: str) -> SafeString:
    """Cumulative metric per arm against time buckets; an empty-state message when there is nothing yet."""
    buckets = sorted({bucket for points in timeline.values() for bucket, _ in points})
    values = [value for points in timeline.values() for _, value in points]
    if not buckets or not values:
        return mark_safe('<p class="loupe-chart-empty">No searches in the experiment yet: nothing to chart.</p>')
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.01, high + 0.01
    span = max(len(buckets) - 1, 1)

    def x(bucket: str) -> float:
        return PAD + (WIDTH - 2 * PAD) * buckets.index(bucket) / span

    def y(value: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * (value - low) / (high - low)

    parts = [
        f'<svg class="loupe-chart" role="img" aria-label="{escape(label)} over time" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)} over time (cumulative)</title>",
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>',
        f'<text x="4" y="{PAD}" font-size="11">{high:.3f}</text>',
        f'<text x="4" y="{HEIGHT - PAD}" font-size="11">{low:.3f}</text>',
        f'<text x="{PAD}" y="{HEIGHT - 12}" font-size="11">{escape(buckets[0][:16])}</text>',
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 12}" font-size="11" text-anchor="end">{escape(buckets[-1][:16])}</text>',
    ]
    for index, (arm, points) in enumerate(sorted(timeline.items())):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(f"{x(b):.1f},{y(v):.1f}" for b, v in points)
        parts.append(
            f'<polyline class="loupe-arm" data-arm="{escape(arm)}" fill="none" stroke="{colour}" '
            f'stroke-width="2" points="{path}"/>'
        )
        for b, v in points:
            parts.append(
                f'<circle cx="{x(b):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"><title>{escape(arm)} '
                f"{escape(b)}: {v:.4f}</title></circle>"
            )
        parts.append(f'<text x="{PAD + 130 * index}" y="16" font-size="12" fill="{colour}">{escape(arm)}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated string is escaped above
