"""Serial and pooled ingestion store the same rows, files and vectors, and refuse the same files (issue 22 item 2).

The same folder is ingested into a fresh collection four ways: files decoded in the calling thread or
in the decode pool, each with the embedding in the same pass (what `manage.py ingest` runs) and as
before (ingest, then embed_images reading the stored files back). The folder has a photo with an EXIF
orientation (the thumbnail is turned upright, the tower input is the image as stored), a duplicate,
and files each path must refuse for the same reason: truncated, not an image, a polyglot, an item
its source refused, a bad attribution, an undeclared metadata field.
"""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from collection.embedding import ImageVectorBatches, embed_images
from collection.ingestion.one_pass import ingest_items
from collection.ingestion.sources import IngestItem, folder_items
from collection.models import Caption, Image, ImageEmbedding
from collection.versions import serving_version
from tests.conftest import image_bytes, write_images

pytestmark = pytest.mark.django_db

PATHS = [(workers, one_pass) for workers in (0, 2) for one_pass in (True, False)]


def rotated_jpeg() -> bytes:
    """A photo whose EXIF says 'rotate 90°' (orientation 6), as phones write them."""
    image = PILImage.open(io.BytesIO(image_bytes(40, size=(120, 64)))).convert("RGB")
    exif = PILImage.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes(), quality=90)
    return buffer.getvalue()


def folder(tmp_path: Path) -> list[IngestItem]:
    root = tmp_path / "files"
    good = write_images(root / "png", range(1, 8)) + write_images(root / "jpg", range(8, 12), fmt="JPEG")
    (root / "jpg" / "rotated.jpg").write_bytes(rotated_jpeg())
    (root / "png" / "copy.png").write_bytes(good[0].read_bytes())
    (root / "bad").mkdir()
    (root / "bad" / "truncated.jpg").write_bytes(image_bytes(20, fmt="JPEG")[:300])
    (root / "bad" / "notes.png").write_text("not an image")
    (root / "bad" / "polyglot.png").write_bytes(image_bytes(21) + b"<script>alert(1)</script>")
    items = list(folder_items(root))
    extra = write_images(root / "items", [30, 31, 32])
    items.insert(3, IngestItem(extra[0], problem="line 4: no caption"))
    items.insert(6, IngestItem(extra[1], attribution="javascript:alert(1)"))
    items.insert(9, IngestItem(extra[2], metadata={"undeclared": "x"}))
    return items


def ingest(items, settings, *, workers: int, one_pass: bool) -> dict:
    """Ingest into an empty collection; what was stored, by content hash (ids and times aside)."""
    Image.objects.all().delete()
    shutil.rmtree(Path(settings.MEDIA_ROOT), ignore_errors=True)
    choice, version = serving_version()
    settings.LOUPE_DECODE_WORKERS = workers  # embed_images' pool reads the setting
    batches = ImageVectorBatches(choice.encoder, version, batch_size=4) if one_pass else None
    report = ingest_items(items, workers=workers, embed=batches)
    embed_images(choice.encoder, version, batch_size=4)  # after a one-pass ingest there is nothing left
    media = Path(settings.MEDIA_ROOT)
    images = Image.objects.order_by("pk")
    return {
        "report": (report.added, report.duplicates, [(Path(p).name, reason) for p, reason in report.failed]),
        "rows": [
            (i.sha256, i.file.name, i.thumbnail.name, i.width, i.height, i.format, i.byte_size, i.tags, i.source)
            for i in images
        ],
        "captions": sorted(Caption.objects.values_list("image__sha256", "position", "text")),
        "files": {i.sha256: (media / i.file.name).read_bytes() for i in images},
        "thumbnails": {i.sha256: (media / i.thumbnail.name).read_bytes() for i in images},
        "vectors": {
            e.image.sha256: np.asarray(e.vector) for e in ImageEmbedding.objects.filter(encoder_version=version)
        },
    }


def test_serial_and_pooled_paths_store_the_same_and_refuse_the_same(tmp_path, settings):
    items = folder(tmp_path)
    runs = {path: ingest(items, settings, workers=path[0], one_pass=path[1]) for path in PATHS}
    reference = runs[(0, False)]  # the serial two-pass path: ingestion as it was before issue 22
    added, duplicates, failed = reference["report"]
    assert (added, duplicates) == (12, 1)
    reasons = dict(failed)
    assert list(reasons) == ["notes.png", "polyglot.png", "truncated.jpg", "img_30.png", "img_31.png", "img_32.png"]
    assert "not an image" in reasons["notes.png"] and "polyglot" in reasons["polyglot.png"]
    assert "damaged or truncated" in reasons["truncated.jpg"] and reasons["img_30.png"] == "line 4: no caption"
    assert "http" in reasons["img_31.png"] and "undeclared" in reasons["img_32.png"]
    assert len(reference["vectors"]) == 12
    for path, run in runs.items():
        assert run["report"] == reference["report"], path
        assert run["rows"] == reference["rows"], path
        assert run["captions"] == reference["captions"], path
        assert run["files"] == reference["files"] and run["thumbnails"] == reference["thumbnails"], path
        assert run["vectors"].keys() == reference["vectors"].keys(), path
        for sha256, vector in reference["vectors"].items():
            np.testing.assert_array_equal(run["vectors"][sha256], vector, err_msg=str(path))


def test_the_rotated_photo_is_thumbnailed_upright_and_embedded_as_stored(tmp_path, settings):
    items = [item for item in folder(tmp_path) if item.path.name == "rotated.jpg"]
    run = ingest(items, settings, workers=2, one_pass=True)
    (sha256,) = run["vectors"]
    thumbnail = PILImage.open(io.BytesIO(run["thumbnails"][sha256]))
    assert thumbnail.size == (64, 120)  # turned by the EXIF orientation: the page shows it upright
    choice, _ = serving_version()
    stored = PILImage.open(io.BytesIO(run["files"][sha256])).convert("RGB")  # 120 x 64, as the file holds it
    np.testing.assert_allclose(run["vectors"][sha256], choice.encoder.encode_images([stored])[0], atol=1e-6)
