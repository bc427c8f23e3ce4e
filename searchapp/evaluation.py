"""Measuring retrieval on the collection with its own captions or tags as ground truth.

Text-to-image: every caption is a query and its image the relevant result. Image-to-text: every
image's vector queries the caption vectors; its own captions are relevant. Tags: each tag,
phrased by a template, is a query; the images carrying it are relevant. Queries run through the
same encoder and pgvector index as live search.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from django.conf import settings

from collection.index import nearest_caption_images, nearest_captions, nearest_images
from collection.models import Caption, Image, ImageEmbedding
from collection.text_index import full_text_matches
from collection.versions import sentence_version
from ranking.metrics import MetricSummary
from searchapp.heldout import collection_without
from searchapp.search import SearchRequest, SearchService

Progress = Callable[[int], None] | None


def text_to_image(service: SearchService, *, ks=(1, 5, 10), limit: int = 0, progress: Progress = None) -> dict:
    captions = list(Caption.objects.order_by("pk").values_list("text", "image_id"))
    if limit:
        captions = captions[:limit]
    summary = MetricSummary(ks=tuple(ks))
    depth = max(ks)
    for start in range(0, len(captions), 256):
        batch = captions[start : start + 256]
        vectors = service.encoder.encode_texts([text for text, _ in batch])
        for (_, image_id), vector in zip(batch, vectors, strict=True):
            ranked = [n.id for n in nearest_images(service.version, vector, k=depth)]
            summary.add(ranked, {image_id})
        if progress:
            progress(len(batch))
    return summary.means()


def image_to_text(service: SearchService, *, ks=(1, 5, 10), limit: int = 0, progress: Progress = None) -> dict:
    captions_of: dict[int, set[int]] = defaultdict(set)
    for caption_id, image_id in Caption.objects.values_list("pk", "image_id"):
        captions_of[image_id].add(caption_id)
    rows = ImageEmbedding.objects.filter(encoder_version=service.version, image_id__in=list(captions_of))
    rows = rows.order_by("image_id")
    if limit:
        rows = rows[:limit]
    summary = MetricSummary(ks=tuple(ks))
    for row in rows.iterator(chunk_size=500):
        ranked = [n.id for n in nearest_captions(service.version, row.vector, k=max(ks))]
        summary.add(ranked, captions_of[row.image_id])
        if progress:
            progress(1)
    return summary.means()


def tag_queries(
    service: SearchService, *, template: str = "a photo of a {}", ks=(1, 5, 10), min_images: int = 1, depth: int = 100
) -> dict:
    images_with: dict[str, set[int]] = defaultdict(set)
    for image_id, tags in Image.objects.values_list("pk", "tags"):
        for tag in tags:
            images_with[tag].add(image_id)
    tags = sorted(tag for tag, ids in images_with.items() if len(ids) >= min_images)
    summary = MetricSummary(ks=tuple(ks))
    vectors = service.encoder.encode_texts([template.format(tag) for tag in tags])
    for tag, vector in zip(tags, vectors, strict=True):
        ranked = [n.id for n in nearest_images(service.version, vector, k=max(depth, *ks))]
        summary.add(ranked, images_with[tag])
    return summary.means()


def held_out_captions(service: SearchService, *, rotations: int = 5, ks=(1, 5, 10), progress: Progress = None) -> dict:
    """Each channel and the fusion on held-out captions (rotation r holds out every image's r-th caption).

    For each rotation the search runs on a committed copy of the collection without the held-out
    captions (``searchapp.heldout.collection_without``): no connection, pool thread or cache that serves
    the search can see them, and the copy is dropped afterwards. Each held-out caption then queries
    every channel and the real search service; its image is the relevant result. Returns per-channel
    metrics (``clip``, ``fts``, ``caption``, ``fusion``, ``fusion_equal_weights``).
    """
    depth = max(ks)
    summaries = {
        name: MetricSummary(ks=tuple(ks)) for name in ("clip", "fts", "caption", "fusion", "fusion_equal_weights")
    }
    served_weight = service.version.fusion_weight
    try:
        for rotation in range(rotations):
            held = list(Caption.objects.filter(position=rotation).values_list("pk", "text", "image_id"))
            if not held:
                continue
            with collection_without([pk for pk, _, _ in held], [image_id for _, _, image_id in held], service.encoder):
                for _, text, image_id in held:
                    _held_out_query(service, text, {image_id}, depth, served_weight, summaries)
                    if progress:
                        progress(1)
    finally:
        service.version.fusion_weight = served_weight
    return {name: summary.means() for name, summary in summaries.items() if summary.queries}


def _held_out_query(
    service: SearchService, text: str, relevant: set[int], depth: int, served_weight: float, summaries: dict
) -> None:
    sentence_encoder, text_version = sentence_version()
    vector = service.encoder.encode_query(text)
    summaries["clip"].add([n.id for n in nearest_images(service.version, vector, k=depth)], relevant)
    summaries["fts"].add([n.id for n in full_text_matches(text, k=depth)], relevant)
    if sentence_encoder is not None:
        matches = nearest_caption_images(
            text_version,
            sentence_encoder.encode_query(text),
            k=depth,
            min_similarity=settings.LOUPE_CAPTION_MIN_SIMILARITY,
        )
        summaries["caption"].add([n.id for n in matches], relevant)
    request = SearchRequest(text=text, page_size=depth)
    service.version.fusion_weight = served_weight
    summaries["fusion"].add([h.image.pk for h in service.search(request).hits], relevant)
    service.version.fusion_weight = 1.0
    summaries["fusion_equal_weights"].add([h.image.pk for h in service.search(request).hits], relevant)


def chance_mrr(collection_size: int) -> float:
    """Expected reciprocal rank of one relevant item placed at random among ``collection_size``."""
    return sum(1.0 / rank for rank in range(1, collection_size + 1)) / collection_size


def calibrated_weights(channel_metrics: dict, collection_size: int, *, gate: float = 0.02) -> dict[str, float]:
    """Fusion weights from measured MRR above chance, scaled so the best channel weighs 1.

    A channel no better than chance by ``gate`` gets 0: it cannot hurt the fusion.
    """
    chance = chance_mrr(collection_size)
    lift = {
        name: channel_metrics[name]["mrr"] - chance for name in ("clip", "fts", "caption") if name in channel_metrics
    }
    best = max(lift.values(), default=0.0)
    return {name: round(value / best, 4) if value >= gate and best > 0 else 0.0 for name, value in lift.items()}
