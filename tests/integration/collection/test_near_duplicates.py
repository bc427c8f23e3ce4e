"""Near-duplicates: found over the stored vectors, grouped, incremental, and collapsed in served results."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from collection.index import ensure_hnsw_indexes
from collection.models import EncoderVersion, Image, ImageEmbedding, NearDuplicate
from collection.near_duplicates import Groups, NearDuplicateScanRefused, groups_of, scan, store_groups
from collection.versions import serving_version

pytestmark = pytest.mark.django_db

D = 16


def _images(version: EncoderVersion, vectors: np.ndarray, start: int) -> list[int]:
    """Image rows (no files needed: the scan reads vectors only) with these vectors under ``version``."""
    rows = Image.objects.bulk_create(
        Image(sha256=f"{start + i:064x}", file="x.png", thumbnail="t.jpg", width=1, height=1, format="png", byte_size=1)
        for i in range(len(vectors))
    )
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    ImageEmbedding.objects.bulk_create(
        ImageEmbedding(image=row, encoder_version=version, vector=vector)
        for row, vector in zip(rows, vectors, strict=True)
    )
    return [row.pk for row in rows]


@pytest.fixture
def bursts():
    """60 unrelated images and three bursts (4, 3 and 2 frames: each frame within ~0.99 of its burst)."""
    rng = np.random.default_rng(5)
    version = EncoderVersion.objects.create(name="real", model_ref="real", fingerprint="n", dimension=D)
    lone = _images(version, rng.normal(size=(60, D)), 0)
    centres = rng.normal(size=(3, D))
    frames = [
        _images(version, c + 0.05 * rng.normal(size=(n, D)), 100 + 10 * b)
        for b, (c, n) in enumerate(zip(centres, (4, 3, 2), strict=True))
    ]
    ensure_hnsw_indexes(version)
    return version, lone, frames, rng


def _stored(version) -> set[frozenset[int]]:
    found: dict[int, set[int]] = {}
    for image_id, group in NearDuplicate.objects.filter(encoder_version=version).values_list("image_id", "group"):
        found.setdefault(group, set()).add(image_id)
    return {frozenset(ids) for ids in found.values()}


def test_a_scan_groups_each_burst_and_nothing_else(bursts):
    version, lone, frames, _ = bursts
    result = scan(version, similarity=0.95)
    assert _stored(version) == {frozenset(f) for f in frames}
    assert (result.groups, result.images_grouped, result.images_scanned) == (3, 9, 69)
    # Each group is named by its lowest image id.
    assert groups_of(version, frames[0]) == {pk: min(frames[0]) for pk in frames[0]}


def test_the_next_scan_compares_only_new_images_and_joins_them_to_their_group(bursts):
    version, lone, frames, rng = bursts
    scan(version, similarity=0.95)
    burst_one = ImageEmbedding.objects.get(encoder_version=version, image_id=frames[0][0]).vector
    new = _images(version, np.stack([burst_one + 0.01 * rng.normal(size=D), rng.normal(size=D)]), 500)
    result = scan(version, similarity=0.95)
    assert result.images_scanned == 2 and not result.full_rescan
    assert _stored(version) == {frozenset(frames[0] + new[:1]), frozenset(frames[1]), frozenset(frames[2])}
    # A new threshold starts again: at 0.9999 no frames are that close.
    assert scan(version, similarity=0.9999).full_rescan
    assert _stored(version) == set()


def test_a_demo_encoder_is_refused_with_a_reason(bursts, db):
    version, *_ = bursts
    EncoderVersion.objects.filter(pk=version.pk).update(is_demo=True)
    version.refresh_from_db()
    with pytest.raises(NearDuplicateScanRefused, match="random-weight demo"):
        scan(version)
    # The served encoder in tests is the demo CLIP: the command says so instead of grouping noise.
    with pytest.raises(CommandError, match="random-weight demo"):
        call_command("near_duplicates")


def test_search_shows_one_image_per_group_unless_asked_not_to(collection, settings):
    # No randomised slices: the orders compared must differ only by the collapse. The result cache on, as
    # served: its key must tell a collapsed order from a full one.
    settings.LOUPE_SWAP_SHARE = settings.LOUPE_EXPLORE_SHARE = 0
    settings.LOUPE_RESULT_CACHE_SECONDS = 60
    _, version = serving_version()
    burst = [image.pk for image in collection[:6:2]]  # seeds 0, 2, 4 made one group
    groups = Groups()
    groups.join(burst[0], burst[1], 0.97)
    groups.join(burst[1], burst[2], 0.96)
    store_groups(version, groups)
    api = APIClient()

    def ids(**params) -> list[int]:
        body = api.get("/api/v1/search", {"q": "a test picture", "page_size": 24, **params}).json()
        assert [r["position"] for r in body["results"]] == list(range(1, len(body["results"]) + 1))
        return [r["image"]["id"] for r in body["results"]]

    everything = ids(collapse="false")
    assert len(everything) == 12
    best = next(pk for pk in everything if pk in burst)
    assert ids() == [pk for pk in everything if pk not in burst or pk == best]
    assert ids(collapse="false") == everything
