"""What configuration serves a search: production's, or the arm of the experiment the user is in.

Production's configuration is the newest ``ServingConfig`` row (none: the settings and the active
ranker). An A/B arm's non-empty fields override it. An interleaving experiment serves both of its
arms' rankers in one list (``ranking.experiments.interleaving``).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from core.reloaded import Reloaded
from feedback.identity import Viewer
from ranking.experiments.assignment import Assignment, assign, running_experiments
from ranking.models import ArmConfig, ServingConfig
from ranking.registry import ServingRanker, active_ranker, ranker_versions


@dataclass(frozen=True)
class Team:
    """One side of an interleaved list: the arm's name and its ranker (None: the first-stage order)."""

    name: str
    ranker: ServingRanker | None


@dataclass(frozen=True)
class ServingPlan:
    experiment_id: int | None = None
    arm: str = ""
    salt: str = ""
    use_reranker: bool = True
    ranker: ServingRanker | None = None
    rerank_depth: int = 100
    encoder_version_id: int | None = None
    min_score: float | None = None
    max_relative_drop: float | None = None
    feedback_channel: bool | None = None  # None: LOUPE_FEEDBACK_CHANNEL
    personalise: bool | None = None  # None: LOUPE_PERSONALISE; False: the shared order (an A/B's shared arm)
    teams: tuple[Team, Team] | None = None  # interleaving

    @property
    def label(self) -> str:
        return self.ranker.version.label if self.ranker is not None else "embedding"


def _newest_config() -> ServingConfig | None:
    """Production's configuration: the newest ServingConfig row (none: the settings and the active ranker)."""
    return ServingConfig.objects.select_related("ranker", "encoder_version").first()


production_config = Reloaded(_newest_config)


def _ranker(*configs: ArmConfig | None) -> ServingRanker | None:
    """The first ranker version named by the configs (arm first), else the active ranker."""
    for config in configs:
        if config is not None and config.ranker_id:
            return ranker_versions.get(config.ranker)
    return active_ranker.get()


def _merged(base: ArmConfig | None, arm: ArmConfig | None, field: str):
    """The arm's value when it sets one, else production's, else None (the setting applies)."""
    for config in (arm, base):
        if config is not None and getattr(config, field) is not None:
            return getattr(config, field)
    return None


def plan_search(viewer: Viewer | None, *, rerank_allowed: bool) -> ServingPlan:
    """The configuration for one search; ``rerank_allowed`` is False for image searches (no query to rank for)."""
    base = production_config.get()
    assignment: Assignment | None = assign(viewer.user_key, viewer.surface) if viewer is not None else None
    arm = assignment.variant if assignment is not None else None
    chosen = arm if arm is not None else base  # a boolean has no "empty": the arm's own switch counts
    use_reranker = settings.LOUPE_RERANK and rerank_allowed and (chosen is None or chosen.use_reranker)
    ranker = _ranker(arm, base) if use_reranker else None
    teams = None
    if assignment is not None and assignment.variant is None and rerank_allowed:
        first, second = assignment.variants
        teams = tuple(
            Team(v.name, _ranker(v) if v.use_reranker and settings.LOUPE_RERANK else None) for v in (first, second)
        )
    return ServingPlan(
        experiment_id=assignment.experiment.pk if assignment else None,
        arm=assignment.arm if assignment else "",
        salt=assignment.experiment.salt if assignment else "",
        use_reranker=use_reranker,
        ranker=ranker,
        rerank_depth=_merged(base, arm, "rerank_depth") or settings.LOUPE_RERANK_DEPTH,
        encoder_version_id=_merged(base, arm, "encoder_version_id"),
        min_score=_merged(base, arm, "min_score"),
        max_relative_drop=_merged(base, arm, "max_relative_drop"),
        feedback_channel=_merged(base, arm, "feedback_channel"),
        personalise=_merged(base, arm, "personalise"),
        teams=teams,
    )


def forget_cached_configs() -> None:
    """Tests and admin actions: re-read experiments and production's configuration on the next search."""

    production_config.forget()
    running_experiments.forget()
