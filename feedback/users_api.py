"""Partner API for a partner's end users: erase their feedback (right to erasure) or export it (access request).

The user id is the partner's own (``user=`` on searches and feedback); the Loupe key is
``partner:<key prefix>:<id>`` (``feedback.identity``), so a key reaches only its own users: another
partner's user of the same id is a different key, never found here.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api_errors import ErrorSerializer
from core.errors import Refused
from feedback.api_keys import ApiKeyThrottle, catalogue_of, scope_required
from feedback.erasure import erase_user_key, export_user_key, key_digest
from feedback.identity import PARTNER_USER, partner_viewer
from feedback.models import Click, ErasedUser, Rating, SearchEvent
from feedback.throttling import FeedbackThrottle

ERRORS = {code: ErrorSerializer for code in (400, 401, 403, 404, 429)}


class UnknownUser(Refused):
    code = "unknown_user"
    status = 404


class ErasureSerializer(serializers.Serializer):
    user = serializers.CharField(help_text="The partner's user id, as given.")
    searches = serializers.IntegerField(help_text="Searches deleted, with the result lists shown in them.")
    clicks = serializers.IntegerField()
    ratings = serializers.IntegerField()
    erased_at = serializers.DateTimeField()


class ShownSerializer(serializers.Serializer):
    position = serializers.IntegerField()
    image = serializers.IntegerField(allow_null=True, help_text="Null: the image was taken down since.")
    external_id = serializers.CharField(allow_null=True, help_text="Your id of the image, when it is yours.")
    score = serializers.FloatField()


class ExportedSearchSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    kind = serializers.CharField()
    query = serializers.CharField(allow_blank=True)
    query_image = serializers.IntegerField(allow_null=True)
    tags = serializers.ListField(child=serializers.CharField())
    page = serializers.IntegerField()
    session = serializers.CharField(allow_blank=True)
    arm = serializers.CharField(allow_blank=True, help_text="The experiment arm the user was in, if any.")
    experiment = serializers.IntegerField(allow_null=True)
    impressions = ShownSerializer(many=True, help_text="The result list as shown.")


class ExportedClickSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    search = serializers.UUIDField()
    image = serializers.IntegerField(allow_null=True, help_text="Null: the image was taken down since.")
    external_id = serializers.CharField(allow_null=True, help_text="Your id of the image, when it is yours.")
    position = serializers.IntegerField()
    dwell_ms = serializers.IntegerField(allow_null=True)
    client_id = serializers.CharField()
    created_at = serializers.DateTimeField()


class ExportedRatingSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    search = serializers.UUIDField(allow_null=True)
    image = serializers.IntegerField(allow_null=True, help_text="Null: the image was taken down since.")
    external_id = serializers.CharField(allow_null=True, help_text="Your id of the image, when it is yours.")
    scale = serializers.CharField()
    value = serializers.IntegerField()
    query = serializers.CharField(allow_blank=True)
    client_id = serializers.CharField()
    created_at = serializers.DateTimeField()


class UserExportSerializer(serializers.Serializer):
    user = serializers.CharField()
    searches = ExportedSearchSerializer(many=True)
    clicks = ExportedClickSerializer(many=True)
    ratings = ExportedRatingSerializer(many=True)


def partner_user_key(request: Request, user: str) -> str:
    """The Loupe key of this partner's end user ``user``; a malformed id is a 400."""
    if not PARTNER_USER.match(user):
        raise Refused("A user id is 1-128 letters, digits or . @ : + - _ characters.", field="user")
    return partner_viewer(request.auth, user).user_key


def _holds_anything(user_key: str) -> bool:
    return (
        SearchEvent.objects.filter(user_key=user_key).exists()
        or Click.objects.filter(user_key=user_key).exists()
        or Rating.objects.filter(user_key=user_key).exists()
    )


class PartnerUserView(APIView):
    permission_classes = [scope_required("feedback")]
    throttle_classes = [ApiKeyThrottle, FeedbackThrottle]

    @extend_schema(
        summary="Erase every search, click and rating of one of your users (right to erasure)",
        description="Deletes them in batches and fences them off every training set at once; "
        "see docs/security.md, 'User erasure'. Repeating it for an erased user answers 200 with zero counts.",
        responses={200: ErasureSerializer, **ERRORS},
    )
    def delete(self, request: Request, user: str) -> Response:
        user_key = partner_user_key(request, user)
        if not _holds_anything(user_key) and not ErasedUser.objects.filter(key_digest=key_digest(user_key)).exists():
            raise UnknownUser(f"This key holds no searches, clicks or ratings of user {user!r}.")
        erasure = erase_user_key(
            user_key, partner=request.auth, requested_by=f"partner key {request.auth.prefix}", given=user
        )
        return Response(ErasureSerializer(erasure).data)


class PartnerUserExportView(APIView):
    permission_classes = [scope_required("feedback")]
    throttle_classes = [ApiKeyThrottle, FeedbackThrottle]

    @extend_schema(
        summary="Everything held about one of your users: searches with their result lists, clicks, ratings",
        responses={200: UserExportSerializer, **ERRORS},
    )
    def get(self, request: Request, user: str) -> Response:
        user_key = partner_user_key(request, user)
        if not _holds_anything(user_key):
            raise UnknownUser(f"This key holds no searches, clicks or ratings of user {user!r}.")
        return Response(
            UserExportSerializer(export_user_key(user_key, given=user, catalogue=catalogue_of(request))).data
        )
