"""The base of every refusal a service makes: a stable ``code`` for API clients, an HTTP ``status``,
a message for people, and the request ``field`` at fault when there is one."""

from __future__ import annotations


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    """``{"error": {"code", "message", "fields"?}}``: the one error shape of the API and the page endpoints."""
    body = {"error": {"code": code, "message": message}}
    if fields:
        body["error"]["fields"] = fields
    return body


class Refused(ValueError):
    code = "invalid_request"
    status = 400
    retry_after: int | None = None  # seconds, for refusals that pass (answered with a Retry-After header)

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def body(self) -> dict:
        return error_body(self.code, str(self), {self.field: str(self)} if self.field else None)


class UnknownImage(Refused):
    """A request names an image the collection does not have (search by example, feedback, the API)."""

    code = "unknown_image"
    status = 404
