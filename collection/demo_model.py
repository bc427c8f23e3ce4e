"""The tiny random-weight CLIP that tests and offline runs use through the real loading path.

It has the real CLIP BPE tokenizer (shipped in ``searchapp/assets/clip_tokenizer``, MIT licence,
from openai/clip-vit-base-patch32) and a CLIP architecture shrunk to a few MB. Its weights are
random (seeded, so every build is the same): it runs the whole product but its rankings carry
no semantic quality, and its model card says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from collection.model_card import MODEL_CARD_FILE

TOKENIZER_ASSETS = Path(__file__).resolve().parent / "assets" / "clip_tokenizer"
DEMO_SEED = 20261124


def build_demo_model(out_dir: Path, *, seed: int = DEMO_SEED) -> Path:
    """Write the demo model (weights, tokenizer, preprocessor, model card) to ``out_dir``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast  # noqa: PLC0415 - seconds to import: only when a model loads

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=64,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer = CLIPTokenizerFast.from_pretrained(TOKENIZER_ASSETS)
    tokenizer.save_pretrained(out_dir)
    size = config.vision_config.image_size
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(out_dir)
    card = {
        "name": "loupe-demo-tiny-clip",
        "demo": True,
        "seed": seed,
        "description": "Random-weight CLIP for tests and offline demos; no semantic quality.",
    }
    # The card is written last: its presence means the folder is complete.
    (out_dir / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2))
    return out_dir
