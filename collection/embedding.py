"""Computing and storing vectors for the collection under one encoder version, in batches.

Resumable by construction: each batch commits on its own, and a run embeds only what has no
vector yet (or everything, with ``recompute``, overwriting row by row so nothing is ever missing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from PIL import Image as PILImage

from collection.decode_pool import chunked, prepared_in_order
from collection.encoders import Encoder
from collection.index import ensure_hnsw_indexes
from collection.models import Caption, CaptionEmbedding, EncoderVersion, Image, ImageEmbedding, ImageTowerOutput
from collection.versions import sentence_version, serving_version

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass
class EmbedReport:
    images: int = 0
    captions: int = 0
    failed: int = 0


def _batches(queryset, batch_size: int) -> Iterator[list]:
    """Id-ordered batches that re-query each time, so rows embedded meanwhile are not redone."""
    last_id = 0
    while True:
        batch = list(queryset.filter(pk__gt=last_id).order_by("pk")[:batch_size])
        if not batch:
            return
        last_id = batch[-1].pk
        yield batch


def images_to_embed(version: EncoderVersion, recompute: bool = False, images=None):
    images = Image.objects.all() if images is None else images
    if not recompute:
        images = images.exclude(embeddings__encoder_version=version)
    return images


def captions_to_embed(version: EncoderVersion, recompute: bool = False):
    captions = Caption.objects.all()
    if not recompute:
        captions = captions.exclude(embeddings__encoder_version=version)
    return captions


def embed_collection(
    encoder: Encoder,
    version: EncoderVersion,
    *,
    recompute: bool = False,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> EmbedReport:
    """Embed images and captions that lack vectors for ``version``; then make sure its indexes exist."""
    report = embed_images(encoder, version, recompute=recompute, batch_size=batch_size, progress=progress)
    report.captions = embed_captions(encoder.encode_texts, version, recompute=recompute)
    ensure_hnsw_indexes(version)
    return report


def embed_images(
    encoder: Encoder,
    version: EncoderVersion,
    *,
    recompute: bool = False,
    batch_size: int | None = None,
    progress: Progress | None = None,
    images=None,
) -> EmbedReport:
    """Image vectors for ``images`` (default: the whole collection) that lack them under ``version``.

    Stored files are opened and turned into the model's input by LOUPE_DECODE_WORKERS threads, a batch
    or two ahead of the encoder (``collection.decode_pool``); rows are read and written in this thread.
    """
    batch_size = batch_size or settings.LOUPE_ENCODE_BATCH_SIZE
    report = EmbedReport()
    rows = (image for batch in _batches(images_to_embed(version, recompute, images), batch_size) for image in batch)
    prepared = prepared_in_order(
        lambda image: stored_pixels(encoder, image),
        rows,
        workers=settings.LOUPE_DECODE_WORKERS,
        window=2 * batch_size,
    )
    for chunk in chunked(prepared, batch_size):
        kept, pixels = [], []
        for done in chunk:
            if isinstance(done.error, OSError):  # a file removed from disk behind our back: say so, go on
                logger.error("Cannot read %s for image %s: %s", done.item.file.name, done.item.pk, done.error)
                report.failed += 1
            elif done.error is not None:
                raise done.error
            else:
                kept.append(done.item)
                pixels.append(done.result)
        if kept:
            vectors, pooled = encoder.encode_pixels(np.stack(pixels))
            _store_image_vectors(encoder, version, kept, vectors, pooled)
            report.images += len(kept)
        if progress:
            progress(len(chunk))
    return report


def stored_pixels(encoder: Encoder, image: Image) -> np.ndarray:
    """A stored image's file as the encoder's input (decoded as before: no EXIF transpose here)."""
    with PILImage.open(Path(settings.MEDIA_ROOT) / image.file.name) as handle:
        return encoder.pixels(handle.convert("RGB"))


class ImageVectorBatches:
    """Images with their tower input, embedded and stored a batch at a time: ingestion's embedding.

    Ingesting and embedding in one pass decodes each file once (for validation, thumbnail and tower
    input) instead of re-reading it from storage afterwards; rows are written by the caller's thread.
    """

    def __init__(self, encoder: Encoder, version: EncoderVersion, batch_size: int | None = None) -> None:
        self.encoder = encoder
        self.version = version
        self.batch_size = batch_size or settings.LOUPE_ENCODE_BATCH_SIZE
        self.embedded = 0
        self._images: list[Image] = []
        self._pixels: list[np.ndarray] = []

    def add(self, image: Image, pixels: np.ndarray) -> None:
        self._images.append(image)
        self._pixels.append(pixels)
        if len(self._images) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self._images:
            return
        vectors, pooled = self.encoder.encode_pixels(np.stack(self._pixels))
        _store_image_vectors(self.encoder, self.version, self._images, vectors, pooled)
        self.embedded += len(self._images)
        self._images, self._pixels = [], []


def _store_image_vectors(encoder: Encoder, version: EncoderVersion, kept, vectors, pooled) -> None:
    rows = [ImageEmbedding(image=i, encoder_version=version, vector=v) for i, v in zip(kept, vectors, strict=True)]
    with transaction.atomic():
        ImageEmbedding.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["encoder_version", "image"], update_fields=["vector"]
        )
        if pooled is not None and settings.LOUPE_CACHE_TOWER_OUTPUTS:
            # The same pass's tower outputs: fine-tuning the projections later never re-runs the tower.
            tower = encoder.vision_tower_fingerprint
            ImageTowerOutput.objects.bulk_create(
                [ImageTowerOutput(image=image, tower=tower, pooled=p) for image, p in zip(kept, pooled, strict=True)],
                ignore_conflicts=True,
            )


def embed_captions(
    encode_texts: Callable[[list[str]], np.ndarray], version: EncoderVersion, *, recompute: bool = False
) -> int:
    """Text vectors for captions lacking them under ``version`` (a CLIP text tower or a sentence model)."""
    done = 0
    for batch in _batches(captions_to_embed(version, recompute), 256):
        vectors = encode_texts([caption.text for caption in batch])
        rows = [
            CaptionEmbedding(caption=c, encoder_version=version, vector=v) for c, v in zip(batch, vectors, strict=True)
        ]
        with transaction.atomic():
            CaptionEmbedding.objects.bulk_create(
                rows, update_conflicts=True, unique_fields=["encoder_version", "caption"], update_fields=["vector"]
            )
        done += len(rows)
    return done


def embed_everything_missing(progress: Progress | None = None) -> dict:
    """What the ingest command and the periodic task run: the serving encoder, then the text channel."""

    choice, version = serving_version()
    report = embed_collection(choice.encoder, version, progress=progress)
    result = {"version": version.pk, "images": report.images, "captions": report.captions, "failed": report.failed}
    sentence_encoder, text_version = sentence_version()
    if sentence_encoder is not None:
        result["text_captions"] = embed_captions(sentence_encoder.encode_texts, text_version)
        ensure_hnsw_indexes(text_version)
    return result


def embed_new_images(image_ids: list[int]) -> bool:
    """Embed just-added images (and their captions) with the serving encoders, so they are searchable now.

    Returns False, after logging why, if that failed; the periodic task embeds them later.
    """

    try:
        choice, version = serving_version()
        embed_images(choice.encoder, version, images=Image.objects.filter(pk__in=image_ids))
        embed_captions_of(image_ids)
    except Exception:  # noqa: BLE001 - the image is stored; embedding is retried by the periodic task
        logger.exception("Could not embed new images %s now; the periodic task will.", image_ids)
        return False
    return True


def embed_captions_of(image_ids: list[int]) -> None:
    """The captions of these images, with the serving CLIP text tower and the text channel's model."""
    choice, version = serving_version()
    captions = Caption.objects.filter(image_id__in=image_ids)
    _embed_these_captions(choice.encoder.encode_texts, version, captions)
    sentence_encoder, text_version = sentence_version()
    if sentence_encoder is not None:
        _embed_these_captions(sentence_encoder.encode_texts, text_version, captions)


def _embed_these_captions(encode_texts, version: EncoderVersion, captions) -> None:
    pending = list(captions.exclude(embeddings__encoder_version=version))
    if pending:
        vectors = encode_texts([caption.text for caption in pending])
        CaptionEmbedding.objects.bulk_create(
            [
                CaptionEmbedding(caption=c, encoder_version=version, vector=v)
                for c, v in zip(pending, vectors, strict=True)
            ],
            ignore_conflicts=True,
        )
