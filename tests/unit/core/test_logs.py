"""Structured log lines: one JSON object per record, with the fields given through ``extra``."""

import json
import logging

from core.logs import JsonFormatter


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
