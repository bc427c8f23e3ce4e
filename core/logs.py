"""Structured logs: one JSON object per line, and one line per HTTP request with its request id.

``LOUPE_LOG_FORMAT=json`` (the compose file's default) makes every log record a JSON object that log
shippers can index without parsing; ``plain`` (the default on one machine) stays readable in a
terminal. Fields given through ``extra=`` (``request_id``, ``path``, ``status``, ``duration_ms``...)
become keys of the object.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime

from django.http import HttpRequest, HttpResponse

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a key.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

request_logger = logging.getLogger("loupe.requests")


# C0 and C1 control characters and the Unicode line and paragraph separators: any of them in a logged
# value (a URL's %0a, a header) would start a forged line in a terminal or a line-based log shipper.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` on one line: each control character as its ``\\xNN`` / ``\\uNNNN`` escape."""
    return CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)


class PlainFormatter(logging.Formatter):
    """The terminal format, one record per line: the message's control characters escaped.

    A traceback, appended after the message, keeps its own lines: only the record's text is untrusted.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RequestLogMiddleware:
    """Logs each request once (method, path, status, duration) under a request id.

    The id comes from the ``X-Request-ID`` header when a proxy set a well-formed one, else a new one;
    it is echoed in the response so a user's report can be matched with the server's lines.
    Health and metrics probes are not logged (they arrive every few seconds).
    """

    QUIET_PATHS = ("/healthz", "/readyz", "/metrics")

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        request.request_id = request_id
        started = time.perf_counter()
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        if not request.path.startswith(self.QUIET_PATHS):
            request_logger.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "request_id": request_id,
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
        return response
