"""Writing search logs off the request thread, so a search answers without waiting for its log.

A search's log (``feedback.impressions``) is one statement of about 2-3 ms under load, and nothing
in the answer depends on it: the event id is made before the write. With ``LOUPE_DEFER_SEARCH_LOG``
the statement is handed to one writer thread per process (with its own database connection) and the
response goes out at once.

What it costs, said plainly:
- a click can arrive before its event is written (a partner app that clicks within milliseconds of
  searching). ``feedback.capture`` waits for a missing event up to ``LOUPE_EVENT_WAIT_SECONDS``
  (flushing this process's queue first) before it refuses the click, so such clicks are kept;
- a process killed with SIGKILL loses the logs still queued (a few milliseconds' worth). That is the
  same class of loss the log's asynchronous commit already accepts for a database crash; a normal
  shutdown (SIGTERM, gunicorn restarts) flushes the queue first. Clicks and ratings are never deferred.

When the queue is long (the database is slower than the searches), the request thread writes its
own log, so memory stays bounded and the backlog is felt, not hidden.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import uuid

from django.db import connections

logger = logging.getLogger(__name__)
MAX_QUEUED = 200


class SearchLogWriter:
    """One background thread writing queued search logs in order."""

    def __init__(self, write) -> None:
        self._write = write
        self._queue: queue.Queue = queue.Queue()
        self._pending: set[uuid.UUID] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="search-log-writer", daemon=True)
        self._thread.start()

    def submit(self, event_id: uuid.UUID, params: dict) -> None:
        """Queue a log; when the queue is full, write it on the caller's thread instead."""
        if self._queue.qsize() >= MAX_QUEUED:
            self._write(params)
            return
        with self._lock:
            self._pending.add(event_id)
        self._queue.put((event_id, params))

    def is_pending(self, event_id: uuid.UUID) -> bool:
        with self._lock:
            return event_id in self._pending

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued log is written; False if that took longer than ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, close the thread's connection and end it."""
        self._queue.put((None, None))
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            event_id, params = self._queue.get()
            if event_id is None:
                connections.close_all()
                return
            try:
                if not self._write(params):  # counted and logged inside; the database may have restarted:
                    connections.close_all()  # a fresh connection, and one more try
                    self._write(params)
            except Exception:  # noqa: BLE001 - the writer must outlive any one failed write
                logger.exception("Writing a queued search log failed.")
                connections.close_all()
            finally:
                with self._idle:
                    self._pending.discard(event_id)
                    self._idle.notify_all()


_writers: dict[int, SearchLogWriter] = {}
_writers_lock = threading.Lock()


def writer(write) -> SearchLogWriter:
    """This process's writer (made after any fork: gunicorn and Celery fork after import)."""
    pid = os.getpid()
    with _writers_lock:
        if pid not in _writers:
            _writers[pid] = SearchLogWriter(write)
        return _writers[pid]


def current_writer() -> SearchLogWriter | None:
    return _writers.get(os.getpid())


def stop_writer() -> None:
    """Write what is queued and end this process's writer (its database connection closes with it)."""
    with _writers_lock:
        found = _writers.pop(os.getpid(), None)
    if found is not None:
        found.stop()


def flush_queued_logs(timeout: float = 10.0) -> bool:
    """Write everything queued in this process (clean shutdown, tests)."""
    found = current_writer()
    return True if found is None else found.flush(timeout)


atexit.register(stop_writer)
