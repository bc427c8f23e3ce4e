"""Django's PostgreSQL backend over the embedded server (``core.embedded``), started on first connect.

The settings name this backend when no ``DATABASE_URL`` is configured, with ``EMBEDDED_VAR_DIR`` in the
database's settings. Importing the settings therefore starts nothing; the first connection a process
opens (a command, a web worker, a Celery task, the test session) starts or reuses the server and
points every connection of the process at its socket.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from django.db.backends.postgresql import base

from core.embedded import postgres_url


def start_embedded(settings_dict: dict) -> str:
    """Start (or reuse) the server for these database settings; fill in its socket and return its URL."""
    url = postgres_url(Path(settings_dict["EMBEDDED_VAR_DIR"]))
    parts = urlsplit(url)
    settings_dict["HOST"] = parse_qs(parts.query)["host"][0]
    settings_dict["USER"] = parts.username or "postgres"
    return url


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict:
        start_embedded(self.settings_dict)
        return super().get_connection_params()


def database_url(settings_dict: dict) -> str:
    """A URL for child processes: the embedded server's (started if need be), else the configured one."""
    if settings_dict.get("EMBEDDED_VAR_DIR"):
        return start_embedded(settings_dict)
    return os.environ["DATABASE_URL"]
