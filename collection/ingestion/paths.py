"""Files a partner names by path: allowed only inside ``LOUPE_INGEST_ROOTS`` (symlinks resolved), read bounded.

Used by the single-image API (``POST /api/v1/images`` with ``path``) and by ingest jobs, so both refuse the
same paths with the same words.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from django.conf import settings

from collection.images import InvalidImage


def allowed_path(raw: str) -> Path:
    """The file a partner named, if it lies inside an ingest folder; InvalidImage otherwise."""
    if raw.startswith("file:"):
        parsed = urlparse(raw)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidImage("Only file:// URLs of this server are accepted.")
        raw = unquote(parsed.path)
    if "\x00" in raw:
        raise InvalidImage("The path contains a NUL character.")
    if not settings.LOUPE_INGEST_ROOTS:
        raise InvalidImage("Adding images by path is off on this server (LOUPE_INGEST_ROOTS is empty).")
    path = Path(raw)
    if not path.is_absolute():
        raise InvalidImage("Give an absolute path.")
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop, a name too long
        raise InvalidImage("That path cannot be resolved.") from None
    if not any(resolved.is_relative_to(root) for root in settings.LOUPE_INGEST_ROOTS):
        raise InvalidImage("That path is outside the folders this server may ingest from.")
    if not resolved.is_file():
        raise InvalidImage("There is no file at that path.")
    return resolved


def read_path(path: Path) -> bytes:
    """The file's bytes, its size checked first; a file the server may not read is the partner's 400."""
    try:
        if path.stat().st_size > settings.LOUPE_MAX_UPLOAD_BYTES:
            raise InvalidImage(f"The file is over the {settings.LOUPE_MAX_UPLOAD_BYTES:,}-byte limit.")
        return path.read_bytes()
    except OSError as exc:  # permissions, a folder's race, an I/O error: once a 500 (issue 19, finding 9)
        raise InvalidImage(f"The server cannot read that file ({exc.strerror or type(exc).__name__}).") from None
