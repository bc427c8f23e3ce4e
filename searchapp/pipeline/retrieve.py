"""Retrieve: encode the query and fetch each channel's candidates (CLIP, and for text the text channels and
the feedback channel: images people chose for this query or for past queries near it).

The text channels (``collection.text_channels``) start first and run while CLIP encodes; the CLIP
list is cut by the score thresholds (``collection.cut``) before fusion, so a weak tail never enters it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from collection.cut import cut_length
from collection.encoders import Encoder
from collection.index import Neighbour, nearest_images
from collection.models import EncoderVersion, Image, ImageEmbedding
from collection.text_channels import start_text_channels
from core.errors import UnknownImage
from core.replicas import read_alias
from feedback.click_graph import chosen_images
from feedback.impressions import query_key
from ranking.experiments.serving import ServingPlan
from searchapp.pipeline.plan import Depths
from searchapp.pipeline.request import NotIndexed, SearchRequest, ValidSearch

FEEDBACK = "feedback"  # the feedback channel's name in the rankings, the fusion weights and the features


@dataclass(frozen=True)
class Retrieved:
    """Each channel's ranked candidates and fusion weight, and the query's CLIP vector."""

    vector: np.ndarray
    rankings: dict[str, list[Neighbour]]  # "clip" first, then the text channels and feedback that found anything
    weights: dict[str, float]  # the channels in ``rankings``, with their fusion weights
    encode_seconds: float
    retrieve_seconds: float

    @property
    def clip(self) -> list[Neighbour]:
        return self.rankings["clip"]


def retrieve(
    encoder: Encoder, version: EncoderVersion, search: ValidSearch, depths: Depths, plan: ServingPlan
) -> Retrieved:
    started = time.perf_counter()
    request = search.request
    if depths.fusing:
        # The text channels run while CLIP encodes.
        text_channels = start_text_channels(search.text, depths.text, search.tags, search.metadata)
    exclude: list[int] = []
    if search.kind == "similar":
        vector = stored_vector(version, request.image_id)
        exclude.append(request.image_id)
    elif search.kind == "image":
        vector = encoder.encode_images([request.image.open()])[0]
    else:
        vector = encoder.encode_query(search.text)
    encoded = time.perf_counter()

    neighbours = nearest_images(
        version,
        vector,
        k=depths.candidates,
        tags=search.tags,
        metadata=search.metadata,
        exclude_ids=exclude,
        text_flags=depths.fusing,
    )
    rankings = {"clip": cut(neighbours, request, plan)}
    weights = {"clip": version.channel_weight}
    if depths.fusing:
        found = text_channels()
        rankings.update(found.rankings)
        weights.update(found.weights)
    if feedback_channel_serves(search, plan):
        chosen = chosen_images(
            version,
            vector,
            query_key(search.text),
            depth=settings.LOUPE_FEEDBACK_CHANNEL_DEPTH,
            min_similarity=settings.LOUPE_FEEDBACK_CHANNEL_MIN_SIMILARITY,
        )
        if chosen:  # a query nobody near has chosen from fuses exactly as without the channel
            rankings[FEEDBACK] = chosen
            weights[FEEDBACK] = settings.LOUPE_FEEDBACK_CHANNEL_WEIGHT
    retrieved = time.perf_counter()
    return Retrieved(
        vector=vector,
        rankings=rankings,
        weights={name: weights[name] for name in rankings},
        encode_seconds=encoded - started,
        retrieve_seconds=retrieved - encoded,
    )


def feedback_channel_serves(search: ValidSearch, plan: ServingPlan) -> bool:
    """Whether the feedback channel (``feedback.click_graph``) joins this search: the arm's or production's
    switch, else the setting; text searches without filters. Its top lists are per query, not per tag or
    metadata value, so a filtered search would get images the filter excludes; it keeps the other channels."""
    switched_on = plan.feedback_channel if plan.feedback_channel is not None else settings.LOUPE_FEEDBACK_CHANNEL
    return switched_on and search.kind == "text" and not search.tags and not search.metadata


def stored_vector(version: EncoderVersion, image_id: int) -> np.ndarray:
    """An image's vector under ``version`` ("more like this", image to text)."""
    reads = read_alias()
    if not Image.objects.using(reads).filter(pk=image_id).exists():
        raise UnknownImage(f"There is no image {image_id}.", field="image_id")
    row = ImageEmbedding.objects.using(reads).filter(image_id=image_id, encoder_version=version).first()
    if row is None:
        raise NotIndexed(f"Image {image_id} has no vector for the serving encoder yet; try again shortly.")
    return row.vector


def cut(neighbours: list[Neighbour], request: SearchRequest, plan: ServingPlan) -> list[Neighbour]:
    """The request's thresholds, else the serving configuration's, else the settings'."""
    min_score = next(v for v in (request.min_score, plan.min_score, settings.LOUPE_MIN_SCORE) if v is not None)
    drop = next(
        v
        for v in (request.max_relative_drop, plan.max_relative_drop, settings.LOUPE_MAX_RELATIVE_DROP)
        if v is not None
    )
    keep = cut_length([n.score for n in neighbours], min_score=min_score, max_relative_drop=drop)
    return neighbours[:keep]
