"""Admin: ranker versions (promote, roll back), training runs, experiments with their results, production config."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path

from ranking.experiments.actions import ExperimentError, promote_arm, start, stop
from ranking.experiments.chart import timeline_svg
from ranking.experiments.results import METRICS, method_label, results
from ranking.experiments.serving import forget_cached_configs
from ranking.models import (
    Experiment,
    ExperimentAudit,
    FineTuneRun,
    IndexRecall,
    RankerVersion,
    ServingConfig,
    TrainingRun,
    Variant,
)
from ranking.registry import promote, rollback


def _gate(metrics: dict, key: str) -> str:
    value = (metrics.get("gate") or {}).get(key)
    return "–" if value is None else f"{value:.4f}"


@admin.register(RankerVersion)
class RankerVersionAdmin(admin.ModelAdmin):
    list_display = [
        "label",
        "status",
        "candidate_dcg",
        "serving_dcg",
        "gate_reason",
        "train_searches",
        "validation_searches",
        "trained_until",
        "promoted_at",
    ]
    list_filter = ["status"]
    readonly_fields = [f.name for f in RankerVersion._meta.fields]
    actions = ["promote_selected", "roll_back"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="validation DCG@10 (counterfactual)")
    def candidate_dcg(self, version: RankerVersion) -> str:
        return _gate(version.metrics, "candidate")

    @admin.display(description="serving order's DCG@10")
    def serving_dcg(self, version: RankerVersion) -> str:
        return f"{_gate(version.metrics, 'serving')} ({version.metrics.get('serving_name', '')})"

    @admin.display(description="gate")
    def gate_reason(self, version: RankerVersion) -> str:
        return (version.metrics.get("gate") or {}).get("reason", "–")

    @admin.action(description="Promote the selected ranker (one only) to serve now", permissions=["change"])
    def promote_selected(self, request, queryset) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one ranker to promote.", messages.ERROR)
            return
        version = promote(queryset.get())
        self.message_user(request, f"{version.label} is now serving.")

    @admin.action(description="Roll back to the previously active ranker (selection ignored)", permissions=["change"])
    def roll_back(self, request, queryset) -> None:
        version = rollback()
        self.message_user(request, f"{version.label} is serving again." if version else "No ranker: first-stage order.")


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["started_at", "outcome", "ranker", "message", "finished_at"]
    list_filter = ["outcome"]
    readonly_fields = [f.name for f in TrainingRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


class VariantInline(admin.StackedInline):
    model = Variant
    extra = 0
    fields = [
        "name",
        "weight",
        "is_control",
        "use_reranker",
        "ranker",
        "rerank_depth",
        "encoder_version",
        "min_score",
        "max_relative_drop",
        "feedback_channel",
        "personalise",
    ]

    def _frozen(self, obj) -> bool:
        return obj is not None and obj.status != Experiment.Status.DRAFT  # arms cannot change once users see them

    def get_readonly_fields(self, request, obj=None):
        return self.fields if self._frozen(obj) else []

    def has_add_permission(self, request, obj=None) -> bool:
        return not self._frozen(obj) and super().has_add_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return not self._frozen(obj) and super().has_delete_permission(request, obj)


class AuditInline(admin.TabularInline):
    model = ExperimentAudit
    extra = 0
    fields = readonly_fields = ["at", "action", "user", "details"]
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


METRIC_LABELS = dict(Experiment.Metric.choices)


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["name", "mode", "surface", "status", "primary_metric", "traffic_share", "started_at", "stopped_at"]
    list_filter = ["status", "mode", "surface"]
    search_fields = ["name", "description"]
    inlines = [VariantInline, AuditInline]
    change_form_template = "admin/ranking/experiment/change_form.html"

    def get_readonly_fields(self, request, obj=None):
        fixed = ["status", "salt", "started_at", "stopped_at"]
        if obj is not None and obj.status != Experiment.Status.DRAFT:
            return fixed + ["mode", "surface", "traffic_share", "statistics", "expected_effect"]
        return fixed

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/start/", view(self.start_view), name="ranking_experiment_start"),
            path("<int:pk>/stop/", view(self.stop_view), name="ranking_experiment_stop"),
            path("<int:pk>/promote/<int:variant_pk>/", view(self.promote_view), name="ranking_experiment_promote"),
        ] + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        experiment = Experiment.objects.filter(pk=object_id).first()
        extra_context = {**(extra_context or {}), **(self._results_context(experiment) if experiment else {})}
        return super().change_view(request, object_id, form_url, extra_context)

    @staticmethod
    def _results_context(experiment: Experiment) -> dict:
        found = results(experiment)
        rows = []
        for arm in found.arms:
            cells = []
            for name in METRICS:
                estimate, versus = arm.metrics.get(name), arm.comparisons.get(name)
                cell = {"value": _fmt(estimate.value) if estimate else "–"}
                if versus is not None:
                    cell.update(
                        diff=f"{_fmt(versus.difference, signed=True)} ({_pct(versus.relative)})",
                        ci=f"[{_fmt(versus.low, signed=True)}, {_fmt(versus.high, signed=True)}]",
                        p=_fmt(versus.p_value),
                        q=_fmt(arm.q_values.get(name)) if name in arm.q_values else "",
                    )
                cells.append(cell)
            rows.append(
                {
                    "name": arm.variant.name,
                    "control": arm.variant.is_control,
                    "config": arm.variant.describe(),
                    "users": arm.users,
                    "searches": arm.searches,
                    "cells": cells,
                    "detectable": _detectable(arm, experiment.primary_metric),
                }
            )
        context = {
            "results": found,
            "arm_rows": rows,
            "metric_labels": [(name, METRIC_LABELS[name]) for name in METRICS],
            "expected_users": [f"{v:.0f}" for v in found.sample_ratio.expected],
            "primary_label": METRIC_LABELS[experiment.primary_metric],
            "statistics_label": method_label(experiment),
            "chart": timeline_svg(found.timeline, METRIC_LABELS[experiment.primary_metric]),
        }
        return context

    def _confirm(self, request, experiment, *, title, question, confirm_label, details=()):
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "question": question,
            "confirm_label": confirm_label,
            "experiment": experiment,
            "details": list(details),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/ranking/experiment/confirm.html", context)

    def _act(self, request, experiment, action, success: str):
        try:
            action()
        except ExperimentError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, success)
        return redirect("admin:ranking_experiment_change", experiment.pk)

    def _get(self, request, pk: int) -> Experiment:
        if not self.has_change_permission(request):
            raise PermissionDenied
        return get_object_or_404(Experiment, pk=pk)

    def start_view(self, request, pk: int):
        experiment = self._get(request, pk)
        if request.method != "POST":
            return self._confirm(
                request,
                experiment,
                title=f"Start {experiment}?",
                confirm_label="Start",
                question="Users will be assigned to its arms from the next search.",
                details=[f"{v.name}: weight {v.weight}, {v.describe()}" for v in experiment.variants.all()],
            )
        return self._act(
            request, experiment, lambda: start(experiment, request.user.get_username()), f"{experiment} is running."
        )

    def stop_view(self, request, pk: int):
        experiment = self._get(request, pk)
        if request.method != "POST":
            return self._confirm(
                request,
                experiment,
                title=f"Stop {experiment}?",
                confirm_label="Stop",
                question="Every user goes back to production's configuration.",
            )
        return self._act(
            request, experiment, lambda: stop(experiment, request.user.get_username()), f"{experiment} is stopped."
        )

    def promote_view(self, request, pk: int, variant_pk: int):
        experiment = self._get(request, pk)
        variant = get_object_or_404(Variant, pk=variant_pk, experiment=experiment)
        verdict = results(experiment).verdict
        if request.method != "POST":
            return self._confirm(
                request,
                experiment,
                title=f"Promote {variant.name} to production?",
                confirm_label="Promote",
                question=f"Production will serve: {variant.describe()}.",
                details=[
                    f"Verdict: {verdict}",
                    "The experiment stops if it is running.",
                    "An audit record keeps who did this and why.",
                ],
            )
        return self._act(
            request,
            experiment,
            lambda: promote_arm(variant, request.user.get_username(), verdict),
            f"Production now serves {variant.name}'s configuration.",
        )


@admin.register(ServingConfig)
class ServingConfigAdmin(admin.ModelAdmin):
    """Production's configuration history (newest serves); rows come from promotions."""

    list_display = ["created_at", "__str__", "created_by", "source"]
    readonly_fields = ["created_at", "created_by", "source"]

    def save_model(self, request, obj, form, change) -> None:
        obj.created_by = obj.created_by or request.user.get_username()
        obj.source = obj.source or "set by hand in admin"
        super().save_model(request, obj, form, change)
        forget_cached_configs()


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None or value != value:  # NaN
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _detectable(arm, metric: str) -> str:
    """The arm's minimum detectable effect on ``metric``, absolute and relative to control ("" for control)."""
    if arm.variant.is_control:
        return ""
    versus = arm.comparisons.get(metric)
    base = versus.control if versus else float("nan")
    relative = arm.detectable / base if base and base == base else float("nan")
    return f"±{_fmt(arm.detectable)} ({'–' if relative != relative else f'{relative:.1%}'} of control)"


