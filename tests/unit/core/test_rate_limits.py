"""Fixed-window counters: the budget, the wait, the rate syntax."""

import pytest
from django.core.cache import caches

from core.rate_limits import Rate, add, count, hit, reset


@pytest.fixture(autouse=True)
def _empty():
    caches["throttle"].clear()


def test_rates_parse_and_refuse_nonsense():
    assert Rate.parse("120/min") == Rate(120, 60)
    assert Rate.parse("10/5s") == Rate(10, 5)
    assert Rate.parse("1000/hour") == Rate(1000, 3600)
    assert Rate.parse("0/min").requests == 0 and Rate.parse("").requests == 0
    with pytest.raises(ValueError, match="is not a rate"):
        Rate.parse("lots")


def test_a_window_allows_its_budget_then_says_how_long_to_wait():
    rate = Rate(2, 60)
    assert hit("k", rate, now=600.0) is None and hit("k", rate, now=610.0) is None
    assert hit("k", rate, now=615.5) == 45  # the window [600, 660) ends in 44.5 s
    assert hit("k", rate, now=660.0) is None  # a new window
    assert hit("other", rate, now=615.0) is None  # another key has its own count


def test_a_zero_rate_never_throttles():
    assert all(hit("k", Rate(0, 60)) is None for _ in range(50))


def test_counts_add_up_and_reset():
    assert count("fails") == 0
    assert [add("fails", 60) for _ in range(3)] == [1, 2, 3] and count("fails") == 3
    reset("fails")
    assert count("fails") == 0
