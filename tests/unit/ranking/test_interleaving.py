"""Team-draft interleaving: each team's picks keep its order, teams stay balanced, credit per click."""

import random
from collections import Counter

from ranking.experiments.interleaving import credit, team_draft


def test_team_draft_keeps_each_rankings_order_and_balances_the_teams():
    rng = random.Random(0)
    for _ in range(300):
        items = list(range(30))
        a = rng.sample(items, 30)
        b = rng.sample(items, 30)
        merged = team_draft(a, b, 10, rng)
        shown = [item for item, _ in merged]
        assert len(shown) == len(set(shown)) == 10
        teams = Counter(team for _, team in merged)
        assert abs(teams["a"] - teams["b"]) <= 1
        for side, ranking in (("a", a), ("b", b)):
            picked = [item for item, team in merged if team == side]
            # Each pick is the team's best item not shown before it.
            for item in picked:
                index = shown.index(item)
                best_left = next(x for x in ranking if x not in shown[:index])
                assert item == best_left


def test_identical_rankings_interleave_to_the_same_list():
    ranking = list(range(12))
    merged = team_draft(ranking, ranking, 12, random.Random(1))
    assert [item for item, _ in merged] == ranking


def test_the_coin_gives_each_team_the_first_pick_half_the_time():
    rng = random.Random(2)
    firsts = Counter(team_draft([1, 2], [2, 1], 2, rng)[0][1] for _ in range(4000))
    assert abs(firsts["a"] - 2000) < 150


def test_short_rankings_fill_from_the_other_team():
    merged = team_draft([1], [2, 3, 4], 4, random.Random(3))
    assert sorted(item for item, _ in merged) == [1, 2, 3, 4]


def test_credit_is_read_by_arm_name_as_the_results_do():
    """``results.interleaving_result`` passes each logged search's clicked teams (arm names) through this."""
    assert credit(["learned", "embedding", "learned"], "embedding", "learned") == -1
    assert credit(["embedding"], "embedding", "learned") == 1
    assert credit(["embedding", "learned"], "embedding", "learned") == credit([], "embedding", "learned") == 0
    assert credit(["", "learned"], "embedding", "learned") == -1  # an item neither team placed counts for nobody
