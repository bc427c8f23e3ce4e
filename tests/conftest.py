"""Shared fixtures: the demo model, a private MEDIA_ROOT, and small builders for images."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from django.conf import settings
from PIL import Image as PILImage

from collection.demo_model import build_demo_model
from collection.model_card import MODEL_CARD_FILE

SHARED = Path(settings.BASE_DIR).parent / "shared"
DATASETS = SHARED / "datasets"
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"


def pytest_sessionstart(session) -> None:
    model_dir = Path(settings.LOUPE_CLIP_MODEL)
    if not (model_dir / MODEL_CARD_FILE).is_file():
        build_demo_model(model_dir)


@pytest.fixture(autouse=True)
def _search_logs_inline(settings):
    """Tests run inside a transaction the log writer's own connection cannot see: write logs inline.

    Tests of the deferred path (tests/integration/feedback/test_deferred_log.py) and every test that
    runs the product in its own processes use the product default, deferred logs.
    """
    settings.LOUPE_DEFER_SEARCH_LOG = False


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path_factory):
    settings.MEDIA_ROOT = tmp_path_factory.mktemp("media")
    return settings.MEDIA_ROOT


def image_bytes(seed: int = 0, size: tuple[int, int] = (96, 72), fmt: str = "PNG") -> bytes:
    """A small image whose pixels depend on ``seed``, so different seeds give different content."""
    rng = random.Random(seed)
    image = PILImage.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    pixels = image.load()
    for _ in range(200):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        pixels[x, y] = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def write_images(folder: Path, seeds, fmt: str = "PNG") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"img_{seed}.{fmt.lower()}"
        path.write_bytes(image_bytes(seed, fmt=fmt))
        paths.append(path)
    return paths


@pytest.fixture
def service(db):
    from searchapp.search import SearchService

    return SearchService()


def build_collection(service, sizes: list[tuple[int, int]] | None = None) -> list:
    """Twelve embedded images with captions and tags; returns the Image rows in insertion order.

    ``sizes`` gives image ``seed`` the size ``sizes[seed % len(sizes)]`` (default: all 96×72)."""
    from collection.embedding import embed_everything_missing
    from collection.images import read_image
    from collection.ingestion.service import add_image

    images = []
    for seed in range(12):
        image, _ = add_image(
            read_image(image_bytes(seed, sizes[seed % len(sizes)]) if sizes else image_bytes(seed)),
            captions=[f"caption {seed} of a test picture", f"another view number {seed}"],
            tags=["even" if seed % 2 == 0 else "odd", f"s{seed}"],
        )
        images.append(image)
    embed_everything_missing()
    return images


@pytest.fixture
def collection(db, service):
    return build_collection(service)


@pytest.fixture(autouse=True)
def _fresh_serving_version():
    """Each test's transaction is rolled back, the cached version row with it."""
    from collection.versions import forget_serving_version

    forget_serving_version()
    yield
    forget_serving_version()


@pytest.fixture(autouse=True)
def _fresh_serving_configs():
    """Experiments, production configs, fitted fusions and rankers by version are cached per process; rows are
    per test."""
    from collection import fusion_setting
    from collection.versions import forget_other_encoders
    from ranking.experiments.serving import forget_cached_configs
    from ranking.registry import active_ranker, ranker_versions
    from searchapp.result_cache import image_cache, result_cache

    def forget() -> None:
        result_cache.forget()
        image_cache.forget()
        forget_cached_configs()
        ranker_versions.forget()
        active_ranker.forget()
        forget_other_encoders()
        fusion_setting.forget()

    forget()
    yield
    forget()


@pytest.fixture(autouse=True)
def _empty_cache():
    """Cached page data (popular tags) and throttle counters must not leak from one test into another."""
    from django.core.cache import cache, caches

    cache.clear()
    caches["throttle"].clear()
    yield
    cache.clear()
    caches["throttle"].clear()
