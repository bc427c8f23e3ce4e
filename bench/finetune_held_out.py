"""What the fine-tune simulation holds out, from what, and the checks that stop it when something leaks.

The headline of ``simulate_finetune.py`` is ground truth on sets nothing was fitted or chosen on:

- **class precision@10** on Caltech class queries, in the three sets of ``held_out_queries``: *repeat*
  (training phrasings of classes users searched), *new phrasings* (wordings no user typed, of searched
  classes) and *new intents* (classes no user searched), ranked over the Caltech images **minus** the
  labelled ones the base was fitted to;
- **held-out caption recall@10**: a share of coco_mini's images (``COCO_HELD_OUT_SHARE``, by a stable
  hash of the file name) is never ingested and never in the base fit. Their captions search the whole
  collection plus these images (embedded from their pixels by each version), each answered by its own
  image. So they never entered training pairs (nobody can click an image that is not in the
  collection), the base fit, the anchor, or the guard or gate captions (both are drawn from the
  collection's captions).
- **the guard and gate captions are not base-fit captions** (audit of h4, finding 5): the kept coco
  images are split again by another stable hash into the *fitted* half (the base is fitted to its
  captions; ingested without captions) and the *reference* half (ingested with its captions, never
  fitted). The guard, gate and anchor captions are drawn from the collection's captions, so only from
  the reference half: the forgetting the gate checks is measured on captions the base never memorised.

What chooses is kept apart from what is reported: early stopping and the WiSE-FT α read the
validation window's pairs and the guard captions, the gate the test window's logged searches and the
gate captions; none of them is a held-out caption, image or query string (asserted below).

Pure: no Django, so the unit test runs without a database. Every check raises ``LeakageError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.held_out_queries import LeakageError, QuerySets, check_logs, normalised

COCO_HELD_OUT_SHARE = 0.25
COCO_REFERENCE_SHARE = 0.5  # of the kept images: ingested with captions, not fitted (the guard and gate)


@dataclass(frozen=True)
class CocoImage:
    path: Path
    captions: tuple[str, ...]


@dataclass(frozen=True)
class HeldOut:
    """The simulation's held-out material: query sets, coco images and what the base fit used."""

    queries: QuerySets  # the users' traffic and the three held-out class-query sets
    coco_kept: tuple[CocoImage, ...]  # ingested with captions: the guard, gate and anchor captions come from these
    coco_held_out: tuple[CocoImage, ...]  # never ingested, never fitted: the held-out caption recall
    base_fit: tuple[Path, ...]  # every image the base was fitted to (coco kept + labelled Caltech sample)
    base_fit_texts: tuple[str, ...]
    coco_reference: tuple[CocoImage, ...] = ()  # kept, ingested with captions, never fitted: guard/gate/anchor


