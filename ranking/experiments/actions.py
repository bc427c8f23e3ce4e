"""Start, stop, and promote an arm to production: each one transaction with an audit record."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from ranking.experiments.assignment import running_q
from ranking.experiments.serving import forget_cached_configs
from ranking.models import Experiment, ExperimentAudit, ServingConfig, Variant
from ranking.registry import promote


class ExperimentError(ValueError):
    """The action cannot be taken; the message says why, for the admin."""


def start(experiment: Experiment, user: str = "") -> Experiment:
    variants = list(experiment.variants.all())
    if experiment.status != Experiment.Status.DRAFT:
        raise ExperimentError(f"{experiment} is {experiment.status}; only a draft can start.")
    if len(variants) < 2:
        raise ExperimentError("An experiment needs at least two arms.")
    if experiment.mode == Experiment.Mode.INTERLEAVE and len(variants) != 2:
        raise ExperimentError("Interleaving compares exactly two arms.")
    if experiment.mode == Experiment.Mode.AB and sum(v.is_control for v in variants) != 1:
        raise ExperimentError("Mark exactly one arm as the control.")
    if zero := [v.name for v in variants if v.weight < 1]:
        # A weight-0 arm gets no users; all of them at 0 sent everyone to the last arm, and the sample-ratio
        # check divided by the total weight: the admin showed nan and the results API answered 500.
        raise ExperimentError(f"Every arm needs a weight of at least 1: {', '.join(zero)} weighs 0.")
    if not 0 < experiment.traffic_share <= 1:
        raise ExperimentError("The traffic share must be above 0 and at most 1.")
    with transaction.atomic():
        clash = Experiment.objects.select_for_update().filter(running_q(experiment.surface), status="running")
        if clash.exclude(pk=experiment.pk).exists():
            raise ExperimentError(
                f"Another experiment is running on {experiment.get_surface_display()}: "
                f"{', '.join(e.name for e in clash)}. Stop it first."
            )
        experiment.status, experiment.started_at = Experiment.Status.RUNNING, timezone.now()
        try:
            experiment.save(update_fields=["status", "started_at"])
        except IntegrityError:
            raise ExperimentError("Another experiment is already running on this surface.") from None
        ExperimentAudit.objects.create(
            experiment=experiment, action="start", user=user, details={"arms": [v.name for v in variants]}
        )
    forget_cached_configs()
    return experiment


def stop(experiment: Experiment, user: str = "") -> Experiment:
    if experiment.status != Experiment.Status.RUNNING:
        raise ExperimentError(f"{experiment} is not running.")
    with transaction.atomic():
        _mark_stopped(experiment, user, {})
    forget_cached_configs()
    return experiment


def _mark_stopped(experiment: Experiment, user: str, details: dict) -> None:
    experiment.status, experiment.stopped_at = Experiment.Status.STOPPED, timezone.now()
    experiment.save(update_fields=["status", "stopped_at"])
    ExperimentAudit.objects.create(experiment=experiment, action="stop", user=user, details=details)


def promote_arm(variant: Variant, user: str = "", verdict: str = "") -> ServingConfig:
    """Make the arm's configuration production's (stopping the experiment if it runs)."""
    experiment = variant.experiment
    with transaction.atomic():
        if experiment.status == Experiment.Status.RUNNING:
            _mark_stopped(experiment, user, {"reason": f"promoting {variant.name}"})
        if variant.ranker_id:
            promote(variant.ranker)  # the named ranker becomes the active one
        config = ServingConfig.objects.create(
            **variant.config_values(ranker=None),
            created_by=user,
            source=f"experiment {experiment.name!r}, arm {variant.name!r}",
        )
        ExperimentAudit.objects.create(
            experiment=experiment,
            action="promote",
            user=user,
            details={
                "arm": variant.name,
                "config": variant.describe(),
                "serving_config": config.pk,
                "verdict": verdict,
            },
        )
    forget_cached_configs()
    return config
