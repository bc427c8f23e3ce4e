"""Images an ingest job names by URL: fetched only from the hosts ``LOUPE_INGEST_URL_ALLOW`` lists.

Off by default (an empty list): a server that fetches any URL a key names can be made to read its own
network (SSRF). Redirects are not followed, since one could lead off the allowed hosts; the size is
checked while reading, so a huge or endless body stops at ``LOUPE_MAX_UPLOAD_BYTES``.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlparse

from django.conf import settings

from collection.images import InvalidImage

FETCH_TIMEOUT_SECONDS = 20


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise InvalidImage(f"The URL redirects (HTTP {code}); give the final address.", field="url")


_opener = urllib.request.build_opener(_NoRedirects)


def allowed_url(url: str) -> str:
    """``url`` if it is http(s) on an allowed host; InvalidImage otherwise."""
    allow = {host.lower() for host in settings.LOUPE_INGEST_URL_ALLOW}
    if not allow:
        raise InvalidImage("Adding images by URL is off on this server (LOUPE_INGEST_URL_ALLOW is empty).", field="url")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidImage("Give an http(s) URL.", field="url")
    if parsed.hostname.lower() not in allow:
        raise InvalidImage(f"The host {parsed.hostname!r} is not one this server may fetch from.", field="url")
    return url


def fetch_url(url: str) -> bytes:
    """The bytes at an allowed URL, at most ``LOUPE_MAX_UPLOAD_BYTES``."""
    limit = settings.LOUPE_MAX_UPLOAD_BYTES
    url = allowed_url(url)
    try:
        with _opener.open(url, timeout=FETCH_TIMEOUT_SECONDS) as response:
            data = response.read(limit + 1)
    except InvalidImage:  # a redirect refused; a ValueError, but already in the partner's words
        raise
    except urllib.error.HTTPError as exc:
        raise InvalidImage(f"The URL answered HTTP {exc.code}.", field="url") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise InvalidImage(f"The URL cannot be fetched ({reason}).", field="url") from None
    if len(data) > limit:
        raise InvalidImage(f"The file is over the {limit:,}-byte limit.", field="url")
    return data
