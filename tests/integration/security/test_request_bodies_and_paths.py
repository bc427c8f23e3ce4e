"""Finding 9 of issue 19: JSON bodies bounded in size and depth, unreadable ingest paths, tables that
name files outside their folder. Each a clear 4xx (or CLI message), never a 500, nothing stored."""

import json
import os
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from collection.models import Image
from feedback.models import Click
from tests.conftest import write_images
from tests.integration.feedback.conftest import bearer, key_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


def post_json(api, url: str, body: bytes, key: str):
    return api.generic("POST", url, body, content_type="application/json", **bearer(key))


def test_a_json_body_over_the_upload_limit_is_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    key = key_with("feedback")
    padding = json.dumps({"items": [{"client_id": "x" * 100}] * 200}).encode()
    assert len(padding) > 10_000
    response = post_json(api, "/api/v1/feedback/clicks/batch", padding, key)
    assert response.status_code == 413, response.content[:300]
    assert response.json()["error"]["code"] == "too_large"
    assert not Click.objects.exists()


@pytest.mark.parametrize("depth", [33, 5_000, 100_000])
@pytest.mark.parametrize("url", ["/api/v1/feedback/clicks", "/api/v1/search", "/api/v1/images"])
def test_deeply_nested_json_is_a_clear_400(api, url, depth):
    key = key_with("feedback", "search", "ingest")
    response = post_json(api, url, b"[" * depth + b"]" * depth, key)
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "parse_error" and "nests deeper than 32" in error["message"]


def test_json_within_the_bounds_is_parsed_as_before(api, collection):
    key = key_with("search")
    response = post_json(api, "/api/v1/search", json.dumps({"image_id": collection[0].pk}).encode(), key)
    assert response.status_code == 200, response.content[:300]


def test_path_ingest_of_an_unreadable_file_is_400(api, settings, tmp_path):
    """Root reads any file whatever its mode; /proc/self/mem is a regular file nobody can read whole."""
    if os.geteuid() == 0:
        unreadable = Path("/proc/self/mem")
        settings.LOUPE_INGEST_ROOTS = [Path("/proc").resolve()]
    else:
        unreadable = write_images(tmp_path, [1])[0]
        unreadable.chmod(0)
        settings.LOUPE_INGEST_ROOTS = [tmp_path.resolve()]
    response = api.post("/api/v1/images", {"path": str(unreadable)}, format="json", **bearer(key_with("ingest")))
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "invalid_image" and "cannot read that file" in error["message"]
    assert not Image.objects.exists()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_table_naming_a_file_outside_its_folder_is_refused(tmp_path, suffix):
    outside = write_images(tmp_path / "private", [7])[0]
    table_dir = tmp_path / "tables"
    write_images(table_dir, [1])
    source = table_dir / f"t{suffix}"
    names = ["img_1.png", f"../private/{outside.name}", str(outside)]
    if suffix == ".csv":
        source.write_text("file,caption\n" + "".join(f"{name},a caption\n" for name in names))
    elif suffix == ".jsonl":
        source.write_text("".join(json.dumps({"file": name, "caption": "c"}) + "\n" for name in names))
    else:
        source.write_text(json.dumps(dict.fromkeys(names, "label")))
    with pytest.raises(CommandError, match="outside the folder"):
        call_command("ingest", str(source), "--no-embed", stdout=StringIO(), stderr=StringIO())
    assert not Image.objects.exists()  # refused before anything was read, the inside row included
