"""Throttles on search and feedback: per client address without an API key, and per user key.

Every search stores an event and its impressions, so an unthrottled anonymous caller could fill the
database (issue 19, item 7: 4,600 anonymous searches in 90 s wrote 250,000 rows). A caller without a
valid API key is counted by client address (``core.client_ip``), so a partner whose key is throttled
and who drops the header falls to that budget instead of escaping. Every caller is also counted by
user key: a page visitor's cookie, a logged-in account, a partner's end user (``user=``); a cookie
that changes with every request only keeps the address budget to count against, which is the point.
Keyed requests keep their own per-key budget (``feedback.api_keys.ApiKeyThrottle``).

The page and beacon views call ``check`` and answer the refusal; the API views use the DRF
throttle classes below, which answer 429 in the API's error shape with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from rest_framework.throttling import BaseThrottle

from core import rate_limits
from core.client_ip import parse_networks
from core.errors import Refused
from feedback.identity import PARTNER_USER, request_address
from feedback.models import ApiKey

SEARCH = "search"
FEEDBACK = "feedback"
RATE_SETTINGS = (
    "LOUPE_THROTTLE_ANON_SEARCH",
    "LOUPE_THROTTLE_USER_SEARCH",
    "LOUPE_THROTTLE_ANON_FEEDBACK",
    "LOUPE_THROTTLE_USER_FEEDBACK",
)


def check_settings() -> None:
    """Refuse to start with a rate or proxy list that cannot be read (not a 500 on every request)."""
    for name in RATE_SETTINGS:
        try:
            rate_limits.Rate.parse(getattr(settings, name))
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name}: {exc}") from None
    try:
        parse_networks(settings.LOUPE_TRUSTED_PROXIES)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from None


class Throttled(Refused):
    code = "throttled"
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Caller:
    """What a request is counted as: its address when it has no API key, and its user key if any."""

    address: str | None
    user_key: str | None


def _rates(action: str) -> tuple[rate_limits.Rate, rate_limits.Rate]:
    if action == SEARCH:
        return (
            rate_limits.Rate.parse(settings.LOUPE_THROTTLE_ANON_SEARCH),
            rate_limits.Rate.parse(settings.LOUPE_THROTTLE_USER_SEARCH),
        )
    return (
        rate_limits.Rate.parse(settings.LOUPE_THROTTLE_ANON_FEEDBACK),
        rate_limits.Rate.parse(settings.LOUPE_THROTTLE_USER_FEEDBACK),
    )


def _hashed(text: str) -> str:
    # Keys in Redis hold no address or user id in the clear.
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def check(action: str, caller: Caller) -> None:
    """Count one ``action`` (search or feedback) for ``caller``; raise ``Throttled`` when over a budget."""
    per_address, per_user = _rates(action)
    waits = []
    if caller.address is not None:
        waits.append(rate_limits.hit(f"{action}:ip:{_hashed(caller.address)}", per_address))
    if caller.user_key:
        waits.append(rate_limits.hit(f"{action}:user:{_hashed(caller.user_key)}", per_user))
    wait = max((w for w in waits if w is not None), default=None)
    if wait is not None:
        raise Throttled(f"Too many {action} requests; try again in {wait} s.", retry_after=wait)


def page_caller(request: HttpRequest) -> Caller:
    """A page or beacon request: never keyed, so always counted by address, and by its user key."""
    return Caller(address=request_address(request), user_key=getattr(request, "user_key", None))


def api_caller(request) -> Caller:
    """A DRF request: a partner key's end user (``user=``) or an account; no key means the address too."""
    api_key = request.auth if isinstance(request.auth, ApiKey) else None
    if api_key is not None:
        end_user = request.query_params.get("user", "")
        if not end_user and request.method == "POST" and hasattr(request.data, "get"):
            end_user = request.data.get("user", "")
        end_user = end_user if isinstance(end_user, str) and PARTNER_USER.match(end_user) else ""
        return Caller(address=None, user_key=f"partner:{api_key.prefix}:{end_user}" if end_user else None)
    user = getattr(request, "user", None)
    account = f"account:{user.pk}" if user is not None and user.is_authenticated else None
    return Caller(address=request_address(request), user_key=account)


class _ActionThrottle(BaseThrottle):
    action = ""

    def allow_request(self, request, view) -> bool:
        self._wait = None
        try:
            check(self.action, api_caller(request))
        except Throttled as exc:
            self._wait = exc.retry_after
            return False
        return True

    def wait(self) -> float | None:
        return self._wait


class SearchThrottle(_ActionThrottle):
    action = SEARCH


class FeedbackThrottle(_ActionThrottle):
    action = FEEDBACK
