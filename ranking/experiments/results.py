"""An experiment's results: metrics per arm from the feedback tables, their statistics, and the verdict.

One SQL statement sums, per arm and user, what every metric needs (first pages only: a search is its
first page; later pages belong to it). The statistics treat the user as the unit
(``ranking.experiments.statistics``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from django.db import connection
from django.utils import timezone

from feedback.erasure import not_erased_sql
from feedback.models import RATING_UTILITY_SQL, Click, Impression, Rating, SearchEvent
from ranking.experiments.interleaving import credit
from ranking.experiments.sequential import MIN_MONITORED_USERS, compare_paths, preference_test, ratio_path
from ranking.experiments.statistics import (
    Comparison,
    RatioEstimate,
    SampleRatio,
    benjamini_hochberg,
    compare,
    minimum_detectable_effect,
    ratio,
    sample_ratio_check,
    sign_test,
)
from ranking.models import Experiment, Variant

ALPHA = 0.05
# The sample-size estimate's power: the usual planning value (Kohavi, Tang & Xu, "Trustworthy Online
# Controlled Experiments", 2020, ch. 17).
POWER = 0.8

# metric -> (numerator column, denominator column, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "ctr": ("clicked_searches", "searches", True),
    "clicks_per_search": ("clicks", "searches", True),
    "reciprocal_rank": ("reciprocal_rank", "searches", True),
    "abandonment": ("abandoned", "searches", False),
    "mean_rating": ("rating_sum", "ratings", True),
    "time_to_first_click": ("seconds_to_first_click", "clicked_searches", False),
}

# Table names from the models that own them, so a rename breaks a test rather than production.
CLICK_TABLE = Click._meta.db_table
EVENT_TABLE = SearchEvent._meta.db_table
IMPRESSION_TABLE = Impression._meta.db_table
RATING_TABLE = Rating._meta.db_table

# Per first-page search of the experiment: how many clicks, the position of the first, and when.
CLICKS_CTE = f"""clicks AS (
    SELECT c.event_id, count(*) AS n, (array_agg(c.position ORDER BY c.created_at, c.id))[1] AS first_position,
        min(c.created_at) AS first_at
    FROM {CLICK_TABLE} c JOIN searches s ON s.id = c.event_id GROUP BY c.event_id
)"""

# One row per first-page search, in search-time order (time-ordered ids break ties): the history
# the always-valid statistics walk through (ranking.experiments.sequential).
PER_SEARCH_SQL = f"""
WITH searches AS (
    SELECT id, arm, user_key, created_at FROM {EVENT_TABLE} e
    WHERE experiment_id = %(experiment)s AND page = 1 AND {not_erased_sql("e")}
),
{CLICKS_CTE},
ratings AS (
    SELECT r.event_id, count(*) AS n, sum(r.utility) AS total
    FROM (SELECT event_id, {RATING_UTILITY_SQL} AS utility FROM {RATING_TABLE}) r JOIN searches s ON s.id = r.event_id
    GROUP BY r.event_id
)
SELECT s.arm, s.user_key, s.created_at,
    1 AS searches,
    (c.event_id IS NOT NULL)::int AS clicked_searches,
    coalesce(c.n, 0) AS clicks,
    coalesce(1.0 / c.first_position, 0) AS reciprocal_rank,
    (c.event_id IS NULL AND r.event_id IS NULL)::int AS abandoned,
    coalesce(r.n, 0) AS ratings,
    coalesce(r.total, 0) AS rating_sum,
    coalesce(extract(epoch FROM c.first_at - s.created_at), 0) AS seconds_to_first_click
FROM searches s LEFT JOIN clicks c ON c.event_id = s.id LEFT JOIN ratings r ON r.event_id = s.id
ORDER BY s.created_at, s.id
"""

PER_USER_SQL = f"""
SELECT arm, user_key, sum(searches) AS searches, sum(clicked_searches) AS clicked_searches, sum(clicks) AS clicks,
    sum(reciprocal_rank) AS reciprocal_rank, sum(abandoned) AS abandoned, sum(ratings) AS ratings,
    sum(rating_sum) AS rating_sum, sum(seconds_to_first_click) AS seconds_to_first_click, min(created_at) AS first_seen
