"""HTML pages: the search page and an image's page. Thin: parse, call the service, render."""

from __future__ import annotations

import sys
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_POST

from collection.images import InvalidImage, read_upload
from collection.models import Image
from collection.tag_stats import tag_suggestions
from core.errors import UnknownImage, error_body
from feedback.capture import CLIENT_ID
from feedback.identity import web_viewer
from feedback.throttling import SEARCH, Throttled, check, page_caller
from searchapp.forms import ImageSearchForm, SearchForm
from searchapp.pipeline.response import SearchResponse
from searchapp.search import NotIndexed, SearchError, SearchRequest, SearchService

# The page's personalisation switch (ranking.personal): "off" gives this browser the shared order.
PERSONALISE_COOKIE = "loupe_personalise"
PERSONALISE_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600
POPULAR_TAGS = 12
SIMILAR_COUNT = 12
DESCRIBE_COUNT = 5


def search_page(request: HttpRequest) -> HttpResponse:
    """GET ?q=… searches by text, ?like=<id> for more like an image; POST with an image file searches by example."""
    context: dict = {
        "form": SearchForm(request.GET or None),
        "image_form": ImageSearchForm(),
        "popular_tags": cache.get_or_set("loupe:popular-tags", lambda: tag_suggestions(limit=POPULAR_TAGS), 300),
        "show_scores": shows_scores(request),
        "page_query": _page_query(request),
        "personalisation": personalisation(request),
    }
    status = 200
    try:
        if request.method == "POST" or request.GET.get("q") is not None or request.GET.get("like"):
            check(SEARCH, page_caller(request))
        if request.method == "POST":
            image_form = ImageSearchForm(request.POST, request.FILES)
            context["image_form"] = image_form
            if image_form.is_valid():
                checked = read_upload(image_form.cleaned_data["image"])  # its size first: nothing big is read
                context["response"] = SearchService().search(SearchRequest(image=checked), web_viewer(request))
            else:
                context["error"] = "Choose an image file to search with."
                status = 400
        elif request.GET.get("q") is not None or request.GET.get("like"):
            form = context["form"]
            if form.is_valid():
                page = form.cleaned_data.get("page") or 1
                like = form.cleaned_data.get("like")
                wanted = (
                    SearchRequest(image_id=like, page=page)
                    if like
                    else SearchRequest(
                        text=form.cleaned_data["q"],
                        page=page,
                        sort=form.cleaned_data.get("sort") or "relevance",
                        explored=form.cleaned_data.get("explored"),
                        personalise=context["personalisation"] == "on",
                    )
                )
                context["response"] = SearchService().search(wanted, web_viewer(request))
                context["page_query"] = _page_query(request, context["response"])
            else:
                context["error"] = " ".join(e for errors in form.errors.values() for e in errors)
                status = 400
    except Throttled as exc:
        context["error"] = str(exc)
        response = render(request, "searchapp/search.html", context, status=exc.status)
        response["Retry-After"] = str(exc.retry_after)
        return response
    except (SearchError, InvalidImage, UnknownImage) as exc:  # UnknownImage: ?like= an image not there
        context["error"] = str(exc)
        status = getattr(exc, "status", 400)
    return render(request, "searchapp/search.html", context, status=status)


def personalisation(request: HttpRequest) -> str:
    """ "on", "off" (this browser turned it off), or "" (the deployment does not personalise: no control shown)."""
    if not settings.LOUPE_PERSONALISE:
        return ""
    return "off" if request.COOKIES.get(PERSONALISE_COOKIE) == "off" else "on"


@require_POST
def set_personalisation(request: HttpRequest) -> HttpResponse:
    """The page's visible switch: remember "on" or "off" for this browser, then go back to the search."""
    wanted = request.POST.get("personalise")
    if wanted not in ("on", "off"):
        return HttpResponse("personalise is on or off.", status=400, content_type="text/plain")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = "/"
    response = HttpResponseRedirect(back or "/")
    response.set_cookie(
        PERSONALISE_COOKIE,
        wanted,
        max_age=PERSONALISE_COOKIE_MAX_AGE,
        samesite="Lax",
        httponly=True,
        secure=request.is_secure(),
    )
    return response


def shows_scores(request: HttpRequest) -> bool:
    """Ranking scores under results: for staff who ask with ``?debug=1``, never for anyone else.

    People found them noise (issue 24), and served scores help someone probing how to push an image up.
    """
    return request.GET.get("debug") == "1" and request.user.is_active and request.user.is_staff


def _page_query(request: HttpRequest, response: SearchResponse | None = None) -> str:
    """This search's query string without its page: the pager's links add their own.

    A first page the exploration slice changed passes the move on (``explored``), so that the next page
    ("Next" or "Load more") continues it instead of showing the moved-up result again.
    """
    kept = {name: value for name, value in request.GET.items() if name in ("q", "sort", "like", "debug", "explored")}
    if response is not None and response.page == 1:  # a first page (back from page 2) draws its own slice
        kept.pop("explored", None)
        if response.explore_position is not None:
            kept["explored"] = f"{response.explore_from}-{response.explore_position}"
    return urlencode(list(kept.items()))


def image_page(request: HttpRequest, image_id: int) -> HttpResponse:
    """An image with its captions and tags, "more like this", and the captions that describe it best."""
    image = Image.objects.prefetch_related("captions").filter(pk=image_id).first()
    if image is None:
        raise Http404("No such image.")
    service = SearchService()
    context: dict = {"image": image, "came_from": _came_from(request), "show_scores": shows_scores(request)}
    try:
        context["similar"] = service.search(
            SearchRequest(image_id=image_id, page_size=SIMILAR_COUNT), web_viewer(request)
        )
        context["described_by"] = service.describe(image_id, k=DESCRIBE_COUNT)
    except NotIndexed as exc:
        context["error"] = str(exc)
    return render(request, "searchapp/image.html", context)


def _came_from(request: HttpRequest) -> dict | None:
    """The search result this page was opened from (set by feedback.js), so dwell and ratings tie to it."""
    event, position, click = (request.GET.get(name, "") for name in ("event", "pos", "click"))
    try:
        uuid.UUID(event)
        position_number = int(position)
    except ValueError:
        return None
    if not CLIENT_ID.match(click) or position_number < 1:
        return None
    return {"event": event, "position": position_number, "click": click}


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404: the API's JSON error shape under /api/, the site's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", f"There is nothing at {request.path}."), status=404)
    return render(request, "404.html", {"path": request.path}, status=404)


UNAVAILABLE_RETRY_SECONDS = 5


def server_error(request: HttpRequest) -> HttpResponse:
    """500, or 503 when the cause is an unreachable database (a restart, a failover): try again shortly.

    Django calls this inside its ``except`` block, so the exception is still at hand. Nothing was
    stored by the failed request; the 503 tells a client that a resend is safe and expected.
    """
    exception = sys.exc_info()[1]
    unavailable = isinstance(exception, OperationalError | InterfaceError)
    status, code = (503, "unavailable") if unavailable else (500, "server_error")
    message = (
        "The database is unreachable for a moment; nothing was stored. Try again in a few seconds."
        if unavailable
        else "Something went wrong on our side; it has been logged."
    )
    if request.path.startswith(("/api/", "/feedback/")):
        response = JsonResponse(error_body(code, message), status=status)
    else:
        response = HttpResponse(render_to_string("error.html", {"status": status, "message": message}), status=status)
    if unavailable:
        response["Retry-After"] = str(UNAVAILABLE_RETRY_SECONDS)
    return response
