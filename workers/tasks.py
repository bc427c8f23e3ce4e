"""Celery tasks: thin wrappers that call services in the other apps."""

from __future__ import annotations

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="loupe.embed_missing", acks_late=True)
def embed_missing() -> dict:
    """Embed images and captions that have no vector for the serving encoder yet (e.g. API uploads)."""
    from searchapp.embedding import embed_collection
    from searchapp.versions import serving_version

    choice, version = serving_version()
    report = embed_collection(choice.encoder, version)
    if report.images or report.captions:
        logger.info("Embedded %s images, %s captions with %s", report.images, report.captions, version)
    return {"version": version.pk, "images": report.images, "captions": report.captions, "failed": report.failed}
