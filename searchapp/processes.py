"""The long-running processes of Loupe, defined once.

``manage.py run`` (the embedded one-machine default) and ``docker-compose.yml`` (production) start
the same commands; a test checks that the compose file's commands begin with these.
"""

WEB = ["gunicorn", "config.asgi:application", "-c", "python:config.gunicorn_conf"]
WORKER = ["celery", "-A", "workers", "worker", "--loglevel", "INFO", "-Q", "celery"]
# Fine-tuning and other long training jobs run on their own queue, so they never delay embedding.
TRAINER = ["celery", "-A", "workers", "worker", "--loglevel", "INFO", "-Q", "training", "-n", "trainer@%h"]
BEAT = ["celery", "-A", "workers", "beat", "--loglevel", "INFO"]

PROCESSES = {"web": WEB, "worker": WORKER, "trainer": TRAINER, "beat": BEAT}
