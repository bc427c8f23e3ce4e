"""What we learn: ranker versions (one active at a time) and the training runs that produce them."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models


class RankerVersion(models.Model):
    """A trained reranker: its artefact on disk (with checksum), feature list, window and metrics."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "candidate (not serving)"
        ACTIVE = "active", "active (serving)"
        RETIRED = "retired", "retired"
        REJECTED = "rejected", "rejected by the gate"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    artefact = models.CharField(max_length=500, help_text="LightGBM model file, relative to the rankers folder.")
    checksum = models.CharField(max_length=64, help_text="sha256 of the artefact; checked before every load.")
    feature_names = ArrayField(models.CharField(max_length=64))
    trained_from = models.DateTimeField(help_text="First feedback used.")
    trained_until = models.DateTimeField(help_text="Last feedback used; the validation window ends here.")
    train_searches = models.PositiveIntegerField(default=0)
    validation_searches = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(
        default=dict, help_text="Validation metrics of this ranker and of the one it was compared with."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=models.Q(status="active"), name="one_active_ranker")
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"ranker v{self.pk} ({self.status})"

    @property
    def label(self) -> str:
        return f"ltr-v{self.pk}"


class TrainingRun(models.Model):
    """One attempt of the scheduled retraining, kept for admin whatever its outcome."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "running"
        PROMOTED = "promoted", "trained and promoted"
        KEPT = "kept", "trained, not better: current ranker kept"
        SKIPPED = "skipped", "skipped (not enough new feedback)"
        FAILED = "failed", "failed"

    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    ranker = models.ForeignKey(RankerVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    metrics = models.JSONField(default=dict)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"training run {self.pk}: {self.outcome}"
