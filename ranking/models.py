"""What we learn: ranker versions (one active at a time) and the training runs that produce them."""

from __future__ import annotations

import logging
import secrets

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

logger = logging.getLogger(__name__)


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


class Attempt(models.Model):
    """A scheduled learning attempt (ranker retraining, encoder fine-tuning), kept for admin whatever its outcome."""

    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    metrics = models.JSONField(default=dict)
    message = models.TextField(blank=True)

    class Meta:
        abstract = True
        ordering = ["-started_at"]

    @classmethod
    def close_interrupted(cls) -> int:
        """Mark attempts still *running* as failed: call it holding the attempt's advisory lock, when no
        other attempt can be running, so these are the ones a killed or restarted worker left behind."""
        closed = cls.objects.filter(outcome=cls.Outcome.RUNNING).update(
            outcome=cls.Outcome.FAILED,
            finished_at=timezone.now(),
            message="interrupted: the worker stopped before it finished",
        )
        if closed:
            logger.warning("%s: closed %d attempt(s) left running by a stopped worker.", cls.__name__, closed)
        return closed

    def finish(self, outcome: str, message: str, metrics: dict | None = None):
        """Record how it ended (and its metrics, when given); logged too."""
        self.outcome, self.message, self.finished_at = outcome, message, timezone.now()
        if metrics is not None:
            self.metrics = metrics
        self.save()
        logger.info("%s: %s", self, message)
        return self


class TrainingRun(Attempt):
    """One attempt of the scheduled retraining."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "running"
        PROMOTED = "promoted", "trained and promoted"
        KEPT = "kept", "trained, not better: current ranker kept"
        SKIPPED = "skipped", "skipped (not enough new feedback)"
        FAILED = "failed", "failed"

    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    ranker = models.ForeignKey(RankerVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")

    def __str__(self) -> str:
        return f"training run {self.pk}: {self.outcome}"


class ArmConfig(models.Model):
    """How search serves: which ranker (if any), how deep it reranks, which encoder, which result cut.

    Empty fields mean "as production does": the active ranker, ``LOUPE_RERANK_DEPTH``, the serving
    encoder, ``LOUPE_MIN_SCORE`` / ``LOUPE_MAX_RELATIVE_DROP``, ``LOUPE_FEEDBACK_CHANNEL``. A request's own
    thresholds still win.
    """

    use_reranker = models.BooleanField(default=True, help_text="Off: serve the first-stage (embedding/fusion) order.")
    ranker = models.ForeignKey(
        RankerVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="A specific ranker version; empty: the active one.",
    )
    rerank_depth = models.PositiveIntegerField(
        null=True, blank=True, help_text="Candidates reranked (the candidate count); empty: LOUPE_RERANK_DEPTH."
    )
    encoder_version = models.ForeignKey(
        "searchapp.EncoderVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Encoder version whose embeddings serve; empty: the serving encoder.",
    )
    min_score = models.FloatField(null=True, blank=True, help_text="Fixed score threshold; empty: LOUPE_MIN_SCORE.")
    max_relative_drop = models.FloatField(
        null=True, blank=True, help_text="Dynamic threshold (drop from the best score); empty: the setting."
    )

    feedback_channel = models.BooleanField(
        null=True,
        blank=True,
        help_text="The feedback retrieval channel (images chosen for this or nearby queries); empty: the setting.",
    )
    personalise = models.BooleanField(
        null=True,
        blank=True,
        help_text="Per-user reranker features (ranking.personal); off: the shared order; empty: LOUPE_PERSONALISE. "
        "A deployment with LOUPE_PERSONALISE off personalises no arm.",
    )

    CONFIG_FIELDS = (
        "use_reranker",
        "ranker",
        "rerank_depth",
        "encoder_version",
        "min_score",
        "max_relative_drop",
        "feedback_channel",
        "personalise",
    )

    class Meta:
        abstract = True

    def config_values(self, **changes) -> dict:
        """The configuration fields as keyword arguments for another ArmConfig, with ``changes`` applied."""
        return {**{name: getattr(self, name) for name in self.CONFIG_FIELDS}, **changes}

    def describe(self) -> str:
        if not self.use_reranker:
            ranking = "first-stage order"
        else:
            ranking = self.ranker.label if self.ranker_id else "active ranker"
        parts = [ranking]
        if self.rerank_depth:
            parts.append(f"top {self.rerank_depth}")
        if self.encoder_version_id:
            parts.append(f"encoder v{self.encoder_version_id}")
        if self.min_score is not None:
            parts.append(f"min score {self.min_score}")
        if self.max_relative_drop is not None:
            parts.append(f"max drop {self.max_relative_drop}")
        if self.feedback_channel is not None:
            parts.append(f"feedback channel {'on' if self.feedback_channel else 'off'}")
        if self.personalise is not None:
            parts.append("personalised" if self.personalise else "shared order")
        return ", ".join(parts)

    def clean(self) -> None:
        if self.rerank_depth is not None and not 1 <= self.rerank_depth <= 1000:
            raise ValidationError({"rerank_depth": "Between 1 and 1000."})
        if self.min_score is not None and not -1 <= self.min_score <= 1:
            raise ValidationError({"min_score": "Between -1 and 1."})
        if self.max_relative_drop is not None and not 0 <= self.max_relative_drop < 1:
            raise ValidationError({"max_relative_drop": "At least 0 and below 1."})
        if self.ranker_id and not self.use_reranker:
            raise ValidationError({"ranker": "A ranker is named but reranking is off."})


class ServingConfig(ArmConfig):
    """Production's configuration, one row per change (the newest serves): the audit trail of promotions."""

    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=300, blank=True, help_text="Where it came from, e.g. an experiment's arm.")

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"production config #{self.pk}: {self.describe()}"


