"""Position propensities (how likely each position is examined) from a randomised slice of traffic.

For a small share of searches the results at positions k and k+1 are swapped (logged on the event).
Under the position-based click model a click at position k happens with probability
propensity(k) x relevance, and the swap shows the same items one position apart, so comparing clicks
at k and k+1 across the two conditions cancels relevance (Joachims, Swaminathan & Schnabel, WSDM 2017;
Wang et al., WSDM 2018). With A the item the ranker put at k and B the one at k+1:

    normal searches:   A at k   (clicks a_k),   B at k+1 (clicks b_k1)
    swapped searches:  B at k   (clicks b_k),   A at k+1 (clicks a_k1)

    p(k+1) / p(k) = (a_k1 / n_swapped + b_k1 / n_normal) / (a_k / n_normal + b_k / n_swapped)

and p(1) = 1 anchors the chain. Ratios with too few clicks keep the previous ratio (reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SwapCounts:
    """Click counts at positions k (upper) and k+1 (lower) for one k, in normal and swapped searches."""

    normal_searches: int = 0
    normal_upper_clicks: int = 0
    normal_lower_clicks: int = 0
    swapped_searches: int = 0
    swapped_upper_clicks: int = 0
    swapped_lower_clicks: int = 0


@dataclass
class PropensityCurve:
    """``values[k - 1]`` is the examination propensity of position k, with ``values[0] == 1``."""

    values: np.ndarray
    estimated_positions: list[int] = field(default_factory=list)  # positions whose ratio had enough clicks

    def at(self, position: int) -> float:
        return float(self.values[min(max(position, 1), len(self.values)) - 1])


def propensity_from_swaps(counts: dict[int, SwapCounts], depth: int, min_swapped_clicks: int = 20) -> PropensityCurve:
    """Chain the adjacent ratios into a curve over positions 1..depth.

    A ratio needs ``min_swapped_clicks`` clicks in the swapped searches (the scarce side: a few percent
    of traffic); with fewer, the power-law prior's ratio k / (k + 1) stands in for it. (Carrying the
    previous estimate on instead compounds it: a 0.48 measured at position 2 became 0.0013 at 10.)
    """
    values = np.ones(depth)
    estimated = []
    for k in range(1, depth):
        ratio = k / (k + 1)
        c = counts.get(k)
        if c is not None and c.normal_searches and c.swapped_searches:
            swapped_clicks = c.swapped_upper_clicks + c.swapped_lower_clicks
            upper = c.normal_upper_clicks / c.normal_searches + c.swapped_upper_clicks / c.swapped_searches
            lower = c.swapped_lower_clicks / c.swapped_searches + c.normal_lower_clicks / c.normal_searches
            if swapped_clicks >= min_swapped_clicks and upper > 0:
                ratio = min(lower / upper, 1.0)  # examination never rises further down a list
                estimated.append(k + 1)
        values[k] = values[k - 1] * ratio
    return PropensityCurve(values, estimated)


def power_law(depth: int, exponent: float = 1.0) -> PropensityCurve:
    """The common prior 1 / position^exponent, used until enough swaps are logged."""
    return PropensityCurve(1.0 / np.arange(1, depth + 1) ** exponent)
