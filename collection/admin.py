"""Admin for the collection: images with their captions and thumbnails.

Encoder versions are administered in ``searchapp.admin``: their actions start fine-tunes and
experiments, which live in the layers above this one.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from collection.image_changes import text_edited
from collection.metadata import (
    InvalidMetadata,
    declare_field,
    declared_fields,
    validate_metadata,
    values_not_fitting,
)
from collection.metadata_filter import InvalidFilter, mentions_fields, parse_filter_tokens
from collection.models import (
    Caption,
    EmbedRun,
    FusionSetting,
    Image,
    IngestJob,
    IngestJobItem,
    MetadataField,
    NearDuplicate,
    RemovedImage,
)
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

    def clean_metadata(self) -> dict:
        """The same schema check as ingest and the API: filters trust what is stored."""
        try:
            return validate_metadata(self.cleaned_data.get("metadata"))
        except InvalidMetadata as exc:
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
    list_display = [
        "id",
        "preview",
        "first_caption",
        "tag_list",
        "metadata_summary",
        "catalogue",
        "external_id",
        "licence",
        "created_at",
    ]
    search_fields = ["captions__text", "sha256", "source", "external_id"]
    search_help_text = (
        "Caption text, hash, source or external id; metadata filters in the search page's syntax: "
        "author:smith  -licence:cc-by-nc  date>=2020-01-01  price:10..20"
    )
    list_filter = ["format", "catalogue", "created_at"]
    # The partner's id and catalogue are the partner's to set (by ingest); a blank admin field would store ""
    # where the unique index expects null.
    readonly_fields = [
        "preview",
        "sha256",
        "file",
        "thumbnail",
        "width",
        "height",
        "format",
        "byte_size",
        "catalogue",
        "external_id",
        "created_at",
    ]
    inlines = [CaptionInline]

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        text_edited(form.instance.pk)  # the search sees the edited captions and tags at once

    @admin.display(description="image")
    def preview(self, image: Image) -> str:
        return format_html('<img src="{}" alt="" class="loupe-thumb loupe-thumb-large">', image.thumbnail.url)

    @admin.display(description="caption")
    def first_caption(self, image: Image) -> str:
        return image.caption[:80]

    @admin.display(description="tags")
    def tag_list(self, image: Image) -> str:
        return ", ".join(image.tags[:6])

    @admin.display(description="metadata")
    def metadata_summary(self, image: Image) -> str:
        return ", ".join(f"{name}: {value}" for name, value in sorted(image.metadata.items())[:4])

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("captions")

    def get_search_results(self, request, queryset, search_term):
        """Metadata filters (``author:smith``, ``date>=2020``) select through the same SQL as search; the
        rest of the box searches captions, hash and source as before."""
        if not mentions_fields(search_term):
            return super().get_search_results(request, queryset, search_term)
        try:
            rest, metadata = parse_filter_tokens(search_term, declared_fields())
        except InvalidFilter as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return queryset.none(), False
        if metadata:
            condition, params = metadata.sql(Image._meta.db_table)
            queryset = queryset.extra(where=[condition], params=params)
        return super().get_search_results(request, queryset, rest)

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


class MetadataFieldForm(forms.ModelForm):
    class Meta:
        model = MetadataField
        fields = ["name", "kind", "description"]

    def clean(self):
        """A kind change that would leave stored values of another kind is refused, naming some of them."""
        cleaned = super().clean()
        name, kind = cleaned.get("name") or self.instance.name, cleaned.get("kind")
        if self.instance.pk and kind and kind != self.instance.kind:
            bad, examples = values_not_fitting(name, kind)
            if bad:
                raise forms.ValidationError(
                    f"{bad} stored images have a {name} value that is not a {kind} (e.g. {'; '.join(examples)}): "
                    f"correct them first, or declare a new field."
                )
        return cleaned


@admin.register(MetadataField)
class MetadataFieldAdmin(admin.ModelAdmin):
    """The declared metadata schema: what ingest and updates accept, and what search can filter and sort on."""

    form = MetadataFieldForm
    list_display = ["name", "kind", "description", "images_with_it"]
    list_filter = ["kind"]

    def get_readonly_fields(self, request, obj=None):
        # Renaming would leave every stored value under the old name, unfilterable and unvalidated.
        return ["name"] if obj is not None else []

    @admin.display(description="images with a value")
    def images_with_it(self, field: MetadataField) -> int:
        return Image.objects.filter(metadata__has_key=field.name).count()

    def save_model(self, request, obj, form, change) -> None:
        # declare_field also creates the B-tree a number or date field's range filters read.
        obj.pk = declare_field(obj.name, obj.kind, obj.description).pk

    def has_delete_permission(self, request, obj=None) -> bool:
        # A field images still carry stays declared: undeclared values would make those images' next update
        # fail validation, and filters on them would silently stop working.
        if obj is not None and Image.objects.filter(metadata__has_key=obj.name).exists():
            return False
        return super().has_delete_permission(request, obj)


@admin.register(NearDuplicate)
class NearDuplicateAdmin(ReadOnlyAdmin):
    """The near-duplicate report: each grouped image beside its group's first image, group by group.

    Found by the hourly scan (``manage.py near_duplicates`` runs it at once); search shows one image per
    group unless the search or the deployment turns collapsing off."""

    list_display = ["group", "group_preview", "image_id", "preview", "similarity", "encoder_version"]
    list_filter = ["encoder_version"]
    search_fields = ["=group", "=image__id"]
    list_select_related = ["image"]
    readonly_fields = ["image", "encoder_version", "group", "similarity", "found_at"]

    @admin.display(description="group's first image")
    def group_preview(self, row: NearDuplicate) -> str:
        first = Image.objects.filter(pk=row.group).only("thumbnail").first()
        return format_html('<img src="{}" alt="" class="loupe-thumb">', first.thumbnail.url) if first else "removed"

    @admin.display(description="image")
    def preview(self, row: NearDuplicate) -> str:
        return format_html('<img src="{}" alt="" class="loupe-thumb">', row.image.thumbnail.url)
