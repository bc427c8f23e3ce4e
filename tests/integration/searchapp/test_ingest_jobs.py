"""Bulk ingest as jobs through the partner API, run by a real Celery worker (embedded Redis/PostgreSQL)."""

from __future__ import annotations

import http.server
import json
import signal
import threading

import pytest
from rest_framework.test import APIClient

from collection.models import CaptionEmbedding, EmbedRun, Image, ImageEmbedding, IngestJob, IngestJobItem
from collection.versions import serving_version
from tests.conftest import image_bytes, write_images
from tests.integration.feedback.conftest import bearer, key_with
from tests.integration.test_embed_fanout import blocked_on_tower_outputs, ready, stop, table_lock, wait_until
from tests.integration.test_worker import redis_url, start_worker  # noqa: F401 - redis_url is a fixture


@pytest.fixture
def folders(tmp_path):
    """An ingest root with four images, a broken file and a symlink that leads outside; a file outside."""
    root, outside = tmp_path / "ingest", tmp_path / "elsewhere"
    good = write_images(root / "cats", range(40, 44))
    (root / "cats" / "broken.jpg").write_bytes(b"not an image at all")
    secret = write_images(outside, [50])[0]
    (root / "sneaky.png").symlink_to(secret)
    return root, good, secret


@pytest.fixture
def worker(transactional_db, redis_url, media_root, folders):  # noqa: F811
    root = folders[0]
    process = start_worker(
        redis_url,
        media_root,
        "celery",
        name="ingester",
        env={"LOUPE_INGEST_ROOTS": str(root), "LOUPE_INGEST_JOB_CHUNK_SIZE": "3"},
    )
    yield process
    stop(process)


def lines(folders) -> list[dict]:
    root, good, secret = folders
    items = [{"path": str(p), "captions": [f"a cat number {i}"], "tags": ["cat", "pet"]} for i, p in enumerate(good)]
    items.append({"path": str(root / "cats" / "broken.jpg"), "caption": "broken"})
    items.append({"path": str(secret), "caption": "outside the ingest folders"})
    items.append({"path": str(root / "sneaky.png"), "caption": "a symlink out of the folder"})
    return items


def finished(api, key, job_id: int) -> dict:
    return wait_until(
        lambda: (body := api.get(f"/api/v1/ingest-jobs/{job_id}", **bearer(key)).json())["status"] == "done" and body,
        180,
        f"ingest job {job_id} to finish",
    )


def test_an_ingest_job_gives_per_item_results_and_a_second_identical_job_stores_nothing_new(worker, folders, settings):
    settings.LOUPE_INGEST_JOB_CHUNK_SIZE = 3  # 7 items: three worker tasks
    api, key = APIClient(), key_with("ingest")
    body = "\n".join(json.dumps(line) for line in lines(folders)) + "\n"
    response = api.post("/api/v1/ingest-jobs", body, content_type="application/x-ndjson", **bearer(key))
    assert response.status_code == 202, response.content
    first = response.json()
    assert first["total"] == 7 and first["counts"]["pending"] == 7

    done = finished(api, key, first["id"])
    assert done["counts"] == {"pending": 0, "stored": 4, "duplicate": 0, "updated": 0, "refused": 3}
    refused = api.get(f"/api/v1/ingest-jobs/{first['id']}/items", {"outcome": "refused"}, **bearer(key)).json()
    reasons = {item["position"]: item["reason"] for item in refused["items"]}
    assert refused["count"] == 3 and set(reasons) == {5, 6, 7}
    assert "not" in reasons[5].lower() and "image" in reasons[5].lower()
    assert "outside the folders" in reasons[6] and "outside the folders" in reasons[7]  # the symlink is resolved
    stored = Image.objects.order_by("pk")
    assert stored.count() == 4 and all(image.tags == ["cat", "pet"] for image in stored)
    assert sorted(image.caption for image in stored) == [f"a cat number {i}" for i in range(4)]
    # Embedded in the chunks' own pass, so searchable when the job reads done: no embed run sent behind them.
    _, version = serving_version()
    assert ImageEmbedding.objects.filter(encoder_version=version).count() == 4
    assert CaptionEmbedding.objects.filter(encoder_version=version, caption__image__in=stored).count() == 4
    assert not EmbedRun.objects.exists()

    again = api.post("/api/v1/ingest-jobs", {"items": lines(folders)}, format="json", **bearer(key))
    assert again.status_code == 202, again.content
    second = finished(api, key, again.json()["id"])
    assert second["counts"] == {"pending": 0, "stored": 0, "duplicate": 4, "updated": 0, "refused": 3}
    assert Image.objects.count() == 4 and ImageEmbedding.objects.count() == 4

    page = api.get(f"/api/v1/ingest-jobs/{first['id']}/items", {"page_size": 2, "page": 2}, **bearer(key)).json()
    assert [item["position"] for item in page["items"]] == [3, 4] and page["count"] == 7
    other = api.get(f"/api/v1/ingest-jobs/{first['id']}", **bearer(key_with("ingest")))
    assert other.status_code == 404 and other.json()["error"]["code"] == "unknown_ingest_job"


