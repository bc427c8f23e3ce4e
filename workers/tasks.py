"""Celery tasks: thin wrappers that call services in the other apps."""

from __future__ import annotations

import logging
from dataclasses import asdict

from celery import shared_task

from collection.embedding import embed_everything_missing
from collection.models import EncoderVersion
from collection.text_index import refresh_lexeme_stats
from collection.versions import serving_version
from core.locks import advisory_lock
from feedback.analytics.fold import fold_search_rollups
from ranking.finetune.building import finish_building_versions
from ranking.finetune.service import FineTuneSettings, fine_tune
from ranking.models import FineTuneRun, TrainingRun
from ranking.summaries import refresh_with_estimated_curve
from ranking.training import retrain

logger = logging.getLogger(__name__)


@shared_task(name="loupe.embed_missing", acks_late=True)
def embed_missing() -> dict:
    """Embed images and captions that have no vectors yet (e.g. API uploads), for both channels."""

    result = embed_everything_missing()
    if result["images"] or result["captions"]:
        logger.info("Embedded %s", result)
    return result


@shared_task(name="loupe.refresh_text_stats", acks_late=True)
def refresh_text_stats() -> None:
    """Recount how many documents hold each full-text word (steers which words select candidates)."""

    refresh_lexeme_stats()


@shared_task(name="loupe.refresh_feedback_summaries", acks_late=True)
def refresh_feedback_summaries() -> dict:
    """Recompute the per-image and per-query feedback summaries (admin pages, ranker priors), counting
    examinations by the curve training uses."""

    return refresh_with_estimated_curve()


@shared_task(name="loupe.fold_search_analytics", acks_late=True)
def fold_search_analytics() -> dict:
    """Recount the search analytics' hours that changed since the last fold (the admin's analytics page)."""

    return asdict(fold_search_rollups())


RETRAIN_LOCK = 7_301_001  # pg advisory lock key: one retraining at a time across all workers


@shared_task(name="loupe.retrain_ranker", acks_late=True)
def retrain_ranker(force: bool = False) -> dict:
    """Retrain the reranker when enough new feedback arrived; never two at once (Postgres advisory lock)."""

    with advisory_lock(RETRAIN_LOCK) as held:
        if not held:
            logger.info("Another worker is retraining; skipping.")
            return {"outcome": "locked"}
        TrainingRun.close_interrupted()
        refresh_with_estimated_curve()  # priors as of now, for the features of the next searches
        run = retrain(force=force)
        return {"outcome": run.outcome, "message": run.message, "ranker": run.ranker_id}


FINETUNE_LOCK = 7_301_002  # one encoder fine-tune at a time across all workers


@shared_task(name="loupe.finetune_encoder", acks_late=True)
def finetune_encoder(base_version_id: int | None = None, options: dict | None = None) -> dict:
    """Fine-tune an encoder version (default: the one serving) from feedback; runs on the training queue."""

    with advisory_lock(FINETUNE_LOCK) as held:
        if not held:
            logger.info("Another worker is fine-tuning; skipping.")
            return {"outcome": "locked"}
        FineTuneRun.close_interrupted()
        finish_building_versions()  # a version an interrupted run left half-embedded is completed first
        base = EncoderVersion.objects.get(pk=base_version_id) if base_version_id else serving_version()[1]
        run = fine_tune(base, FineTuneSettings(**(options or {})))
        return {"outcome": run.outcome, "message": run.message, "version": run.result_id}
