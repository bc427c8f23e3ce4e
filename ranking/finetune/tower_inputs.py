"""What enters the trainable part of each tower (``ranking.finetune.heads``), computed once and cached.

- Projections only (``layers=0``): the pooled outputs. Images' are kept in Postgres
  (``ImageTowerOutput``, written by the embedding pass itself; see ``ranking.finetune.towers``).
- The last ``layers`` blocks too: the hidden states entering them, every token of each image
  (ViT-B/32: 50 x 768 values, ~77 KB in float16). Too big for a table row per image, so they live in
  files under ``VAR_DIR/tower_states/``, keyed by a fingerprint of the frozen part of the vision tower
  (every fine-tune of the same frozen part shares them, and ``VAR_DIR`` is the volume every worker
  machine shares). Filled in chunks, each written atomically, so an interrupted fill resumes.

Queries and captions are few and short: their states are computed at the start of each run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from collection.models import Image
from collection.processor_input import bounded_for_processor
from ranking.finetune.heads import TextStates, layout_of
from ranking.finetune.state_files import states_root
from ranking.finetune.towers import cached_image_pooled, fill_image_cache, open_stored

CHUNK = 256  # images per cache file


def text_inputs(encoder, texts: Sequence[str], layers: int, batch_size: int = 256) -> TextStates:
    """The text tower's states entering its last ``layers`` blocks (or its pooled outputs), for ``texts``."""
    model = encoder.model.text_model
    layout = layout_of(encoder.model)
    if not texts:
        width = layout.text_projection_of(encoder.model).in_features
        if not layers:
            return TextStates(torch.zeros((0, width)))
        return TextStates(torch.zeros((0, 1, width)), torch.zeros((0, 1), dtype=torch.bool), torch.zeros(0).long())
    tokens = encoder._tokenize(list(texts))  # one padding length for all of them
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    device = encoder.placement.device
    out = []
    for start in range(0, len(ids), batch_size):
        with torch.inference_mode():
            result = model(
                input_ids=ids[start : start + batch_size].to(device),
                attention_mask=mask[start : start + batch_size].to(device),
                output_hidden_states=bool(layers),
            )
        states = result.hidden_states[-(layers + 1)] if layers else layout.text_pooled(result)
        out.append(states.float().clone().cpu())  # host memory: the training moves each batch's rows
    states = torch.cat(out)
    if not layers:
        return TextStates(states)
    return TextStates(states, mask.bool(), eos_positions(ids, int(model.eos_token_id)))


def eos_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Where each text's pooled token is, as ``transformers``' CLIP text model finds it."""
    if eos_token_id == 2:  # configs from before transformers PR #24773: the highest id is the EOS token
        return input_ids.to(torch.int).argmax(dim=-1).long()
    return (input_ids == eos_token_id).int().argmax(dim=-1).long()


def image_states(encoder, images: Sequence[PILImage.Image], layers: int) -> np.ndarray:
    """(n, tokens, width) float16: the vision tower's hidden states entering its last ``layers`` blocks."""
    inputs = encoder.image_processor(
        images=[bounded_for_processor(i, encoder.image_processor) for i in images],
        return_tensors="pt",
        input_data_format="channels_last",
    )
    pixels = inputs["pixel_values"].to(device=encoder.placement.device, dtype=encoder.placement.dtype)
    with torch.inference_mode():
        result = encoder.model.vision_model(pixel_values=pixels, output_hidden_states=True)
    return result.hidden_states[-(layers + 1)].to(torch.float16).cpu().numpy()


def frozen_vision_fingerprint(model, layers: int) -> str:
    """sha256 of the vision tower below its last ``layers`` blocks: what the cached states depend on."""
    vision = model.vision_model
    depth = len(vision.encoder.layers)
    trained = {f"encoder.layers.{i}." for i in range(depth - layers, depth)} | {"post_layernorm."}
    digest = hashlib.sha256(f"layers={layers}".encode())
    for name, tensor in sorted(vision.state_dict().items()):
        if any(name.startswith(prefix) for prefix in trained):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def states_dir(fingerprint: str) -> Path:
    return states_root() / fingerprint[:24]


def _cached_ids(folder: Path) -> set[int]:
    ids: set[int] = set()
    for part in sorted(folder.glob("part-*.npz")):
        with np.load(part) as data:
            ids.update(int(i) for i in data["ids"])
    return ids


def fill_state_cache(encoder, layers: int, progress: Callable[[int, int], None] | None = None) -> Path:
    """Compute and store the states of every image the cache lacks; resumable (one file per chunk)."""
    folder = states_dir(frozen_vision_fingerprint(encoder.model, layers))
    folder.mkdir(parents=True, exist_ok=True)
    have = _cached_ids(folder)
    missing = [(pk, name) for pk, name in Image.objects.order_by("pk").values_list("pk", "file") if pk not in have]
    for done in range(0, len(missing), CHUNK):
        kept, opened = open_stored(missing[done : done + CHUNK])
        if opened:
            states = np.concatenate(
                [image_states(encoder, opened[i : i + 32], layers) for i in range(0, len(opened), 32)]
            )
            partial = folder / f".part-{kept[0]:012d}-{len(kept)}.tmp.npz"
            np.savez(partial, ids=np.asarray(kept, dtype=np.int64), states=states)
            os.replace(partial, folder / f"part-{kept[0]:012d}-{len(kept)}.npz")  # whole, or not there at all
        if progress:
            progress(min(done + CHUNK, len(missing)), len(missing))
    return folder


def load_state_cache(folder: Path) -> tuple[np.ndarray, torch.Tensor]:
    """(image ids sorted, (n, tokens, width) float32 states) of the images still in the collection."""
    existing = set(Image.objects.values_list("pk", flat=True))
    ids, states = [], []
    for part in sorted(folder.glob("part-*.npz")):
        with np.load(part) as data:
            keep = np.asarray([int(i) in existing for i in data["ids"]], dtype=bool)
            ids.append(data["ids"][keep])
            states.append(data["states"][keep])
    if not ids:
        return np.zeros(0, dtype=np.int64), torch.zeros(0)
    ids_all, states_all = np.concatenate(ids), np.concatenate(states)
    ids_all, first = np.unique(ids_all, return_index=True)  # sorted; a chunk written twice counts once
    return ids_all, torch.from_numpy(states_all[first].astype(np.float32))


def image_inputs(encoder, layers: int, progress: Callable[[int, int], None] | None = None):
    """(image ids sorted, inputs of the trainable part) for the whole collection, filling caches first."""
    if not layers:
        tower = fill_image_cache(encoder, progress=progress)
        ids, pooled = cached_image_pooled(tower)
        return ids, torch.from_numpy(pooled)
    return load_state_cache(fill_state_cache(encoder, layers, progress))
