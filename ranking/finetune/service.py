"""One fine-tuning attempt from feedback, end to end: pairs → projections → WiSE-FT → gate → new version.

1. Pairs from feedback (``ranking.finetune.pairs``), split by time.
2. Pooled tower outputs: images from the shared cache (filled resumably), queries computed once.
3. Projections fine-tuned with symmetric InfoNCE (``ranking.finetune.projections``), early-stopped on
   held-out Recall@10 of the clicked image.
4. WiSE-FT: the mixing coefficient α between the old and the tuned projections is chosen on the
   held-out pairs, among the α whose reference-set recall stays within the tolerance.
5. Gate: held-out Recall@10 must improve by ``margin`` (absolute) and the reference set (the
   collection's captions as queries, their image as the answer) must not drop more than
   ``tolerance``. Both numbers, before and after, are kept on the run.
6. Only then: the model folder is written (atomically: the card last), the ``EncoderVersion`` row is
   created as *building*, the collection is re-embedded by re-projecting the cached tower outputs,
   the captions are embedded, the HNSW index is built, and the version becomes *ready*: it can serve
   as an experiment arm or as production (``ServingConfig.encoder_version``). Nothing serves a
   version before it is ready, so a worker killed half-way leaves a building version that the next
   run finishes or replaces, never a half-embedded one in service.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ranking.finetune.pairs import Pair, feedback_pairs, split_by_time
from ranking.finetune.projections import (
    PairSet,
    Projections,
    fine_tune_projections,
    project,
    recall_at_k,
    recall_of_pairs,
)
from ranking.finetune.towers import cached_image_pooled, fill_image_cache, text_pooled
from ranking.finetune.wise import choose_alpha, interpolate
from ranking.models import FineTuneRun
from ranking.training_data import estimated_propensity
from searchapp.encoders import MODEL_CARD_FILE, Encoder, weights_fingerprint
from searchapp.models import Caption, EncoderVersion, ImageEmbedding

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FineTuneSettings:
    learning_rate: float = 1e-4
    epochs: int = 30
    batch_size: int = 256
    patience: int = 4
    train_text: bool = True
    train_image: bool = True
    wise_ft: bool = True  # False: take the tuned weights as they are (alpha = 1)
    margin: float = 0.02  # held-out Recall@10 must rise at least this much (absolute)
    tolerance: float = 0.01  # the reference set's Recall@10 may drop at most this much
    min_pairs: int = 50
    reference_captions: int = 2000
    seed: int = 0


def encoder_gate(
    before_held: float, after_held: float, before_reference: float, after_reference: float, options: FineTuneSettings
) -> tuple[bool, str]:
    """Promote only if held-out feedback recall rises by the margin and the reference set holds within tolerance."""
    reasons = []
    if after_held - before_held < options.margin:
        reasons.append(f"held-out Recall@10 {before_held:.3f} → {after_held:.3f} does not rise by {options.margin}")
    if before_reference - after_reference > options.tolerance:
        reasons.append(f"reference Recall@10 {before_reference:.3f} → {after_reference:.3f} drops more than "
                       f"{options.tolerance}")  # fmt: skip
    if reasons:
        return False, "; ".join(reasons)
    return True, (f"held-out Recall@10 {before_held:.3f} → {after_held:.3f}, reference {before_reference:.3f} → "
                  f"{after_reference:.3f}")  # fmt: skip


def encoders_dir() -> Path:
    return Path(settings.VAR_DIR) / "encoders"


def load_encoder(version: EncoderVersion) -> Encoder:
    from searchapp.versions import serving_version

    choice, serving = serving_version()
    if serving.pk == version.pk:
        return choice.encoder
    return Encoder(version.model_ref, local_files_only=True)


def _pair_set(pairs: list[Pair], texts: dict[str, int], text_rows: np.ndarray, image_row: dict[int, int]) -> PairSet:
    kept = [p for p in pairs if p.image_id in image_row]
    return PairSet(
        text_rows,
        np.asarray([texts[p.query] for p in kept], dtype=np.int64),
        np.asarray([image_row[p.image_id] for p in kept], dtype=np.int64),
        np.asarray([p.weight for p in kept], dtype=np.float64),
        [np.asarray(sorted(image_row[i] for i in p.skipped if i in image_row), dtype=np.int64) for p in kept],
    )


def _reference(encoder: Encoder, image_row: dict[int, int], limit: int, seed: int) -> tuple[np.ndarray, list[set]]:
    """The collection's captions as queries (a sample), each answered by its own image."""
    rows = list(Caption.objects.filter(image_id__in=list(image_row)).values_list("text", "image_id"))
    if len(rows) > limit:
        rng = np.random.default_rng(seed)
        rows = [rows[i] for i in sorted(rng.choice(len(rows), size=limit, replace=False))]
    pooled = text_pooled(encoder, [text for text, _ in rows])
    return pooled, [{image_row[image_id]} for _, image_id in rows]


