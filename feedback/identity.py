"""Who is searching: one stable key per user, whatever the way in.

- A logged-in account: ``account:<id>`` (the same on every device).
- An anonymous browser: ``anon:<random>`` from a first-party cookie kept for two years.
- A partner application's end user: ``partner:<key prefix>:<their id>``; without an id, the partner itself.

The key is what feedback caps count against and what experiment assignment hashes, so it must be
stable and must never be taken from something the visitor can pick freely on our own pages.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from core.client_ip import client_ip, parse_networks
from core.networks import network_key

USER_COOKIE = "loupe_uk"
SESSION_COOKIE = "loupe_sid"
USER_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
PARTNER_USER = re.compile(r"^[\w.@:+-]{1,128}$")


@dataclass(frozen=True)
class Viewer:
    """Who a search or a piece of feedback comes from."""

    user_key: str
    session: str = ""
    surface: str = "web"
    partner_id: int | None = None
    network: str = ""  # ``core.networks.network_key`` of the client's address ("" unknown): trust weights damp bursts


def new_token() -> str:
    return secrets.token_urlsafe(16)


def request_address(request: HttpRequest) -> str:
    """The client's address, believing X-Forwarded-For only from ``LOUPE_TRUSTED_PROXIES``."""
    return client_ip(
        request.META.get("REMOTE_ADDR", ""),
        request.META.get("HTTP_X_FORWARDED_FOR", ""),
        parse_networks(settings.LOUPE_TRUSTED_PROXIES),
    )


def web_viewer(request: HttpRequest) -> Viewer:
    """The viewer of a page request (set up by ``UserKeyMiddleware``)."""
    return Viewer(
        user_key=request.user_key,
        session=request.loupe_session,
        surface="web",
        network=network_key(request_address(request)),
    )


def partner_viewer(api_key, end_user: str = "", session: str = "", network: str = "") -> Viewer:
    """A partner's end user. ``end_user`` must already be validated against ``PARTNER_USER``.

    ``network`` is the partner's own server's (its end users all arrive from it), so a partner inventing
    many new end users in a day shares one network's budget of trusted newcomers (``feedback.trust``).
    """
    key = f"partner:{api_key.prefix}:{end_user}" if end_user else f"partner:{api_key.prefix}"
    return Viewer(user_key=key, session=session[:64], surface="api", partner_id=api_key.pk, network=network)


class UserKeyMiddleware:
    """Gives every page request ``request.user_key`` and ``request.loupe_session``, setting cookies as needed."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            return self.get_response(request)  # API clients identify their users themselves; no cookies for them
        cookie = request.COOKIES.get(USER_COOKIE, "")
        anonymous_token = cookie if _TOKEN.match(cookie) else ""
        session = request.COOKIES.get(SESSION_COOKIE, "")
        session = session if _TOKEN.match(session) else ""
        new_user, new_session = not anonymous_token, not session
        anonymous_token = anonymous_token or new_token()
        session = session or new_token()
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            request.user_key = f"account:{user.pk}"
        else:
            request.user_key = f"anon:{anonymous_token}"
        request.loupe_session = session
        response = self.get_response(request)
        secure = request.is_secure()
        if new_user:
            response.set_cookie(
                USER_COOKIE, anonymous_token, max_age=USER_COOKIE_MAX_AGE, samesite="Lax", httponly=True, secure=secure
            )
        if new_session:  # a browser-session cookie: gone when the browser closes
            response.set_cookie(SESSION_COOKIE, session, samesite="Lax", httponly=True, secure=secure)
        return response
