"""Links to other sites that Loupe stores and shows (an image's attribution): http(s) only.

A stored URL ends up as an ``href``; any other scheme (``javascript:``, ``data:``, ``vbscript:``) runs
in Loupe's origin when clicked. Browsers remove tabs and newlines anywhere in a URL and strip leading
spaces and control characters before reading the scheme, so ``" Java\\nScript:alert(1)"`` is
``javascript:``: a URL with any whitespace or control character is refused outright rather than cleaned.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from core.errors import Refused

MAX_URL_CHARS = 2000
SCHEMES = ("http", "https")


class InvalidLink(Refused):
    code = "invalid_link"


def _is_plain(value: str) -> bool:
    return all(ch.isprintable() and not ch.isspace() for ch in value)


def http_url(value: object) -> str:
    """``value`` if it is an absolute http(s) URL with a host, else ``""``: what may become an href."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL_CHARS or not _is_plain(value):
        return ""
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return ""
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        return ""
    return value


def checked_http_url(value: str, *, field: str) -> str:
    """For writes: ``""`` stays empty, an http(s) URL is kept, anything else is refused with the field named."""
    if value == "":
        return ""
    if not http_url(value):
        raise InvalidLink(
            f"{field} must be an absolute http:// or https:// URL (no spaces or control characters, "
            f"at most {MAX_URL_CHARS} characters).",
            field=field,
        )
    return value
