"""Admin for the collection: images with their captions and thumbnails, and encoder versions."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count
from django.utils.html import format_html

from searchapp.models import Caption, EncoderVersion, Image


class CaptionInline(admin.TabularInline):
    model = Caption
    extra = 0
    fields = ["position", "text"]


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["id", "preview", "first_caption", "tag_list", "width", "height", "licence", "created_at"]
    search_fields = ["captions__text", "sha256", "source"]
    list_filter = ["format", "created_at"]
    readonly_fields = ["preview", "sha256", "file", "thumbnail", "width", "height", "format", "byte_size", "created_at"]
    inlines = [CaptionInline]

    @admin.display(description="image")
    def preview(self, image: Image) -> str:
        return format_html('<img src="{}" alt="" style="height:60px;border-radius:4px">', image.thumbnail.url)

    @admin.display(description="caption")
    def first_caption(self, image: Image) -> str:
        return image.caption[:80]

    @admin.display(description="tags")
    def tag_list(self, image: Image) -> str:
        return ", ".join(image.tags[:6])

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("captions")


@admin.register(EncoderVersion)
class EncoderVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "model_ref", "dimension", "is_demo", "status", "embedded_images", "created_at"]
    list_filter = ["status", "is_demo"]
    readonly_fields = ["fingerprint", "created_at"]

    @admin.display(description="embedded images")
    def embedded_images(self, version: EncoderVersion) -> int:
        return version.embedded_images

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(embedded_images=Count("image_embeddings"))
