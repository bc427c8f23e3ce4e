"""Admin for encoder versions: their actions start fine-tunes, A/B tests and promotions (ranking, workers)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count
from django.shortcuts import redirect

from collection.models import EncoderVersion
from ranking.finetune.versions import (
    VersionError,
    ab_test_against_production,
    disk_use,
    promote_encoder,
    retire_encoder,
)
from searchapp.admin_login import LockoutAuthenticationForm
from workers.tasks import finetune_encoder

# The admin's sign-in locks a (address, username) pair out after repeated failures (issue 19, item 7).
admin.site.login_form = LockoutAuthenticationForm


@admin.register(EncoderVersion)
class EncoderVersionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "parent",
        "status",
        "dimension",
        "is_demo",
        "embedded_images",
        "disk",
        "last_fine_tune",
        "created_at",
    ]
    list_filter = ["status", "is_demo", "kind"]
    readonly_fields = ["fingerprint", "parent", "created_at"]
    actions = ["fine_tune_now", "start_ab_test", "promote_to_production", "retire"]

    @admin.display(description="embedded images")
    def embedded_images(self, version: EncoderVersion) -> int:
        return version.embedded_images

    @admin.display(description="disk use")
    def disk(self, version: EncoderVersion) -> str:
        return f"{disk_use(version, version.embedded_images) / 1e6:.1f} MB"

    @admin.display(description="last fine-tune from it")
    def last_fine_tune(self, version: EncoderVersion) -> str:
        run = version.finetune_runs.order_by("-started_at").first()
        if run is None:
            return "–"
        where = f"{run.stage} {run.progress:.0%}" if run.outcome == "running" else run.message[:120]
        return f"{run.get_outcome_display()}: {where}"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(embedded_images=Count("image_embeddings"))

    def _one(self, request, queryset) -> EncoderVersion | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one encoder version.", messages.ERROR)
            return None
        return queryset.get()

    @admin.action(description="Fine-tune from feedback now (on the training queue)", permissions=["change"])
    def fine_tune_now(self, request, queryset) -> None:
        version = self._one(request, queryset)
        if version is not None:
            finetune_encoder.delay(version.pk)
            self.message_user(request, f"Fine-tuning from {version} is queued; follow it under Fine-tune runs.")

    @admin.action(
        description="Start an A/B test against production (creates a draft experiment)", permissions=["change"]
    )
    def start_ab_test(self, request, queryset):
        version = self._one(request, queryset)
        if version is None:
            return None
        try:
            experiment = ab_test_against_production(version, request.user.get_username())
        except VersionError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None
        self.message_user(request, "Draft experiment created; review its arms and start it.")
        return redirect("admin:ranking_experiment_change", experiment.pk)

    @admin.action(description="Serve the selected version in production", permissions=["change"])
    def promote_to_production(self, request, queryset) -> None:
        version = self._one(request, queryset)
        if version is None:
            return
        try:
            promote_encoder(version, request.user.get_username())
        except VersionError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"Production now serves {version}.")

    @admin.action(description="Retire the selected versions", permissions=["change"])
    def retire(self, request, queryset) -> None:
        for version in queryset:
            try:
                retire_encoder(version)
                self.message_user(request, f"{version} retired.")
            except VersionError as exc:
                self.message_user(request, str(exc), messages.ERROR)