def test_a_worker_killed_mid_chunk_leaves_its_items_pending_and_the_chunk_is_redone_whole(
    transactional_db,
    redis_url,  # noqa: F811 - a fixture
    media_root,
    tmp_path,
    settings,
):
    root = tmp_path / "ingest"
    files = write_images(root, range(80, 86))
    settings.LOUPE_INGEST_JOB_CHUNK_SIZE = 3  # two chunks; the solo worker takes the first and dies in it
    env = {"LOUPE_INGEST_ROOTS": str(root), "LOUPE_TASK_VISIBILITY_SECONDS": "3"}  # an unacked chunk back in 3 s
    api, key = APIClient(), key_with("ingest")
    started = []
    holder = table_lock()  # the chunk's group blocks storing its tower outputs: rows and vectors written, uncommitted
    try:
        started.append(start_worker(redis_url, media_root, "celery", name="doomed", env=env))
        ready("doomed")
        response = api.post("/api/v1/ingest-jobs", {"files": [str(f) for f in files]}, format="json", **bearer(key))
        assert response.status_code == 202, response.content
        wait_until(blocked_on_tower_outputs, 120, "the worker to be mid-chunk")
        started[0].send_signal(signal.SIGKILL)
        started[0].wait(30)
    finally:
        holder.close()  # the dead worker's transaction now fails and rolls back
    try:
        wait_until(lambda: not blocked_on_tower_outputs(), 30, "the killed worker's transaction to end")
        job = response.json()["id"]
        assert not Image.objects.exists(), "nothing of the killed group was stored"
        assert set(IngestJobItem.objects.filter(job_id=job).values_list("outcome", flat=True)) == {"pending"}
        started.append(start_worker(redis_url, media_root, "celery", name="survivor", env=env, purged=False))
        done = finished(api, key, job)
        assert done["counts"] == {"pending": 0, "stored": 6, "duplicate": 0, "updated": 0, "refused": 0}
        images = set(IngestJobItem.objects.filter(job_id=job).values_list("image_id", flat=True))
        assert len(images) == 6 and Image.objects.count() == 6 and ImageEmbedding.objects.count() == 6
    finally:
        for process in started:
            stop(process)


@pytest.mark.django_db
def test_a_malformed_job_is_refused_whole_and_creates_nothing(tmp_path):
    api, key = APIClient(), key_with("ingest")
    body = json.dumps({"path": "/a.png"}) + "\n{not json\n"
    response = api.post("/api/v1/ingest-jobs", body, content_type="application/x-ndjson", **bearer(key))
    assert response.status_code == 400 and "Line 2" in response.json()["error"]["message"]
    both = api.post(
        "/api/v1/ingest-jobs", {"items": [{"path": "/a.png", "url": "http://x/a.png"}]}, format="json", **bearer(key)
    )
    assert both.status_code == 400 and both.json()["error"]["fields"]["items.0.path"]
    assert api.post("/api/v1/ingest-jobs", {"files": []}, format="json", **bearer(key)).status_code == 400
    unscoped = api.post("/api/v1/ingest-jobs", {"files": ["/a.png"]}, format="json", **bearer(key_with("search")))
    assert unscoped.status_code == 403
    assert not IngestJob.objects.exists()