def _update(run: FineTuneRun, stage: str, progress: float = 0.0) -> None:
    run.stage, run.progress = stage, progress
    run.save(update_fields=["stage", "progress"])


def fine_tune(base: EncoderVersion, options: FineTuneSettings | None = None) -> FineTuneRun:
    """One attempt; returns its run record (outcome, metrics, and the new version when it passed)."""
    options = options or FineTuneSettings()
    run = FineTuneRun.objects.create(base=base, settings=asdict(options))
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        propensity = estimated_propensity(None, settings.LOUPE_RERANK_DEPTH, settings.LOUPE_SWAP_MAX_POSITION)
        pairs = feedback_pairs(timezone.now(), propensity)
        train_pairs, held_pairs = split_by_time(pairs)
        if len(train_pairs) < options.min_pairs or not held_pairs:
            why = f"{len(train_pairs)} training pairs ({len(pairs)} in all); need {options.min_pairs}."
            return _finish(run, FineTuneRun.Outcome.SKIPPED, why)
        encoder = load_encoder(base)
        _update(run, "caching image tower outputs")
        tower = fill_image_cache(encoder, progress=lambda done, total: _update(run, "caching image tower outputs",
                                                                                 done / max(total, 1)))  # fmt: skip
        image_ids, image_pooled = cached_image_pooled(tower)
        image_row = {int(pk): row for row, pk in enumerate(image_ids)}
        timings["image_cache_s"] = time.perf_counter() - started
        _update(run, "encoding queries")
        queries = sorted({p.query for p in pairs})
        query_rows = {q: i for i, q in enumerate(queries)}
        queries_pooled = text_pooled(encoder, queries)
        train = _pair_set(train_pairs, query_rows, queries_pooled, image_row)
        held = _pair_set(held_pairs, query_rows, queries_pooled, image_row)
        reference_pooled, reference_relevant = _reference(encoder, image_row, options.reference_captions, options.seed)
        start = Projections(encoder.model.text_projection.weight.detach().clone(),
                            encoder.model.visual_projection.weight.detach().clone())  # fmt: skip
        logit_scale = float(encoder.model.logit_scale.detach().exp())
        timings["prepare_s"] = time.perf_counter() - started

        _update(run, "training projections")
        trained_at = time.perf_counter()
        tuned = fine_tune_projections(
            train, held, image_pooled, start, logit_scale, learning_rate=options.learning_rate,
            epochs=options.epochs, batch_size=options.batch_size, patience=options.patience,
            train_text=options.train_text, train_image=options.train_image, seed=options.seed,
        )  # fmt: skip
        timings["train_s"] = time.perf_counter() - trained_at

        @functools.cache  # each alpha is scored once: the table, the floor and the final pick share them
        def scores(alpha: float) -> tuple[float, float]:
            mixed = Projections.from_state(interpolate(start.state(), tuned.projections.state(), alpha))
            images = project(image_pooled, mixed.image)
            held_recall = recall_of_pairs(held, images, mixed.text)
            reference = recall_at_k(project(reference_pooled, mixed.text), images, reference_relevant, 10)
            return held_recall, reference

        before_held, before_reference = scores(0.0)
        floor = before_reference - options.tolerance
        if options.wise_ft:
            alpha, table = choose_alpha(scores, reference_floor=floor)
        else:
            alpha, table = 1.0, [{"alpha": 1.0, "held_out": scores(1.0)[0], "reference": scores(1.0)[1]}]
        after_held, after_reference = scores(alpha)
        metrics = {"pairs": {"train": len(train), "held_out": len(held), "queries": len(queries)},
                   "held_out_recall@10": {"before": before_held, "after": after_held},
                   "reference_recall@10": {"before": before_reference, "after": after_reference,
                                           "captions": len(reference_relevant)},
                   "alpha": alpha, "wise_ft": table, "history": tuned.history, "best_epoch": tuned.best_epoch,
                   "timings": timings}  # fmt: skip
        run.metrics = metrics
        passed, why = encoder_gate(before_held, after_held, before_reference, after_reference, options)
        if not passed:
            return _finish(run, FineTuneRun.Outcome.REFUSED, f"Refused: {why}.", metrics)
        final = Projections.from_state(interpolate(start.state(), tuned.projections.state(), alpha))
        _update(run, "writing the new version")
        version = _write_version(base, encoder, final, run)
        run.result = version
        run.save(update_fields=["result"])
        _update(run, "re-embedding the collection")
        reembedded_at = time.perf_counter()
        reproject_collection(version, image_ids, image_pooled, final)
        timings["reembed_s"] = time.perf_counter() - reembedded_at
        _update(run, "embedding captions and building the index")
        _finish_version(version)
        metrics["timings"] = timings
        return _finish(run, FineTuneRun.Outcome.PROMOTED,
                       f"{version} ready: held-out Recall@10 {before_held:.3f} → {after_held:.3f}, reference "
                       f"{before_reference:.3f} → {after_reference:.3f}, alpha {alpha}.", metrics)  # fmt: skip
    except Exception as exc:
        logger.exception("Fine-tuning failed")
        return _finish(run, FineTuneRun.Outcome.FAILED, f"{type(exc).__name__}: {exc}")


