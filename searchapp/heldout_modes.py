"""Image to text and tag queries through the leak-free held-out path (``searchapp.heldout``).

**Image to text.** Rotation r holds out every image's r-th caption (as ``held_out_captions`` does, twins
hidden with it). Each image with a held-out caption is a query; its held-out caption is the target, and
the rotation's held-out captions are the only answers ranked. In the rotation's copy the targets stay as
answers only: detached from their images and without their sentence vectors, so no document, caption
channel or "has captions" flag holds them, and only their CLIP caption vectors remain for the served
image-to-text search (``SearchService.describe``) to rank. Two channels:
- ``clip``: the image's CLIP vector against the targets' CLIP caption vectors, what ``describe`` serves;
- ``caption`` (offline, not served): the image's *visible* captions' sentence vectors against the targets'
  (an image scores a target by its nearest visible caption). It is the channel a leak would feed: a held-out
  caption still attached to its image matches its target exactly.

**Tags.** The tagged images are split into rotations (every r-th by id); rotation r empties its images'
tags in the copy (their documents rebuilt without them; their captions stay). Each tag carried by a
held-out image is a query, phrased as the tag itself and searched by the served text search; its relevant
images are the rotation's held-out images that carry it, and only those images are ranked (the others,
whose tags are visible, would be found by their tags and say nothing). The fusion is cross-fitted over the
rotations as for captions; a tag is asked in every rotation that holds it out, each time about other images,
so no (tag, image) pair is both fitted and scored (``assert_disjoint``).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from django.conf import settings

from collection.index import nearest_captions
from collection.models import Caption, CaptionEmbedding, Image
from collection.versions import sentence_version
from searchapp.evaluation import (
    HELD_OUT_CHANNELS,
    Progress,
    against_best_channel,
    cross_fitted,
    held_out_rotations,
    labelled_query,
    refuse_learned,
    served_pass,
    without_feedback,
)
from searchapp.fusion_fit import LabelledQuery
from searchapp.heldout import HeldOut, collection_without
from searchapp.pipeline.retrieve import stored_vector
from searchapp.search import SearchRequest, SearchService

IMAGE_TO_TEXT_CHANNELS = ("clip", "caption")


@without_feedback
def held_out_image_to_text(
    service: SearchService, *, rotations: int = 5, ks=(1, 5, 10), progress: Progress = None
) -> dict:
    """Each image as the query, its held-out caption as the target, per channel, fused (cross-fitted) and
    served (``describe``, parallel channels on and off)."""
    refuse_learned(service)
    depth = max(ks)
    _, sentence = sentence_version()
    labelled: list[LabelledQuery] = []
    hidden: dict[int, HeldOut] = {}
    for rotation, held in held_out_rotations(rotations).items():
        twins = set(held.twins)
        targets = [pk for pk in held.hidden if pk not in twins]
        target_image = dict(Caption.objects.filter(pk__in=targets).values_list("pk", "image_id"))
        hidden[rotation] = HeldOut(
            captions=held.hidden, images=held.image_ids, targets=targets, target_version=service.version.pk
        )
        # Read from the live tables before the copy: the targets are answers, held in memory only.
        target_vectors = _sentence_vectors(sentence, targets)
        with collection_without(hidden[rotation], service.encoder):
            for image_id in sorted(set(target_image.values())):
                vector = stored_vector(service.version, image_id)
                rankings = {
                    "clip": [(n.id, n.score) for n in nearest_captions(service.version, vector, k=len(targets))]
                }
                by_captions = _nearest_by_own_captions(sentence, image_id, target_vectors)
                if by_captions:
                    rankings["caption"] = by_captions
                relevant = frozenset(t for t, owner in target_image.items() if owner == image_id)
                labelled.append(
                    LabelledQuery(
                        text=f"image {image_id}",
                        relevant=relevant,
                        rankings=rankings,
                        has_document={},
                        has_captions={t: True for t in targets},
                        group=rotation,
                        own_weights={"clip": 1.0, "caption": 1.0},  # nothing serves a fusion here: equal
                    )
                )
    results = cross_fitted(labelled, ks, depth, IMAGE_TO_TEXT_CHANNELS)

    def served_order(evaluated: SearchService, query: LabelledQuery) -> list[int]:
        image_id = int(query.text.split()[1])
        return [hit.caption.pk for hit in evaluated.describe(image_id, k=depth)]

    # describe serves CLIP alone: its list is compared with the CLIP channel's, not with a fusion's.
    served, disagreements, served_per_query = served_pass(
        service, labelled, results, hidden, served_order, depth, progress, offline=_clip_order
    )
    results["metrics"].update(served)
    results["served_differs_from_clip_channel"] = disagreements
    results["served_agrees_with_offline"] = disagreements == 0
    per_query = results.pop("per_query")
    results["fused_minus_best_channel"] = against_best_channel(per_query, "convex_fitted", IMAGE_TO_TEXT_CHANNELS)
    results["served_minus_best_channel"] = against_best_channel(
        {**per_query, **served_per_query}, "served", IMAGE_TO_TEXT_CHANNELS
    )
    results.pop("fusions")
    return results


def _clip_order(query: LabelledQuery, fusion) -> list[int]:
    return [caption_id for caption_id, _ in query.rankings["clip"]]


def _sentence_vectors(sentence, caption_ids: list[int]) -> dict[int, np.ndarray]:
    if sentence is None:
        return {}
    rows = CaptionEmbedding.objects.filter(encoder_version=sentence, caption_id__in=caption_ids)
    return {row.caption_id: np.asarray(row.vector, dtype=np.float32) for row in rows}


def _nearest_by_own_captions(sentence, image_id: int, targets: dict[int, np.ndarray]) -> list[tuple[int, float]]:
    """Targets by the cosine of their sentence vector to the image's nearest visible caption (read in the copy:
    the held-out captions are not among them), best first; empty when the image has no visible caption."""
    if sentence is None or not targets:
        return []
    own = CaptionEmbedding.objects.filter(encoder_version=sentence, caption__image_id=image_id)
    mine = np.array([np.asarray(row.vector, dtype=np.float32) for row in own])
    if not len(mine):
        return []
    ids = sorted(targets)
    scores = (np.array([targets[i] for i in ids]) @ mine.T).max(axis=1)  # the vectors are L2-normalised
    order = np.lexsort((ids, -scores))
    return [(ids[i], float(scores[i])) for i in order]


@without_feedback
def held_out_tags(service: SearchService, *, rotations: int = 5, ks=(1, 5, 10), progress: Progress = None) -> dict:
    """Each tag of a rotation's held-out images as the query (their tags hidden), per channel, fused
    (cross-fitted) and served (parallel channels on and off); only the held-out images are ranked."""
    plan = refuse_learned(service)
    depth = max(ks)
    page = settings.LOUPE_MAX_PAGE_SIZE  # the served list is cut here before the held-out images are counted
    tagged = list(Image.objects.exclude(tags=[]).order_by("pk").values_list("pk", "tags"))
    labelled: list[LabelledQuery] = []
    hidden: dict[int, HeldOut] = {}
    for rotation in range(rotations):
        members = [pk for i, (pk, _) in enumerate(tagged) if i % rotations == rotation]
        if not members:
            continue
        carrying: dict[str, set[int]] = defaultdict(set)
        for i, (pk, tags) in enumerate(tagged):
            if i % rotations == rotation:
                for tag in tags:
                    carrying[tag].add(pk)
        hidden[rotation] = HeldOut(images=members, tags_of=members)
        candidates = frozenset(members)
        with collection_without(hidden[rotation], service.encoder):
            for tag in sorted(carrying):
                labelled.append(
                    labelled_query(service, plan, tag, frozenset(carrying[tag]), rotation, page, candidates)
                )
    results = cross_fitted(labelled, ks, depth)

    def served_order(evaluated: SearchService, query: LabelledQuery) -> list[int]:
        return [h.image.pk for h in evaluated.search(SearchRequest(text=query.text, page_size=page)).hits]

    served, disagreements, served_per_query = served_pass(
        service, labelled, results, hidden, served_order, depth, progress, page=page
    )
    results["metrics"].update(served)
    results["served_differs_from_offline"] = disagreements
    results["served_agrees_with_offline"] = disagreements == 0
    # From the served pass's own per-query values (audit finding 7).
    results["served_minus_best_channel"] = against_best_channel(
        {**results.pop("per_query"), **served_per_query}, "served"
    )
    results["images_ranked_per_rotation"] = {r: len(h.images) for r, h in hidden.items()}
    results.pop("fusions")
    return results


__all__ = ["HELD_OUT_CHANNELS", "held_out_image_to_text", "held_out_tags"]