FROM ({PER_SEARCH_SQL}) per_search GROUP BY arm, user_key
"""

TIMELINE_SQL = f"""
WITH searches AS (
    SELECT id, arm, user_key, date_trunc(%(unit)s, created_at) AS bucket
    FROM {EVENT_TABLE} e WHERE experiment_id = %(experiment)s AND page = 1 AND {not_erased_sql("e")}
),
{CLICKS_CTE}
SELECT s.arm, s.bucket, count(*) AS searches, count(c.event_id) AS clicked_searches, coalesce(sum(c.n), 0) AS clicks,
    coalesce(sum(1.0 / c.first_position), 0) AS reciprocal_rank
FROM searches s LEFT JOIN clicks c ON c.event_id = s.id
GROUP BY s.arm, s.bucket ORDER BY s.bucket
"""

INTERLEAVING_SQL = f"""
SELECT e.user_key, e.id,
    array_agg(i.team) FILTER (WHERE EXISTS (
        SELECT 1 FROM {CLICK_TABLE} c WHERE c.event_id = e.id AND c.image_id = i.image_id)) AS clicked_teams
FROM {EVENT_TABLE} e JOIN {IMPRESSION_TABLE} i ON i.event_id = e.id
WHERE e.experiment_id = %(experiment)s AND e.page = 1 AND e.arm = 'interleaved' AND {not_erased_sql("e")}
GROUP BY e.user_key, e.id ORDER BY min(e.created_at), e.id
"""


@dataclass
class ArmResult:
    variant: Variant
    users: int
    searches: int
    metrics: dict[str, RatioEstimate]
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # against the control arm
    q_values: dict[str, float] = field(default_factory=dict)  # secondary metrics, Benjamini-Hochberg adjusted
    detectable: float = float("nan")  # minimum detectable effect on the primary metric (80% power, alpha 0.05)


@dataclass
class InterleavingResult:
    team_a: str
    team_b: str
    users: int
    searches: int
    wins_a: int
    wins_b: int
    ties: int
    preference: RatioEstimate  # (wins A - wins B) per search, users as the unit; > 0 favours A
    p_value: float  # always-valid or fixed-horizon, as the experiment's statistics setting says (users as the unit)
    method: str  # "always-valid" or "fixed-horizon"
    interval: tuple[float, float]  # of the preference, of the same method
    sign_test_p: float  # binomial test over decided searches (searches as the unit), for reference


@dataclass
class ExperimentResults:
    experiment: Experiment
    arms: list[ArmResult]
    sample_ratio: SampleRatio
    timeline: dict[str, list[tuple[str, float]]]  # arm -> [(bucket, cumulative primary metric)]
    interleaving: InterleavingResult | None
    winner: Variant | None
    verdict: str

    @property
    def control(self) -> ArmResult | None:
        return next((a for a in self.arms if a.variant.is_control), self.arms[0] if self.arms else None)


def _rows(sql: str, experiment: Experiment) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(sql, {"experiment": experiment.pk})
        columns = [c.name for c in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def per_user_rows(experiment: Experiment) -> list[dict]:
    return _rows(PER_USER_SQL, experiment)


def start_users(experiment: Experiment) -> int:
    """Users per arm from which the sequential test counts looks (see ``sequential.MIN_MONITORED_USERS``)."""
    return max(experiment.min_users_per_arm, MIN_MONITORED_USERS)


def sequential_comparisons(experiment: Experiment, arms: list[ArmResult], control: ArmResult) -> None:
    """Replace each arm's fixed-horizon comparisons by always-valid ones over the experiment's history."""
    searches = _rows(PER_SEARCH_SQL, experiment)
    users = {key: i for i, key in enumerate({r["user_key"] for r in searches})}
    user = np.array([users[r["user_key"]] for r in searches], dtype=np.int64)
    arm_of = np.array([r["arm"] for r in searches], dtype=object)
    for name, (numerator, denominator, _) in METRICS.items():
        num = np.array([float(r[numerator]) for r in searches])
        den = np.array([float(r[denominator]) for r in searches])
        base = ratio_path(arm_of == control.variant.name, user, num, den)
        for arm in arms:
            if arm is control:
                continue
            path = ratio_path(arm_of == arm.variant.name, user, num, den)
            test = compare_paths(base, path, experiment.expected_effect, start_users(experiment), ALPHA)
            fixed = arm.comparisons[name]
            low, high = test.interval
            arm.comparisons[name] = Comparison(
                fixed.control, fixed.treatment, fixed.difference, low, high, test.p_value, "always-valid"
            )


def arm_metrics(rows: list[dict]) -> dict[str, RatioEstimate]:
    """Every metric for one arm from its per-user rows."""
    out = {}
    for name, (numerator, denominator, _) in METRICS.items():
        out[name] = ratio(
            np.array([float(r[numerator]) for r in rows]), np.array([float(r[denominator]) for r in rows])
        )
    return out


def results(experiment: Experiment) -> ExperimentResults:
    variants = list(experiment.variants.all())
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for row in per_user_rows(experiment):
        by_arm[row["arm"]].append(row)
    interleaving = None
    if experiment.mode == Experiment.Mode.INTERLEAVE:
        arms = [ArmResult(v, 0, 0, {}) for v in variants]
        interleaving = interleaving_result(experiment, variants)
        srm = sample_ratio_check([], [])
        winner, verdict = interleaving_verdict(experiment, variants, interleaving)
        return ExperimentResults(experiment, arms, srm, {}, interleaving, winner, verdict)
    arms = []
    for variant in variants:
        rows = by_arm.get(variant.name, [])
        arms.append(ArmResult(variant, len(rows), sum(int(r["searches"]) for r in rows), arm_metrics(rows)))
    control = next((a for a in arms if a.variant.is_control), arms[0] if arms else None)
    for arm in arms:
        if arm is not control:
            arm.comparisons = {name: compare(control.metrics[name], arm.metrics[name]) for name in METRICS}
    if control is not None and experiment.statistics == Experiment.Statistics.SEQUENTIAL:
        sequential_comparisons(experiment, arms, control)
    if control is not None:
        secondary_q_values(experiment, arms, control)
    srm = sample_ratio_check([a.users for a in arms], [a.variant.weight for a in arms])
    winner, verdict = ab_verdict(experiment, arms, control, srm)
    return ExperimentResults(experiment, arms, srm, timeline(experiment), None, winner, verdict)


def secondary_q_values(experiment: Experiment, arms: list[ArmResult], control: ArmResult) -> None:
    """Per arm, q-values over the secondary metrics read together (the primary is the one decision the
    verdict makes, so it keeps its own p-value), and the primary metric's minimum detectable effect."""
    primary = experiment.primary_metric
    secondary = [name for name in METRICS if name != primary]
    for arm in arms:
        if arm is control:
            continue
        q = benjamini_hochberg([arm.comparisons[name].p_value for name in secondary])
        arm.q_values = dict(zip(secondary, q, strict=True))
        arm.detectable = minimum_detectable_effect(control.metrics[primary], arm.metrics[primary], ALPHA, POWER)


