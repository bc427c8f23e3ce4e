"""manage.py run: the whole product on one machine (what the README's first command calls).

It holds the embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL point elsewhere),
migrates, makes sure a model can serve, ingests the demo set into an empty collection, then runs
the web server (gunicorn), a Celery worker and Celery beat as child processes with the servers'
URLs in their environment. Ctrl-C (or SIGTERM) stops the children, then the embedded servers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from collection.encoders import DEMO_NOTICE, EncoderLoadError, serving_encoder
from collection.models import Image
from core.embedded import embedded_redis
from core.embedded_postgres.base import database_url
from searchapp.processes import BEAT, TRAINER, WEB, WORKER

DEMO_SET = Path(settings.BASE_DIR) / "demo" / "demo.jsonl"


class Command(BaseCommand):
    help = "Run Loupe: embedded servers, migrations, demo data, web, Celery worker and beat."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("LOUPE_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("LOUPE_PORT", "8000")))
        parser.add_argument("--web-workers", type=int, default=int(os.environ.get("LOUPE_WEB_WORKERS", "2")))
        parser.add_argument("--no-demo-data", action="store_true", help="Do not ingest the demo set.")
        parser.add_argument("--no-worker", action="store_true", help="Run only the web server.")

    def handle(self, *args, **opts):
        self._children: list[tuple[str, subprocess.Popen]] = []
        self._stopping = False
        child_env = dict(os.environ, DATABASE_URL=database_url(settings.DATABASES["default"]), PYTHONUNBUFFERED="1")
        if settings.EMBEDDED_REDIS:
            child_env["REDIS_URL"] = embedded_redis(settings.VAR_DIR).acquire()
        else:
            child_env["REDIS_URL"] = settings.REDIS_URL
        pg = f"embedded PostgreSQL in {settings.VAR_DIR / 'pg'}" if settings.EMBEDDED_POSTGRES else "DATABASE_URL"
        broker = f"embedded Redis in {settings.VAR_DIR / 'redis'}" if settings.EMBEDDED_REDIS else "REDIS_URL"
        self.stdout.write(f"Database: {pg}\nBroker:   {broker}")

        child_env["PROMETHEUS_MULTIPROC_DIR"] = str(self._fresh_metrics_dir())
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        child_env["LOUPE_CLIP_MODEL"] = self._resolve_model()
        self._demo_data(opts["no_demo_data"])

        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        python = sys.executable
        self._spawn(
            "web",
            [python, "-m", *WEB, "--bind", f"{opts['host']}:{opts['port']}", "--workers", str(opts["web_workers"])],
            child_env,
        )
        if not opts["no_worker"]:
            self._spawn("worker", [python, "-m", *WORKER, "--concurrency", "1"], child_env)
            self._spawn("trainer", [python, "-m", *TRAINER, "--concurrency", "1"], child_env)
            self._spawn(
                "beat", [python, "-m", *BEAT, "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")], child_env
            )
        url = f"http://{'localhost' if opts['host'] in ('127.0.0.1', '0.0.0.0') else opts['host']}:{opts['port']}/"
        self.stdout.write(
            self.style.SUCCESS(f"\nLoupe is running at {url}  (admin: {url}admin/, API: {url}api/v1/docs)")
        )
        self.stdout.write("Press Ctrl-C to stop.\n")
        exit_code = self._watch()
        self._stop_children()
        if exit_code:
            raise CommandError(f"A process of Loupe exited with status {exit_code}; everything was stopped.")

    # --- steps ------------------------------------------------------------------------------------------
    @staticmethod
    def _fresh_metrics_dir() -> Path:
        """Prometheus multiprocess files of this run's processes (a previous run's would add up wrongly)."""
        folder = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.VAR_DIR / "prometheus")
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # only prometheus_client's own files: the folder may be the user's
            stale.unlink()
        return folder

    def _resolve_model(self) -> str:
        """The model the children load: the configured one, or (said plainly) the demo model."""
        self.stdout.write(f"Model:    {settings.LOUPE_CLIP_MODEL}")
        try:
            choice = serving_encoder()
        except EncoderLoadError as exc:
            raise CommandError(f"{exc}\nSet LOUPE_CLIP_MODEL to a local model folder.") from None
        if choice.fell_back:
            reason = choice.fallback_reason.splitlines()[0]
            self.stdout.write(
                self.style.WARNING(
                    f"\n  The model {choice.requested_ref!r} could not be loaded:\n    {reason}\n"
                    "  To use a real model, either give this machine internet access (the model downloads once),\n"
                    "  or copy a CLIP-family model folder here and start with\n"
                    "    LOUPE_CLIP_MODEL=/path/to/clip-vit-base-patch32 bin/run\n"
                    f"  Carrying on with the offline demo model in {choice.encoder.model_ref}.\n  {DEMO_NOTICE}\n"
                )
            )
        return choice.encoder.model_ref

    def _demo_data(self, skip: bool) -> None:
        if not skip and not Image.objects.exists():
            self.stdout.write("The collection is empty: ingesting the demo set (40 COCO images).")
            call_command("ingest", str(DEMO_SET), verbosity=0)
        else:
            call_command("embed", local=True, verbosity=0)  # the workers start after this
        self.stdout.write(f"Collection: {Image.objects.count()} images")

    # --- children ---------------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict) -> None:
        process = subprocess.Popen(argv, env=env, cwd=settings.BASE_DIR, start_new_session=True)
        self._children.append((name, process))

    def _on_signal(self, signum, _frame) -> None:
        self._stopping = True

    def _watch(self) -> int:
        while not self._stopping:
            for name, process in self._children:
                code = process.poll()
                if code is not None:
                    self.stderr.write(f"{name} exited with status {code}")
                    return code or 1
            time.sleep(0.5)
        return 0

    def _stop_children(self) -> None:
        self.stdout.write("Stopping Loupe...")
        for _name, process in self._children:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name, process in self._children:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in time; killing it.")
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if settings.EMBEDDED_REDIS:
            embedded_redis(settings.VAR_DIR).release()
        self.stdout.write("Stopped.")
