"""Time-ordered search event ids (UUID version 7, RFC 9562).

The first 48 bits are the Unix time in milliseconds, so ids sort by creation (new rows land at the
end of the primary-key index instead of on random pages) and an id says when it was made: a click on
an event that is not stored yet waits only if the event is seconds old (its log may still be queued,
``feedback.log_writer``), never for an id that is old, forged or from the future.
"""

from __future__ import annotations

import os
import time
import uuid


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """A new version 7 UUID: 48 bits of milliseconds, version, 74 random bits, variant."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


def created_seconds_ago(event_id: uuid.UUID) -> float | None:
    """How long ago a version 7 id was made (negative if in the future); None for other versions."""
    if event_id.version != 7:
        return None
    return time.time() - (event_id.int >> 80) / 1000
