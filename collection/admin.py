"""Admin for the collection: images with their captions and thumbnails.

Encoder versions are administered in ``searchapp.admin``: their actions start fine-tunes and
experiments, which live in the layers above this one.
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from collection.models import Caption, Image


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
