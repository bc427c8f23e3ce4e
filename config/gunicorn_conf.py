"""gunicorn settings shared by ``manage.py run`` and the compose file (``-c python:config.gunicorn_conf``).

Everything else (bind address, worker count) comes from the command line or GUNICORN_CMD_ARGS.
"""

import os

from prometheus_client import multiprocess

from config.settings import VAR_DIR
from core.runtime import runtime_dir

# The asyncio worker reads every request on its event loop, so clients that trickle their headers or
# bodies cost a coroutine each instead of one of the few threads (issue 19, item 6: gthread gave each
# connection a thread while it was read, and 8 slow clients stopped the site). The Django application
# runs on LOUPE_WEB_THREADS threads per worker once its request is in (config.asgi, core.threaded_wsgi).
worker_class = "asgi"
# Connections held open per worker (slow ones included): far more than 8, bounded so memory is.
worker_connections = int(os.environ.get("LOUPE_WEB_CONNECTIONS", "1000"))
timeout = 120
graceful_timeout = 30
# Requests are logged once, as structured lines, by core.logs.RequestLogMiddleware.
accesslog = None
# gunicorn's control socket (gunicornc: worker counts, reload, shutdown) defaults to one path per user
# ($XDG_RUNTIME_DIR/gunicorn.ctl), so two instances on one machine would share it and one could steer the
# other. Each instance gets its own, in its var folder's socket folder (core.runtime), owner-only.
control_socket = str(runtime_dir(VAR_DIR) / "gunicorn.ctl")
control_socket_mode = 0o600


def child_exit(server, worker) -> None:
    """A dead worker's Prometheus files stop counting as live gauges (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
