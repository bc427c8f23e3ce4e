"""Fixed-window request counters in the shared throttle cache (Redis in production).

One ``INCR`` per counter and request: atomic across every web process and machine, unlike a
read-modify-write list of timestamps (DRF's ``SimpleRateThrottle``), which parallel requests can
undercount. Search and feedback must keep working when Redis is down (``docs/architecture.md``:
they never depend on it), so an unreachable cache lets the request through and says so in the log.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass

from django.core.cache import caches

CACHE_ALIAS = "throttle"
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

log = logging.getLogger(__name__)
# With Redis down every request would log; once a minute per process says it as clearly.
WARN_EVERY_SECONDS = 60.0
_last_warning = [0.0]


def _cache_failed(what: str) -> None:
    now = time.monotonic()
    if now - _last_warning[0] >= WARN_EVERY_SECONDS:
        _last_warning[0] = now
        log.warning("throttle cache unreachable: %s; requests are not counted", what, exc_info=True)


@dataclass(frozen=True)
class Rate:
    """``requests`` per ``seconds``; ``requests == 0`` means no limit."""

    requests: int
    seconds: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"120/min"``, ``"10/5s"``, ``"1000/hour"``; ``"0/min"`` (or empty) turns the limit off."""
        if not text.strip():
            return cls(0, 60)
        match = _RATE.match(text.lower())
        if match is None:
            raise ValueError(f"{text!r} is not a rate like '120/min' or '10/5s'.")
        requests, multiple, unit = int(match[1]), int(match[2] or 1), match[3][0]
        return cls(requests, multiple * _UNIT_SECONDS[unit])


def hit(key: str, rate: Rate, now: float | None = None) -> int | None:
    """Count one request under ``key``; the seconds to wait when it is over ``rate``, else None."""
    if rate.requests <= 0:
        return None
    now = time.time() if now is None else now
    window = int(now // rate.seconds)
    counter = f"loupe:rate:{key}:{rate.seconds}:{window}"
    cache = caches[CACHE_ALIAS]
    try:
        cache.add(counter, 0, timeout=rate.seconds + 1)
        count = cache.incr(counter)
    except ValueError:  # expired between add and incr: this request opens the window again
        cache.set(counter, 1, timeout=rate.seconds + 1)
        count = 1
    except Exception:  # noqa: BLE001 - any cache failure (connection refused, timeout) lets requests through
        _cache_failed(f"counting {key}")
        return None
    if count <= rate.requests:
        return None
    return max(1, math.ceil((window + 1) * rate.seconds - now))


def count(key: str) -> int:
    """How many times ``add`` was called for ``key`` in its current window (0 when the cache is down)."""
    try:
        return int(caches[CACHE_ALIAS].get(f"loupe:count:{key}", 0))
    except Exception:  # noqa: BLE001 - see hit()
        _cache_failed(f"reading {key}")
        return 0


def add(key: str, window_seconds: int) -> int:
    """One more under ``key``, remembered ``window_seconds`` from the first; the new total."""
    cache = caches[CACHE_ALIAS]
    counter = f"loupe:count:{key}"
    try:
        cache.add(counter, 0, timeout=window_seconds)
        return cache.incr(counter)
    except ValueError:
        cache.set(counter, 1, timeout=window_seconds)
        return 1
    except Exception:  # noqa: BLE001 - see hit()
        _cache_failed(f"counting {key}")
        return 0


def reset(key: str) -> None:
    try:
        caches[CACHE_ALIAS].delete(f"loupe:count:{key}")
    except Exception:  # noqa: BLE001 - see hit()
        _cache_failed(f"resetting {key}")