@pytest.fixture
def image_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving one image at /cat.png (and a redirect at /moved)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data")
                self.end_headers()
                return
            data = image_bytes(60) if self.path == "/cat.png" else b""
            self.send_response(200 if data else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.django_db
def test_urls_are_fetched_only_from_allowed_hosts_and_never_through_a_redirect(settings, image_server):
    from collection.ingestion.jobs import JobLine, create_job, run_job_chunk

    settings.LOUPE_INGEST_URL_ALLOW = ["127.0.0.1"]
    job = create_job(
        [
            JobLine(url=f"{image_server}/cat.png", captions=("a cat from the web",)),
            JobLine(url=f"{image_server}/moved"),
            JobLine(url="http://localhost:9/a.png"),
            JobLine(url="file:///etc/passwd"),
        ],
        chunk_size=10,
    )
    result = run_job_chunk(job.pk, 1, 4)
    assert result.finished and len(result.image_ids) == 1
    outcomes = list(job.items.order_by("position").values_list("outcome", "reason"))
    assert outcomes[0] == ("stored", "")
    assert outcomes[1] == ("refused", "The URL redirects (HTTP 302); give the final address.")
    assert outcomes[2] == ("refused", "The host 'localhost' is not one this server may fetch from.")
    assert outcomes[3] == ("refused", "Give an http(s) URL.")
    assert Image.objects.get().caption == "a cat from the web"


@pytest.mark.django_db
def test_a_job_item_naming_a_known_external_id_updates_that_image(tmp_path, settings):
    from collection.ingestion.jobs import JobLine, create_job, run_job_chunk

    settings.LOUPE_INGEST_ROOTS = [tmp_path.resolve()]
    first, second = (str(p) for p in write_images(tmp_path, [70, 71]))
    job = create_job([JobLine(path=first, captions=("a fox",), external_id="fox-1")], chunk_size=10, catalogue="stock")
    run_job_chunk(job.pk, 1, 1)
    fox = Image.objects.get()
    # New bytes under the same id: that image takes them.
    again = create_job(
        [JobLine(path=second, captions=("a fox in the snow",), external_id="fox-1")], chunk_size=1, catalogue="stock"
    )
    run_job_chunk(again.pk, 1, 1)
    # Another catalogue's fox-1 is another image (its bytes are no longer any image's: fox-1 replaced them).
    other = create_job([JobLine(path=first, external_id="fox-1")], chunk_size=10, catalogue="photo blog")
    run_job_chunk(other.pk, 1, 1)
    assert list(again.items.filter(position=1).values_list("outcome", "image")) == [("updated", fox.pk)]
    assert list(other.items.values_list("outcome", flat=True)) == ["stored"]
    updated = Image.objects.get(catalogue="stock", external_id="fox-1")
    assert updated.pk == fox.pk and updated.sha256 != fox.sha256 and updated.caption_texts() == ["a fox in the snow"]
    assert Image.objects.filter(catalogue="photo blog", external_id="fox-1").exclude(pk=fox.pk).count() == 1


@pytest.mark.django_db
def test_a_job_embeds_what_it_stores_and_sends_a_duplicate_still_without_vectors_to_the_embed_workers(
    tmp_path,
    settings,
    redis_url,  # noqa: F811 - the broker the leftover embed run is sent to
):
    from collection.embedding import ImageVectorBatches
    from collection.images import read_image
    from collection.ingestion.jobs import JobLine, create_job, run_job_chunk
    from collection.ingestion.service import add_image
    from tests.integration.test_worker import purge

    settings.LOUPE_INGEST_ROOTS = [tmp_path.resolve()]
    uploaded, new = write_images(tmp_path, [90, 91])
    waiting = add_image(read_image(uploaded.read_bytes()))[0]  # an upload the periodic task has not embedded yet
    choice, version = serving_version()
    job = create_job([JobLine(path=str(uploaded)), JobLine(path=str(new), captions=("a new one",))], chunk_size=10)
    result = run_job_chunk(job.pk, 1, 2, embed=ImageVectorBatches(choice.encoder, version))
    purge("celery")
    assert result.finished and list(job.items.values_list("outcome", flat=True)) == ["duplicate", "stored"]
    fresh = job.items.get(position=2).image
    assert ImageEmbedding.objects.filter(encoder_version=version, image=fresh).exists()
    assert CaptionEmbedding.objects.filter(encoder_version=version, caption__image=fresh).exists()
    sent = EmbedRun.objects.get(started_by=f"ingest job {job.pk}")
    assert [chunk.image_ids for chunk in sent.chunks.all()] == [[waiting.pk]]
