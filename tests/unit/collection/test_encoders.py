"""The encoder wrapper, on the tiny demo model loaded through the same path as any model folder."""

import io
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from django.conf import settings
from PIL import Image as PILImage

from collection.encoders import (
    DEMO_NOTICE,
    Encoder,
    EncoderLoadError,
    configure_torch_threads,
    load_configured_encoder,
    normalise_query,
    unit_rows,
)
from collection.processor_input import bounded_for_processor
from tests.conftest import image_bytes


@pytest.fixture(scope="module")
def encoder():
    return Encoder(str(settings.LOUPE_CLIP_MODEL), query_cache_size=8)


def test_text_vectors_are_unit_float32(encoder):
    vectors = encoder.encode_texts(["a dog on a beach", "a red car", "x" * 2000])
    assert vectors.shape == (3, encoder.dimension) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_batching_does_not_change_vectors(encoder):
    texts = [f"photo number {i}" for i in range(7)]
    together = encoder.encode_texts(texts, batch_size=64)
    in_pairs = encoder.encode_texts(texts, batch_size=2)
    np.testing.assert_allclose(together, in_pairs, atol=1e-5)


def test_image_vectors_are_unit_and_batch_independent(encoder):
    images = [PILImage.new("RGB", (50 + i * 7, 40), (i * 30, 100, 200)) for i in range(5)]
    together = encoder.encode_images(images, batch_size=8)
    one_by_one = np.concatenate([encoder.encode_images([image]) for image in images])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)


def test_query_cache_hits_on_repeats_and_equivalent_spacing(encoder):
    before = encoder.queries.info()
    first = encoder.encode_query("a cat on a mat")
    again = encoder.encode_query("  a cat   on a mat ")
    after = encoder.queries.info()
    assert after.misses == before.misses + 1 and after.hits == before.hits + 1
    assert again is first and not first.flags.writeable
    np.testing.assert_allclose(first, encoder.encode_texts(["a cat on a mat"])[0], atol=1e-6)


def test_normalise_query_only_folds_white_space():
    assert normalise_query("  Big  Dog\t") == "Big Dog"


def test_the_demo_model_says_it_is_a_demo(encoder):
    assert encoder.is_demo and encoder.name == "loupe-demo-tiny-clip"
    assert len(encoder.fingerprint) == 64


def test_a_missing_model_folder_fails_clearly(tmp_path):
    with pytest.raises(EncoderLoadError, match="Could not load model"):
        Encoder(str(tmp_path / "no-such-model"), local_files_only=True)


def test_fallback_to_the_demo_model_is_explicit(tmp_path):
    choice = load_configured_encoder(
        str(tmp_path / "missing"), demo_model_dir=Path(settings.LOUPE_CLIP_MODEL), allow_fallback=True
    )
    assert choice.fell_back and "Could not load model" in choice.fallback_reason
    assert choice.encoder.is_demo and choice.requested_ref.endswith("missing")
    assert "no semantic quality" in DEMO_NOTICE


def test_without_fallback_a_bad_model_is_an_error(tmp_path):
    with pytest.raises(EncoderLoadError):
        load_configured_encoder(str(tmp_path / "missing"), demo_model_dir=tmp_path, allow_fallback=False)


def test_fallback_builds_the_demo_model_when_absent(tmp_path):
    demo_dir = tmp_path / "demo"
    choice = load_configured_encoder(str(tmp_path / "missing"), demo_model_dir=demo_dir, allow_fallback=True)
    assert choice.encoder.is_demo and (demo_dir / "loupe_model.json").is_file()


def test_demo_model_builds_are_reproducible(tmp_path, encoder):
    from collection.demo_model import build_demo_model

    rebuilt = Encoder(str(build_demo_model(tmp_path / "again")), local_files_only=True)
    assert rebuilt.fingerprint == encoder.fingerprint


def test_torch_threads_default_to_one_per_core():
    import os

    import torch

    assert configure_torch_threads(0) == (os.cpu_count() or 1) == torch.get_num_threads()


@pytest.mark.parametrize("size", [(1, 1), (3, 3), (5, 3), (3, 1), (1, 3)])
def test_tiny_images_encode(encoder, size):
    """Found by the API fuzz: the processor took a 3-pixel-high image for channels-first and failed."""
    vectors = encoder.encode_images([PILImage.new("RGB", size, (200, 10, 10)), PILImage.new("L", size, 128)])
    assert vectors.shape == (2, encoder.dimension) and np.isfinite(vectors).all()


def test_a_thin_strip_reaches_the_model_without_a_huge_intermediate(encoder):
    """Finding 2 of issue 19: the processor would scale the strip's 1-pixel side up to the model's size."""
    strip = PILImage.new("RGB", (20_000, 1), (10, 200, 30))
    tracemalloc.start()
    started = time.perf_counter()
    vector = encoder.encode_images([strip])
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert vector.shape == (1, encoder.dimension)
    assert peak < 20 * 2**20 and elapsed < 2.0, (peak, elapsed)


def test_bounding_for_the_processor_does_not_change_vectors(encoder):
    """What the processor's centre crop uses is kept: a wide image's vector is the same as unbounded (up to
    the sub-pixel shift of rounding the resized size)."""
    wide = PILImage.open(io.BytesIO(image_bytes(5, size=(600, 90)))).convert("RGB")
    unbounded = encoder.image_processor(images=[wide], return_tensors="pt", input_data_format="channels_last")
    with torch.inference_mode():
        expected = unit_rows(encoder.model.get_image_features(pixel_values=unbounded["pixel_values"]))
    assert bounded_for_processor(wide, encoder.image_processor).size == (180, 90)
    assert float(encoder.encode_images([wide])[0] @ expected[0]) > 0.9999
    square = PILImage.new("RGB", (64, 48))
    assert bounded_for_processor(square, encoder.image_processor).size == (64, 48)
