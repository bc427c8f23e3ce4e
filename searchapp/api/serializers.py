"""API shapes: what a search accepts and what an image looks like."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from collection.image_changes import ImageChanges
from collection.models import Image
from core.links import http_url
from feedback.api_keys import catalogue_of
from feedback.identity import PARTNER_USER
from searchapp.api.representation import search_meta, shown_external_id


class SearchParamsSerializer(serializers.Serializer):
    """Shared knobs of every search."""

    tags = serializers.CharField(required=False, allow_blank=True, help_text="Comma-separated tags; all must match.")
    filter = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=1000,
        help_text='Metadata filters in the query syntax: author:smith,jones date>=2020-01-01 -licence:"cc by-nc" '
        "price:10..20. Each declared field is also a parameter: FIELD=v (repeat for any of several), FIELD_not=v, "
        "FIELD_from= / FIELD_to= (inclusive, dates and numbers); date_from / date_to bound the date field.",
    )
    date_from = serializers.CharField(
        required=False, allow_blank=True, max_length=40, help_text="Earliest date (YYYY, YYYY-MM or YYYY-MM-DD)."
    )
    date_to = serializers.CharField(
        required=False, allow_blank=True, max_length=40, help_text="Latest date, inclusive (YYYY, YYYY-MM, YYYY-MM-DD)."
    )
    sort = serializers.ChoiceField(
        choices=["relevance", "date"],
        required=False,
        default="relevance",
        help_text="relevance, or date: the results that pass the relevance cut, newest first.",
    )
    collapse = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="One image per group of near-duplicates (the best-ranked); default: the deployment's setting "
        "(LOUPE_COLLAPSE_NEAR_DUPLICATES, on).",
    )
    page = serializers.IntegerField(required=False, min_value=1, default=1)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=settings.LOUPE_MAX_PAGE_SIZE)
    min_score = serializers.FloatField(required=False, min_value=-1.0, max_value=1.0)
    max_drop = serializers.FloatField(
        required=False, min_value=0.0, max_value=0.999, help_text="Dynamic cut: largest allowed relative score drop."
    )
    user = serializers.RegexField(
        PARTNER_USER,
        required=False,
        help_text="Partner apps: your end user's id (1-128 of letters, digits, . @ : + - _), so feedback, "
        "caps and experiments apply per user. Ignored without an API key.",
    )
    session = serializers.RegexField(r"^[\w.:-]{1,64}$", required=False, help_text="Your end user's session id.")


class TextSearchSerializer(SearchParamsSerializer):
    q = serializers.CharField(
        max_length=settings.LOUPE_MAX_QUERY_CHARS,
        trim_whitespace=True,
        help_text='Text query; may hold tag filters: tag:dog beach, tag:"hot dog".',
    )
    personalise = serializers.BooleanField(
        required=False,
        default=True,
        help_text="false: the shared order, not reranked by this user's own past clicks and ratings. Only where the "
        "deployment personalises at all (LOUPE_PERSONALISE, off by default).",
    )


class ImageSearchSerializer(SearchParamsSerializer):
    image = serializers.FileField(required=False, help_text="An example image to search with (multipart).")
    image_id = serializers.IntegerField(required=False, min_value=1, help_text="Search for images like this one.")

    def validate(self, attrs):
        if ("image" in attrs) == ("image_id" in attrs):
            raise serializers.ValidationError({"image": "Give exactly one of 'image' (upload) and 'image_id'."})
        return attrs


class ImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()
    captions = serializers.SerializerMethodField()
    attribution = serializers.SerializerMethodField(help_text="The image's source: an http(s) URL, or empty.")
    external_id = serializers.SerializerMethodField(
        help_text="Your own id for the image when it is in your catalogue (the key's), else null."
    )

    class Meta:
        model = Image
        fields = [
            "id",
            "external_id",
            "url",
            "thumbnail_url",
            "page_url",
            "width",
            "height",
            "format",
            "byte_size",
            "captions",
            "tags",
            "licence",
            "attribution",
            "metadata",
            "created_at",
            "updated_at",
        ]

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_url(self, image: Image) -> str:
        return self._absolute(image.file.url)

    def get_thumbnail_url(self, image: Image) -> str:
        return self._absolute(image.thumbnail.url)

    def get_page_url(self, image: Image) -> str:
        return self._absolute(f"/images/{image.pk}/")

    def get_attribution(self, image: Image) -> str:
        return http_url(image.attribution)

    def get_external_id(self, image: Image) -> str | None:
        return shown_external_id(image, catalogue_of(self.context.get("request")))

    def get_captions(self, image: Image) -> list[str]:
        return image.caption_texts()


class ImagePatchSerializer(serializers.Serializer):
    """``PATCH /api/v1/images/<id>``: the fields sent change, the others stay."""

    captions = serializers.ListField(
        child=serializers.CharField(max_length=2000),
        required=False,
        max_length=20,
        help_text="The image's captions, in order (replaces them all; [] removes them).",
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, max_length=100, help_text="Replaces the tags."
    )
    metadata = serializers.DictField(
        required=False,
        help_text="Merged into the stored metadata (JSON merge patch): a field set to null is removed. Checked "
        "against the declared fields.",
    )
    licence = serializers.CharField(required=False, allow_blank=True, max_length=300)
    attribution = serializers.CharField(
        required=False, allow_blank=True, max_length=2000, help_text="An http(s) URL, or empty."
    )

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError(
                {"captions": "Nothing to change: send captions, tags, metadata, licence or attribution."}
            )
        return attrs

    def changes(self) -> ImageChanges:
        data = self.validated_data
        return ImageChanges(
            captions=tuple(data["captions"]) if "captions" in data else None,
            tags=tuple(data["tags"]) if "tags" in data else None,
            metadata=data.get("metadata"),
            licence=data.get("licence"),
            attribution=data.get("attribution"),
        )


class SearchHitSerializer(serializers.Serializer):
    position = serializers.IntegerField()
    score = serializers.FloatField(help_text="Ranking score: fused (0-1) when text channels ran, else CLIP cosine.")
    similarity = serializers.FloatField(allow_null=True, help_text="CLIP cosine between the query and the image.")
    channels = serializers.ListField(
        child=serializers.CharField(), help_text="Which channels found it: clip, caption (caption vectors), fts."
    )
    matched_text = serializers.BooleanField(help_text="Its captions or tags matched the query.")
    image = ImageSerializer()


class EncoderMetaSerializer(serializers.Serializer):
    version = serializers.IntegerField(source="version_id")
    name = serializers.CharField()
    model = serializers.CharField(source="model_ref")
    demo = serializers.BooleanField(source="is_demo")
    notice = serializers.CharField()
    requested_model = serializers.CharField()


class SearchResponseSerializer(serializers.Serializer):
    event_id = serializers.UUIDField(
        allow_null=True, help_text="This result list's id: send it with clicks and ratings. Null if not logged."
    )
    results = SearchHitSerializer(many=True, source="hits")
    meta = serializers.SerializerMethodField()

    def get_meta(self, response) -> dict:
        return search_meta(response)


class CaptionHitSerializer(serializers.Serializer):
    caption = serializers.CharField(source="caption.text")
    image_id = serializers.IntegerField(source="caption.image_id")
    score = serializers.FloatField()


class TagSuggestionSerializer(serializers.Serializer):
    tag = serializers.CharField()
    images = serializers.IntegerField()
