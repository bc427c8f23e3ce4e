"""The Content-Security-Policy header on every response (Django 5.2 has no CSP support of its own).

The policy allows scripts, styles, fonts and connections from Loupe's own origin only: no inline
script, no inline style, no ``eval``, no plugins, and no framing. An HTML injection that slips past
escaping then cannot run script, and a stored ``javascript:`` link does nothing when clicked. Every
page keeps to it: scripts and styles are files under ``static/`` (Django's admin, the API docs pages
through ``drf_spectacular``'s split Swagger view and a Redoc template without inline code; Redoc's
run-time ``<style>`` elements get a per-response nonce, ``allow_style_nonce``). Images
may also be ``data:`` URLs: Swagger UI's stylesheet draws its icons with them, and an image cannot run code.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

HEADER = "Content-Security-Policy"

DEFAULT_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def allow_style_nonce(request: HttpRequest, nonce: str) -> None:
    """Let this one response's ``<style nonce=...>`` elements apply (a page whose library writes its
    styles at run time: Redoc). The nonce is new for every response, so injected markup cannot guess it."""
    request.csp_style_nonce = nonce


def with_style_nonce(policy: str, nonce: str) -> str:
    directives = []
    for directive in policy.split(";"):
        directive = directive.strip()
        if directive.split(" ", 1)[0] == "style-src":
            directive += f" 'nonce-{nonce}'"
        directives.append(directive)
    return "; ".join(directives)


class ContentSecurityPolicyMiddleware:
    """Adds ``LOUPE_CONTENT_SECURITY_POLICY`` to responses that do not set their own (empty: no header)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.policy = settings.LOUPE_CONTENT_SECURITY_POLICY

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if self.policy and HEADER not in response:
            nonce = getattr(request, "csp_style_nonce", None)
            response[HEADER] = with_style_nonce(self.policy, nonce) if nonce else self.policy
        return response
