"""Partner API for feedback: clicks and ratings, one by one or in batches. Needs a key with the feedback scope."""

from __future__ import annotations

from collections.abc import Callable

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api_errors import ErrorSerializer, flatten_errors
from core.errors import Refused
from core.networks import network_key
from feedback.api_keys import ApiKeyThrottle, catalogue_of, scope_required
from feedback.capture import FeedbackError, Recorded, record_click, record_many, record_rating
from feedback.identity import Viewer, partner_viewer, request_address
from feedback.layout import record_layout
from feedback.serializers import (
    BatchResultSerializer,
    ClickBatchSerializer,
    ClickSerializer,
    LayoutSerializer,
    LayoutStoredSerializer,
    RatingBatchSerializer,
    RatingSerializer,
    RecordedSerializer,
)
from feedback.throttling import FeedbackThrottle

ERRORS = {code: ErrorSerializer for code in (400, 401, 403, 404, 409, 429)}
Recorder = Callable[[Viewer, object], Recorded]


def _viewer(request: Request, data: dict) -> Viewer:
    return partner_viewer(request.auth, data.get("user", ""), network=network_key(request_address(request)))


def _record_one(request: Request, serializer_class, record: Recorder) -> Response:
    item = serializer_class(data=request.data, context={"catalogue": catalogue_of(request)})
    item.is_valid(raise_exception=True)
    recorded = record(_viewer(request, item.validated_data), item.to_input())
    return Response(
        RecordedSerializer(recorded).data, status=status.HTTP_201_CREATED if recorded.created else status.HTTP_200_OK
    )


def _record_batch(request: Request, batch_class, serializer_class) -> Response:
    """Each item is validated and recorded on its own (one bad item does not cost the others), in one commit."""
    batch = batch_class(data=request.data)
    batch.is_valid(raise_exception=True)
    raw_items = batch.validated_data["items"]
    outcomes: list = [None] * len(raw_items)
    valid: list[tuple[int, Viewer, object]] = []
    context = {"catalogue": catalogue_of(request)}
    for index, raw in enumerate(raw_items):
        item = serializer_class(data=raw, context=context)
        try:
            valid_item = item.is_valid()
        except Refused as exc:  # an external id this catalogue does not have
            outcomes[index] = exc
            continue
        if valid_item:
            valid.append((index, _viewer(request, item.validated_data), item.to_input()))
        else:
            outcomes[index] = FeedbackError(_describe(item.errors))
    for (index, _, _), outcome in zip(valid, record_many([(v, given) for _, v, given in valid]), strict=True):
        outcomes[index] = outcome
    results, counts = [], {"created": 0, "duplicate": 0, "rejected": 0}
    for index, (raw, outcome) in enumerate(zip(raw_items, outcomes, strict=True)):
        client_id = raw.get("client_id") if isinstance(raw.get("client_id"), str) else None
        if isinstance(outcome, Refused):
            error = {"code": outcome.code, "message": str(outcome)}
            results.append({"index": index, "client_id": client_id, "status": "rejected", "error": error})
            counts["rejected"] += 1
        else:
            status_name = "created" if outcome.created else "duplicate"
            results.append({"index": index, "client_id": client_id, "status": status_name, "id": outcome.item.pk})
            counts[status_name] += 1
    body = {"created": counts["created"], "duplicates": counts["duplicate"], "rejected": counts["rejected"]}
    return Response({**body, "results": results})


def _describe(errors: dict) -> str:
    return "; ".join(f"{name}: {message}" for name, message in flatten_errors(errors).items())


class FeedbackView(APIView):
    permission_classes = [scope_required("feedback")]
    throttle_classes = [ApiKeyThrottle, FeedbackThrottle]


class ClickView(FeedbackView):
    @extend_schema(
        summary="Record a click on a search result",
        request=ClickSerializer,
        responses={201: RecordedSerializer, 200: RecordedSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        return _record_one(request, ClickSerializer, record_click)


class ClickBatchView(FeedbackView):
    @extend_schema(
        summary="Record up to 500 clicks; each item is recorded or rejected on its own",
        request=ClickBatchSerializer,
        responses={200: BatchResultSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        return _record_batch(request, ClickBatchSerializer, ClickSerializer)


class RatingView(FeedbackView):
    @extend_schema(
        summary="Record a rating of an image (thumbs or stars)",
        request=RatingSerializer,
        responses={201: RecordedSerializer, 200: RecordedSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        return _record_one(request, RatingSerializer, record_rating)


class RatingBatchView(FeedbackView):
    @extend_schema(
        summary="Record up to 500 ratings; each item is recorded or rejected on its own",
        request=RatingBatchSerializer,
        responses={200: BatchResultSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        return _record_batch(request, RatingBatchSerializer, RatingSerializer)


class LayoutView(FeedbackView):
    @extend_schema(
        summary="Report the grid a search's results were shown in (cards per row, rows on screen)",
        request=LayoutSerializer,
        responses={201: LayoutStoredSerializer, 200: LayoutStoredSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        given = LayoutSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        stored = record_layout(_viewer(request, {}), str(data["event_id"]), data["layout"])
        return Response({"stored": stored}, status=status.HTTP_201_CREATED if stored else status.HTTP_200_OK)