def _write_version(base: EncoderVersion, encoder: Encoder, projections: Projections, run: FineTuneRun):
    """Save the model with the new projections under var/encoders; its row starts as building."""
    folder = encoders_dir() / f"finetune-{run.pk}-of-v{base.pk}"
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model = copy.deepcopy(encoder.model)  # the loaded encoder may be serving: never change it in place
    with torch.no_grad():
        model.text_projection.weight.copy_(projections.text)
        model.visual_projection.weight.copy_(projections.image)
    model.save_pretrained(partial, safe_serialization=True)
    fingerprint = weights_fingerprint(model)
    encoder.tokenizer.save_pretrained(partial)
    encoder.image_processor.save_pretrained(partial)
    card = {"name": f"{base.name} fine-tuned (run {run.pk})", "demo": base.is_demo, "parent": base.pk,
            "fine_tune_run": run.pk}  # fmt: skip
    (partial / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    version, _ = EncoderVersion.objects.get_or_create(
        model_ref=str(folder), fingerprint=fingerprint,
        defaults={"name": card["name"], "dimension": base.dimension, "is_demo": base.is_demo, "parent": base,
                  "status": EncoderVersion.Status.BUILDING, "kind": base.kind},
    )  # fmt: skip
    return version


def reproject_collection(version: EncoderVersion, image_ids: np.ndarray, pooled: np.ndarray, projections) -> int:
    """Image vectors of ``version`` from cached tower outputs: one matrix product, batched inserts."""
    vectors = project(pooled, projections.image)
    done = 0
    for start in range(0, len(image_ids), 2000):
        chunk = zip(image_ids[start : start + 2000], vectors[start : start + 2000], strict=True)
        rows = [ImageEmbedding(image_id=int(pk), encoder_version=version, vector=vec) for pk, vec in chunk]
        with transaction.atomic():
            ImageEmbedding.objects.bulk_create(rows, update_conflicts=True, unique_fields=["encoder_version", "image"],
                                               update_fields=["vector"])  # fmt: skip
        done += len(rows)
    return done


def _finish_version(version: EncoderVersion) -> None:
    """Embed what re-projection did not cover (captions, images without a cached output), index, mark ready."""
    embed_collection_for(Encoder(version.model_ref, local_files_only=True), version)
    version.status = EncoderVersion.Status.READY
    version.save(update_fields=["status"])


def finish_building_versions() -> list[EncoderVersion]:
    """Complete versions left *building* by an interrupted run (a killed worker): embed what is missing, index,
    mark ready. Re-embedding is resumable because it only adds the vectors a version lacks."""
    from searchapp.models import Image

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
            model = encoder.model
            own = Projections(model.text_projection.weight.detach(), model.visual_projection.weight.detach())
            reproject_collection(version, missing, pooled[np.searchsorted(ids, missing)], own)
        embed_collection_for(encoder, version)
        version.status = EncoderVersion.Status.READY
        version.save(update_fields=["status"])
        logger.info("Finished %s (%s images re-projected; %s in the collection).", version, len(missing),
                    Image.objects.count())  # fmt: skip
        finished.append(version)
    return finished


def embed_collection_for(encoder: Encoder, version: EncoderVersion) -> None:
    from searchapp.embedding import embed_collection

    embed_collection(encoder, version)


def _finish(run: FineTuneRun, outcome: str, message: str, metrics: dict | None = None) -> FineTuneRun:
    run.stage, run.progress = "", 1.0
    return run.finish(outcome, message, metrics)