class Experiment(models.Model):
    """An A/B test (users split between arms) or an interleaving test (two rankers in every list)."""

    class Status(models.TextChoices):
        DRAFT = "draft", "draft"
        RUNNING = "running", "running"
        STOPPED = "stopped", "stopped"

    class Mode(models.TextChoices):
        AB = "ab", "A/B: each user sees one arm"
        INTERLEAVE = "interleave", "team-draft interleaving of two rankers"

    class Surface(models.TextChoices):
        ALL = "all", "all surfaces"
        WEB = "web", "web pages"
        API = "api", "partner API"
        SIM = "sim", "simulated users"

    class Metric(models.TextChoices):
        CTR = "ctr", "click-through rate (searches with a click)"
        CLICKS = "clicks_per_search", "clicks per search"
        RR = "reciprocal_rank", "reciprocal rank of the first click"
        ABANDONMENT = "abandonment", "abandonment (searches without a click)"
        RATING = "mean_rating", "mean rating"
        TIME = "time_to_first_click", "seconds to the first click"

    class Statistics(models.TextChoices):
        SEQUENTIAL = "sequential", "always valid (mSPRT): safe to read at any time"
        FIXED = "fixed", "fixed horizon: valid only when read once, at a sample size planned in advance"

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.AB)
    surface = models.CharField(max_length=8, choices=Surface.choices, default=Surface.ALL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    salt = models.CharField(max_length=64, blank=True, help_text="Hashed with the user key; set when created.")
    traffic_share = models.FloatField(
        default=1.0, help_text="Share of users in the experiment (0-1); others: production."
    )
    primary_metric = models.CharField(max_length=32, choices=Metric.choices, default=Metric.CTR)
    min_users_per_arm = models.PositiveIntegerField(default=200, help_text="No winner is suggested before this.")
    statistics = models.CharField(max_length=16, choices=Statistics.choices, default=Statistics.SEQUENTIAL)
    expected_effect = models.FloatField(
        default=0.1, help_text="Relative effect the sequential test is tuned for (0.1 = 10%); see docs/experiments.md."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["surface"], condition=models.Q(status="running"), name="one_running_experiment_per_surface"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        if not self.salt:
            self.salt = secrets.token_hex(16)
        super().save(*args, **kwargs)


class Variant(ArmConfig):
    """One arm of an experiment: a name, a traffic weight and a configuration."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    name = models.SlugField(max_length=40, help_text="Short name stored on every search event of the arm.")
    weight = models.PositiveIntegerField(default=1, help_text="Relative share of the experiment's users.")
    is_control = models.BooleanField(default=False, help_text="The arm the others are compared with.")

    class Meta:
        ordering = ["experiment", "-is_control", "pk"]
        constraints = [models.UniqueConstraint(fields=["experiment", "name"], name="unique_variant_name")]

    def __str__(self) -> str:
        return f"{self.experiment.name} / {self.name}"

    def clean(self) -> None:
        super().clean()
        if self.weight is not None and self.weight < 1:
            raise ValidationError({"weight": "At least 1: an arm of weight 0 gets no users."})


class ExperimentAudit(models.Model):
    """Who started, stopped or promoted what, and when."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="audit")
    action = models.CharField(max_length=32)
    user = models.CharField(max_length=150, blank=True)
    details = models.JSONField(default=dict)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.user or 'system'}: {self.action} {self.experiment}"


class FineTuneRun(Attempt):
    """One encoder fine-tuning attempt from feedback: settings, progress, metrics, the gate's decision."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "running"
        PROMOTED = "ready", "passed the gate: new encoder version embedded and ready"
        REFUSED = "refused", "refused by the gate"
        SKIPPED = "skipped", "skipped (not enough pairs)"
        FAILED = "failed", "failed"

    base = models.ForeignKey("searchapp.EncoderVersion", on_delete=models.PROTECT, related_name="finetune_runs")
    result = models.ForeignKey(
        "searchapp.EncoderVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    settings = models.JSONField(default=dict, help_text="Learning rate, epochs, what was trained, margins.")
    stage = models.CharField(max_length=64, blank=True, help_text="What it is doing now.")
    progress = models.FloatField(default=0.0, help_text="0-1 within the stage.")

    def __str__(self) -> str:
        return f"fine-tune run {self.pk}: {self.outcome}"


class IndexRecall(models.Model):
    """One daily measurement of the recall an encoder version's HNSW index serves (``ranking.index_recall``).

    recall@k of the index's answer (at the served ``hnsw.ef_search``) against an exact scan, averaged over
    a sample of the day's served queries, topped up with stored image vectors ("more like this").
    """

    encoder_version = models.ForeignKey("searchapp.EncoderVersion", on_delete=models.CASCADE, related_name="+")
    measured_at = models.DateTimeField(auto_now_add=True, db_index=True)
    k = models.PositiveSmallIntegerField()
    ef_search = models.PositiveIntegerField(help_text="hnsw.ef_search the index answered with (the served setting).")
    recall = models.FloatField(help_text="Mean over the sample of |index top k ∩ exact top k| / |exact top k|.")
    served_queries = models.PositiveIntegerField(help_text="Distinct served text queries replayed.")
    stored_queries = models.PositiveIntegerField(help_text="Stored image vectors used as queries (top-up).")
    threshold = models.FloatField(help_text="LOUPE_MIN_INDEX_RECALL when measured.")
    seconds = models.FloatField(help_text="Time the measurement took.")

    class Meta:
        ordering = ["-measured_at"]

    def __str__(self) -> str:
        return f"v{self.encoder_version_id} recall@{self.k} {self.recall:.3f} at {self.measured_at:%Y-%m-%d %H:%M}"

    @property
    def below_threshold(self) -> bool:
        return self.recall < self.threshold
