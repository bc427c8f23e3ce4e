"""Fine-tuning runs where LOUPE_DEVICE resolves, and on the CPU it trains exactly as it did before it could move.

The expected weights (``data/cpu_fine_tune_weights.npz``) were computed by ``reference_state`` with the
training code of main at 1ad8771, before ``ranking.finetune.training`` learnt devices, on this project's CPU
machines (torch's CPU kernels: a different CPU or torch build may round differently; regenerate them with
``python -m tests.unit.finetune.test_finetune_device`` from the code before a change, never after it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from collection.device import resolve_device
from ranking.finetune.heads import TextStates, TowerHeads
from ranking.finetune.training import Anchor, PairSet, collection_vectors, fine_tune_heads, text_vectors

EXPECTED = Path(__file__).parent / "data" / "cpu_fine_tune_weights.npz"
MODES = {"projections": 0, "last_blocks": 1}

no_accelerator = pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has an accelerator"
)


def tiny_clip():
    from django.conf import settings

    from collection.encoders import Encoder

    return Encoder(str(settings.LOUPE_CLIP_MODEL), local_files_only=True, device="cpu").model


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_clip()


def synthetic_inputs(model, layers: int, n_images: int = 96, n_queries: int = 40, seed: int = 0):
    """Random tower inputs of the model's shapes: pooled outputs (layers=0) or the states entering the last block."""
    rng = np.random.default_rng(seed)
    vision, text = model.config.vision_config, model.config.text_config
    if layers:
        tokens = (vision.image_size // vision.patch_size) ** 2 + 1
        images = torch.from_numpy(rng.normal(size=(n_images, tokens, vision.hidden_size)).astype(np.float32))
        length = 12
        lengths = torch.from_numpy(rng.integers(3, length, size=n_queries))
        mask = torch.arange(length)[None] < lengths[:, None]
        states = torch.from_numpy(rng.normal(size=(n_queries, length, text.hidden_size)).astype(np.float32))
        queries = TextStates(states, mask, lengths - 1)
    else:
        images = torch.from_numpy(rng.normal(size=(n_images, vision.hidden_size)).astype(np.float32))
        queries = TextStates(torch.from_numpy(rng.normal(size=(n_queries, text.hidden_size)).astype(np.float32)))
    image_rows = rng.choice(n_images, size=n_queries, replace=False)
    skipped = [rng.choice(n_images, size=3, replace=False) for _ in range(n_queries)]
    pairs = PairSet(np.arange(n_queries), image_rows, rng.uniform(0.5, 2.0, size=n_queries), skipped)
    return images, queries, pairs


def reference_state(model, layers: int, **device) -> dict[str, torch.Tensor]:
    """A fixed-seed fine-tune touching every part of a step: pairs, skipped and random negatives, the anchor on
    images and texts, three epochs kept to the last (so the weights move), the validation pass each epoch."""
    images, queries, pairs = synthetic_inputs(model, layers)
    train = PairSet(pairs.query_rows[:30], pairs.image_rows[:30], pairs.weights[:30], pairs.negatives[:30])
    valid = PairSet(pairs.query_rows[30:], pairs.image_rows[30:], pairs.weights[30:], pairs.negatives[30:])
    heads = TowerHeads(model, layers)
    anchor = Anchor(
        collection_vectors(heads, images),
        queries,
        text_vectors(heads, queries),
        weight=10.0,
        images_per_step=16,
        texts_per_step=8,
    )
    result = fine_tune_heads(
        heads,
        train,
        valid,
        queries,
        images,
        logit_scale=10.0,
        anchor=anchor,
        learning_rate=0.01,
        epochs=3,
        batch_size=8,
        negatives=16,
        early_stopping=False,
        seed=3,
        **device,
    )
    assert result.best_epoch == 3
    return result.state


@no_accelerator
@pytest.mark.parametrize("mode", MODES)
def test_a_cpu_fine_tune_gives_the_weights_it_gave_before_it_could_move(tiny_model, mode):
    expected = np.load(EXPECTED)
    state = reference_state(tiny_model, MODES[mode], device=resolve_device("auto"))
    names = sorted(name.removeprefix(f"{mode}/") for name in expected.files if name.startswith(f"{mode}/"))
    assert names == sorted(state)
    for name in names:
        # Bit for bit on the machine that recorded them; a last-bit tolerance for another CPU's kernels (float32
        # sums in another order differ by ~1e-7 relative), far below what a bf16 step does (seen failing).
        np.testing.assert_allclose(state[name].numpy(), expected[f"{mode}/{name}"], rtol=1e-5, atol=1e-7, err_msg=name)


def record_input_devices(heads: TowerHeads) -> list[torch.device]:
    """The device of every tensor that enters the heads' projections, as the fine-tune runs."""
    seen = []
    for projection in (heads.text_projection, heads.visual_projection):
        projection.register_forward_pre_hook(lambda _, args: seen.append(args[0].device))
    return seen


@no_accelerator
@pytest.mark.parametrize("mode", MODES)
def test_the_fine_tune_trains_where_loupe_device_resolves(tiny_model, settings, mode):
    settings.LOUPE_DEVICE = "auto"
    device = resolve_device(settings.LOUPE_DEVICE)
    assert device == torch.device("cpu")  # no accelerator here: auto is the CPU
    images, queries, pairs = synthetic_inputs(tiny_model, MODES[mode])
    heads = TowerHeads(tiny_model, MODES[mode])
    seen = record_input_devices(heads)
    result = fine_tune_heads(
        heads, pairs, pairs, queries, images, logit_scale=10.0, epochs=1, batch_size=8, negatives=16, device=device
    )
    assert result.device == "cpu (float32)"  # fp32, no autocast: CUDA alone trains in mixed precision
    assert seen and set(seen) == {device}
    assert {p.device for p in heads.parameters()} == {device}
    assert {p.dtype for p in heads.parameters()} == {torch.float32}
    assert {t.device for t in result.state.values()} == {torch.device("cpu")}  # written from host memory


@no_accelerator
def test_a_resolved_cuda_device_is_where_the_heads_and_batches_go(tiny_model, monkeypatch):
    """On this CPU-only torch build, asking torch to put anything on CUDA raises: so a fine-tune given the
    device LOUPE_DEVICE=auto resolves to on a GPU machine fails at once here, before a single step, instead
    of quietly training on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what a GPU machine's torch says
    device = resolve_device("auto")
    assert device == torch.device("cuda")
    images, queries, pairs = synthetic_inputs(tiny_model, 0)
    heads = TowerHeads(tiny_model, 0)
    before = heads.model_state()
    seen = record_input_devices(heads)
    asked, move = [], heads.to

    def to(*args, **kwargs):  # the real move, noting where it was asked to go
        asked.append(kwargs.get("device", args[0] if args else None))
        return move(*args, **kwargs)

    heads.to = to
    with pytest.raises((AssertionError, RuntimeError), match="CUDA"):
        fine_tune_heads(heads, pairs, pairs, queries, images, logit_scale=10.0, epochs=1, device=device)
    assert asked == [device]  # the heads were sent to the resolved device, first thing
    assert not seen  # nothing ran through the heads on the CPU
    assert all(torch.equal(before[name], value) for name, value in heads.model_state().items())


def _write_expectation() -> None:
    """Run by hand with the code before a change: ``python -m tests.unit.finetune.test_finetune_device``."""
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    from django.conf import settings

    from collection.demo_model import build_demo_model

    if not Path(settings.LOUPE_CLIP_MODEL).is_dir():
        build_demo_model(Path(settings.LOUPE_CLIP_MODEL))
    model = tiny_clip()
    arrays = {
        f"{mode}/{name}": tensor.numpy()
        for mode, layers in MODES.items()
        for name, tensor in reference_state(model, layers).items()
    }
    EXPECTED.parent.mkdir(exist_ok=True)
    np.savez(EXPECTED, **arrays)
    print(f"wrote {EXPECTED}: {len(arrays)} tensors")


if __name__ == "__main__":
    _write_expectation()
