"""Team-draft interleaving (Radlinski, Kurup & Joachims, CIKM 2008).

Two rankings are merged into one list: in each round a coin decides which team picks first, then
each team adds its highest-ranked item not yet in the list. Every shown item remembers its team; a
click credits that team. Per search, the team with more clicks wins (equal: a tie). Because each
user judges both rankers inside the same list, the comparison needs far fewer searches than an A/B
test, where the noise between users swamps the difference.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from typing import TypeVar

T = TypeVar("T", bound=Hashable)


def team_draft(a: Sequence[T], b: Sequence[T], length: int, rng: random.Random) -> list[tuple[T, str]]:
    """Interleave rankings ``a`` and ``b`` to ``length`` items; returns (item, "a" or "b") in shown order."""
    shown: list[tuple[T, str]] = []
    taken: set[T] = set()
    next_index = {"a": 0, "b": 0}
    ranking = {"a": a, "b": b}
    picks = {"a": 0, "b": 0}
    limit = min(length, len(set(a) | set(b)))

    def pick(team: str) -> bool:
        items = ranking[team]
        while next_index[team] < len(items) and items[next_index[team]] in taken:
            next_index[team] += 1
        if next_index[team] >= len(items):
            return False
        item = items[next_index[team]]
        shown.append((item, team))
        taken.add(item)
        picks[team] += 1
        return True

    while len(shown) < limit:
        # The team with fewer picks goes next; a coin decides when they are level.
        if picks["a"] < picks["b"]:
            first = "a"
        elif picks["b"] < picks["a"]:
            first = "b"
        else:
            first = "a" if rng.random() < 0.5 else "b"
        if not pick(first):
            other = "b" if first == "a" else "a"
            if not pick(other):
                break
    return shown


def credit(clicked_teams: Sequence[str], team_a: str, team_b: str) -> int:
    """One search's credit from the teams (arm names) of its clicked items: +1 team A wins, -1 team B, 0 a tie.

    The results read each logged search through this (``ranking.experiments.results``).
    """
    a = sum(1 for team in clicked_teams if team == team_a)
    b = sum(1 for team in clicked_teams if team == team_b)
    return 1 if a > b else -1 if b > a else 0
