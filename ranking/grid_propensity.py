"""Examination per (row, column) of a grid layout, from the randomised swap slice, shrunk toward the list curve.

The list model (``ranking.propensity``) gives each rank one examination propensity. On a grid, rank 4 (the
end of a 4-card row) and rank 5 (the start of the next row) are not one step apart in attention, and the
same rank is a different cell on a phone (1 card a row) and a desktop (about 4). So for each layout class
(``feedback.layout.Layout.width``: cards in the first row) every cell (row, column) gets its own value.

**Pairs.** The swap slice trades positions (i, j), adjacent or d apart (``searchapp.slices.swap_pair``).
Joachims, Swaminathan & Schnabel (WSDM 2017) compare clicks at i and j with and without the swap: with A
the item the ranker put at i and B the one at j, under the position-based model

    upper = a_i / n_normal + b_i / n_swapped   = p(cell_i) (r_A + r_B)
    lower = a_j / n_swapped + b_j / n_normal   = p(cell_j) (r_A + r_B)

so lower / upper estimates p(cell_j) / p(cell_i) whatever the items' relevance. A pair is counted per
(layout class, i, j, cell_i, cell_j): a justified row holds as many cards as fit, so the same ranks can be
different cells in two searches of one class, and only searches that put i and j in the same cells compare.

**Cells from pairs.** Each pair is an edge between two cells carrying a log ratio; the swap design makes
edges along rows (i, i+1), across the row boundary, and down columns (i, i+d on a d-column grid). As in
Agarwal et al. ("Estimating position bias without intrusive interventions", WSDM 2019), who combine the
ratios of all position pairs, the cells' log examinations are fitted to all edges at once, here by weighted
least squares: each edge weighs by the inverse of its log ratio's variance (delta method on Poisson click
counts), cell (1, 1) is anchored at 1, and each cell has a prior at the list curve's value for the ranks it
was seen at, weighing ``prior_clicks`` pseudo-clicks. A cell no pair reaches is exactly the list curve, and
a cell with little data stays near it (the shrinkage of Wang et al., WSDM 2018, toward a simpler model).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from feedback.layout import Layout
from ranking.propensity import PropensityCurve, SwapCounts

Cell = tuple[int, int]  # (row, column), 1-based
ORIGIN: Cell = (1, 1)
FLOOR = 1e-3  # no cell is estimated as never examined: its clicks would weigh without bound


@dataclass(frozen=True)
class PairKey:
    """Positions i < j of one swap pair in one layout class, and the cells they occupied."""

    width: int
    upper: int
    lower: int
    upper_cell: Cell
    lower_cell: Cell


@dataclass(frozen=True)
class LoggedPage:
    """One first page as the estimator needs it: its layout, the swapped pair if any, what was clicked."""

    layout: Layout
    result_count: int
    clicked: frozenset[int]  # positions
    swapped: tuple[int, int] | None = None  # (upper, lower) when the swap slice traded them


def count_pairs(pages: Iterable[LoggedPage], max_position: int, max_offset: int) -> dict[PairKey, SwapCounts]:
    """Click counts per pair key: a swapped page counts for its own pair, a normal page for every pair the
    slice could have drawn on it (positions i < j <= max_position, j - i <= max_offset)."""
    counts: dict[PairKey, SwapCounts] = defaultdict(SwapCounts)
    for page in pages:
        layout, clicked = page.layout, page.clicked
        if page.swapped is not None:
            upper, lower = page.swapped
            c = counts[PairKey(layout.width, upper, lower, layout.cell(upper), layout.cell(lower))]
            c.swapped_searches += 1
            c.swapped_upper_clicks += upper in clicked
            c.swapped_lower_clicks += lower in clicked
            continue
        deepest = min(max_position, page.result_count)
        cells = {p: layout.cell(p) for p in range(1, deepest + 1)}
        for upper in range(1, deepest):
            for lower in range(upper + 1, min(upper + max_offset, deepest) + 1):
                c = counts[PairKey(layout.width, upper, lower, cells[upper], cells[lower])]
                c.normal_searches += 1
                c.normal_upper_clicks += upper in clicked
                c.normal_lower_clicks += lower in clicked
    return dict(counts)


@dataclass
class GridPropensity:
    """Examination of each estimated (layout class, cell); everything else reads the list curve."""

    fallback: PropensityCurve
    cells: dict[int, dict[Cell, float]] = field(default_factory=dict)  # width -> cell -> examination
    evidence: dict[int, dict[Cell, float]] = field(default_factory=dict)  # width -> cell -> edge weight

    def at(self, layout: Layout | None, position: int) -> float:
        """The examination of ``position`` as shown in ``layout``; with no layout, the list curve's."""
        if layout is None:
            return self.fallback.at(position)
        value = self.cells.get(layout.width, {}).get(layout.cell(position))
        return self.fallback.at(position) if value is None else value


