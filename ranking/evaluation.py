"""Measuring retrieval on the collection with its own captions or tags as ground truth.

Text-to-image: every caption is a query and its image the relevant result. Image-to-text: every
image's vector queries the caption vectors; its own captions are relevant. Tags: each tag,
phrased by a template, is a query; the images carrying it are relevant. Queries run through the
same encoder and pgvector index as live search.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from ranking.metrics import MetricSummary
from searchapp.index import nearest_captions, nearest_images
from searchapp.models import Caption, Image, ImageEmbedding
from searchapp.search import SearchService

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
