"""Measuring retrieval on the collection with its own captions or tags as ground truth.

Text-to-image: every caption is a query and its image the relevant result. Image-to-text: every
image's vector queries the caption vectors; its own captions are relevant. Tags: each tag,
phrased by a template, is a query; the images carrying it are relevant. Queries run through the
same encoder and pgvector index as live search.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from django.conf import settings
from django.test import override_settings

from collection.fusion import CONVEX, RRF
from collection.fusion_setting import Fusion
from collection.index import nearest_captions, nearest_images
from collection.models import Caption, Image, ImageEmbedding
from ranking.experiments.serving import plan_search
from ranking.metrics import MetricSummary
from searchapp.fusion_fit import LabelledQuery, fit_weights, fused_ids
from searchapp.heldout import HeldOutLeak, collection_without
from searchapp.pipeline.plan import plan_depths
from searchapp.pipeline.request import validate
from searchapp.pipeline.retrieve import retrieve
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


class EvaluationRefused(RuntimeError):
    """The served search has learned from something the held-out captions could be part of."""


HELD_OUT_CHANNELS = ("clip", "fts", "caption")


def held_out_captions(
    service: SearchService,
    *,
    rotations: int = 5,
    ks=(1, 5, 10),
    progress: Progress = None,
    noisy_truth_sigma: float | None = None,
) -> dict:
    """Each channel, each fusion and the served search on held-out captions, with cross-fitted weights.

    Rotation r holds out every image's r-th caption. For each rotation the search runs on a committed
    copy of the collection without the held-out captions (``searchapp.heldout.collection_without``): no
    connection, pool thread or cache that serves the search can see them, and the copy is dropped
    afterwards. Pass 1 records, for each held-out caption, the channel lists the served search
    retrieves. Pass 2 scores rotation r with fusion weights fitted on the *other* rotations' queries
    only (``searchapp.fusion_fit``), offline and through the real search service with parallel channels
    on and off. Returns per-name metrics and the weights fitted for each rotation.
    """
    plan = plan_search(None, rerank_allowed=True)
    if plan.ranker is not None:
        raise EvaluationRefused(
            f"A learned ranker ({plan.ranker.version}) serves: it trained on logged searches, which may hold the "
            "captions this evaluation holds out. Evaluate the first stage on a collection without one."
        )
    if service.version.parent_id is not None:
        raise EvaluationRefused(
            f"{service.version} is fine-tuned from feedback; evaluate its base version (it may have learned "
            "the held-out captions' images from logged searches)."
        )
    depth = max(ks)
    by_rotation: dict[int, list[tuple[int, str, int]]] = {}
    for rotation in range(rotations):
        held = list(Caption.objects.filter(position=rotation).values_list("pk", "text", "image_id"))
        if held:
            by_rotation[rotation] = held
    labelled: list[LabelledQuery] = []
    for rotation, held in by_rotation.items():
        with collection_without([pk for pk, _, _ in held], [image_id for _, _, image_id in held], service.encoder):
            for _, text, image_id in held:
                labelled.append(_labelled(service, plan, text, image_id, rotation, depth))
    results = _cross_fitted(labelled, ks, depth)
    served = {name: MetricSummary(ks=tuple(ks)) for name in ("served", "served_sequential")}
    disagreements = 0
    for rotation, held in by_rotation.items():
        fusion = Fusion(CONVEX, results["weights"][rotation]["convex"])
        evaluated = SearchService(service.choice, service.version, fusion=fusion)
        queries = [q for q in labelled if q.group == rotation]
        with collection_without([pk for pk, _, _ in held], [image_id for _, _, image_id in held], service.encoder):
            for query in queries:
                for name, parallel in (("served", True), ("served_sequential", False)):
                    with override_settings(LOUPE_PARALLEL_CHANNELS=parallel, LOUPE_RESULT_CACHE_SECONDS=0):
                        hits = evaluated.search(SearchRequest(text=query.text, page_size=depth)).hits
                    ranked = [h.image.pk for h in hits]
                    served[name].add(ranked, query.relevant)
                    disagreements += ranked != fused_ids(query, CONVEX, fusion.weights)[:depth]
                if progress:
                    progress(1)
    results["metrics"].update({name: summary.means() for name, summary in served.items()})
    results["served_differs_from_offline"] = disagreements
    results["labelled"] = labelled  # for a fit on every rotation (evaluate --calibrate); not saved
    if noisy_truth_sigma is not None:
        image_ids = list(Image.objects.values_list("pk", flat=True))
        noisy = with_noisy_truth(labelled, image_ids, noisy_truth_sigma, depth=settings.LOUPE_CHANNEL_DEPTH)
        results["noisy_truth"] = {"sigma": noisy_truth_sigma, **_cross_fitted(noisy, ks, depth)}
    return results


def _labelled(service: SearchService, plan, text: str, image_id: int, rotation: int, depth: int) -> LabelledQuery:
    """The channel lists the served search retrieves for ``text`` (same depths, cuts and text flags)."""
    search = validate(SearchRequest(text=text, page_size=depth))
    depths = plan_depths(search, plan, logged=False)
    retrieved = retrieve(service.encoder, service.version, search, depths, plan)
    has_document: dict[int, bool] = {}
    has_captions: dict[int, bool] = {}
    for ranking in retrieved.rankings.values():
        for n in ranking:
            has_document[n.id] = has_document.get(n.id, False) or bool(n.has_document)
            has_captions[n.id] = has_captions.get(n.id, False) or bool(n.has_captions)
    return LabelledQuery(
        text=text,
        relevant=frozenset({image_id}),
        rankings={name: [(n.id, n.score) for n in ranking] for name, ranking in retrieved.rankings.items()},
        has_document=has_document,
        has_captions=has_captions,
        group=rotation,
        own_weights=dict(retrieved.weights),
    )


def _cross_fitted(labelled: list[LabelledQuery], ks, depth: int) -> dict:
    """Channels, RRF with the channels' own weights, and RRF and convex fusion with weights fitted on the
    other rotations, each scored on every rotation's queries (offline, from the recorded lists)."""
    names = (*HELD_OUT_CHANNELS, "rrf_own_weights", "rrf_fitted", "convex_fitted")
    summaries = {name: MetricSummary(ks=tuple(ks)) for name in names}
    weights: dict[int, dict] = {}
    channels = [c for c in HELD_OUT_CHANNELS if any(c in q.rankings for q in labelled)]
    for rotation in sorted({q.group for q in labelled}):
        fitting = [q for q in labelled if q.group != rotation]
        scored = [q for q in labelled if q.group == rotation]
        if not fitting:
            raise EvaluationRefused("Cross-fitting needs at least two rotations with held-out captions.")
        assert_disjoint(fitting, scored)
        fits = {method: fit_weights(fitting, method, channels) for method in (RRF, CONVEX)}
        weights[rotation] = {method: fit.weights for method, fit in fits.items()}
        for query in scored:
            for channel in HELD_OUT_CHANNELS:
                if channel in query.rankings:
                    summaries[channel].add([i for i, _ in query.rankings[channel]][:depth], query.relevant)
            summaries["rrf_own_weights"].add(fused_ids(query, RRF, query.own_weights)[:depth], query.relevant)
            summaries["rrf_fitted"].add(fused_ids(query, RRF, fits[RRF].weights)[:depth], query.relevant)
            summaries["convex_fitted"].add(fused_ids(query, CONVEX, fits[CONVEX].weights)[:depth], query.relevant)
    metrics = {name: summary.means() for name, summary in summaries.items() if summary.queries}
    return {"metrics": metrics, "weights": weights}


