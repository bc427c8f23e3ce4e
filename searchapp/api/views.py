"""REST API views: validate, call the search service, serialise. Nothing else happens here."""

from __future__ import annotations

import hashlib

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from collection.image_changes import apply_changes, find_image, own_image
from collection.images import read_upload
from collection.models import Image
from collection.tag_stats import tag_suggestions
from collection.tags import split_tag_list
from collection.takedown import remove_images
from core.api_errors import ErrorSerializer
from core.api_parsers import BoundedJSONParser
from core.errors import UnknownImage
from core.networks import network_key
from feedback.api_keys import ApiKeyThrottle, catalogue_of, scope_required
from feedback.identity import Viewer, partner_viewer
from feedback.models import ApiKey
from feedback.throttling import SearchThrottle, request_address
from searchapp.api.filters import request_filter
from searchapp.api.representation import search_json
from searchapp.api.serializers import (
    CaptionHitSerializer,
    ImagePatchSerializer,
    ImageSearchSerializer,
    ImageSerializer,
    SearchResponseSerializer,
    TagSuggestionSerializer,
    TextSearchSerializer,
)
from searchapp.search import InvalidQuery, SearchRequest, SearchService

ERRORS = {
    400: ErrorSerializer,
    401: ErrorSerializer,
    403: ErrorSerializer,
    404: ErrorSerializer,
    409: ErrorSerializer,
    429: ErrorSerializer,
}


def api_viewer(request: Request, data: dict) -> Viewer:
    """Who an API search is for: a partner's end user, a logged-in account, or an anonymous caller by address."""
    address = request_address(request)  # the client behind a trusted proxy, as the throttles count it
    network = network_key(address)
    if isinstance(request.auth, ApiKey):
        return partner_viewer(request.auth, data.get("user", ""), data.get("session", ""), network=network)
    if request.user.is_authenticated:
        return Viewer(user_key=f"account:{request.user.pk}", surface="api", network=network)
    return Viewer(
        user_key=f"api-anon:{hashlib.sha256(address.encode()).hexdigest()[:16]}", surface="api", network=network
    )


def _search_request(data: dict, params, **query) -> SearchRequest:
    return SearchRequest(
        tags=tuple(split_tag_list(data.get("tags") or "")),
        metadata=request_filter(params, data.get("filter") or ""),
        sort=data.get("sort") or "relevance",
        page=data.get("page") or 1,
        page_size=data.get("page_size") or 0,
        min_score=data.get("min_score"),
        max_relative_drop=data.get("max_drop"),
        collapse=data.get("collapse"),
        personalise=data.get("personalise", True),
        **query,
    )


