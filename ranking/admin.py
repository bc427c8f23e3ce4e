"""Admin: ranker versions (promote, roll back) and the training runs behind them."""

from __future__ import annotations

from django.contrib import admin, messages

from ranking.models import RankerVersion, TrainingRun
from ranking.registry import promote, rollback


def _ndcg(metrics: dict, key: str) -> str:
    value = (metrics.get(key) or {}).get("ndcg@10")
    return "–" if value is None else f"{value:.4f}"


@admin.register(RankerVersion)
class RankerVersionAdmin(admin.ModelAdmin):
    list_display = ["label", "status", "candidate_ndcg", "serving_ndcg", "train_searches", "validation_searches",
                    "trained_until", "promoted_at"]  # fmt: skip
    list_filter = ["status"]
    readonly_fields = [f.name for f in RankerVersion._meta.fields]
    actions = ["promote_selected", "roll_back"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="validation nDCG@10")
    def candidate_ndcg(self, version: RankerVersion) -> str:
        return _ndcg(version.metrics, "candidate")

    @admin.display(description="serving order's nDCG@10")
    def serving_ndcg(self, version: RankerVersion) -> str:
        return f"{_ndcg(version.metrics, 'serving')} ({version.metrics.get('serving_name', '')})"

    @admin.action(description="Promote the selected ranker (one only) to serve now")
    def promote_selected(self, request, queryset) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one ranker to promote.", messages.ERROR)
            return
        version = promote(queryset.get())
        self.message_user(request, f"{version.label} is now serving.")

    @admin.action(description="Roll back to the previously active ranker (selection ignored)")
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