def assert_disjoint(fitting: list[LabelledQuery], scored: list[LabelledQuery]) -> None:
    """A scored query's caption must not be among the fitted ones (two images may share a caption's words,
    but the same (text, image) pair in both would score what the fit saw)."""
    seen = {(q.text.strip().lower(), q.relevant) for q in fitting}
    overlap = [q.text for q in scored if (q.text.strip().lower(), q.relevant) in seen]
    if overlap:
        raise HeldOutLeak(f"{len(overlap)} scored queries were also fitted on, e.g. {overlap[0]!r}.")


def with_noisy_truth(
    labelled: list[LabelledQuery], image_ids: list[int], sigma: float, *, depth: int, seed: int = 0
) -> list[LabelledQuery]:
    """The same queries with the CLIP list replaced by a simulated useful CLIP: every image scores its
    relevance (1 or 0) plus Gaussian noise of ``sigma``, the top ``depth`` kept. The demo CLIP has random
    weights, so this is how the fusion is tested where CLIP is the strongest channel, as with real weights."""
    rng = np.random.default_rng(seed)
    ids = np.array(image_ids)
    noisy = []
    for query in labelled:
        scores = rng.normal(0.0, sigma, len(ids)) + np.isin(ids, list(query.relevant))
        top = np.argsort(-scores)[:depth]
        rankings = {"clip": [(int(ids[i]), float(scores[i])) for i in top]}
        rankings.update({name: ranking for name, ranking in query.rankings.items() if name != "clip"})
        own = {**query.own_weights, "clip": 1.0}
        noisy.append(replace(query, rankings=rankings, own_weights=own))
    return noisy


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
