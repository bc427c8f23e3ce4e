"""The simulated users' click chance is clipped at 1; the true effect must average the clip over their clickiness."""

import numpy as np
import pytest

from bench.recompare_experiments import clipped_effect
from bench.simulate_experiments import expected_click_chance

CONFIG = {"click_relevant": 0.9, "click_noise": 0.05, "clicky_a": 2.0, "clicky_b": 2.0, "eta": 1.0}


def test_the_expected_click_chance_averages_the_clip_over_the_beta_clickiness():
    clickiness = np.random.default_rng(0).beta(2, 2, 400_000) / 0.5  # as ClickyUsers draws it
    assert expected_click_chance(0.9, 2, 2) == pytest.approx(np.minimum(0.9 * clickiness, 1).mean(), abs=2e-3)
    assert expected_click_chance(0.9, 2, 2) == pytest.approx(0.777, abs=1e-3)  # not 0.9
    assert expected_click_chance(0.05, 2, 2) == pytest.approx(0.05)  # never clipped (clickiness < 2)


def test_the_recorded_effect_recomputed_with_the_clip():
    # The reported run's unclipped figures (docs/bench/simulate_experiments.json, true_effect).
    found = clipped_effect({"embedding": 0.26105491886409266, "ranker": 0.17654556136256316}, CONFIG)
    assert (found["embedding"], found["ranker"]) == (pytest.approx(0.2445, abs=1e-4), pytest.approx(0.1722, abs=1e-4))
    assert found["relative_lift"] == pytest.approx(-0.296, abs=1e-3)
    unclipped = {**CONFIG, "click_relevant": 0.4}  # 0.4 × clickiness stays below 1: nothing to correct
    assert clipped_effect({"embedding": 0.2, "ranker": 0.15}, unclipped)["embedding"] == pytest.approx(0.2)
