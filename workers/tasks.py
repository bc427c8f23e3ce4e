"""Celery tasks: thin wrappers that call services in the other apps."""

from __future__ import annotations

import logging
from dataclasses import asdict

from celery import shared_task

from collection.embed_chunks import EMBED_CHUNK_TASK, ChunkBusy, embed_chunk
from collection.embedding import ImageVectorBatches, embed_captions_of, embed_everything_missing
from collection.ingestion.jobs import run_job_chunk
from collection.models import EmbedChunk, EncoderVersion
from collection.near_duplicates import NearDuplicateScanRefused
from collection.near_duplicates import scan as scan_near_duplicates
from collection.text_index import refresh_lexeme_stats
from collection.versions import serving_version
from core.locks import advisory_lock
from feedback.analytics.fold import fold_search_rollups
from feedback.partitions import create_partitions_ahead
from ranking.finetune.building import finish_building_versions
from ranking.finetune.service import FineTuneSettings, fine_tune
from ranking.index_recall import record_all_index_recalls
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


@shared_task(name=EMBED_CHUNK_TASK, bind=True, acks_late=True, max_retries=None)
def embed_images_chunk(self, chunk_id: int) -> dict:
    """Embed one chunk of an embed run (``manage.py embed``, an ingest job); see ``collection.embed_chunks``."""

    choice, version = serving_version()
    try:
        outcome = embed_chunk(chunk_id, choice.encoder, version=version, worker=self.request.hostname or "")
    except ChunkBusy:
        raise self.retry(countdown=30) from None  # a live worker has it; if that one dies, this delivery takes it
    if not outcome.skipped:
        embed_captions_of(list(EmbedChunk.objects.get(pk=chunk_id).image_ids))
    return asdict(outcome)


@shared_task(name="loupe.ingest_job_chunk", acks_late=True)
def ingest_job_chunk(job_id: int, first: int, last: int) -> dict:
    """Ingest and embed items ``first..last`` of an ingest job in one pass (``run_job_chunk``)."""

    choice, version = serving_version()
    result = run_job_chunk(job_id, first, last, embed=ImageVectorBatches(choice.encoder, version))
    if result.finished:
        refresh_lexeme_stats()
    return {"job": job_id, "done": result.done, "finished": result.finished}


@shared_task(name="loupe.refresh_text_stats", acks_late=True)
def refresh_text_stats() -> None:
    """Recount how many documents hold each full-text word (steers which words select candidates)."""

    refresh_lexeme_stats()


NEAR_DUPLICATES_LOCK = 7_301_003  # one near-duplicate scan at a time: two would store each other's groups


@shared_task(name="loupe.find_near_duplicates", acks_late=True)
def find_near_duplicates() -> dict:
    """Group the images embedded since the last scan with their near-duplicates (serving encoder)."""

    _, version = serving_version()
    with advisory_lock(NEAR_DUPLICATES_LOCK) as held:
        if not held:
            return {"skipped": "another worker is scanning"}
        try:
            return asdict(scan_near_duplicates(version))
        except NearDuplicateScanRefused as exc:
            return {"skipped": str(exc)}


@shared_task(name="loupe.refresh_feedback_summaries", acks_late=True)
def refresh_feedback_summaries() -> dict:
    """Recompute the per-image and per-query feedback summaries (admin pages, ranker priors), counting
    examinations by the curve training uses."""

    return refresh_with_estimated_curve()


@shared_task(name="loupe.create_log_partitions", acks_late=True)
def create_log_partitions() -> dict:
    """Create the search log's day partitions ahead (feedback.partitions), so new searches land in their day."""

    made = create_partitions_ahead()
    return {"created": [day.isoformat() for day in made.created], "through": made.through.isoformat()}


@shared_task(name="loupe.fold_search_analytics", acks_late=True)
def fold_search_analytics() -> dict:
    """Recount the search analytics' hours that changed since the last fold (the admin's analytics page)."""

    return asdict(fold_search_rollups())


@shared_task(name="loupe.measure_index_recall", acks_late=True)
def measure_index_recall() -> dict:
    """Replay a sample of the day's queries against exact scans: the recall@10 each version's index serves."""

    return {str(row.encoder_version_id): round(row.recall, 4) for row in record_all_index_recalls()}


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
