"""Partner API: add an image by upload, or by a local path the server is allowed to read (ingest scope).

A path must resolve (symlinks followed) inside one of ``LOUPE_INGEST_ROOTS``; anything else is
refused without touching the file, so a key cannot read arbitrary server files. The new image is
embedded right away so it is searchable when the call returns; if that fails it is still stored
and the periodic embedding task picks it up.
"""

from __future__ import annotations

import json
import logging

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from collection.catalogue_listing import MAX_PAGE, catalogue_page
from collection.embedding import embed_new_images
from collection.image_changes import ImageChanges
from collection.images import read_image, read_upload
from collection.ingestion.paths import allowed_path, read_path
from collection.ingestion.service import Outcome, store_image
from collection.models import EXTERNAL_ID_PATTERN
from collection.tags import split_tag_list
from core.api_errors import ErrorSerializer
from core.api_parsers import BoundedJSONParser
from feedback.api_keys import catalogue_of, scope_required
from searchapp.api.serializers import ImageSerializer

logger = logging.getLogger(__name__)


class AddImageSerializer(serializers.Serializer):
    image = serializers.FileField(required=False, help_text="The image file (multipart).")
    path = serializers.CharField(
        required=False, max_length=4096, help_text="Or: a file path or file:// URL under the server's ingest folders."
    )
    captions = serializers.ListField(
        child=serializers.CharField(max_length=2000), required=False, max_length=20, help_text="Up to 20 captions."
    )
    tags = serializers.CharField(required=False, allow_blank=True, max_length=2000, help_text="Comma-separated.")
    licence = serializers.CharField(required=False, allow_blank=True, max_length=300)
    attribution = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    external_id = serializers.RegexField(
        f"^{EXTERNAL_ID_PATTERN}$",
        required=False,
        help_text="Your own id for the image (1-200 of letters, digits and . _ : @ + -), unique in your catalogue. "
        "Sending a known one updates that image (captions, tags, metadata, licence, attribution given here; "
        "new bytes replace its file and vectors): an upsert, never a second image.",
    )
    metadata = serializers.JSONField(
        required=False,
        help_text="A JSON object of declared field -> value (in multipart: the object as JSON text), e.g. "
        '{"date": "2021-06-01", "author": "smith"}. Undeclared fields and wrong types are refused.',
    )

    def validate_metadata(self, value):
        if isinstance(value, str):  # multipart sends the object as text
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError:
                raise serializers.ValidationError("metadata must be a JSON object.") from None
        if not isinstance(value, dict):
            raise serializers.ValidationError("metadata must be a JSON object of field name -> value.")
        return value

    def validate(self, attrs):
        if ("image" in attrs) == ("path" in attrs):
            raise serializers.ValidationError({"image": "Give exactly one of 'image' (upload) and 'path'."})
        return attrs


class AddedImageSerializer(serializers.Serializer):
    created = serializers.BooleanField(help_text="False when the same bytes were already in the collection.")
    updated = serializers.BooleanField(help_text="True when the external id was known and that image was updated.")
    indexed = serializers.BooleanField(help_text="Searchable now (else within a minute, by the periodic task).")
    image = ImageSerializer()


ERRORS = {code: ErrorSerializer for code in (400, 401, 403, 409, 429)}


def upsert_changes(data: dict) -> ImageChanges:
    """What a request naming a known external id changes: the fields it sends (an empty list or text clears
    that field), the others kept."""
    return ImageChanges(
        captions=tuple(data["captions"]) if "captions" in data else None,
        tags=tuple(split_tag_list(data["tags"])) if "tags" in data else None,
        metadata=data.get("metadata"),
        licence=data.get("licence"),
        attribution=data.get("attribution"),
        replace_metadata=True,
    )


class CatalogueListParams(serializers.Serializer):
    updated_since = serializers.DateTimeField(
        required=False, help_text="Images changed at or after this time (ISO 8601); ignored with a cursor."
    )
    cursor = serializers.CharField(
        required=False, max_length=200, help_text="The next_cursor of the previous page: the images changed after it."
    )
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_PAGE, default=100)


class TombstoneSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="image_id", help_text="Loupe's id of the image taken down.")
    external_id = serializers.CharField(allow_null=True, help_text="Your id for it, if it had one.")
    removed_at = serializers.DateTimeField()


class CataloguePageSerializer(serializers.Serializer):
    results = ImageSerializer(many=True, source="images", help_text="Your catalogue's images, oldest change first.")
    removed = TombstoneSerializer(many=True, help_text="Your images taken down in the same stretch of time.")
    next_cursor = serializers.CharField(help_text="Pass as cursor for the next page, or later for newer changes.")
    has_more = serializers.BooleanField()


class AddImageView(APIView):
    """``/api/v1/images``: add an image (POST), or list your catalogue by when its images changed (GET)."""

    parser_classes = [MultiPartParser, BoundedJSONParser]
    permission_classes = [scope_required("ingest")]

    @extend_schema(
        summary="Your catalogue's images in the order they changed, a page at a time (for reconciling)",
        operation_id="images_list",
        description="Order: last change, then id. Poll with the last next_cursor to get what changed since "
        "(docs/api.md). A change is listed once it is LOUPE_CATALOGUE_SETTLE_SECONDS old.",
        parameters=[CatalogueListParams],
        responses={200: CataloguePageSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        params = CatalogueListParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        page = catalogue_page(
            catalogue_of(request),
            updated_since=data.get("updated_since"),
            cursor=data.get("cursor"),
            limit=data["limit"],
        )
        return Response(CataloguePageSerializer(page, context={"request": request}).data)

    @extend_schema(
        summary="Add an image to the collection (upload or server-side path)",
        request={"multipart/form-data": AddImageSerializer, "application/json": AddImageSerializer},
        responses={
            201: AddedImageSerializer,
            200: AddedImageSerializer,
            **ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        params = AddImageSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        if "image" in data:
            checked = read_upload(data["image"])
            source = f"api upload by {request.auth.prefix}: {data['image'].name}"[:2000]
        else:
            path = allowed_path(data["path"])
            checked, source = read_image(read_path(path)), str(path)
        stored = store_image(
            checked,
            captions=data.get("captions", []),
            tags=split_tag_list(data.get("tags", "")),
            licence=data.get("licence", ""),
            attribution=data.get("attribution", ""),
            source=source,
            metadata=data.get("metadata"),
            catalogue=catalogue_of(request),
            external_id=data.get("external_id"),
            changes=upsert_changes(data),
        )
        image, created = stored.image, stored.outcome == Outcome.STORED
        indexed = embed_new_images([image.pk])
        body = {"created": created, "updated": stored.outcome == Outcome.UPDATED, "indexed": indexed, "image": image}
        return Response(
            AddedImageSerializer(body, context={"request": request}).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
