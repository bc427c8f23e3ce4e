"""The text channels of a text search: full-text matches and caption vectors, run beside CLIP.

Neither channel needs the CLIP vector, so with ``LOUPE_PARALLEL_CHANNELS`` they start before the
CLIP text tower runs and work in a small per-process thread pool while it does: the full-text
query and the caption-vector search (sentence encoding, then HNSW) each on their own database
connection. PostgreSQL answers on other cores and ONNX Runtime / PyTorch release the GIL, so most
of the channels' time is hidden behind CLIP's (measured in docs/performance.md).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections, connections

from collection.index import Neighbour, nearest_caption_images
from collection.metadata_filter import NO_FILTER, MetadataFilter
from collection.text_index import full_text_matches
from collection.versions import sentence_version


@dataclass(frozen=True)
class TextChannels:
    """Each text channel's ranked images (with their text flags) and its fusion weight."""

    rankings: dict[str, list[Neighbour]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)


def full_text_channel(
    text: str, depth: int, tags: Sequence[str], metadata: MetadataFilter = NO_FILTER
) -> tuple[list[Neighbour], float]:
    return full_text_matches(text, k=depth, tags=tags, metadata=metadata), settings.LOUPE_FTS_WEIGHT


def caption_channel(
    text: str, depth: int, tags: Sequence[str], metadata: MetadataFilter = NO_FILTER
) -> tuple[list[Neighbour], float] | None:
    sentence_encoder, text_version = sentence_version()
    if sentence_encoder is None:
        return None
    matches = nearest_caption_images(
        text_version,
        sentence_encoder.encode_query(text),
        k=depth,
        tags=tags,
        metadata=metadata,
        min_similarity=settings.LOUPE_CAPTION_MIN_SIMILARITY,
        text_flags=True,
    )
    return matches, text_version.channel_weight


CHANNELS: dict[str, Callable] = {"fts": full_text_channel, "caption": caption_channel}


def channel_weights() -> tuple[float, float]:
    """(full-text, caption) fusion weights as the channels above give them now: part of a cached order's key,
    so a calibration that changes one is a new key at once."""
    _, text_version = sentence_version()
    return settings.LOUPE_FTS_WEIGHT, (text_version.channel_weight if text_version is not None else 0.0)


def _collect(results: dict[str, tuple[list[Neighbour], float] | None]) -> TextChannels:
    channels = TextChannels()
    for name, result in results.items():
        if result is not None:
            channels.rankings[name], channels.weights[name] = result
    return channels


def run_text_channels(text: str, depth: int, tags: Sequence[str], metadata: MetadataFilter = NO_FILTER) -> TextChannels:
    """Both channels, one after the other, in this thread."""
    return _collect({name: channel(text, depth, tags, metadata) for name, channel in CHANNELS.items()})


def start_text_channels(
    text: str, depth: int, tags: Sequence[str], metadata: MetadataFilter = NO_FILTER
) -> Callable[[], TextChannels]:
    """Start the channels (in the pool when parallel); call the returned function for their results.

    Every channel gets the search's tags and metadata filter, so a filtered search fuses only images
    that pass it, each channel's list as deep as unfiltered."""
    if not settings.LOUPE_PARALLEL_CHANNELS:
        return lambda: run_text_channels(text, depth, tags, metadata)
    pool = channel_pool()
    futures: dict[str, Future] = {
        # In the search's context, so each channel reads the database the search reads (core.replicas).
        name: pool.submit(copy_context().run, _on_own_connection, channel, text, depth, tags, metadata)
        for name, channel in CHANNELS.items()
    }
    return lambda: _collect({name: future.result() for name, future in futures.items()})


def _on_own_connection(channel: Callable, *args):
    """Pool threads keep a persistent connection each; drop it first if it is too old or broken."""
    close_old_connections()
    return channel(*args)


POOL_THREADS = 2 * len(CHANNELS)
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def channel_pool() -> ThreadPoolExecutor:
    """One pool per process, made after any fork (gunicorn and Celery workers fork after import)."""
    pid = os.getpid()
    with _pools_lock:
        if pid not in _pools:
            _pools[pid] = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="text-channel")
        return _pools[pid]


def shutdown_pool() -> None:
    """Close every pool thread's database connection, then the pool (tests; clean process exit).

    Connections belong to their threads, so each thread must close its own: one task per thread,
    held at a barrier until all are running, guarantees every thread gets one.
    """
    with _pools_lock:
        pool = _pools.pop(os.getpid(), None)
    if pool is None:
        return
    workers = POOL_THREADS
    barrier = threading.Barrier(workers)

    def close_own_connection() -> None:
        barrier.wait(timeout=10)
        connections.close_all()

    for future in [pool.submit(close_own_connection) for _ in range(workers)]:
        future.result()
    pool.shutdown(wait=True)
