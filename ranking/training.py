"""Scheduled retraining: build the data, train, compare with what serves now, promote only if better.

The comparison is on the validation window (the most recent searches, after everything the model
trained on), with the counterfactual DCG@10 and the paired test of ``ranking.gate``: the candidate
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

from feedback.models import SearchEvent
from ranking.features import NAMES
from ranking.gate import decide
from ranking.ltr import RankingData, counterfactual_dcg, evaluate_scores, train_ranker
from ranking.models import RankerVersion, TrainingRun
from ranking.registry import load_booster, promote, save_candidate
from ranking.training_data import estimated_propensity, load_searches, split_by_time

logger = logging.getLogger(__name__)

MIN_TRAIN_SEARCHES, MIN_VALIDATION_SEARCHES = 30, 10


def labelled_searches_since(since) -> int:
    events = SearchEvent.objects.filter(kind="text", feature_names=NAMES)
    if since is not None:
        events = events.filter(created_at__gte=since)
    return events.filter(Q(clicks__isnull=False) | Q(ratings__isnull=False)).distinct().count()


def serving_scores(valid: RankingData, first_stage_rank: np.ndarray) -> tuple[str, np.ndarray]:
    """How the order that serves today scores the validation rows: the active ranker, else the first stage."""
    active = RankerVersion.objects.filter(status=RankerVersion.Status.ACTIVE).first()
    if active is not None and list(active.feature_names) == NAMES:
        try:
            return active.label, load_booster(active).predict(valid.X)
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
            return run.finish(TrainingRun.Outcome.SKIPPED, f"{new} new labelled searches; waiting for "
                           f"{settings.LOUPE_RETRAIN_MIN_NEW_SEARCHES}.")  # fmt: skip
        propensity = estimated_propensity(None, settings.LOUPE_RERANK_DEPTH, settings.LOUPE_SWAP_MAX_POSITION)
        logged = load_searches(None, now, propensity)
        train, valid, valid_first_stage = split_by_time(logged)
        if len(train.groups) < MIN_TRAIN_SEARCHES or len(valid.groups) < MIN_VALIDATION_SEARCHES:
            return run.finish(TrainingRun.Outcome.SKIPPED, f"only {len(logged.data.groups)} labelled searches.")
        trained = train_ranker(train, valid)
        candidate_scores = trained.predict(valid.X)
        baseline_name, baseline_scores = serving_scores(valid, valid_first_stage)
        decision = decide(
            counterfactual_dcg(candidate_scores, valid),
            counterfactual_dcg(baseline_scores, valid),
            margin=settings.LOUPE_PROMOTION_MARGIN,
        )
        metrics = {"gate": decision.as_dict(), "serving_name": baseline_name,
                   "candidate_clicks": evaluate_scores(candidate_scores, valid),
                   "serving_clicks": evaluate_scores(baseline_scores, valid),
                   "margin": settings.LOUPE_PROMOTION_MARGIN, "best_iteration": trained.best_iteration,
                   "propensity": [round(float(v), 4) for v in propensity.values[:10]],
                   "propensity_estimated_positions": propensity.estimated_positions}  # fmt: skip
        version = save_candidate(
            trained, trained_from=logged.started, trained_until=now, train_searches=len(train.groups),
            validation_searches=len(valid.groups), metrics=metrics,
        )  # fmt: skip
        run.ranker = version
        versus = (f"counterfactual DCG@10 {decision.candidate:.4f} vs {baseline_name} {decision.serving:.4f} "
                  f"({decision.reason})")  # fmt: skip
        if decision.promote:
            promote(version)
            return run.finish(TrainingRun.Outcome.PROMOTED, f"{version.label} promoted: {versus}", metrics)
        version.status = RankerVersion.Status.REJECTED
        version.save(update_fields=["status"])
        return run.finish(TrainingRun.Outcome.KEPT, f"{version.label} not better: {versus}", metrics)
    except Exception as exc:
        logger.exception("Retraining failed")
        return run.finish(TrainingRun.Outcome.FAILED, f"{type(exc).__name__}: {exc}")
