"""Which fusion a text search uses: the newest ``FusionSetting`` fitted for the serving CLIP version.

Without one (a new collection, or a new CLIP version nobody has fitted for) the search fuses by
reciprocal rank with each channel's own weight, as it always has. The row is re-read every
``LOUPE_EXPERIMENT_CHECK_SECONDS`` per process, so a fit reaches every web process within seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from collection.fusion import MAX, RRF
from collection.models import EncoderVersion, FusionSetting
from core.reloaded import Reloaded


@dataclass(frozen=True)
class Fusion:
    method: str  # collection.fusion.RRF or CONVEX
    weights: dict[str, float] | None = None  # None: the channels' own weights
    normalisation: str = MAX  # collection.fusion.NORMALISATIONS: how convex fusion normalises each list

    @property
    def key(self) -> tuple:
        """What a cached order depends on (``searchapp.pipeline.plan.OrderKey``)."""
        return self.method, tuple(sorted((self.weights or {}).items())), self.normalisation


def _newest() -> dict[int, FusionSetting]:
    newest: dict[int, FusionSetting] = {}
    for row in FusionSetting.objects.order_by("encoder_version_id", "-created_at", "-pk").distinct(
        "encoder_version_id"
    ):
        newest[row.encoder_version_id] = row
    return newest


_settings = Reloaded(_newest)


def serving_fusion(version: EncoderVersion) -> Fusion:
    row = _settings.get().get(version.pk)
    if row is None:
        return Fusion(RRF)
    return Fusion(row.method, row.weights, row.normalisation)


def forget() -> None:
    """Re-read the settings on the next search (after a fit, and in tests)."""
    _settings.forget()
