"""Celery tasks: thin wrappers that call services in the other apps."""

from __future__ import annotations

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="loupe.embed_missing", acks_late=True)
def embed_missing() -> dict:
    """Embed images and captions that have no vectors yet (e.g. API uploads), for both channels."""
    from searchapp.embedding import embed_everything_missing

    result = embed_everything_missing()
    if result["images"] or result["captions"]:
        logger.info("Embedded %s", result)
    return result
