from __future__ import annotations

import os
from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


def prepare_var_dir() -> None:
    """Make the folders the product writes to, and keep one secret key for every process of this checkout.

    Runs when Django starts, never on importing the settings. A fresh checkout has no key file yet: this
    process's random key is written with O_EXCL, and a process that loses that race adopts the winner's.
    """
    Path(settings.VAR_DIR).mkdir(parents=True, exist_ok=True)
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
    if settings.SECRET_KEY_FROM_ENV:
        return
    path = Path(settings.SECRET_KEY_FILE)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        settings.SECRET_KEY = path.read_text().strip()
        return
    with os.fdopen(descriptor, "w") as handle:
        handle.write(settings.SECRET_KEY)


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Loupe plumbing"

    def ready(self) -> None:
        prepare_var_dir()
