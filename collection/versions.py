"""The encoder version that serves: the row that names the loaded model's weights."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from django.conf import settings

from collection.encoders import DEMO_NOTICE, Encoder, EncoderChoice, EncoderLoadError, serving_encoder
from collection.fast_text import accelerate
from collection.models import EncoderVersion, ImageEmbedding
from collection.sentence import serving_sentence_encoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderInfo:
    """What a response says about the model behind its results."""

    version_id: int
    name: str
    model_ref: str
    is_demo: bool
    requested_model: str
    fallback_reason: str

    @property
    def notice(self) -> str:
        return DEMO_NOTICE if self.is_demo else ""


def version_for(choice: EncoderChoice) -> EncoderVersion:
    """Get or create the version row of a loaded encoder (by model location and weight fingerprint)."""
    return version_of(choice.encoder, EncoderVersion.Kind.IMAGE_TEXT)


def version_of(encoder, kind: str) -> EncoderVersion:
    version, _ = EncoderVersion.objects.get_or_create(
        model_ref=encoder.model_ref,
        fingerprint=encoder.fingerprint,
        defaults={"name": encoder.name, "dimension": encoder.dimension, "is_demo": encoder.is_demo, "kind": kind},
    )
    return version


_serving: tuple[int, EncoderVersion] | None = None


def serving_version() -> tuple[EncoderChoice, EncoderVersion]:
    """The loaded encoder and its version row, cached per process."""
    global _serving
    choice = serving_encoder()
    if _serving is None or _serving[0] != id(choice):
        _serving = (id(choice), version_for(choice))
    return choice, _serving[1]


def encoder_info(choice: EncoderChoice, version: EncoderVersion) -> EncoderInfo:
    return EncoderInfo(
        version_id=version.pk,
        name=version.name,
        model_ref=version.model_ref,
        is_demo=version.is_demo,
        requested_model=choice.requested_ref,
        fallback_reason=choice.fallback_reason,
    )


_sentence_serving: tuple[int, EncoderVersion] | None = None


def sentence_version():
    """The text channel's encoder and version row, or (None, None) when the channel is off."""
    global _sentence_serving

    encoder = serving_sentence_encoder()
    if encoder is None:
        return None, None
    if _sentence_serving is None or _sentence_serving[0] != id(encoder):
        _sentence_serving = (id(encoder), version_of(encoder, EncoderVersion.Kind.SENTENCE))
    return encoder, _sentence_serving[1]


def forget_serving_version() -> None:
    """Drop the cached version rows (tests roll back their rows; a retired version is re-read)."""
    global _serving, _sentence_serving
    _serving = None
    _sentence_serving = None


_other_encoders: dict[int, EncoderChoice | None] = {}
_other_lock = threading.Lock()


def service_encoder_choice(version_id: int) -> tuple[EncoderChoice, EncoderVersion] | None:
    """An encoder version other than the serving one (an experiment arm's), loaded once per process.

    Its weights must still be where the version says (``model_ref``) with the same fingerprint, and
    the version must have image vectors; otherwise None (logged once): the search serves production.
    """
    version = EncoderVersion.objects.filter(pk=version_id).first()
    if version is None or version.status != EncoderVersion.Status.READY:
        return None  # a version still building (or retired) never serves
    with _other_lock:
        if version_id not in _other_encoders:
            _other_encoders[version_id] = _load_other(version)
    choice = _other_encoders[version_id]
    return (choice, version) if choice is not None else None


def _load_other(version: EncoderVersion) -> EncoderChoice | None:
    try:
        encoder = Encoder(version.model_ref, query_cache_size=settings.LOUPE_QUERY_CACHE_SIZE)
    except EncoderLoadError as exc:
        logger.error("Encoder version %s cannot be loaded (%s); its arm serves production's encoder.", version.pk, exc)
        return None
    if encoder.fingerprint != version.fingerprint:
        logger.error(
            "Encoder version %s: the weights at %s changed (fingerprint); not serving it.",
            version.pk,
            version.model_ref,
        )
        return None
    if not ImageEmbedding.objects.filter(encoder_version=version).exists():
        logger.error("Encoder version %s has no image vectors yet; not serving it.", version.pk)
        return None
    accelerate(encoder)  # the same text runtime as the configured model (its export was made when it was built)
    return EncoderChoice(encoder, version.model_ref)


def forget_other_encoders() -> None:
    with _other_lock:
        _other_encoders.clear()
