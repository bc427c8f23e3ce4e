"""The reference sets the fine-tune guards, and the anchor texts that training keeps in place.

All come from the collection's captions, split by image with a stable hash of the image id: a quarter
of the captioned images give the anchor texts, and the rest is cut in two halves by image, the
**guard** set (early stopping and the WiSE-FT α keep only weights within half the tolerance of the
start on it) and the **gate** set (the gate checks the drop against the tolerance on it). A caption is
a query whose one relevant answer is its own image, searched over the whole collection.

One set for both used to serve: the choice of epoch and α was made on the very captions the gate then
read, so the gate could not see what the choice overfitted (issue 17, finding 4; finding 5 is the same
mechanism in the ranker). The halves are smaller, hence noisier: on coco_mini (159 images, 795
captions) two halves differed by 1-3 points at the same weights (docs/finetuning.md); the gate compares
before and after on the same half, which cancels the level but not the noise of the change. The three
sets share no image (``ReferenceSplit.check`` raises otherwise), so anchoring never touches a guard or
gate image's captions; and the anchor's *images* leave the guard and gate images out (``anchor_rows``,
checked by ``check_anchor_rows``). Until the h4 audit (finding 4) the anchor held every collection
image at its start, the gate's included, so a drop in gate-caption recall measured mostly text drift.
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


class ReferenceOverlap(ValueError):
    """An image in two of the guard, gate and anchor sets: the gate would read what chose or anchored."""


@dataclass
class ReferenceSplit:
    guard: CaptionSet  # chooses: early stopping's floor and the WiSE-FT α's
    gate: CaptionSet  # judges: the promotion gate's tolerance
    anchor_texts: list[str]
    images: dict[str, set[int]]  # part -> image ids whose captions went there

    def check(self) -> None:
        """Raise ``ReferenceOverlap`` if two parts share an image."""
        for first, second in (("guard", "gate"), ("guard", "anchor"), ("gate", "anchor")):
            shared = self.images.get(first, set()) & self.images.get(second, set())
            if shared:
                raise ReferenceOverlap(
                    f"{len(shared)} image(s) in both the {first} and the {second} captions, e.g. {min(shared)}."
                )


def part_of(image_id: int) -> str:
    """Which part an image's captions belong to: a quarter anchor, the rest halved into guard and gate."""
    share = stable_share(image_id)
    return "anchor" if share >= 0.75 else ("gate" if share >= 0.375 else "guard")


def stable_share(image_id: int) -> float:
    """A stable number in [0, 1) per image: the same split on every run and every machine."""
    digest = hashlib.sha256(f"loupe-reference:image:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def reference_split(image_row: dict[int, int], limit: int, anchor_limit: int, seed: int) -> ReferenceSplit:
    """Captions of the collection's images: the guard and gate sets (each up to ``limit``) and the anchor texts."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[str, int]]] = {"guard": [], "gate": [], "anchor": []}
    for text, image_id in (
        Caption.objects.filter(image_id__in=list(image_row)).order_by("pk").values_list("text", "image_id")
    ):
        parts[part_of(image_id)].append((text, image_id))

    def sample(rows: list[tuple[str, int]], cap: int) -> list[tuple[str, int]]:
        if len(rows) <= cap:
            return rows
        return [rows[i] for i in sorted(rng.choice(len(rows), size=cap, replace=False))]

    guard, gate = sample(parts["guard"], limit), sample(parts["gate"], limit)
    anchor = sample(parts["anchor"], anchor_limit)
    split = ReferenceSplit(
        CaptionSet([t for t, _ in guard], [{image_row[i]} for _, i in guard]),
        CaptionSet([t for t, _ in gate], [{image_row[i]} for _, i in gate]),
        [t for t, _ in anchor],
        {name: {i for _, i in rows} for name, rows in (("guard", guard), ("gate", gate), ("anchor", anchor))},
    )
    split.check()
    return split


def anchor_rows(image_row: dict[int, int], split: ReferenceSplit) -> np.ndarray:
    """The collection rows the anchor may hold in place: every image but the guard and the gate images."""
    judged = split.images.get("guard", set()) | split.images.get("gate", set())
    rows = np.asarray(sorted(row for image_id, row in image_row.items() if image_id not in judged), dtype=np.int64)
    check_anchor_rows(rows, image_row, split)
    return rows


def check_anchor_rows(rows: np.ndarray, image_row: dict[int, int], split: ReferenceSplit) -> None:
    """Raise ``ReferenceOverlap`` if an anchored row is a guard or gate image."""
    anchored = {int(r) for r in rows}
    for part in ("guard", "gate"):
        shared = sorted(i for i in split.images.get(part, set()) if image_row.get(i) in anchored)
        if shared:
            raise ReferenceOverlap(
                f"{len(shared)} {part} image(s) among the anchor's images, e.g. {shared[0]}: the {part} check "
                "would read images the anchor held in place."
            )
