"""manage.py embedded status|stop: inspect or stop the embedded PostgreSQL and Redis."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from core.embedded import EmbeddedRedis, HandleList, stop_postgres


class Command(BaseCommand):
    help = "Show or stop the embedded servers under var/ (stop ends them even if processes still hold them)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "stop"])

    def handle(self, *args, **opts):
        redis = EmbeddedRedis(settings.VAR_DIR)
        if opts["action"] == "status":
            pg_holders = HandleList(settings.VAR_DIR / "pg" / ".handle_pids.json").live()
            self.stdout.write(
                f"postgres: {'embedded' if settings.EMBEDDED_POSTGRES else 'external'}; holders {pg_holders}"
            )
            self.stdout.write(
                f"redis: running={redis.is_running()} holders={redis.handles.live()} socket={redis.socket_path}"
            )
            return
        redis_was_running = redis.stop()
        # This very process holds PostgreSQL through the settings; stopping it is what was asked.
        pg_was_running = stop_postgres(settings.VAR_DIR)
        self.stdout.write(
            f"redis {'stopped' if redis_was_running else 'was not running'}; "
            f"postgres {'stopped' if pg_was_running else 'was not running'}"
        )
