"""The trainable top of the towers computes exactly what the model computes, and maps back onto it."""

import copy

import numpy as np
import pytest
import torch
from django.conf import settings
from PIL import Image as PILImage

from collection.encoders import Encoder
from ranking.finetune.heads import TowerHeads, UnsupportedModel
from ranking.finetune.tower_inputs import eos_positions, image_states, text_inputs
from tests.conftest import image_bytes

TEXTS = ["a photo of a dog", "x", "the quick brown fox jumps over the lazy dog beside a wide river at dawn"]


@pytest.fixture(scope="module")
def encoder():
    return Encoder(str(settings.LOUPE_CLIP_MODEL), local_files_only=True)


def pictures(n=4):
    import io

    return [PILImage.open(io.BytesIO(image_bytes(seed, size=(80 + seed, 64)))).convert("RGB") for seed in range(n)]


def head_inputs(encoder, layers, images):
    if layers:
        return torch.from_numpy(image_states(encoder, images, layers).astype(np.float32))
    return torch.from_numpy(encoder.encode_images_with_pooled(images)[1])


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_heads_reproduce_the_models_vectors(encoder, layers):
    heads = TowerHeads(encoder.model, layers)
    images = pictures()
    with torch.no_grad():
        text = heads.text(text_inputs(encoder, TEXTS, layers)).numpy()
        image = heads.image(head_inputs(encoder, layers, images)).numpy()
    # Texts of very different lengths share one padding: the EOS token must never attend to padding.
    assert np.allclose((text * encoder.encode_texts(TEXTS)).sum(1), 1.0, atol=1e-5)
    # Cached image states are float16: still within 1e-4 of the model's own vectors.
    assert np.allclose((image * encoder.encode_images(images)).sum(1), 1.0, atol=1e-4)


def test_the_state_names_are_the_models_and_write_back_exactly(encoder):
    heads = TowerHeads(encoder.model, 1)
    state = heads.model_state()
    model_names = set(encoder.model.state_dict())
    assert set(state) <= model_names
    assert "text_projection.weight" in state and "vision_model.post_layernorm.weight" in state
    assert any(name.startswith("vision_model.encoder.layers.1.") for name in state)  # the last of two blocks
    assert not any(name.startswith("vision_model.encoder.layers.0.") for name in state)  # frozen
    original = encoder.model.text_projection.weight.detach().clone()
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(0.05 * torch.randn_like(p))
    changed = copy.deepcopy(encoder.model)
    _, unexpected = changed.load_state_dict(heads.model_state(), strict=False)
    assert unexpected == []
    images = pictures(2)
    with torch.no_grad():
        expected = heads.image(head_inputs(encoder, 1, images))
        inputs = encoder.image_processor(images=images, return_tensors="pt")
        features = changed.get_image_features(pixel_values=inputs["pixel_values"])
        computed = torch.nn.functional.normalize(features, dim=-1)
    assert torch.allclose(expected, computed, atol=1e-3)
    # The heads train copies: the loaded (perhaps serving) model is untouched.
    assert torch.equal(encoder.model.text_projection.weight, original)


def test_load_model_state_restores_the_start(encoder):
    heads = TowerHeads(encoder.model, 1)
    start = heads.model_state()
    with torch.no_grad():
        for p in heads.parameters():
            p.mul_(1.5)
    heads.load_model_state(start)
    assert all(torch.equal(start[k], v) for k, v in heads.model_state().items())


def test_too_many_layers_is_refused(encoder):
    with pytest.raises(UnsupportedModel):
        TowerHeads(encoder.model, 3)  # the demo model has two blocks per tower


def test_eos_positions_follow_transformers():
    ids = torch.tensor([[49406, 320, 49407, 49407], [49406, 49407, 49407, 49407]])
    assert eos_positions(ids, 49407).tolist() == [2, 1]  # the first EOS; padding repeats it
    assert eos_positions(torch.tensor([[0, 5, 2, 1]]), 2).tolist() == [1]  # old configs: the highest id
