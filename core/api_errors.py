"""One JSON error shape for every API failure: ``{"error": {"code", "message", "fields"}}``."""

from __future__ import annotations

from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import Refused, error_body


def error_response(code: str, message: str, http_status: int, fields: dict | None = None) -> Response:
    return Response(error_body(code, message, fields), status=http_status)


def flatten_errors(detail, prefix: str = "") -> dict:
    """``{field: message}`` in plain words; nested errors (a list's items) keyed ``items.0``.

    ``str()`` of a nested dict of ``ErrorDetail`` printed Python's repr to API clients (issue 19, finding 9).
    """
    if not isinstance(detail, dict):
        return {}
    fields: dict = {}
    for key, value in detail.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            fields.update(flatten_errors(value, name))
        elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
            fields.update(flatten_errors({str(i): v for i, v in enumerate(value) if v}, name))
        else:
            fields[name] = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return fields


def exception_handler(exc, context):
    if isinstance(exc, Refused):
        response = Response(exc.body(), status=exc.status)
        if exc.retry_after is not None:
            response["Retry-After"] = str(exc.retry_after)
        return response
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real server error: Django's 500 handling and logging take over
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten_errors(exc.detail)
        message = "; ".join(f"{k}: {v}" for k, v in fields.items()) or "Invalid request."
        code = "invalid_request"
    else:
        code = getattr(exc, "default_code", "error")
        message = str(getattr(exc, "detail", exc))
        fields = None
    response.data = {"error": {"code": code, "message": message, **({"fields": fields} if fields else {})}}
    return response


class ErrorSerializer(serializers.Serializer):
    """``{"error": {"code": "...", "message": "...", "fields": {"name": "why"}}}``"""

    error = serializers.DictField()
