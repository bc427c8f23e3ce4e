"""A short-lived, per-process cache of whole served orders, for queries that repeat.

Search traffic is heavy-tailed: the same few hundred queries make up much of it. For those, the
encoder, the three retrieval channels and the reranker's features would compute the same order
again; the cache keeps it for ``LOUPE_RESULT_CACHE_SECONDS`` (0 turns it off). What is cached is
the order *before* paging and before the randomised slices, so every search still draws its own
swap or exploration slice, pages from the same list, and is logged with its own event.

The key names everything the order depends on: the encoder version, the normalised query, tags,
candidate depth, whether text channels ran, the ranker version and depth, and the cut thresholds.
A newly promoted ranker or encoder is a new key at once, and so is an edit or a takedown of any stored
image (the catalogue revision, ``collection.revisions``, read once per search). New images and new
feedback priors reach a cached query within the time to live, which is the staleness this trades for speed.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import replace
from typing import Any

from django.conf import settings


class ResultCache:
    """Least recently used entries, each valid for ``ttl`` seconds from when it was stored."""

    def __init__(self, max_entries: int, max_depth: int, mark=lambda value: replace(value, cached=True)) -> None:
        self.max_entries = max_entries
        self.max_depth = max_depth  # orders deeper than this many candidates are not kept
        self._mark = mark  # what a hit returns for the stored value
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def ttl() -> float:
        return settings.LOUPE_RESULT_CACHE_SECONDS

    def get(self, key: Hashable):
        """The cached order (marked ``cached``), or None."""
        if self.ttl() <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] < now:
                if entry is not None:
                    del self._entries[key]
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
        return self._mark(entry[1])

    def put(self, key: Hashable, value) -> None:
        ttl = self.ttl()
        if ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget_where(self, drop) -> None:
        """Drop the entries whose key ``drop(key)`` names (an erased user's personalised orders)."""
        with self._lock:
            for key in [key for key in self._entries if drop(key)]:
                del self._entries[key]

    def forget(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


def page_images(ids: list[int], load, revision: int = 0) -> dict:
    """The page's Image rows by id: those read in the last ``LOUPE_RESULT_CACHE_SECONDS`` from memory, the
    rest through ``load(ids)`` (one query). Popular images are on many pages; reading each again costs ~1.5
    ms a page at 100k images. Rows are kept under the catalogue ``revision`` they were read at, so a changed
    caption or tag (which moves it, ``collection.revisions``) is read afresh by the next page."""
    found = {}
    missing = []
    for image_id in ids:
        image = image_cache.get((revision, image_id))
        if image is None:
            missing.append(image_id)
        else:
            found[image_id] = image
    for image in load(missing) if missing else ():
        image_cache.put((revision, image.pk), image)
        found[image.pk] = image
    return found


def forget_erased_user(sender, user_key: str, **_) -> None:
    """Drop this process's orders personalised for ``user_key`` (``OrderKey.personal_user``), on
    ``feedback.erasure.user_erased``; other processes' expire within ``LOUPE_RESULT_CACHE_SECONDS``."""
    result_cache.forget_where(lambda key: getattr(key, "personal_user", None) == user_key)


# Measured at 100k images: a fused order (~300 candidates, the top 100 reranked with their features) pickles
# to ~50 KB; in memory a few times that, so 512 entries stay well under 100 MB a process.
result_cache = ResultCache(max_entries=512, max_depth=200)
# Image rows (with their caption texts) shared read-only by the pages that show them: a few KB each.
image_cache = ResultCache(max_entries=4096, max_depth=0, mark=lambda image: image)