def held_out_share(path: Path, salt: str = "held-out") -> float:
    """A stable number in [0, 1) per file name: the same split on every run and every machine."""
    digest = hashlib.sha256(f"loupe-finetune-{salt}:{path.name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_coco(images: Sequence[CocoImage], share: float = COCO_HELD_OUT_SHARE) -> tuple[tuple, tuple]:
    """(kept, held out): a ``share`` of the images by a stable hash of their file name."""
    held = tuple(i for i in images if held_out_share(i.path) < share)
    return tuple(i for i in images if held_out_share(i.path) >= share), held


# The labelled Caltech sample's caption in the base fit: a wording no query set uses (TRAINING_PHRASINGS and
# NEW_PHRASINGS). It was "a photo of a {}", a training phrasing that new-intent queries also drew, so 45-55 of
# the 300 new-intent queries per seed were exact base-fit texts (audit of h4, finding 6).
BASE_FIT_TEMPLATE = "caltech: {}"


def split_reference(kept: Sequence[CocoImage], share: float = COCO_REFERENCE_SHARE) -> tuple[tuple, tuple]:
    """(fitted, reference): a ``share`` of the kept images by a second stable hash of their file name."""
    reference = tuple(i for i in kept if held_out_share(i.path, "reference") < share)
    return tuple(i for i in kept if held_out_share(i.path, "reference") >= share), reference


def check_base_fit(held: HeldOut) -> None:
    """No held-out coco image or caption, and no held-out query string (repeat, new phrasings, new intents), is in
    what the base is fitted to: before the fit (no query sets yet) and again per repetition, once they exist."""
    fitted = {str(p) for p in held.base_fit}
    if leaked := sorted(str(i.path) for i in held.coco_held_out if str(i.path) in fitted):
        raise LeakageError(f"held-out coco images in the base fit: {leaked[:3]}")
    texts = {normalised(t) for t in held.base_fit_texts}
    if leaked := sorted(c for i in held.coco_held_out for c in i.captions if normalised(c) in texts):
        raise LeakageError(f"held-out coco captions in the base fit: {leaked[:3]}")
    if leaked := sorted(str(i.path) for i in held.coco_reference if str(i.path) in fitted):
        raise LeakageError(f"reference coco images (the guard and gate) in the base fit: {leaked[:3]}")
    if leaked := sorted(c for i in held.coco_reference for c in i.captions if normalised(c) in texts):
        raise LeakageError(f"reference coco captions (the guard and gate) in the base fit: {leaked[:3]}")
    for name, queries in held.queries.held_out.items():
        if leaked := sorted({q.text for q in queries if normalised(q.text) in texts}):
            raise LeakageError(f"{name} query strings in the base fit: {leaked[:3]}")


def check_collection(held: HeldOut, sources: Iterable[str], captions: Iterable[str]) -> None:
    """After ingestion: no held-out coco image (by source path) or caption is in the product's collection,
    so none can be clicked into a pair, anchored, or drawn into the guard or gate captions."""
    held_paths = {str(i.path) for i in held.coco_held_out}
    if leaked := sorted(held_paths.intersection(sources)):
        raise LeakageError(f"held-out coco images in the collection: {leaked[:3]}")
    held_texts = {normalised(c) for i in held.coco_held_out for c in i.captions}
    if leaked := sorted(held_texts.intersection(normalised(c) for c in captions)):
        raise LeakageError(f"held-out coco captions in the collection: {leaked[:3]}")
    if held.coco_reference:  # the guard, gate and anchor captions are drawn from the collection's captions
        fitted_texts = {normalised(t) for t in held.base_fit_texts}
        if leaked := sorted(fitted_texts.intersection(normalised(c) for c in captions)):
            raise LeakageError(f"base-fit captions in the collection (guard and gate would read them): {leaked[:3]}")


def check_run(
    held: HeldOut,
    pair_queries: Iterable[str],
    logged_queries: Iterable[str],
    reference_texts: dict[str, Sequence[str]],
) -> None:
    """After each fine-tune: the pairs it trained, chose and was gated on, the logged queries (the gate's
    searches among them), and its guard, gate and anchor captions hold no held-out caption; the logs no
    new-phrasing or new-intent query string; the guard and gate captions no base-fit caption."""
    held_texts = {normalised(c) for i in held.coco_held_out for c in i.captions}
    if leaked := sorted(held_texts.intersection(normalised(q) for q in pair_queries)):
        raise LeakageError(f"held-out coco captions among the fine-tune's pair queries: {leaked[:3]}")
    logged = [normalised(q) for q in logged_queries]
    if leaked := sorted(held_texts.intersection(logged)):  # searched without a kept click: still in the gate's
        raise LeakageError(f"held-out coco captions in the search logs: {leaked[:3]}")
    fitted_texts = {normalised(t) for t in held.base_fit_texts} if held.coco_reference else set()
    for name, texts in reference_texts.items():
        if leaked := sorted(held_texts.intersection(normalised(t) for t in texts)):
            raise LeakageError(f"held-out coco captions in the fine-tune's {name} captions: {leaked[:3]}")
        if name != "anchor" and (leaked := sorted(fitted_texts.intersection(normalised(t) for t in texts))):
            raise LeakageError(f"base-fit captions in the fine-tune's {name} captions: {leaked[:3]}")
    check_logs(held.queries, logged)


def check_precision_pool(held: HeldOut, pool: Iterable[str]) -> None:
    """The images class precision ranks over are none of those the base was fitted to."""
    fitted = {str(p) for p in held.base_fit}
    if leaked := sorted(fitted.intersection(pool)):
        raise LeakageError(f"images the base was fitted to in the precision pool: {leaked[:3]}")
