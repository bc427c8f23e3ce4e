"""Feedback from our own pages: click beacons and rating buttons. Session pages keep their CSRF checks.

``navigator.sendBeacon`` cannot set headers, so the page sends the CSRF token as a form field,
which Django's CSRF middleware accepts like any form post.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from feedback.capture import ClickInput, FeedbackError, RatingInput, Recorded, record_click, record_rating
from feedback.identity import web_viewer
from feedback.layout import LayoutError, parse_layout, record_layout
from feedback.models import Rating
from feedback.throttling import FEEDBACK, Throttled, check, page_caller


def _integer(request: HttpRequest, name: str, *, required: bool = True) -> int | None:
    raw = request.POST.get(name, "").strip()
    if not raw:
        if required:
            raise FeedbackError(f"{name} is required.", field=name)
        return None
    try:
        return int(raw)
    except ValueError:
        raise FeedbackError(f"{name} must be a whole number.", field=name) from None


def _error(exc: FeedbackError | LayoutError | Throttled) -> JsonResponse:
    response = JsonResponse(exc.body(), status=exc.status)
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    return response


def _recorded(recorded: Recorded) -> JsonResponse:
    return JsonResponse({"id": recorded.item.pk, "created": recorded.created}, status=201 if recorded.created else 200)


@require_POST
def click(request: HttpRequest) -> JsonResponse:
    try:
        check(FEEDBACK, page_caller(request))
        given = ClickInput(
            event_id=request.POST.get("event_id", ""),
            image_id=_integer(request, "image_id"),
            position=_integer(request, "position"),
            client_id=request.POST.get("client_id", ""),
            dwell_ms=_integer(request, "dwell_ms", required=False),
        )
        return _recorded(record_click(web_viewer(request), given))
    except (FeedbackError, Throttled) as exc:
        return _error(exc)


@require_POST
def rate(request: HttpRequest) -> JsonResponse:
    try:
        check(FEEDBACK, page_caller(request))
        given = RatingInput(
            image_id=_integer(request, "image_id"),
            value=_integer(request, "value"),
            scale=request.POST.get("scale", Rating.Scale.THUMBS),
            client_id=request.POST.get("client_id", ""),
            event_id=request.POST.get("event_id") or None,
        )
        return _recorded(record_rating(web_viewer(request), given))
    except (FeedbackError, Throttled) as exc:
        return _error(exc)


@require_POST
def layout(request: HttpRequest) -> JsonResponse:
    """The grid a search's results were rendered in (the page's first beacon after showing them)."""
    try:
        check(FEEDBACK, page_caller(request))
        given = parse_layout(request.POST.get("layout", ""))
        stored = record_layout(web_viewer(request), request.POST.get("event_id", ""), given)
        return JsonResponse({"stored": stored}, status=201 if stored else 200)
    except (FeedbackError, LayoutError, Throttled) as exc:
        return _error(exc)
