"""A WSGI application served from an asyncio front: a slow client costs a coroutine, not a thread.

gunicorn's threaded worker gives each connection a thread from the moment its first byte arrives
until the request is read, so eight clients trickling their headers a byte a second held every
thread of ``manage.py run`` (2 workers x 4 threads) and ``/healthz`` timed out (issue 19, item 6).
gunicorn's own ``asgi`` worker reads headers and bodies on an event loop; this adapter waits there
until the whole body is in (bounded by ``max_body``), and only then hands the request to a thread
of a fixed pool that runs the unchanged Django WSGI application. Django's own ASGI handler is not
used because it runs every synchronous view of a process in one shared thread
(``sync_to_async(thread_sensitive=True)``), which would serve one search at a time per worker.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_to_bytes

from core.errors import error_body

# A body larger than this goes to a temporary file instead of memory while it is buffered.
SPOOL_BYTES = 1024 * 1024


class ThreadedWsgi:
    """An ASGI application that runs ``app`` (WSGI) on ``threads`` threads once a request is read."""

    def __init__(self, app: Callable, *, threads: int, max_body: int) -> None:
        self.app = app
        self.threads = threads
        self.max_body = max_body
        self._pool: ThreadPoolExecutor | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise ValueError(f"Only HTTP is served, not {scope['type']}.")
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor(), self._run, scope, body, loop, send)

    def _executor(self) -> ThreadPoolExecutor:
        # Made in the serving process (gunicorn forks workers after loading the configuration).
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="wsgi")
        return self._pool

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # Requests still running finish (and the search log writer flushes at exit).
                if self._pool is not None:
                    await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read_body(self, scope: dict, receive: Callable, send: Callable):
        """The whole request body in a spooled file, or None when it was refused (413) or the client left."""
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await self._refuse_too_large(send)
            return None
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed when the request ends
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body.close()
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                body.close()
                await self._refuse_too_large(send)
                return None
            body.write(chunk)
            if not message.get("more_body", False):
                break
        body.seek(0)
        return body

    async def _refuse_too_large(self, send: Callable) -> None:
        payload = json.dumps(
            error_body("body_too_large", f"The request body is larger than {self.max_body} bytes.")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _run(self, scope: dict, body, loop: asyncio.AbstractEventLoop, send: Callable) -> None:
        """Runs in a pool thread: the WSGI call, its response sent through the event loop."""

        def deliver(message: dict) -> None:
            # Waiting for each send keeps a large response (media) from piling up in memory.
            asyncio.run_coroutine_threadsafe(send(message), loop).result()

        started: dict = {}

        def start_response(status: str, headers: list, exc_info=None):
            if exc_info is not None and started.get("sent"):
                raise exc_info[1].with_traceback(exc_info[2])
            started["status"] = int(status.split(" ", 1)[0])
            # Names keep Django's spelling on the wire, as under gthread (clients that match case exist).
            started["headers"] = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
            return write

        def begin() -> None:
            if not started.get("sent"):
                started["sent"] = True
                deliver({"type": "http.response.start", "status": started["status"], "headers": started["headers"]})

        def write(data: bytes) -> None:
            begin()
            deliver({"type": "http.response.body", "body": data, "more_body": True})

        try:
            result: Iterable[bytes] = self.app(wsgi_environ(scope, body), start_response)
            try:
                for chunk in result:
                    if chunk:
                        write(chunk)
            finally:
                # Django's request_finished (database connections closed or kept) fires here.
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            begin()
            deliver({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            body.close()


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def wsgi_environ(scope: dict, body) -> dict:
    """The WSGI environ of an ASGI HTTP scope whose body is already buffered in ``body``."""
    body.seek(0, 2)
    length = body.tell()
    body.seek(0)
    root_path = scope.get("root_path", "")
    # PEP 3333: str values hold the bytes as latin-1. The raw path keeps bytes that are not UTF-8,
    # which the ASGI path (decoded) has replaced.
    raw_path = scope.get("raw_path")
    path = unquote_to_bytes(raw_path) if raw_path else scope["path"].encode("utf-8")
    root = root_path.encode("utf-8")
    if root and path.startswith(root):
        path = path[len(root) :]
    server = scope.get("server") or ("localhost", 80)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root.decode("latin-1"),
        "PATH_INFO": path.decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] or 0),
        # The length of what was read, so a chunked upload reads like one with Content-Length.
        "CONTENT_LENGTH": str(length),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = str(client[0]), str(client[1])
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").upper().replace("-", "_"), raw_value.decode("latin-1")
        if name == "CONTENT_LENGTH" or name == "TRANSFER_ENCODING":
            continue
        key = "CONTENT_TYPE" if name == "CONTENT_TYPE" else f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ
