"""The Celery app: configured from Django settings (CELERY_*), tasks found in each app's tasks module."""

import os

from celery import Celery
from celery.signals import beat_init, worker_init, worker_process_init
from django.conf import settings
from django.db import connections

from core.embedded import embedded_redis

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("loupe")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])


@worker_init.connect
@beat_init.connect
def _hold_embedded_redis(**_kwargs) -> None:
    """A worker or beat started on its own holds the embedded Redis (starting it if need be)."""

    if settings.EMBEDDED_REDIS:
        embedded_redis(settings.VAR_DIR).acquire()


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    """Forked pool processes must not share the parent's database connection."""

    for conn in connections.all():
        conn.close_if_unusable_or_obsolete()