def ab_verdict(experiment: Experiment, arms: list[ArmResult], control: ArmResult | None, srm: SampleRatio):
    """Suggest a winner only with enough users, no sample-ratio mismatch, and a significant primary metric."""
    if control is None or len(arms) < 2:
        return None, "An A/B experiment needs at least two arms."
    if srm.mismatch:
        return None, (
            f"Sample ratio mismatch (p = {srm.p_value:.2g}): the users per arm do not match the weights. "
            "Do not trust these results; look for an assignment or logging bug."
        )
    short = [a.variant.name for a in arms if a.users < experiment.min_users_per_arm]
    if short:
        return None, f"Not enough users yet in {', '.join(short)} (minimum {experiment.min_users_per_arm} per arm)."
    metric = experiment.primary_metric
    higher_better = METRICS[metric][2]
    better = []
    for arm in arms:
        c = arm.comparisons.get(metric)
        if c is None or np.isnan(c.p_value) or c.p_value >= ALPHA:
            continue
        if (c.difference > 0) == higher_better:
            better.append((c.difference if higher_better else -c.difference, arm))
    if better:
        arm = max(better, key=lambda pair: pair[0])[1]
        c = arm.comparisons[metric]
        return arm.variant, (
            f"{arm.variant.name} beats {control.variant.name} on {metric}: "
            f"{c.difference:+.4f} ({c.relative:+.1%}), {c.method} p = {c.p_value:.2g}."
        )
    worse = [a for a in arms if a.comparisons.get(metric) and a.comparisons[metric].p_value < ALPHA]
    if worse and len(worse) == len(arms) - 1:
        return control.variant, f"Every other arm is significantly worse on {metric}: keep {control.variant.name}."
    return None, f"No significant difference on {metric} yet ({method_label(experiment)}, alpha {ALPHA})."


