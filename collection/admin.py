"""Admin for the collection: images with their captions and thumbnails.

Encoder versions are administered in ``searchapp.admin``: their actions start fine-tunes and
experiments, which live in the layers above this one.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from collection.models import Caption, EmbedRun, FusionSetting, Image, IngestJob, IngestJobItem, RemovedImage
from collection.takedown import remove_images
from core.links import InvalidLink, checked_http_url


class CaptionInline(admin.TabularInline):
    model = Caption
    extra = 0
    fields = ["position", "text"]


class ImageForm(forms.ModelForm):
    """The attribution is a link on the image page: the same http(s)-only rule as ingestion.

    No Meta: ImageAdmin's fields (and model) are filled in by the admin's form factory.
    """

    def clean_attribution(self) -> str:
        try:
            return checked_http_url(self.cleaned_data["attribution"].strip(), field="attribution")
        except InvalidLink as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.action(description="Take down selected images", permissions=["delete"])
def take_down(modeladmin, request, queryset) -> None:
    """Every trace of the selected images, as ``DELETE /api/v1/images/<id>`` does (``collection.takedown``)."""
    done = remove_images(queryset.values_list("pk", flat=True), requested_by=f"admin {request.user.get_username()}")
    modeladmin.message_user(
        request,
        f"Took down {len(done.removed)} image(s) in {done.batches} batch(es); their feedback is kept detached.",
        messages.SUCCESS,
    )


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    form = ImageForm
    actions = [take_down]
    list_display = ["id", "preview", "first_caption", "tag_list", "width", "height", "licence", "created_at"]
    search_fields = ["captions__text", "sha256", "source"]
    list_filter = ["format", "created_at"]
    readonly_fields = ["preview", "sha256", "file", "thumbnail", "width", "height", "format", "byte_size", "created_at"]
    inlines = [CaptionInline]

    @admin.display(description="image")
    def preview(self, image: Image) -> str:
        return format_html('<img src="{}" alt="" class="loupe-thumb loupe-thumb-large">', image.thumbnail.url)

    @admin.display(description="caption")
    def first_caption(self, image: Image) -> str:
        return image.caption[:80]

    @admin.display(description="tags")
    def tag_list(self, image: Image) -> str:
        return ", ".join(image.tags[:6])

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("captions")

    def get_actions(self, request):
        # Django's own delete would leave the files, the fence and the other processes' caches behind.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def delete_model(self, request, obj: Image) -> None:
        """The change page's Delete button: a takedown too."""
        remove_images([obj.pk], requested_by=f"admin {request.user.get_username()}")

    def delete_queryset(self, request, queryset) -> None:
        remove_images(queryset.values_list("pk", flat=True), requested_by=f"admin {request.user.get_username()}")


@admin.register(RemovedImage)
class RemovedImageAdmin(admin.ModelAdmin):
    """The record of takedowns (read-only: each row fences its image off every training set)."""

    list_display = ["image_id", "sha256", "requested_by", "removed_at"]
    search_fields = ["=image_id", "=sha256", "requested_by"]
    list_filter = ["removed_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(FusionSetting)
class FusionSettingAdmin(admin.ModelAdmin):
    """Fitted fusions, newest first; read-only: a fit is made by ``manage.py evaluate --calibrate``, which
    records how it was fitted, and deleting a row falls back to the one before (or to RRF)."""

    list_display = ["created_at", "encoder_version", "method", "clip_weight", "fts_weight", "caption_weight"]
    list_filter = ["method"]
    readonly_fields = [f.name for f in FusionSetting._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the workers write: shown for progress, never edited by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(IngestJob)
class IngestJobAdmin(ReadOnlyAdmin):
    """Bulk ingest jobs with their progress; the per-item results are under "Ingest job items"."""

    list_display = ["id", "created_at", "status", "requested_by", "progress", "finished_at"]
    list_filter = ["status"]
    readonly_fields = ["status", "requested_by", "chunk_size", "created_at", "finished_at", "progress"]

    @admin.display(description="stored / duplicate / refused / pending")
    def progress(self, job: IngestJob) -> str:
        counts = job.counts()
        return " / ".join(str(counts[o]) for o in ("stored", "duplicate", "refused", "pending"))


@admin.register(IngestJobItem)
class IngestJobItemAdmin(ReadOnlyAdmin):
    list_display = ["job", "position", "path", "url", "outcome", "reason", "image"]
    list_filter = ["outcome"]
    list_select_related = ["job"]
    search_fields = ["path", "url", "external_id", "reason"]
    readonly_fields = [f.name for f in IngestJobItem._meta.fields]


@admin.register(EmbedRun)
class EmbedRunAdmin(ReadOnlyAdmin):
    """Embedding fanned out over the workers: chunks done out of all, per run."""

    list_display = ["id", "created_at", "encoder_version", "started_by", "chunks_done"]
    readonly_fields = ["encoder_version", "recompute", "started_by", "created_at", "chunks_done"]

    @admin.display(description="chunks done")
    def chunks_done(self, run: EmbedRun) -> str:
        done, total = run.progress()
        return f"{done} of {total}"
