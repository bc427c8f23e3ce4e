"""Real photographs are never mistaken for polyglot files (markup hidden in an image).

The check looks for tags in the raw bytes, after the image's end and in PNG text chunks; compressed
pixel data and camera or editor metadata must not trip it. Every image of the shared datasets and of
the shipped demo set is scanned.
"""

from pathlib import Path

import pytest
from django.conf import settings
from PIL import Image as PILImage

from collection.images import read_image
from collection.polyglots import polyglot_reason
from tests.conftest import DATASETS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
DEMO_IMAGES = Path(settings.BASE_DIR) / "demo" / "images"


def images_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def looks_like_a_polyglot(path: Path) -> bool:
    """The whole polyglot check: raw bytes, UTF-16, bytes after the image's end, PNG text chunks."""
    data = path.read_bytes()
    with PILImage.open(path) as image:
        return polyglot_reason(data, image.format or "") is not None


def test_every_demo_image_is_accepted_whole():
    paths = images_under(DEMO_IMAGES)
    assert len(paths) == 40
    for path in paths:
        read_image(path.read_bytes())  # raises InvalidImage with the reason if refused


@pytest.mark.dataset
def test_no_dataset_image_looks_like_a_polyglot():
    if not DATASETS.is_dir():
        pytest.skip(f"{DATASETS} is absent (a fresh clone has no shared datasets)")
    paths = images_under(DATASETS)
    assert len(paths) > 9000
    flagged = [str(p) for p in paths if looks_like_a_polyglot(p)]
    assert flagged == []
