"""Ranker versions: save, promote, roll back (each one transaction), and the active one for serving.

Artefacts live under ``<var>/rankers/`` and are written atomically; the row stores their sha256 and
a load refuses an artefact whose checksum differs (logged as an error; search falls back to the
first-stage order). Web processes notice a newly active version within ``LOUPE_RANKER_CHECK_SECONDS``
(a one-row query) and load it without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.metrics import FALLBACKS
from ranking.ltr import TrainedRanker
from ranking.models import RankerVersion

logger = logging.getLogger(__name__)


class ArtefactRefused(RuntimeError):
    """The artefact is missing or does not match its recorded checksum."""


def rankers_dir() -> Path:
    return Path(settings.VAR_DIR) / "rankers"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_candidate(
    trained: TrainedRanker, *, trained_from, trained_until, train_searches: int, validation_searches: int, metrics: dict
) -> RankerVersion:
    """Write the model file (atomically) and record it as a candidate."""
    folder = rankers_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"ranker-{timezone.now():%Y%m%d-%H%M%S}-{os.getpid()}.txt"
    partial = folder / f"{name}.partial"
    trained.booster.save_model(str(partial), num_iteration=trained.best_iteration or None)
    os.replace(partial, folder / name)
    return RankerVersion.objects.create(
        artefact=name,
        checksum=_sha256(folder / name),
        feature_names=trained.feature_names,
        trained_from=trained_from,
        trained_until=trained_until,
        train_searches=train_searches,
        validation_searches=validation_searches,
        metrics=metrics,
    )


def promote(version: RankerVersion) -> RankerVersion:
    """Make ``version`` the active ranker; the previous one is retired in the same transaction."""
    with transaction.atomic():
        now = timezone.now()
        RankerVersion.objects.select_for_update().filter(status=RankerVersion.Status.ACTIVE).exclude(
            pk=version.pk
        ).update(status=RankerVersion.Status.RETIRED, retired_at=now)
        version.status, version.promoted_at, version.retired_at = RankerVersion.Status.ACTIVE, now, None
        version.save(update_fields=["status", "promoted_at", "retired_at"])
    return version


def rollback() -> RankerVersion | None:
    """Re-activate the ranker that was active before the current one (or none: first-stage order)."""
    with transaction.atomic():
        current = RankerVersion.objects.select_for_update().filter(status=RankerVersion.Status.ACTIVE).first()
        previous = (
            RankerVersion.objects.filter(status=RankerVersion.Status.RETIRED, promoted_at__isnull=False)
            .exclude(pk=getattr(current, "pk", None))
            .order_by("-promoted_at")
            .first()
        )
        if current is not None:
            current.status, current.retired_at = RankerVersion.Status.RETIRED, timezone.now()
            current.promoted_at = None  # it is not a rollback target any more
            current.save(update_fields=["status", "retired_at", "promoted_at"])
        if previous is not None:
            return promote(previous)
    return None


def load_booster(version: RankerVersion) -> lgb.Booster:
    path = rankers_dir() / version.artefact
    if not path.is_file():
        raise ArtefactRefused(f"{version}: artefact {path} is missing.")
    if _sha256(path) != version.checksum:
        raise ArtefactRefused(f"{version}: artefact {path} does not match its checksum; refusing to load it.")
    return lgb.Booster(model_file=str(path))


@dataclass(frozen=True)
class ServingRanker:
    version: RankerVersion
    booster: lgb.Booster


class ActiveRanker:
    """The active ranker for this process, re-checked every few seconds; None when there is none or it is refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._active_id: int | None = None
        self._serving: ServingRanker | None = None
        self._refused: set[int] = set()

    def get(self) -> ServingRanker | None:
        if time.monotonic() - self._checked_at >= settings.LOUPE_RANKER_CHECK_SECONDS:
            with self._lock:
                self._refresh()
        return self._serving

    def _refresh(self) -> None:
        self._checked_at = time.monotonic()
        active = RankerVersion.objects.filter(status=RankerVersion.Status.ACTIVE).first()
        if active is None:
            self._active_id, self._serving = None, None
            return
        if active.pk == self._active_id or active.pk in self._refused:
            return
        try:
            self._serving = ServingRanker(active, load_booster(active))
            self._active_id = active.pk
            logger.info("Serving %s", active)
        except (ArtefactRefused, lgb.basic.LightGBMError) as exc:
            self._refused.add(active.pk)
            self._serving, self._active_id = None, None
            FALLBACKS.labels("ranker_refused").inc()
            logger.error("Not serving %s: %s Search falls back to the first-stage order.", active, exc)

    def forget(self) -> None:
        with self._lock:
            self._checked_at, self._active_id, self._serving = 0.0, None, None
            self._refused.clear()


active_ranker = ActiveRanker()


class RankerVersions:
    """Rankers named by version (experiment arms, production configs), loaded once per process and checked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[tuple[int, str], ServingRanker | None] = {}

    def get(self, version: RankerVersion) -> ServingRanker | None:
        key = (version.pk, version.checksum)
        if key not in self._loaded:
            with self._lock:
                if key not in self._loaded:
                    try:
                        self._loaded[key] = ServingRanker(version, load_booster(version))
                    except (ArtefactRefused, lgb.basic.LightGBMError) as exc:
                        FALLBACKS.labels("ranker_refused").inc()
                        logger.error("Not serving %s: %s Search falls back to the first-stage order.", version, exc)
                        self._loaded[key] = None
        return self._loaded[key]

    def forget(self) -> None:
        with self._lock:
            self._loaded.clear()


ranker_versions = RankerVersions()
