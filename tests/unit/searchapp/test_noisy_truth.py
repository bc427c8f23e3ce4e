"""The simulated useful CLIP is not tailored to one normalisation (audit of issue 18, findings 4 and 5).

Each query draws its own offset, margin and noise, so the non-matches of different queries sit at
different cosines (a fixed floor cannot subtract them all) and the list is the served depth after the
served cut.
"""

import numpy as np

from searchapp.evaluation import NOISY_OFFSET, with_noisy_truth
from searchapp.fusion_fit import LabelledQuery

IMAGES = list(range(1, 301))


def queries(n: int = 200) -> list[LabelledQuery]:
    return [
        LabelledQuery(
            text=f"q{i}",
            relevant=frozenset({IMAGES[i % len(IMAGES)]}),
            rankings={"fts": [(IMAGES[i % len(IMAGES)], 1.0)]},
            has_document={},
            has_captions={},
            group=i % 5,
        )
        for i in range(n)
    ]


def test_each_query_draws_its_own_baseline_so_no_fixed_floor_fits_them_all():
    noisy = with_noisy_truth(queries(), IMAGES, 0.25, depth=50)
    # The 50th score of each list sits near that query's non-match baseline.
    baselines = np.array([q.rankings["clip"][-1][1] for q in noisy])
    low, high = NOISY_OFFSET
    assert baselines.max() - baselines.min() > 0.5 * (high - low), (baselines.min(), baselines.max())
    assert all(q.rankings["fts"] == [(next(iter(q.relevant)), 1.0)] for q in noisy)  # others as recorded


def test_the_list_is_the_served_depth_after_the_served_cut():
    noisy = with_noisy_truth(queries(10), IMAGES, 0.25, depth=40, trim=lambda neighbours: neighbours[:7])
    assert {len(q.rankings["clip"]) for q in noisy} == {7}
    deep = with_noisy_truth(queries(10), IMAGES, 0.25, depth=40)
    assert {len(q.rankings["clip"]) for q in deep} == {40}
    scores = [s for _, s in deep[0].rankings["clip"]]
    assert scores == sorted(scores, reverse=True)
