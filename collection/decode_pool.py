"""Reading and decoding images in a few threads, ahead of the encoder, in order and in bounded memory.

Serial ingestion decodes, resizes and thumbnails an image, then waits while the encoder embeds it,
leaving the CPU's other cores idle during decode and the encoder idle during I/O. PIL releases the
GIL while it decodes, resizes and encodes JPEG, and NumPy while it normalises, so threads overlap that
work with the encoder (no processes: no pickling of pixels). At most ``window`` items are in flight,
so memory stays bounded whatever the size of the collection, and results come back in input order, so
a run is as reproducible as the serial one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Prepared(Generic[Item, Result]):
    """What the pool made of one item: its result, or the exception preparing it raised."""

    item: Item
    result: Result | None = None
    error: BaseException | None = None


def _prepare(work: Callable[[Item], Result], item: Item) -> Prepared:
    try:
        return Prepared(item, work(item))
    except Exception as exc:  # noqa: BLE001 - handed back with its item: the caller decides (skip, report)
        return Prepared(item, error=exc)


def prepared_in_order(
    work: Callable[[Item], Result], items: Iterable[Item], *, workers: int, window: int | None = None
) -> Iterator[Prepared]:
    """``work(item)`` for each item, run in ``workers`` threads, yielded in input order.

    ``window`` (default four per worker) bounds the items submitted and not yet consumed. With
    ``workers`` 0 everything runs in the calling thread, one item at a time (the serial path).
    """
    if workers <= 0:
        for item in items:
            yield _prepare(work, item)
        return
    window = max(1, window or 4 * workers)
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loupe-decode") as pool:
        try:
            for item in items:
                pending.append(pool.submit(_prepare, work, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # a consumer that stops early: drop what was not started
                future.cancel()


def chunked(results: Iterable[Result], size: int) -> Iterator[list[Result]]:
    """Consecutive lists of ``size`` results (the last may be shorter): the batches an encoder or insert takes."""
    chunk: list[Result] = []
    for result in results:
        chunk.append(result)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
