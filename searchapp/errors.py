"""The base of every refusal a service makes: a stable ``code`` for API clients, an HTTP ``status``,
a message for people, and the request ``field`` at fault when there is one."""

from __future__ import annotations


class Refused(ValueError):
    code = "invalid_request"
    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
