"""LOUPE_DEVICE: auto takes the CPU on a machine without an accelerator; a missing one fails clearly."""

import io

import numpy as np
import pytest
import torch
from django.conf import settings
from PIL import Image as PILImage

from collection.device import (
    DeviceUnavailable,
    Placement,
    embedding_batch_size,
    placement_for,
    resolve_device,
    resolve_placement,
)
from collection.encoders import Encoder
from tests.conftest import image_bytes

no_accelerator = pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has an accelerator"
)


@no_accelerator
def test_auto_picks_the_cpu_when_torch_sees_no_accelerator():
    placement = resolve_placement("auto")
    assert placement.device == torch.device("cpu") and placement.dtype == torch.float32
    assert not placement.is_accelerator


def test_auto_picks_cuda_when_torch_sees_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@no_accelerator
def test_a_cuda_request_without_cuda_says_what_to_do():
    with pytest.raises(DeviceUnavailable, match=r"LOUPE_DEVICE=cuda, but torch sees no CUDA device.*bin/setup --cuda"):
        resolve_device("cuda")


@no_accelerator
def test_the_encoder_refuses_a_missing_accelerator_when_it_loads(settings):
    settings.LOUPE_DEVICE = "cuda"
    with pytest.raises(DeviceUnavailable, match="LOUPE_DEVICE=cuda"):
        Encoder(str(settings.LOUPE_CLIP_MODEL), local_files_only=True)


def test_an_unknown_device_is_refused():
    with pytest.raises(DeviceUnavailable, match="not one of auto, cpu, cuda, mps"):
        resolve_device("tpu")


def test_half_precision_on_accelerators_full_on_the_cpu(monkeypatch):
    assert placement_for(torch.device("cpu")).dtype == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert placement_for(torch.device("cuda")).dtype == torch.float16
    assert placement_for(torch.device("mps")).dtype == torch.float16


def test_the_cpu_keeps_the_configured_batch():
    assert embedding_batch_size(Placement(torch.device("cpu"), torch.float32), 32) == 32


def test_the_device_code_path_runs_on_the_cpu():
    """The cast and the moves an accelerator makes, on the CPU: a bf16 model gives nearly the fp32 vectors."""
    exact = Encoder(str(settings.LOUPE_CLIP_MODEL), local_files_only=True, device="cpu")
    half = Encoder(str(settings.LOUPE_CLIP_MODEL), local_files_only=True, device="cpu")
    half.placement = Placement(torch.device("cpu"), torch.bfloat16)
    half.model.to(dtype=torch.bfloat16)
    images = [PILImage.open(io.BytesIO(image_bytes(seed))).convert("RGB") for seed in range(3)]
    cosines = np.sum(exact.encode_images(images) * half.encode_images(images), axis=1)
    assert cosines.min() > 0.98
    texts = np.sum(exact.encode_texts(["a dog", "a cat"]) * half.encode_texts(["a dog", "a cat"]), axis=1)
    assert texts.min() > 0.98
    assert half.encode_images(images).dtype == np.float32
