"""Finding 2 of issue 19: a 138-byte PNG of 60,000 x 1 pixels must be refused everywhere, fast.

It passes the 60-megapixel limit; the processor would scale its short side up to the model's size and
allocate gigabytes. Refused from the header (each side, aspect ratio) on every way in: search by upload
on the API and the page, partner ingest, and folder ingest.
"""

import io
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from rest_framework.test import APIClient

from collection.ingestion.one_pass import ingest_items
from collection.ingestion.sources import folder_items
from collection.models import Image
from tests.integration.feedback.conftest import bearer, key_with

pytestmark = pytest.mark.django_db


def strip_png(width: int = 60_000, height: int = 1) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("L", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def assert_refused_fast(send) -> dict:
    started = time.perf_counter()
    response = send()
    elapsed = time.perf_counter() - started
    assert response.status_code == 400, response.content[:300]
    assert elapsed < 2.0, elapsed
    return response


def test_the_strip_is_138_bytes_under_the_pixel_limit(settings):
    data = strip_png()
    assert len(data) == 138 and settings.LOUPE_MAX_IMAGE_PIXELS > 60_000 * 1


@pytest.mark.parametrize("size", [(60_000, 1), (1, 60_000), (5_000, 1), (21_000, 1_000)])
def test_thin_and_long_images_are_refused_by_search_and_ingest(client, collection, size):
    data = strip_png(*size)
    before = Image.objects.count()
    api = APIClient()
    key = key_with("search", "ingest")
    search = assert_refused_fast(
        lambda: api.post("/api/v1/search", {"image": SimpleUploadedFile("s.png", data)}, **bearer(key))
    )
    error = search.json()["error"]
    assert error["code"] == "invalid_image" and f"{size[0]}x{size[1]}" in error["message"]
    ingest = assert_refused_fast(
        lambda: api.post("/api/v1/images", {"image": SimpleUploadedFile("s.png", data)}, **bearer(key))
    )
    assert ingest.json()["error"]["code"] == "invalid_image"
    page = assert_refused_fast(lambda: client.post("/", {"image": SimpleUploadedFile("s.png", data)}))
    assert f"{size[0]}x{size[1]}".encode() in page.content
    assert Image.objects.count() == before


def test_folder_ingest_reports_the_strip_and_goes_on(db, tmp_path):
    (tmp_path / "strip.png").write_bytes(strip_png())
    started = time.perf_counter()
    report = ingest_items(folder_items(tmp_path))
    assert time.perf_counter() - started < 2.0
    assert [path for path, _ in report.failed] == [str(tmp_path / "strip.png")]
    assert "60000x1" in report.failed[0][1]
    assert not Image.objects.exists()
