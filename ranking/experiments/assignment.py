"""Sticky assignment of users to experiment arms by hashing, with no assignment table.

A user key and the experiment's salt hash (SHA-256) to a point in [0, 1). The first
``traffic_share`` of the unit interval is the experiment; inside it the arms take slices in
proportion to their weights. The same key always lands in the same arm (across sessions, processes
and devices that share the key), a new salt reshuffles everyone, and arms of different experiments
are independent because their salts differ.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.db.models import Q

from core.reloaded import Reloaded
from ranking.models import Experiment, Variant

HASH_SPACE = 2**64


def unit_hash(salt: str, user_key: str) -> float:
    """A uniform point in [0, 1) for (salt, user key)."""
    digest = hashlib.sha256(f"{salt}:{user_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / HASH_SPACE


def bucket(salt: str, user_key: str, traffic_share: float, weights: list[int]) -> int | None:
    """The index of the arm for this user, or None when the user is outside the experiment's traffic."""
    point = unit_hash(salt, user_key)
    if point >= traffic_share or not weights:
        return None
    position = point / traffic_share * sum(weights)  # uniform over [0, total weight)
    edge = 0
    for index, weight in enumerate(weights):
        edge += weight
        if position < edge:
            return index
    return len(weights) - 1  # float rounding at the very top


@dataclass(frozen=True)
class Assignment:
    experiment: Experiment
    variant: Variant | None  # None for interleaving, where every search shows both arms
    variants: tuple[Variant, ...]

    @property
    def arm(self) -> str:
        return self.variant.name if self.variant is not None else "interleaved"


def _load_running() -> list[tuple[Experiment, tuple[Variant, ...]]]:
    experiments = Experiment.objects.filter(status=Experiment.Status.RUNNING).prefetch_related(
        "variants__ranker", "variants__encoder_version"
    )
    return [(e, tuple(e.variants.all())) for e in experiments]


running_experiments = Reloaded(_load_running)


def running_for(surface: str) -> tuple[Experiment, tuple[Variant, ...]] | None:
    """The running experiment that covers ``surface`` (its own, or one on all surfaces), with its arms."""
    for experiment, variants in running_experiments.get():
        if experiment.surface in (surface, Experiment.Surface.ALL):
            return experiment, variants
    return None


def assign(user_key: str, surface: str) -> Assignment | None:
    """The arm this user is in for searches on ``surface``, or None (production configuration)."""
    found = running_for(surface)
    if found is None:
        return None
    experiment, variants = found
    if not variants:
        return None
    if experiment.mode == Experiment.Mode.INTERLEAVE:
        if unit_hash(experiment.salt, user_key) >= experiment.traffic_share or len(variants) != 2:
            return None
        return Assignment(experiment, None, variants)
    index = bucket(experiment.salt, user_key, experiment.traffic_share, [v.weight for v in variants])
    return None if index is None else Assignment(experiment, variants[index], variants)


def running_q(surface: str) -> Q:
    """Experiments that would collide with a running one on ``surface``."""
    if surface == Experiment.Surface.ALL:
        return Q()
    return Q(surface=surface) | Q(surface=Experiment.Surface.ALL)
