"""Where this checkout's processes meet: a short folder for Unix sockets, the same for every process."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path


def runtime_dir(var_dir: Path) -> Path:
    """A short per-checkout folder for Unix sockets (their paths are limited to ~100 bytes); not created here."""
    digest = hashlib.sha256(str(var_dir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"loupe-{digest}"
