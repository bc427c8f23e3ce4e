"""A value read from the database and re-read every ``LOUPE_EXPERIMENT_CHECK_SECONDS`` per process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from django.conf import settings

T = TypeVar("T")


class Reloaded(Generic[T]):
    """``get()`` returns the last loaded value, reloading it when it is older than the check interval.

    Experiments and production's configuration change rarely and are read on every search; a few
    seconds of staleness across web processes is the price of not querying them each time.
    """

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._checked_at = -1e9
        self._value: T | None = None

    def get(self) -> T:
        if time.monotonic() - self._checked_at >= settings.LOUPE_EXPERIMENT_CHECK_SECONDS:
            with self._lock:
                self._value = self._load()
                self._checked_at = time.monotonic()
        return self._value

    def forget(self) -> None:
        with self._lock:
            self._checked_at, self._value = -1e9, None