def interleaving_result(experiment: Experiment, variants: list[Variant]) -> InterleavingResult | None:
    if len(variants) != 2:
        return None
    a, b = variants[0].name, variants[1].name
    per_user: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # wins a, wins b, searches
    keys, credits = [], []  # per search, in search-time order
    with connection.cursor() as cursor:
        cursor.execute(INTERLEAVING_SQL, {"experiment": experiment.pk})
        for user_key, _, clicked_teams in cursor.fetchall():
            won = credit(clicked_teams or [], a, b)
            counts = per_user[user_key]
            counts[2] += 1
            counts[0 if won > 0 else 1] += won != 0
            keys.append(user_key)
            credits.append(won)
    wins_a, wins_b = credits.count(1), credits.count(-1)
    ties = len(credits) - wins_a - wins_b
    users = list(per_user.values())
    preference = ratio(np.array([u[0] - u[1] for u in users], dtype=float), np.array([u[2] for u in users], float))
    zero = RatioEstimate(0.0, 0.0, preference.users)
    fixed = compare(zero, preference)
    p_value = fixed.p_value if preference.users > 1 else 1.0
    interval, method = (fixed.low, fixed.high), "fixed-horizon"
    if experiment.statistics == Experiment.Statistics.SEQUENTIAL:
        index = {key: i for i, key in enumerate(per_user)}
        values = np.array(credits, dtype=float)
        path = ratio_path(
            np.ones(len(values), bool), np.array([index[k] for k in keys], dtype=np.int64), values, np.ones(len(values))
        )
        decided = np.cumsum(np.abs(values)) / np.arange(1, len(values) + 1)
        test = preference_test(path, decided, experiment.expected_effect, start_users(experiment), ALPHA)
        p_value, interval, method = test.p_value, test.interval, "always-valid"
    return InterleavingResult(
        a,
        b,
        len(users),
        len(credits),
        wins_a,
        wins_b,
        ties,
        preference,
        p_value,
        method,
        interval,
        sign_test(wins_a, wins_b),
    )


def interleaving_verdict(experiment: Experiment, variants: list[Variant], result: InterleavingResult | None):
    if result is None:
        return None, "Interleaving needs exactly two arms."
    if result.users < experiment.min_users_per_arm:
        return None, f"Not enough users yet ({result.users}; minimum {experiment.min_users_per_arm})."
    if np.isnan(result.p_value) or result.p_value >= ALPHA:
        return None, f"No significant preference yet ({result.method} p = {result.p_value:.2g})."
    winner = variants[0] if result.preference.value > 0 else variants[1]
    return winner, (
        f"{winner.name} wins {max(result.wins_a, result.wins_b)} of {result.wins_a + result.wins_b} "
        f"decided searches, {result.method} p = {result.p_value:.2g}."
    )


def method_label(experiment: Experiment) -> str:
    """What the p-values on the page and in the API mean, in the words the page shows."""
    return Experiment.Statistics(experiment.statistics).label


def timeline(experiment: Experiment) -> dict[str, list[tuple[str, float]]]:
    """The cumulative primary metric per arm by hour (by day after three days), for the chart.

    Only search-level metrics have a timeline (ratings and click timing are in the table).
    """
    metric = experiment.primary_metric
    numerator, denominator, _ = METRICS[metric]
    if denominator != "searches":
        return {}
    started = experiment.started_at or experiment.created_at
    stopped = experiment.stopped_at
    span_days = ((stopped or timezone.now()) - started).days
    unit = "day" if span_days >= 3 else "hour"
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    with connection.cursor() as cursor:
        cursor.execute(TIMELINE_SQL, {"experiment": experiment.pk, "unit": unit})
        columns = [c.name for c in cursor.description]
        for row in cursor.fetchall():
            record = dict(zip(columns, row, strict=True))
            running = sums[record["arm"]]
            running[0] += float(record[numerator])
            running[1] += float(record["searches"])
            out[record["arm"]].append((record["bucket"].isoformat(), running[0] / running[1]))
    return dict(out)