def grid_propensity(
    pairs: dict[PairKey, SwapCounts], fallback: PropensityCurve, prior_clicks: float = 20.0
) -> GridPropensity:
    """Fit every layout class's cells to its pairs' log ratios (see the module docstring)."""
    edges: dict[int, list[tuple[Cell, Cell, float, float]]] = defaultdict(list)
    seen_at: dict[int, dict[Cell, list[int]]] = defaultdict(lambda: defaultdict(list))
    for key, counts in pairs.items():
        measured = _log_ratio(counts)
        if measured is None:
            continue
        log_ratio, weight = measured
        edges[key.width].append((key.upper_cell, key.lower_cell, log_ratio, weight))
        seen_at[key.width][key.upper_cell].append(key.upper)
        seen_at[key.width][key.lower_cell].append(key.lower)
    result = GridPropensity(fallback)
    # The prior weighs like one log ratio measured from prior_clicks clicks, half on each side: by the same
    # delta method its variance is 1/(n/2) + 1/(n/2) = 4/n.
    strength = prior_clicks / 4.0
    for width, width_edges in edges.items():
        cells = sorted({c for e in width_edges for c in e[:2]} - {ORIGIN})
        if not cells:
            continue
        index = {cell: n for n, cell in enumerate(cells)}
        prior = np.array([np.mean([np.log(fallback.at(r)) for r in seen_at[width][c]]) for c in cells])
        normal = strength * np.eye(len(cells))
        rhs = strength * prior
        evidence = np.zeros(len(cells))
        for upper, lower, log_ratio, weight in width_edges:
            row = np.zeros(len(cells))  # x[lower] - x[upper], with x[ORIGIN] = 0
            if lower in index:
                row[index[lower]] += 1.0
                evidence[index[lower]] += weight
            if upper in index:
                row[index[upper]] -= 1.0
                evidence[index[upper]] += weight
            normal += weight * np.outer(row, row)
            rhs += weight * log_ratio * row
        solved = np.linalg.solve(normal, rhs)
        result.cells[width] = {c: float(np.clip(np.exp(solved[index[c]]), FLOOR, 1.0)) for c in cells}
        result.cells[width][ORIGIN] = 1.0
        result.evidence[width] = {c: float(evidence[index[c]]) for c in cells}
    return result


def _log_ratio(c: SwapCounts) -> tuple[float, float] | None:
    """log(p(lower cell) / p(upper cell)) and its inverse variance, or None without clicks on both sides."""
    if not (c.normal_searches and c.swapped_searches):
        return None
    n, s = c.normal_searches, c.swapped_searches
    upper = c.normal_upper_clicks / n + c.swapped_upper_clicks / s
    lower = c.swapped_lower_clicks / s + c.normal_lower_clicks / n
    if upper <= 0 or lower <= 0:
        return None
    # Poisson counts: var(count / n) = count / n^2; var(log x) = var(x) / x^2.
    variance = (c.normal_upper_clicks / n**2 + c.swapped_upper_clicks / s**2) / upper**2 + (
        c.swapped_lower_clicks / s**2 + c.normal_lower_clicks / n**2
    ) / lower**2
    return float(np.log(lower / upper)), 1.0 / variance
