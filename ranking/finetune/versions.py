"""Acting on encoder versions: serve one in production, test one against production, retire one, disk use."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction

from collection.models import EncoderVersion
from collection.versions import serving_version
from ranking.experiments.serving import forget_cached_configs, production_config
from ranking.models import Experiment, ServingConfig, Variant


class VersionError(ValueError):
    """The action cannot be taken; the message says why."""


def _serving_encoder_id() -> int | None:
    config = ServingConfig.objects.first()
    return config.encoder_version_id if config else None


def promote_encoder(version: EncoderVersion, user: str = "") -> ServingConfig:
    """Production serves ``version``'s embeddings from now on (a new ServingConfig row keeps the rest)."""
    if version.status != EncoderVersion.Status.READY:
        raise VersionError(f"{version} is {version.status}: only a ready version can serve.")
    current = ServingConfig.objects.first()
    fields = current.config_values(encoder_version=version) if current else {"encoder_version": version}
    config = ServingConfig.objects.create(**fields, created_by=user, source=f"encoder {version} promoted in admin")
    forget_cached_configs()
    return config


def ab_test_against_production(version: EncoderVersion, user: str = "") -> Experiment:
    """A draft A/B experiment: production (control) against production with this encoder version."""
    if version.status != EncoderVersion.Status.READY:
        raise VersionError(f"{version} is {version.status}: only a ready version can serve an arm.")
    with transaction.atomic():
        experiment = Experiment.objects.create(
            name=f"encoder v{version.pk} vs production ({version.created_at:%Y-%m-%d %H:%M})",
            description=f"Created by {user or 'admin'} from the encoder versions page.",
        )
        Variant.objects.create(experiment=experiment, name="production", is_control=True)
        Variant.objects.create(experiment=experiment, name=f"encoder-v{version.pk}", encoder_version=version)
    return experiment


def retire_encoder(version: EncoderVersion) -> None:
    """Stop offering ``version``; refused while production or a running experiment serves it."""
    if _serving_encoder_id() == version.pk:
        raise VersionError(f"{version} serves production; promote another version first.")
    if Variant.objects.filter(encoder_version=version, experiment__status=Experiment.Status.RUNNING).exists():
        raise VersionError(f"{version} serves an arm of a running experiment; stop it first.")

    if serving_version()[1].pk == version.pk and _serving_encoder_id() is None:
        raise VersionError(f"{version} is the configured model (LOUPE_CLIP_MODEL); it cannot be retired.")
    version.status = EncoderVersion.Status.RETIRED
    version.save(update_fields=["status"])
    production_config.forget()


def disk_use(version: EncoderVersion, embedded_images: int, embedded_captions: int = 0) -> int:
    """Bytes: the model folder when it is ours (fine-tunes under var/encoders) plus its vectors (4 bytes a value)."""
    folder = Path(version.model_ref)
    model_bytes = 0
    if folder.is_dir() and Path(settings.VAR_DIR) in folder.resolve().parents:
        model_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return model_bytes + (embedded_images + embedded_captions) * (version.dimension * 4 + 8)
