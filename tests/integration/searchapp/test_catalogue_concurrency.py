"""Committed edits across threads and processes: concurrent upserts give one image, and no cache serves old text.

These tests commit (``transactional_db``): each thread and the second process has its own connection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, connections

from collection.embedding import embed_everything_missing
from collection.image_changes import ImageChanges, apply_changes
from collection.images import _write_atomically, read_image
from collection.ingestion.service import Outcome, store_image
from collection.models import Image
from searchapp.search import SearchRequest, SearchService
from tests.conftest import image_bytes


def in_threads(count: int, work) -> list:
    """Run ``work(i)`` in ``count`` real threads released together; their results (or exceptions) in order."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - handed back to the test, which asserts on it
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_concurrent_upserts_of_one_external_id_give_one_image(transactional_db):
    same = read_image(image_bytes(21))
    stored = in_threads(4, lambda i: store_image(same, catalogue="stock", external_id="sku-21", captions=[f"v{i}"]))
    assert not [s for s in stored if isinstance(s, Exception)], stored
    assert Image.objects.filter(catalogue="stock", external_id="sku-21").count() == 1 == Image.objects.count()
    assert sorted(s.outcome for s in stored) == [Outcome.STORED, *[Outcome.UPDATED] * 3]
    # Different bytes under one id at once: still one image, holding one of the files.
    files = [read_image(image_bytes(30 + i)) for i in range(3)]
    stored = in_threads(3, lambda i: store_image(files[i], catalogue="stock", external_id="sku-30"))
    assert not [s for s in stored if isinstance(s, Exception)], stored
    image = Image.objects.get(catalogue="stock", external_id="sku-30")
    assert image.sha256 in {f.sha256 for f in files} and Image.objects.count() == 2


def test_concurrent_writes_of_one_file_never_fail_or_leave_parts(tmp_path):
    path = tmp_path / "images" / "ab" / "abcd.png"
    data = os.urandom(4 << 20)  # big enough that writes overlap
    for _ in range(5):
        path.unlink(missing_ok=True)
        outcomes = in_threads(6, lambda i: _write_atomically(path, data))
        assert outcomes == [None] * 6, outcomes
        assert path.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == ["abcd.png"]


@pytest.fixture
def cached_collection(transactional_db, settings):
    settings.LOUPE_RESULT_CACHE_SECONDS = 60
    images = [
        store_image(read_image(image_bytes(seed)), captions=[f"caption {seed} of a harbour"]).image for seed in range(6)
    ]
    embed_everything_missing()
    return images


def captions_of(response) -> dict[int, list[str]]:
    return {hit.image.pk: hit.image.caption_texts() for hit in response.hits}


def test_an_edit_in_another_thread_is_seen_by_the_next_search_here(cached_collection):
    service, request = SearchService(), SearchRequest(text="caption 3 of a harbour", page_size=6)
    target = cached_collection[3]
    service.search(request)
    assert service.search(request).cached  # the order and the page's rows are in this process's caches
    edited = in_threads(1, lambda i: apply_changes(target, ImageChanges(captions=("a lighthouse at dusk",))))
    assert isinstance(edited[0], Image)
    again = service.search(request)
    assert not again.cached and captions_of(again)[target.pk] == ["a lighthouse at dusk"]
    assert service.search(SearchRequest(text="lighthouse dusk", page_size=3)).hits[0].image.pk == target.pk


SECOND_PROCESS = """
import json, sys
import django
django.setup()
from django.conf import settings
settings.LOUPE_RESULT_CACHE_SECONDS = 60  # tests.settings turns the cache off; this process is a web process
from searchapp.search import SearchRequest, SearchService
service = SearchService()
for line in sys.stdin:
    response = service.search(SearchRequest(text=line.strip(), page_size=6))
    captions = {hit.image.pk: hit.image.caption_texts() for hit in response.hits}
    print(json.dumps({"cached": response.cached, "captions": captions}), flush=True)
"""


def test_an_edit_is_seen_by_a_web_process_that_cached_the_search(cached_collection, media_root):
    db = connection.settings_dict
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=f"postgresql://{db['USER']}@/{db['NAME']}?host={db['HOST']}",
        LOUPE_MEDIA_ROOT=str(media_root),
    )
    process = subprocess.Popen(
        [sys.executable, "-c", SECOND_PROCESS],
        cwd=Path(settings.BASE_DIR),
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def search(query: str) -> dict:
        process.stdin.write(query + "\n")
        process.stdin.flush()
        return json.loads(process.stdout.readline())

    try:
        target = str(cached_collection[2].pk)
        assert search("caption 2 of a harbour")["captions"][target] == ["caption 2 of a harbour"]
        assert search("caption 2 of a harbour")["cached"]
        apply_changes(cached_collection[2], ImageChanges(captions=("caption 2 of a harbour, now with a ferry",)))
        seen = search("caption 2 of a harbour")
        assert not seen["cached"] and seen["captions"][target] == ["caption 2 of a harbour, now with a ferry"]
    finally:
        process.stdin.close()
        process.wait(30)
