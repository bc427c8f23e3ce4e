"""CSRF failures in the project's JSON error shape where a script is the caller.

Django answers a failed CSRF check with an HTML page. The page's beacons (``/feedback/*``) and the API
read JSON errors, so there the same refusal is ``{"error": {"code": "csrf_failed", ...}}`` with 403;
forms of the pages and the admin keep Django's page (issue 19, finding 9).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.csrf import csrf_failure as html_csrf_failure

from core.errors import error_body

JSON_PATHS = ("/feedback/", "/api/")


def wants_json(request: HttpRequest) -> bool:
    return (
        request.path.startswith(JSON_PATHS)
        or "application/json" in request.headers.get("Accept", "")
        or request.content_type == "application/json"
    )


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if not wants_json(request):
        return html_csrf_failure(request, reason)
    message = f"CSRF check failed: {reason} Reload the page and try again."
    return JsonResponse(error_body("csrf_failed", message), status=403)
