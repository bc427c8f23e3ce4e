"""Server-rendered SVG line charts over time buckets, with promotions drawn as vertical markers.

Inline SVG needs no script, so it passes the strict Content-Security-Policy (core.security_headers);
colours are presentation attributes, not styles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from ranking.promotions import Promotion

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 640, 170, 56, 12, 22, 28
LINE_COLOURS = ["#1f5fa8", "#b3471d"]
MARKER_COLOURS = {"ranker": "#2a7a2a", "encoder": "#7a2a7a"}


@dataclass(frozen=True)
class Line:
    name: str
    values: Sequence[float | None]  # one per bucket; None where there is nothing to show


def line_chart(
    title: str,
    starts: Sequence[datetime],
    lines: Sequence[Line],
    promotions: Sequence[Promotion],
    until: datetime,
    fmt: str = "{:.3f}",
) -> SafeString:
    """One chart: the lines against ``starts`` (bucket starts; the last bucket ends at ``until``)."""
    values = [v for line in lines for v in line.values if v is not None]
    if not starts or not values:
        return mark_safe(f'<p class="loupe-chart-empty">{escape(title)}: no searches in this range.</p>')
    low, high = min(0.0, min(values)), max(values)
    high = high if high > low else low + 1.0
    since = starts[0]
    span = (until - since).total_seconds()
    step = span / len(starts)

    def x(at: datetime, middle: bool = True) -> float:
        seconds = (at - since).total_seconds() + (step / 2 if middle else 0)
        return LEFT + (WIDTH - LEFT - RIGHT) * seconds / span

    def y(value: float) -> float:
        return HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * (value - low) / (high - low)

    parts = [
        f'<svg class="loupe-chart" role="img" aria-label="{escape(title)} over time" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)} over time</title>",
        f'<text x="{LEFT}" y="14" font-size="12" font-weight="bold" fill="#222">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" stroke="#777"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#777"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 4}" font-size="10" text-anchor="end" fill="#222">{fmt.format(high)}</text>',
        f'<text x="{LEFT - 4}" y="{HEIGHT - BOTTOM}" font-size="10" text-anchor="end" fill="#222">'
        f"{fmt.format(low)}</text>",
        f'<text x="{LEFT}" y="{HEIGHT - 8}" font-size="10" fill="#222">{since:%Y-%m-%d %H:%M}</text>',
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" font-size="10" text-anchor="end" fill="#222">'
        f"{until:%Y-%m-%d %H:%M} UTC</text>",
    ]
    for promotion in promotions:
        px, colour = x(promotion.at, middle=False), MARKER_COLOURS.get(promotion.kind, "#555")
        parts.append(
            f'<line class="loupe-promotion" data-kind="{escape(promotion.kind)}" x1="{px:.1f}" y1="{TOP}" '
            f'x2="{px:.1f}" y2="{HEIGHT - BOTTOM}" stroke="{colour}" stroke-width="2" stroke-dasharray="4 3">'
            f"<title>{escape(promotion.label)} at {promotion.at:%Y-%m-%d %H:%M} UTC</title></line>"
        )
    for index, line in enumerate(lines):
        colour = LINE_COLOURS[index % len(LINE_COLOURS)]
        for run in _runs(starts, line.values):
            points = " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v in run)
            parts.append(
                f'<polyline class="loupe-series" data-series="{escape(line.name)}" fill="none" stroke="{colour}" '
                f'stroke-width="2" points="{points}"/>'
            )
            if len(run) == 1:  # a lone point is not visible as a line
                ((at, v),) = run
                parts.append(f'<circle cx="{x(at):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>')
        if len(lines) > 1:
            parts.append(
                f'<text x="{WIDTH - RIGHT - 90 * (len(lines) - index)}" y="14" font-size="11" fill="{colour}">'
                f"{escape(line.name)}</text>"
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated string is escaped or a number


def _runs(starts: Sequence[datetime], values: Sequence[float | None]) -> list[list[tuple[datetime, float]]]:
    """Consecutive buckets with a value: a bucket without searches breaks the line rather than reading as 0."""
    runs: list[list[tuple[datetime, float]]] = [[]]
    for at, value in zip(starts, values, strict=True):
        if value is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((at, value))
    return [run for run in runs if run]
