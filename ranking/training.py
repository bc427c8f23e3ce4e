"""Scheduled retraining: build the data, train, compare with what serves now, promote only if better.

The comparison is on the gate window (the most recent searches, after everything the model trained
on and after the early-stopping window that chose its boosting round: ``split_windows``), with the
counterfactual DCG@10 and the paired test of ``ranking.gate``: the candidate
must beat the serving order by the relative ``LOUPE_PROMOTION_MARGIN``, beyond noise. Raw clicks
would not do: the order that produced the log always looks best on them, because users click what
it put first.
The serving order is the active ranker's, or the first-stage order (fusion or CLIP) when none is
active. Every attempt is a ``TrainingRun`` row, whatever happens.
"""

from __future__ import annotations

import logging

import numpy as np
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from feedback.erasure import exclude_erased
from feedback.models import SearchEvent
from ranking.features import NAMES
from ranking.gate import decide
from ranking.grid_swaps import estimated_grid_propensity
from ranking.ltr import RankingData, counterfactual_dcg, evaluate_scores, train_ranker
from ranking.models import RankerVersion, TrainingRun
from ranking.registry import load_booster, promote, save_candidate
from ranking.training_data import estimated_propensity, load_searches, split_windows

logger = logging.getLogger(__name__)

# The gate's window decides promotion and needs searches for its bootstrap; early stopping only picks a round.
MIN_TRAIN_SEARCHES, MIN_EARLY_STOPPING_SEARCHES, MIN_GATE_SEARCHES = 30, 5, 10


def labelled_searches_since(since) -> int:
    events = exclude_erased(SearchEvent.objects.filter(kind="text", feature_names=NAMES))
    if since is not None:
        events = events.filter(created_at__gte=since)
    return events.filter(Q(clicks__isnull=False) | Q(ratings__isnull=False)).distinct().count()


def serving_scores(gate: RankingData, first_stage_rank: np.ndarray) -> tuple[str, np.ndarray]:
    """How the order that serves today scores the gate rows: the active ranker, else the first stage."""
    active = RankerVersion.objects.filter(status=RankerVersion.Status.ACTIVE).first()
    if active is not None and list(active.feature_names) == NAMES:
        try:
            return active.label, load_booster(active).predict(gate.X)
        except Exception:  # noqa: BLE001 - an unloadable active ranker is compared as the first stage
            logger.exception("Cannot score with %s; comparing with the first-stage order.", active)
    return "first stage", -first_stage_rank


def retrain(*, force: bool = False) -> TrainingRun:
    """One retraining attempt; returns its run record."""
    run = TrainingRun.objects.create()
    now = timezone.now()
    try:
        latest = RankerVersion.objects.order_by("-trained_until").first()
        new = labelled_searches_since(latest.trained_until if latest else None)
        if not force and new < settings.LOUPE_RETRAIN_MIN_NEW_SEARCHES:
            return run.finish(
                TrainingRun.Outcome.SKIPPED,
                f"{new} new labelled searches; waiting for {settings.LOUPE_RETRAIN_MIN_NEW_SEARCHES}.",
            )
        propensity = estimated_propensity(None, settings.LOUPE_RERANK_DEPTH, settings.LOUPE_SWAP_MAX_POSITION)
        # Searches shown in a reported grid weigh their clicks by that layout's cells (issue 23), the rest by the list.
        grid = estimated_grid_propensity(None, propensity)
        logged = load_searches(None, now, propensity, grid)
        windows = split_windows(logged)
        sizes = (len(windows.train.groups), len(windows.early_stopping.groups), len(windows.gate.groups))
        if any(
            n < least
            for n, least in zip(
                sizes, (MIN_TRAIN_SEARCHES, MIN_EARLY_STOPPING_SEARCHES, MIN_GATE_SEARCHES), strict=True
            )
        ):
            return run.finish(TrainingRun.Outcome.SKIPPED, f"only {len(logged.data.groups)} labelled searches.")
        trained = train_ranker(windows.train, windows.early_stopping)
        gate = windows.gate  # from here on, nothing reads the early-stopping window
        candidate_scores = trained.predict(gate.X)
        baseline_name, baseline_scores = serving_scores(gate, windows.gate_first_stage_rank)
        decision = decide(
            counterfactual_dcg(candidate_scores, gate),
            counterfactual_dcg(baseline_scores, gate),
            margin=settings.LOUPE_PROMOTION_MARGIN,
            # Who made each gate search: a gain that a few identities or one network carry is refused.
            identities=windows.gate_identities if settings.LOUPE_FEEDBACK_TRUST else None,
            networks=windows.gate_networks if settings.LOUPE_FEEDBACK_TRUST else None,
        )
        metrics = {
            "gate": decision.as_dict(),
            "serving_name": baseline_name,
            "windows": windows.bounds,
            "early_stopping_searches": len(windows.early_stopping.groups),
            "candidate_clicks": evaluate_scores(candidate_scores, gate),
            "serving_clicks": evaluate_scores(baseline_scores, gate),
            "margin": settings.LOUPE_PROMOTION_MARGIN,
            "best_iteration": trained.best_iteration,
            "propensity": [round(float(v), 4) for v in propensity.values[:10]],
            "propensity_estimated_positions": propensity.estimated_positions,
            "grid_propensity": {
                str(width): {f"{row},{column}": round(value, 4) for (row, column), value in sorted(cells.items())}
                for width, cells in grid.cells.items()
            },
        }
        version = save_candidate(
            trained,
            trained_from=logged.started,
            trained_until=now,
            train_searches=len(windows.train.groups),
            validation_searches=len(gate.groups),
            metrics=metrics,
        )
        run.ranker = version
        versus = (
            f"counterfactual DCG@10 {decision.candidate:.4f} vs {baseline_name} {decision.serving:.4f} "
            f"({decision.reason})"
        )
        if decision.promote:
            promote(version)
            return run.finish(TrainingRun.Outcome.PROMOTED, f"{version.label} promoted: {versus}", metrics)
        version.status = RankerVersion.Status.REJECTED
        version.save(update_fields=["status"])
        return run.finish(TrainingRun.Outcome.KEPT, f"{version.label} not better: {versus}", metrics)
    except Exception as exc:
        logger.exception("Retraining failed")
        return run.finish(TrainingRun.Outcome.FAILED, f"{type(exc).__name__}: {exc}")
