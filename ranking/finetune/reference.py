"""The reference set the gate guards, and the anchor texts that training keeps in place.

Both come from the collection's captions, split by image: a stable hash of the image id gives a
quarter of the captioned images to the anchor texts and the rest to the reference set, so anchoring
never touches a reference image's captions. A caption is a query whose one relevant answer is its
own image, searched over the whole collection.

The reference set is both the constraint (early stopping and WiSE-FT keep only weights within half
the tolerance of the start on it) and the gate's check (within the tolerance). Two halves, one to
choose and one to check, were tried: on coco_mini (159 images, 795 captions) the halves disagreed by
1-3 points at the same weights, more than the 1-point tolerance, so the gate refused or passed by the
luck of the split (docs/finetuning.md). The half-tolerance margin is what keeps the choice from
using up the check.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from collection.models import Caption


@dataclass
class CaptionSet:
    texts: list[str]
    relevant: list[set[int]]  # collection rows of each caption's image

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class ReferenceSplit:
    reference: CaptionSet
    anchor_texts: list[str]


def stable_share(image_id: int) -> float:
    """A stable number in [0, 1) per image: the same split on every run and every machine."""
    digest = hashlib.sha256(f"loupe-reference:image:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def reference_split(image_row: dict[int, int], limit: int, anchor_limit: int, seed: int) -> ReferenceSplit:
    """Captions of the collection's images: the reference set and the anchor texts, each sampled to its limit."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[str, int]]] = {"reference": [], "anchor": []}
    for text, image_id in (
        Caption.objects.filter(image_id__in=list(image_row)).order_by("pk").values_list("text", "image_id")
    ):
        parts["anchor" if stable_share(image_id) >= 0.75 else "reference"].append((text, image_id))

    def sample(rows: list[tuple[str, int]], cap: int) -> list[tuple[str, int]]:
        if len(rows) <= cap:
            return rows
        return [rows[i] for i in sorted(rng.choice(len(rows), size=cap, replace=False))]

    reference = sample(parts["reference"], limit)
    return ReferenceSplit(
        CaptionSet([t for t, _ in reference], [{image_row[i]} for _, i in reference]),
        [t for t, _ in sample(parts["anchor"], anchor_limit)],
    )
