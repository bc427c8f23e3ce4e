"""A fine-tuned encoder becomes a version that can serve: model folder, vectors, index, then *ready*.

1. The model folder is written under ``VAR_DIR/encoders`` from a copy of the model with the new
   weights (the serving model is never touched), atomically: a ``.partial`` folder renamed at the end.
2. The ``EncoderVersion`` row starts as *building*, with its parent.
3. The vision tower's pooled outputs under the new weights are stored in the tower cache (when the
   fine-tune changed vision blocks, they are computed from the cached states, one block per image;
   projection-only fine-tunes share the parent's), then every image vector is their re-projection:
   one matrix product, no tower pass.
4. Captions and any image the caches missed are embedded by the ordinary pass, the HNSW index is
   built, and only then the version is *ready*. A worker killed half-way leaves a building version
   that cannot serve; ``finish_building_versions`` (run first by every fine-tune task) completes it.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from django.conf import settings
from django.db import transaction

from collection.embedding import embed_collection
from collection.encoders import Encoder, weights_fingerprint
from collection.fast_text import accelerate
from collection.model_card import MODEL_CARD_FILE
from collection.models import EncoderVersion, ImageEmbedding
from ranking.finetune.heads import image_projection_weight
from ranking.finetune.towers import cached_image_pooled

logger = logging.getLogger(__name__)
BATCH = 2000


def encoders_dir() -> Path:
    return Path(settings.VAR_DIR) / "encoders"


def project(pooled: np.ndarray | torch.Tensor, weight: torch.Tensor) -> np.ndarray:
    """Unit vectors of pooled tower outputs through a projection (what get_*_features returns, normalised)."""
    with torch.no_grad():
        # The weight may come from a model on an accelerator, in half precision: the product runs on the host.
        out = torch.as_tensor(np.asarray(pooled), dtype=torch.float32) @ weight.detach().float().cpu().T
        return torch.nn.functional.normalize(out, dim=-1).numpy()


def write_version(
    base: EncoderVersion, encoder: Encoder, state: dict[str, torch.Tensor], run
) -> tuple[EncoderVersion, str]:
    """Save the model with ``state`` (parameter name -> tensor) under var/encoders; its row starts as building.

    Returns the version and its vision tower's fingerprint (the key its pooled outputs are cached under).
    """
    folder = encoders_dir() / f"finetune-{run.pk}-of-v{base.pk}"
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model = copy.deepcopy(encoder.model)  # the loaded encoder may be serving: never change it in place
    _, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"The fine-tuned weights name parameters the model lacks: {unexpected[:3]}")
    model.save_pretrained(partial, safe_serialization=True)
    fingerprint, vision_tower = weights_fingerprint(model), weights_fingerprint(model.vision_model)
    encoder.tokenizer.save_pretrained(partial)
    encoder.image_processor.save_pretrained(partial)
    root_name = base.name.split(" fine-tuned (")[0]  # a fine-tune of a fine-tune keeps the root's name
    card = {
        "name": f"{root_name} fine-tuned (run {run.pk}, from v{base.pk})",
        "demo": base.is_demo,
        "parent": base.pk,
        "fine_tune_run": run.pk,
        "trained": sorted({name.split(".")[0] for name in state}),
    }
    (partial / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    version, _ = EncoderVersion.objects.get_or_create(
        model_ref=str(folder),
        fingerprint=fingerprint,
        defaults={
            "name": card["name"],
            "dimension": base.dimension,
            "is_demo": base.is_demo,
            "parent": base,
            "status": EncoderVersion.Status.BUILDING,
            "kind": base.kind,
        },
    )
    return version, vision_tower


def reproject_collection(version: EncoderVersion, image_ids: np.ndarray, pooled: np.ndarray, projection) -> int:
    """Image vectors of ``version`` from pooled tower outputs: one matrix product, batched upserts."""
    vectors = project(pooled, projection)
    done = 0
    for start in range(0, len(image_ids), BATCH):
        chunk = zip(image_ids[start : start + BATCH], vectors[start : start + BATCH], strict=True)
        rows = [ImageEmbedding(image_id=int(pk), encoder_version=version, vector=vec) for pk, vec in chunk]
        with transaction.atomic():
            ImageEmbedding.objects.bulk_create(
                rows, update_conflicts=True, unique_fields=["encoder_version", "image"], update_fields=["vector"]
            )
        done += len(rows)
    return done


def finish_version(version: EncoderVersion) -> None:
    """Embed what re-projection did not cover (captions, images without a cached output), export the text
    tower for ONNX Runtime (so the web processes that serve it only load the file), index, mark ready."""
    encoder = Encoder(version.model_ref, local_files_only=True)
    accelerate(encoder)  # before embedding: the fine-tuned image tower gets its own checked int8 export
    embed_collection_for(encoder, version)
    version.status = EncoderVersion.Status.READY
    version.save(update_fields=["status"])


def finish_building_versions() -> list[EncoderVersion]:
    """Complete versions left *building* by an interrupted run (a killed worker): re-project what the tower
    cache holds, embed the rest, index, mark ready. Resumable: only the vectors a version lacks are added."""

    finished = []
    for version in EncoderVersion.objects.filter(status=EncoderVersion.Status.BUILDING):
        try:
            encoder = Encoder(version.model_ref, local_files_only=True)
        except Exception:  # noqa: BLE001 - a folder that is gone cannot be finished; say so and leave it
            logger.exception("Cannot finish %s: its model does not load.", version)
            continue
        if encoder.fingerprint != version.fingerprint:
            logger.error("Cannot finish %s: the weights at %s changed.", version, version.model_ref)
            continue
        ids, pooled = cached_image_pooled(encoder.vision_tower_fingerprint)
        have = set(ImageEmbedding.objects.filter(encoder_version=version).values_list("image_id", flat=True))
        missing = np.asarray([i for i in ids.tolist() if i not in have], dtype=np.int64)
        if len(missing):
            weight = image_projection_weight(encoder.model)
            reproject_collection(version, missing, pooled[np.searchsorted(ids, missing)], weight)
        embed_collection_for(encoder, version)
        version.status = EncoderVersion.Status.READY
        version.save(update_fields=["status"])
        logger.info("Finished %s (%s images re-projected).", version, len(missing))
        finished.append(version)
    return finished


def embed_collection_for(encoder: Encoder, version: EncoderVersion) -> None:
    embed_collection(encoder, version)