class SearchView(APIView):
    parser_classes = [BoundedJSONParser, MultiPartParser, FormParser]
    permission_classes = [scope_required("search", anonymous_allowed=lambda: settings.LOUPE_API_ANONYMOUS_SEARCH)]
    throttle_classes = [ApiKeyThrottle, SearchThrottle]

    @extend_schema(
        summary="Search images by text",
        parameters=[TextSearchSerializer],
        responses={200: SearchResponseSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        params = TextSearchSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        response = SearchService().search(
            _search_request(data, request.query_params, text=data["q"]), api_viewer(request, data)
        )
        return Response(search_json(response, request))

    @extend_schema(
        summary="Search images by an example image (upload) or an image of the collection (image_id)",
        request=ImageSearchSerializer,
        responses={200: SearchResponseSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        params = ImageSearchSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        if "image" in data:
            search = _search_request(data, request.data, image=read_upload(data["image"]))
        else:
            search = _search_request(data, request.data, image_id=data["image_id"])
        response = SearchService().search(search, api_viewer(request, data))
        return Response(search_json(response, request))


def _get_image(image_id: int) -> Image:
    image = Image.objects.prefetch_related("captions").filter(pk=image_id).first()
    if image is None:
        raise UnknownImage(f"There is no image {image_id}.")
    return image


class TakedownAllowed(BasePermission):
    """A takedown needs a key with the ``ingest`` scope (catalogue writes), or staff allowed to delete images in
    the admin (a browser session, CSRF checked), who may take down any catalogue's image."""

    message = "Taking an image down needs an API key with the 'ingest' scope."

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ApiKey):
            return "ingest" in request.auth.scopes
        return request.user.has_perm("searchapp.delete_image")


EXTERNAL_ID_PARAMETER = OpenApiParameter(
    "external_id", str, OpenApiParameter.PATH, description="Your id of the image, in /api/v1/images/ext:<external_id>."
)


class ImageDetailView(APIView):
    """``/api/v1/images/<id>`` and ``/api/v1/images/ext:<external_id>`` (the caller's catalogue)."""

    def get_permissions(self):
        if self.request.method in SAFE_METHODS:
            return super().get_permissions()
        if self.request.method == "DELETE":
            return [TakedownAllowed()]
        return [scope_required("ingest")()]  # catalogue writes, like ingest

    @extend_schema(summary="One image of the collection", responses={200: ImageSerializer, 404: ErrorSerializer})
    def get(self, request: Request, image_id: int | None = None, external_id: str | None = None) -> Response:
        image = find_image(catalogue_of(request), image_id=image_id, external_id=external_id)
        return Response(ImageSerializer(_get_image(image.pk), context={"request": request}).data)

    @extend_schema(
        summary="Change an image of your catalogue: captions, tags, metadata, licence, attribution",
        description="Only the fields sent change. Full-text documents and caption vectors follow in the same "
        "transaction, and the next search in any process sees the new text (docs/api.md).",
        request=ImagePatchSerializer,
        responses={200: ImageSerializer, **ERRORS},
    )
    def patch(self, request: Request, image_id: int | None = None, external_id: str | None = None) -> Response:
        image = own_image(catalogue_of(request), image_id=image_id, external_id=external_id)
        params = ImagePatchSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        changed = apply_changes(image, params.changes())
        return Response(ImageSerializer(_get_image(changed.pk), context={"request": request}).data)

    @extend_schema(
        summary="Take an image down: gone from every search at once, with its files and vectors",
        description="A key may take down only its own catalogue's images; staff any. Its feedback is kept "
        "detached and never trains again; see docs/security.md, 'Takedowns'.",
        responses={204: None, **ERRORS},
    )
    def delete(self, request: Request, image_id: int | None = None, external_id: str | None = None) -> Response:
        catalogue = catalogue_of(request)
        if isinstance(request.auth, ApiKey):
            image = own_image(catalogue, image_id=image_id, external_id=external_id)
            who = f"partner key {request.auth.prefix}"
        else:  # staff allowed to delete images (TakedownAllowed): any catalogue's
            image = find_image(catalogue, image_id=image_id, external_id=external_id)
            who = f"admin {request.user.get_username()}"
        remove_images([image.pk], requested_by=who)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ExternalImageDetailView(ImageDetailView):
    @extend_schema(
        summary="One image of your catalogue, named by your id",
        operation_id="images_by_external_id_retrieve",
        parameters=[EXTERNAL_ID_PARAMETER],
        responses={200: ImageSerializer, 404: ErrorSerializer},
    )
    def get(self, request: Request, external_id: str) -> Response:
        return super().get(request, external_id=external_id)

    @extend_schema(
        summary="Change an image of your catalogue, named by your id",
        operation_id="images_by_external_id_partial_update",
        parameters=[EXTERNAL_ID_PARAMETER],
        request=ImagePatchSerializer,
        responses={200: ImageSerializer, **ERRORS},
    )
    def patch(self, request: Request, external_id: str) -> Response:
        return super().patch(request, external_id=external_id)

    @extend_schema(
        summary="Take an image of your catalogue down, named by your id",
        operation_id="images_by_external_id_destroy",
        parameters=[EXTERNAL_ID_PARAMETER],
        responses={204: None, **ERRORS},
    )
    def delete(self, request: Request, external_id: str) -> Response:
        return super().delete(request, external_id=external_id)


class ImageCaptionsView(APIView):
    @extend_schema(
        summary="Image to text: the collection's captions that best describe this image",
        parameters=[OpenApiParameter("k", int, description="How many captions (1-100, default 5).")],
        responses={200: CaptionHitSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, image_id: int) -> Response:
        _get_image(image_id)
        raw_k = request.query_params.get("k", "5")
        try:
            k = int(raw_k)
        except ValueError:
            raise InvalidQuery("k must be a whole number.", field="k") from None
        hits = SearchService().describe(image_id, k=k)
        return Response(CaptionHitSerializer(hits, many=True).data)


class TagSuggestionsView(APIView):
    @extend_schema(
        summary="Tag suggestions: the collection's most used tags starting with a prefix",
        parameters=[
            OpenApiParameter("prefix", str, description="What the user typed so far (may be empty)."),
            OpenApiParameter("limit", int, description="How many (1-50, default 10)."),
        ],
        responses={200: TagSuggestionSerializer(many=True), 400: ErrorSerializer},
    )
    def get(self, request: Request) -> Response:
        prefix = request.query_params.get("prefix", "")
        if len(prefix) > 100:
            raise InvalidQuery("prefix is at most 100 characters.", field="prefix")
        try:
            limit = int(request.query_params.get("limit", "10"))
        except ValueError:
            raise InvalidQuery("limit must be a whole number.", field="limit") from None
        if not 1 <= limit <= 50:
            raise InvalidQuery("limit must be between 1 and 50.", field="limit")
        return Response(TagSuggestionSerializer(tag_suggestions(prefix, limit=limit), many=True).data)
