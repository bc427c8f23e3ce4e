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

from collection.embedding import embed_new_images
from collection.images import read_image, read_upload
from collection.ingestion.paths import allowed_path, read_path
from collection.ingestion.service import add_image
from collection.tags import split_tag_list
from core.api_errors import ErrorSerializer
from core.api_parsers import BoundedJSONParser
from feedback.api_keys import scope_required
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
    indexed = serializers.BooleanField(help_text="Searchable now (else within a minute, by the periodic task).")
    image = ImageSerializer()


ERRORS = {code: ErrorSerializer for code in (400, 401, 403, 429)}


class AddImageView(APIView):
    parser_classes = [MultiPartParser, BoundedJSONParser]
    permission_classes = [scope_required("ingest")]

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
        image, created = add_image(
            checked,
            captions=data.get("captions", []),
            tags=split_tag_list(data.get("tags", "")),
            licence=data.get("licence", ""),
            attribution=data.get("attribution", ""),
            source=source,
            metadata=data.get("metadata"),
            ingested_by=request.auth.prefix,  # the key that may take it down (collection.takedown)
        )
        indexed = embed_new_images([image.pk])
        body = {"created": created, "indexed": indexed, "image": image}
        return Response(
            AddedImageSerializer(body, context={"request": request}).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
