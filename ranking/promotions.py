"""When production changed what it serves: ranker promotions and encoder switches, for marking time axes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ranking.models import RankerVersion, ServingConfig


@dataclass(frozen=True)
class Promotion:
    at: datetime
    kind: str  # "ranker" or "encoder"
    label: str


def promotions(since: datetime, until: datetime) -> list[Promotion]:
    """Promotions in [since, until), oldest first: a ranker's ``promoted_at``, and each production config
    whose encoder version differs from the one before it (``ranking.finetune.versions.promote_encoder``)."""
    found = [
        Promotion(version.promoted_at, "ranker", f"ranker {version.label} promoted")
        for version in RankerVersion.objects.filter(promoted_at__gte=since, promoted_at__lt=until)
    ]
    previous = None
    for config in ServingConfig.objects.filter(created_at__lt=until).order_by("created_at", "pk"):
        changed = config.encoder_version_id != previous
        previous = config.encoder_version_id
        if changed and config.created_at >= since and config.encoder_version_id is not None:
            found.append(Promotion(config.created_at, "encoder", f"encoder v{config.encoder_version_id} serves"))
    return sorted(found, key=lambda p: p.at)