def _pct(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:+.1%}"


@admin.register(FineTuneRun)
class FineTuneRunAdmin(admin.ModelAdmin):
    """Encoder fine-tuning attempts: progress while running, then the gate's numbers."""

    list_display = [
        "started_at",
        "base",
        "outcome",
        "stage",
        "progress_percent",
        "trained",
        "pairs",
        "gate_clicks",
        "held_out",
        "reference",
        "result",
        "finished_at",
    ]
    list_filter = ["outcome"]
    readonly_fields = [f.name for f in FineTuneRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="progress")
    def progress_percent(self, run: FineTuneRun) -> str:
        return f"{run.progress:.0%}" if run.outcome == FineTuneRun.Outcome.RUNNING else "–"

    @admin.display(description="trained")
    def trained(self, run: FineTuneRun) -> str:
        layers = run.settings.get("layers", 0)
        return "projections" if not layers else f"last {layers} block(s) + projections"

    @admin.display(description="pairs (train / validation / test)")
    def pairs(self, run: FineTuneRun) -> str:
        found = run.metrics.get("pairs")
        return f"{found['train']} / {found.get('validation', 0)} / {found.get('test', 0)}" if found else "–"

    @admin.display(
        description="gate: estimated clicks per search on new pairs (test window, images both versions rank high)"
    )
    def gate_clicks(self, run: FineTuneRun) -> str:
        found = run.metrics.get("gate_estimate")
        if not found:
            return "–"
        return f"{_before_after(found)} ({found['searches']} searches, {found['propensity']} to {found['depth']})"

    @admin.display(description="chosen images' Recall@10 (test window; favours the logger, not gated on)")
    def held_out(self, run: FineTuneRun) -> str:
        return _before_after(run.metrics.get("held_out_recall@10"))

    @admin.display(description="reference Recall@10 (gate half)")
    def reference(self, run: FineTuneRun) -> str:
        return _before_after(run.metrics.get("reference_recall@10"))


def _before_after(values: dict | None) -> str:
    if not values:
        return "–"
    return f"{values['before']:.3f} → {values['after']:.3f}"


@admin.register(IndexRecall)
class IndexRecallAdmin(admin.ModelAdmin):
    """The daily index recall check per encoder version (ranking.index_recall): read-only, the worker writes it."""

    list_display = ["measured_at", "encoder_version", "recall_at_k", "alert", "ef_search", "served_queries"]
    list_display += ["stored_queries", "seconds"]
    list_filter = ["encoder_version"]
    readonly_fields = [f.name for f in IndexRecall._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="recall@k")
    def recall_at_k(self, row: IndexRecall) -> str:
        return f"{row.recall:.3f} @{row.k}"

    @admin.display(description="below threshold", boolean=True)
    def alert(self, row: IndexRecall) -> bool:
        return row.below_threshold
