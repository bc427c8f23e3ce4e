"""The fast tower input equals CLIPImageProcessor's output, on real photos and on awkward shapes.

Tolerance: none. collection.image_input runs the processor's own PIL resize and crop and looks up the
processor's float arithmetic per 8-bit level, so there is no rounding of its own to allow for: any
difference means a step is not the processor's (a size rounded instead of truncated, a crop off by a
pixel, the other bicubic), and such differences are what would make stored vectors drift from the ones
a re-embed with the processor computes. The vectors' cosine is checked too (>= 0.999, the bar the
ONNX fp32 tower must meet) on the demo model, through Encoder.pixels as ingestion calls it.
"""

import random

import numpy as np
import pytest
from django.conf import settings
from django.test import override_settings
from PIL import Image as PILImage
from transformers import CLIPImageProcessor

from collection.encoders import Encoder
from collection.image_input import image_input_for
from collection.processor_input import bounded_for_processor
from tests.conftest import DATASETS, SHARED

CALTECH = DATASETS / "caltech101" / "101_ObjectCategories"
COCO = DATASETS / "coco_mini"
VIT_B32 = SHARED / "models" / "clip-vit-base-patch32-config"


def processor_output(processor, image: PILImage.Image) -> np.ndarray:
    """What Encoder.pixels computed before collection.image_input (and still does with the setting off)."""
    bounded = bounded_for_processor(image, processor)
    return processor(images=[bounded], return_tensors="np", input_data_format="channels_last")["pixel_values"][0]


def real_photos(count: int) -> list[PILImage.Image]:
    paths = sorted(CALTECH.rglob("*.jpg"))[::97] + sorted(COCO.rglob("*.jpg"))[:20]
    if not paths:
        pytest.skip(f"needs ../shared/datasets (Caltech 101 or coco_mini under {DATASETS}); not found")
    random.Random(0).shuffle(paths)
    return [PILImage.open(path) for path in paths[:count]]


def awkward_shapes() -> list[PILImage.Image]:
    """Odd sizes (crop offsets), smaller than the crop (upscaled), a thin strip, other modes."""
    rng = np.random.default_rng(0)
    sizes = [(225, 225), (224, 500), (501, 223), (31, 17), (1000, 70), (3, 2), (223, 224)]
    images = [PILImage.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    images.append(PILImage.fromarray(rng.integers(0, 256, (90, 130), dtype=np.uint8), mode="L"))
    images.append(PILImage.fromarray(rng.integers(0, 256, (80, 60, 4), dtype=np.uint8), mode="RGBA"))
    images.append(images[0].convert("P"))
    return images


@pytest.fixture(scope="module")
def vit_b32_processor():
    if not VIT_B32.is_dir():
        pytest.skip(f"needs the ViT-B/32 preprocessor config at {VIT_B32}; not found")
    return CLIPImageProcessor.from_pretrained(VIT_B32)


def test_equal_to_the_processor_on_real_photos(vit_b32_processor):
    fast = image_input_for(vit_b32_processor)
    assert fast is not None
    for image in real_photos(60):
        expected = processor_output(vit_b32_processor, image)
        got = fast(image)
        assert got.dtype == np.float32 and got.shape == expected.shape == (3, 224, 224)
        np.testing.assert_array_equal(got, expected, err_msg=f"{image.filename} {image.size}")


def test_equal_to_the_processor_on_awkward_shapes_and_modes(vit_b32_processor):
    fast = image_input_for(vit_b32_processor)
    for image in awkward_shapes():
        np.testing.assert_array_equal(fast(image), processor_output(vit_b32_processor, image), err_msg=str(image))


def test_processors_it_cannot_reproduce_keep_their_own_call(vit_b32_processor):
    no_crop = CLIPImageProcessor.from_pretrained(VIT_B32, do_center_crop=False)
    padding = CLIPImageProcessor.from_pretrained(VIT_B32, crop_size={"height": 256, "width": 256})
    fixed_size = CLIPImageProcessor.from_pretrained(VIT_B32, size={"height": 224, "width": 224})
    for processor in (no_crop, padding, fixed_size):
        assert image_input_for(processor) is None


def test_encoder_vectors_from_both_inputs_agree():
    images = [image.convert("RGB") for image in awkward_shapes()[:6]]
    with override_settings(LOUPE_FAST_IMAGE_INPUT=False):
        reference = Encoder(str(settings.LOUPE_CLIP_MODEL), local_files_only=True, device="cpu")
    fast = Encoder(str(settings.LOUPE_CLIP_MODEL), local_files_only=True, device="cpu")
    assert reference._image_input is None and fast._image_input is not None
    expected, got = reference.encode_images(images), fast.encode_images(images)
    assert np.sum(expected * got, axis=1).min() >= 0.999
