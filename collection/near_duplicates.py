"""Near-duplicates: images nearly identical under the serving encoder (frames of one burst, a crop, a
re-encoded copy), found over the stored vectors, grouped, and collapsed in results.

Exact duplicates never get in (ingest refuses the same bytes); near ones do. A scan asks the HNSW index
for each image's ``LOUPE_NEAR_DUPLICATE_NEIGHBOURS`` nearest and keeps those at cosine similarity
``LOUPE_NEAR_DUPLICATE_SIMILARITY`` or more; the pairs join into groups by single linkage (union-find),
so a burst whose first and last frames differ more than the threshold is still one group, as photo
managers show bursts. A scan after the first compares only the images embedded since the last one with
everything, so its cost follows what arrived.

A random-weight demo encoder is refused: its similarities say nothing about what images show (its
vectors of different images can be closer than any threshold), so it would "collapse" unrelated images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from collection.index import nearest_images
from collection.models import EncoderVersion, ImageEmbedding, NearDuplicate, NearDuplicateScan
from core.errors import Refused
from core.replicas import read_connection

SCAN_BATCH = 500


class NearDuplicateScanRefused(Refused):
    code = "near_duplicates_refused"
    status = 409


@dataclass(frozen=True)
class ScanResult:
    """What one scan did: images compared, pairs found at or above the threshold, groups stored in all."""

    images_scanned: int
    pairs_found: int
    groups: int
    images_grouped: int
    full_rescan: bool


class Groups:
    """Union-find over image ids; a group's name is its lowest id, so it does not depend on scan order."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.similarity: dict[int, float] = {}

    def find(self, image_id: int) -> int:
        root = image_id
        while self.parent.setdefault(root, root) != root:
            root = self.parent[root]
        while self.parent[image_id] != root:  # path compression
            self.parent[image_id], image_id = root, self.parent[image_id]
        return root

    def join(self, a: int, b: int, similarity: float) -> None:
        for image_id in (a, b):
            self.similarity[image_id] = max(self.similarity.get(image_id, -1.0), similarity)
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)

    def members(self) -> dict[int, list[int]]:
        """Group name -> its image ids (ascending), for groups of two or more."""
        found: dict[int, list[int]] = {}
        for image_id in sorted(self.parent):
            found.setdefault(self.find(image_id), []).append(image_id)
        return {group: ids for group, ids in found.items() if len(ids) > 1}


def scan(
    version: EncoderVersion,
    *,
    similarity: float | None = None,
    neighbours: int | None = None,
    rescan: bool = False,
) -> ScanResult:
    """Find the near-duplicates among images embedded under ``version`` since the last scan and store the
    groups. A different threshold than the last scan's, or ``rescan``, starts again from nothing."""
    if version.is_demo:
        raise NearDuplicateScanRefused(
            f"Encoder version {version.pk} is a random-weight demo model: its similarities say nothing about "
            "what images show, so it cannot tell near-duplicates. Serve a real CLIP model first."
        )
    similarity = float(settings.LOUPE_NEAR_DUPLICATE_SIMILARITY if similarity is None else similarity)
    neighbours = int(settings.LOUPE_NEAR_DUPLICATE_NEIGHBOURS if neighbours is None else neighbours)
    if not 0 < similarity <= 1:
        raise NearDuplicateScanRefused(f"The similarity threshold is a cosine in (0, 1], not {similarity}.")
    state = NearDuplicateScan.objects.filter(encoder_version=version).first()
    full = rescan or state is None or state.similarity != similarity
    after = 0 if full else state.last_image_id
    groups = Groups() if full else stored_groups(version)
    scanned, pairs, last = 0, 0, after
    new = ImageEmbedding.objects.filter(encoder_version=version, image_id__gt=after).order_by("image_id")
    for batch in _batches(new.values_list("image_id", "vector"), SCAN_BATCH):
        for image_id, vector in batch:
            for neighbour in nearest_images(version, vector, k=neighbours, exclude_ids=[image_id]):
                if neighbour.score >= similarity:
                    groups.join(image_id, neighbour.id, neighbour.score)
                    pairs += 1
            scanned += 1
            last = image_id
    stored = store_groups(version, groups)
    NearDuplicateScan.objects.update_or_create(
        encoder_version=version, defaults={"last_image_id": last, "similarity": similarity}
    )
    return ScanResult(scanned, pairs, len(stored), sum(len(ids) for ids in stored.values()), full)


def _batches(rows, size: int) -> Iterable[list]:
    batch: list = []
    for row in rows.iterator(chunk_size=size):
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def stored_groups(version: EncoderVersion) -> Groups:
    """The stored groups as a union-find to extend: each member joined to its group's first image."""
    groups = Groups()
    for image_id, group, similarity in NearDuplicate.objects.filter(encoder_version=version).values_list(
        "image_id", "group", "similarity"
    ):
        if image_id != group:
            groups.join(image_id, group, similarity)
        groups.similarity[image_id] = similarity
    return groups


def store_groups(version: EncoderVersion, groups: Groups) -> dict[int, list[int]]:
    """Write all the version's groups in one transaction (searches see the old groups or the new, never
    half). An incremental scan starts from the stored groups, so rewriting all of them is exact; grouped
    images are a small share of a collection, so it stays cheap."""
    members = groups.members()
    rows = [
        NearDuplicate(image_id=image_id, encoder_version=version, group=group, similarity=groups.similarity[image_id])
        for group, ids in members.items()
        for image_id in ids
    ]
    with transaction.atomic():
        NearDuplicate.objects.filter(encoder_version=version).delete()
        NearDuplicate.objects.bulk_create(rows, batch_size=1000)
    return members


def groups_of(version: EncoderVersion, image_ids: Sequence[int]) -> dict[int, int]:
    """image id -> its group, for the grouped ones among ``image_ids`` (one indexed query)."""
    if not image_ids:
        return {}
    with read_connection().cursor() as cursor:  # a replica inside a search (core.replicas)
        cursor.execute(
            'SELECT image_id, "group" FROM searchapp_nearduplicate WHERE encoder_version_id = %s '
            "AND image_id = ANY(%s)",
            [version.pk, list(image_ids)],
        )
        return dict(cursor.fetchall())


def first_of_each_group(image_ids: Sequence[int], groups: dict[int, int]) -> list[int]:
    """``image_ids`` in their order without any image whose group already came earlier."""
    seen: set[int] = set()
    kept = []
    for image_id in image_ids:
        group = groups.get(image_id)
        if group is not None:
            if group in seen:
                continue
            seen.add(group)
        kept.append(image_id)
    return kept
