"""Structured log lines: one JSON object per record, with the fields given through ``extra``."""

import json
import logging
import sys

from django.conf import settings
from django.utils.module_loading import import_string

from core.logs import JsonFormatter, PlainFormatter


def record(message: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    made = logging.LogRecord("loupe.test", logging.WARNING, __file__, 1, message, args, exc_info)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_a_record_becomes_one_json_line_with_its_extra_fields():
    line = JsonFormatter().format(record("search took %s ms", 12, request_id="abc", status=200, obj=object()))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "search took 12 ms" and entry["level"] == "WARNING" and entry["logger"] == "loupe.test"
    assert entry["request_id"] == "abc" and entry["status"] == 200 and entry["obj"].startswith("<object")
    assert entry["ts"].endswith("+00:00")


def test_exceptions_and_newlines_stay_inside_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        line = JsonFormatter().format(record("failed: %s", "multi\nline", exc_info=sys.exc_info()))
    assert "\n" not in line
    entry = json.loads(line)
    assert "ValueError: bad\nthing" in entry["exception"] and entry["message"] == "failed: multi\nline"


def test_plain_lines_escape_control_characters_so_a_url_cannot_forge_a_line():
    """Finding 9 of issue 19: ``%0a`` in a URL decodes to a newline in ``request.path``."""
    forged = "/search\n2026-12-02 13:00:00,000 INFO loupe.requests: GET /admin/ 200\x1b[2K\u2028"
    line = PlainFormatter("%(levelname)s %(name)s: %(message)s").format(record("GET %s 404", forged))
    assert "\n" not in line and "\x1b" not in line and "\u2028" not in line
    assert line == (
        "WARNING loupe.test: GET /search\\n2026-12-02 13:00:00,000 INFO loupe.requests: GET /admin/ 200"
        "\\x1b[2K\\u2028 404"
    )


def test_a_traceback_keeps_its_lines_in_plain_format():
    try:
        raise ValueError("bad")
    except ValueError:
        line = PlainFormatter().format(record("failed\nhere", exc_info=sys.exc_info()))
    message, *trace = line.split("\n")
    assert message == "failed\\nhere" and trace[0] == "Traceback (most recent call last):"


def test_the_configured_plain_format_is_the_escaping_one():
    plain = settings.LOGGING["formatters"]["plain"]
    assert import_string(plain["class"]) is PlainFormatter
