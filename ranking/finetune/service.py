"""One fine-tuning attempt from feedback, end to end: pairs → trained heads → WiSE-FT → gate → new version.

1. Pairs from feedback (``ranking.finetune.pairs``) in three windows of search time: train, then the
   latest searches split into validation (epochs and the WiSE-FT mix are chosen on it) and test (the
   gate reads it). No (query, image) pair is in two windows (``assert_disjoint`` raises otherwise).
2. Inputs of the trainable part (``ranking.finetune.tower_inputs``): images' from a cache shared by
   every worker, queries' and captions' computed once.
3. The projections, and with ``layers`` the last blocks of each tower (``ranking.finetune.heads``),
   trained with symmetric InfoNCE and an anchor to the start (``ranking.finetune.training``),
   early-stopped on validation Recall@10 of the chosen images, among the epochs whose recall on the
   guard captions stays within half the tolerance of the start's.
4. WiSE-FT: the mix α between the start and the tuned weights is chosen on validation, among the α
   whose guard recall stays within half the tolerance of the start's (``ranking.finetune.reference``).
5. Gate: on the test window's logged searches, the clicks each version would get when it re-ranks the
   logged lists (``ranking.finetune.counterfactual``: inverse propensity, so the version that logged them
   has no head start) must rise by ``margin`` (relative) with a paired lower bound above zero, and the gate
   captions (other images than the guard's) must not drop more than ``tolerance``. So nothing the gate
   reads chose the epoch or α. Recall of the test window's chosen images is still recorded; it favours
   the logger, so it does not decide. Both before and after, and every α, are kept on the run.
6. Only then a new version is built (``ranking.finetune.building``); it can serve only once *ready*.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from django.conf import settings
from django.utils import timezone

from collection.device import resolve_device
from collection.encoders import Encoder
from collection.models import EncoderVersion
from collection.versions import serving_version
from ranking.finetune.building import (
    finish_version,
    reproject_collection,
    write_version,
)
from ranking.finetune.counterfactual import GateEstimate, LoggedSearch, collection_ranks, compare, logged_searches
from ranking.finetune.heads import TowerHeads, logit_scale_of
from ranking.finetune.pairs import Pair, RelevanceSettings, assert_disjoint, served_by, windowed_pairs
from ranking.finetune.reference import anchor_rows, reference_split
from ranking.finetune.tower_inputs import image_inputs, text_inputs
from ranking.finetune.towers import store_tower_outputs
from ranking.finetune.training import (
    Anchor,
    PairSet,
    ReferenceGuard,
    collection_pooled,
    collection_vectors,
    fine_tune_heads,
    hit_rate_at_k,
    recall_of_pairs,
    text_vectors,
)
from ranking.finetune.wise import choose_alpha, interpolate
from ranking.models import FineTuneRun
from ranking.training_data import estimated_propensity

logger = logging.getLogger(__name__)


def _configured_layers() -> int:
    return settings.LOUPE_FINETUNE_LAYERS


@dataclass(frozen=True)
class FineTuneSettings:
    learning_rate: float = 1e-4
    epochs: int = 100  # at most: early stopping usually ends it sooner
    batch_size: int = 256
    patience: int = 20  # epochs without a better (guarded) validation score before stopping
    layers: int = field(default_factory=_configured_layers)  # 0: projections only; n: also the last n blocks
    text_layers: int | None = None  # the text tower's, when not the same as ``layers``
    train_text: bool = True
    train_image: bool = True
    negatives: int = 1024  # random collection images as extra negatives per step
    anchor_weight: float = 100.0  # 0: none; 1 - cosine is small: 100 x a 0.01 drift weighs as 1 nat of InfoNCE
    wise_ft: bool = True  # False: take the tuned weights as they are (alpha = 1)
    early_stopping: bool = True  # False: keep the last epoch, whatever validation says
    margin: float = 0.05  # the gate estimate (clicks per search) must rise at least this share (relative)
    gate_depth: int = 0  # logged positions the estimate reads; 0: those the swap slice measured (counterfactual)
    gate_clip: float = 10.0  # largest propensity ratio one click may carry
    tolerance: float = 0.01  # the gate captions' Recall@10 may drop at most this much
    min_pairs: int = 50
    reference_captions: int = 2000  # each of the guard and the gate sets
    anchor_captions: int = 2000
    held_out_share: float = 0.25  # the latest searches: half validation, half test
    prior_mean: float = RelevanceSettings.prior_mean
    prior_strength: float = RelevanceSettings.prior_strength
    min_relevance: float = RelevanceSettings.min_relevance
    short_click_ms: int = RelevanceSettings.short_click_ms
    seed: int = 0

    @property
    def relevance(self) -> RelevanceSettings:
        return RelevanceSettings(self.prior_mean, self.prior_strength, self.min_relevance, self.short_click_ms)


def encoder_gate(
    estimate: GateEstimate, before_reference: float, after_reference: float, options: FineTuneSettings
) -> tuple[bool, str]:
    """Promote only if the test window's estimated clicks rise by the margin (share), with a paired lower bound
    above zero, and the gate captions hold within tolerance."""
    reasons = []
    before_held, after_held = estimate.before, estimate.after
    if estimate.difference < options.margin * before_held or estimate.difference <= 0:
        reasons.append(
            f"estimated clicks per search ({estimate.gates_on}) {before_held:.3f} → {after_held:.3f} do not rise by "
            f"{options.margin:.0%}"
        )
    elif estimate.lower_bound is None or estimate.lower_bound <= 0:
        reasons.append(
            f"estimated clicks per search {before_held:.3f} → {after_held:.3f}: the gain's lower bound "
            f"{_bound(estimate)} is not above 0 ({estimate.searches} searches)"
        )
    if before_reference - after_reference > options.tolerance:
        reasons.append(
            f"reference Recall@10 {before_reference:.3f} → {after_reference:.3f} drops more than {options.tolerance}"
        )
    if reasons:
        return False, "; ".join(reasons)
    return True, (
        f"estimated clicks per search {before_held:.3f} → {after_held:.3f} (lower bound of the gain "
        f"{estimate.lower_bound:.4f}), reference {before_reference:.3f} → {after_reference:.3f}"
    )


def load_encoder(version: EncoderVersion, device: torch.device) -> Encoder:
    """``version``'s encoder on ``device`` in fp32: the heads copy its weights and the new version is written
    from them, so a half-precision cast (what serving uses on a GPU) would round every weight it saves."""
    choice, serving = serving_version()
    loaded = choice.encoder
    if serving.pk == version.pk and loaded.placement.device == device and loaded.placement.dtype == torch.float32:
        return loaded
    return Encoder(version.model_ref, local_files_only=True, device=device.type, full_precision=True)


def _pair_set(pairs: list[Pair], query_row: dict[str, int], image_row: dict[int, int]) -> PairSet:
    kept = [p for p in pairs if p.image_id in image_row]
    return PairSet(
        np.asarray([query_row[p.query] for p in kept], dtype=np.int64),
        np.asarray([image_row[p.image_id] for p in kept], dtype=np.int64),
        np.asarray([p.weight for p in kept], dtype=np.float64),
        [np.asarray(sorted(image_row[i] for i in p.skipped if i in image_row), dtype=np.int64) for p in kept],
    )


def _update(run: FineTuneRun, stage: str, progress: float = 0.0) -> None:
    run.stage, run.progress = stage, progress
    run.save(update_fields=["stage", "progress"])


@dataclass(frozen=True)
class Scores:
    validation: float
    test: float
    guard: float  # the guard captions': what the choice of epoch and alpha was held to
    reference: float  # the gate captions': what the gate reads


def fine_tune(base: EncoderVersion, options: FineTuneSettings | None = None) -> FineTuneRun:
    """One attempt; returns its run record (outcome, metrics, and the new version when it passed)."""
    options = options or FineTuneSettings()
    # LOUPE_DEVICE=cuda on a machine without CUDA is a configuration error: DeviceUnavailable here, before a
    # run is recorded or a pair read, not a failed run an hour of caching later.
    device = resolve_device(settings.LOUPE_DEVICE)
    run = FineTuneRun.objects.create(base=base, settings=asdict(options))
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        propensity = estimated_propensity(None, settings.LOUPE_MAX_CANDIDATES, settings.LOUPE_SWAP_MAX_POSITION)
        windows = windowed_pairs(timezone.now(), propensity, options.relevance, options.held_out_share)
        if len(windows.train) < options.min_pairs or not windows.validation or not windows.test:
            why = (
                f"{len(windows.train)} training, {len(windows.validation)} validation and {len(windows.test)} test "
                f"pairs; need {options.min_pairs} training pairs and some of each."
            )
            return _finish(run, FineTuneRun.Outcome.SKIPPED, why)
        assert_disjoint(windows)  # windowed_pairs ensures it; checked where the gate depends on it
        encoder = load_encoder(base, device)
        heads = TowerHeads(encoder.model, options.layers, options.text_layers).to(device)
        for part in (heads.text_projection, heads.text_blocks, heads.text_norm):
            part.requires_grad_(options.train_text)
        for part in (heads.visual_projection, heads.vision_blocks, heads.vision_norm):
            part.requires_grad_(options.train_image)
        _update(run, "caching image tower inputs")
        image_ids, images = image_inputs(
            encoder,
            heads.vision_layers,
            lambda done, total: _update(run, "caching image tower inputs", done / max(total, 1)),
        )
        image_row = {int(pk): row for row, pk in enumerate(image_ids)}
        timings["image_inputs_s"] = time.perf_counter() - started
        _update(run, "encoding queries and captions")
        every = windows.train + windows.validation + windows.test
        # The gate's searches: the test window's logged lists, on the images this run can score.
        gate_searches = _scorable(
            logged_searches(windows.boundaries[1], windows.boundaries[2], options.short_click_ms), image_row
        )
        queries = sorted({p.query for p in every} | {s.query for s in gate_searches})
        query_row = {q: i for i, q in enumerate(queries)}
        query_states = text_inputs(encoder, queries, heads.text_layers)
        train, valid, test = (
            _pair_set(w, query_row, image_row) for w in (windows.train, windows.validation, windows.test)
        )
        split = reference_split(image_row, options.reference_captions, options.anchor_captions, options.seed)
        guard_states = text_inputs(encoder, split.guard.texts, heads.text_layers)
        gate_states = text_inputs(encoder, split.gate.texts, heads.text_layers)
        start = heads.model_state()
        anchor = None
        if options.anchor_weight > 0:
            anchor_states = text_inputs(encoder, split.anchor_texts, heads.text_layers)
            anchored = torch.from_numpy(anchor_rows(image_row, split))  # not the guard or gate images
            anchor = Anchor(
                collection_vectors(heads, images[anchored]),
                anchor_states,
                text_vectors(heads, anchor_states),
                options.anchor_weight,
                rows=anchored,
            )
        logit_scale = logit_scale_of(encoder.model)
        timings["prepare_s"] = time.perf_counter() - started

        def guard_recall(image_vectors: np.ndarray) -> float:
            vectors = text_vectors(heads, guard_states).numpy()
            return hit_rate_at_k(vectors, image_vectors, split.guard.relevant, 10)

        def gate_recall(image_vectors: np.ndarray) -> float:
            vectors = text_vectors(heads, gate_states).numpy()
            return hit_rate_at_k(vectors, image_vectors, split.gate.relevant, 10)

        # Choosing within half the tolerance leaves the other half for the guard and gate sets' difference.
        floor = guard_recall(collection_vectors(heads, images).numpy()) - options.tolerance / 2
        guard = None
        if options.early_stopping and split.guard.texts:
            guard = ReferenceGuard(lambda _, vectors: guard_recall(vectors), floor)
        _update(run, "training")
        trained_at = time.perf_counter()
        tuned = fine_tune_heads(
            heads,
            train,
            valid,
            query_states,
            images,
            logit_scale,
            anchor=anchor,
            learning_rate=options.learning_rate,
            epochs=options.epochs,
            batch_size=options.batch_size,
            patience=options.patience,
            negatives=options.negatives,
            early_stopping=options.early_stopping,
            guard=guard,
            seed=options.seed,
            device=device,
        )
        timings["train_s"] = time.perf_counter() - trained_at

        scored: dict[float, Scores] = {}  # each alpha is scored once: the table, the floor and the pick share them

        def scores(alpha: float) -> Scores:
            if alpha not in scored:
                heads.load_model_state(interpolate(start, tuned.state, alpha))
                image_vectors = collection_vectors(heads, images).numpy()
                query_vectors = text_vectors(heads, query_states).numpy()
                scored[alpha] = Scores(
                    recall_of_pairs(valid, query_vectors, image_vectors),
                    recall_of_pairs(test, query_vectors, image_vectors),
                    guard_recall(image_vectors),
                    gate_recall(image_vectors),
                )
            return scored[alpha]

        before = scores(0.0)
        if options.wise_ft:
            alpha, _ = choose_alpha(lambda a: (scores(a).validation, scores(a).guard), reference_floor=floor)
        else:
            alpha = 1.0
        after = scores(alpha)

        def scorer(alpha: float):
            heads.load_model_state(interpolate(start, tuned.state, alpha))
            image_vectors = collection_vectors(heads, images).numpy()
            query_vectors = text_vectors(heads, query_states).numpy()
            by_query: dict[str, np.ndarray] = {}  # each query's scores of the whole collection, once

            def ranks(search: LoggedSearch) -> np.ndarray:
                if search.query not in by_query:
                    by_query[search.query] = image_vectors @ query_vectors[query_row[search.query]]
                return collection_ranks(by_query[search.query], image_row, search.images)

            return ranks

        # Clicks on pairs the training or validation window held (they chose the weights) reward remembering:
        # the gate reads the new pairs, and records both (audit of h4, finding 3).
        seen = {(p.query, p.image_id) for p in windows.train + windows.validation}
        estimate = compare(
            gate_searches,
            scorer(0.0),
            scorer(alpha),
            propensity,
            options.gate_depth,
            options.gate_clip,
            trained_pairs=seen,
            trained_queries={p.query for p in windows.train + windows.validation},
        )
        table = [{"alpha": a, **asdict(s)} for a, s in sorted(scored.items())]
        metrics = {
            "pairs": {
                "train": len(train),
                "validation": len(valid),
                "test": len(test),
                "queries": len(queries),
                "left_out_seen_earlier": windows.dropped,  # pairs an earlier window holds: not held out
                "test_queries_in_training": windows.test_queries_in_training,
            },
            # What the gate reads: clicks each version would get on the test window's logged lists.
            "gate_estimate": estimate.as_dict(),
            # Recorded, not gated on: the chosen images' recall favours whichever version logged them.
            "held_out_recall@10": {"before": before.test, "after": after.test},
            "validation_recall@10": {"before": before.validation, "after": after.validation},
            "reference_recall@10": {"before": before.reference, "after": after.reference, "captions": len(split.gate)},
            "guard_recall@10": {
                "before": before.guard,
                "after": after.guard,
                "captions": len(split.guard),
                "floor": floor,
            },
            "anchor_captions": len(split.anchor_texts),
            "anchor_images": 0 if anchor is None else len(anchor.image_vectors),  # never a guard or gate image
            "trained": _trained(heads),
            "windows": [str(b) for b in windows.boundaries],
            # Who logged each window: the pairs favour that version (docs/finetuning.md, "What the gate reads").
            "served_by": served_by(windows.boundaries),
            "alpha": alpha,
            "wise_ft": table,
            "history": tuned.history,
            "best_epoch": tuned.best_epoch,
            "device": tuned.device,
            "timings": timings,
        }
        run.metrics = metrics
        passed, why = encoder_gate(estimate, before.reference, after.reference, options)
        if not split.gate.texts:
            why += " (no reference captions in the collection: forgetting was not checked)"
        if not passed:
            return _finish(run, FineTuneRun.Outcome.REFUSED, f"Refused: {why}.", metrics)
        heads.load_model_state(interpolate(start, tuned.state, alpha))
        version = _build_version(run, base, encoder, heads, image_ids, images, timings)
        return _finish(run, FineTuneRun.Outcome.PROMOTED, f"{version} ready: {why}, alpha {alpha}.", metrics)
    except Exception as exc:
        logger.exception("Fine-tuning failed")
        return _finish(run, FineTuneRun.Outcome.FAILED, f"{type(exc).__name__}: {exc}")


def _build_version(
    run: FineTuneRun,
    base: EncoderVersion,
    encoder: Encoder,
    heads: TowerHeads,
    image_ids: np.ndarray,
    images: torch.Tensor,
    timings: dict[str, float],
) -> EncoderVersion:
    """The passing weights (loaded in ``heads``) become a version: folder, vectors, captions, index, ready."""
    _update(run, "writing the new version")
    version, vision_tower = write_version(base, encoder, heads.model_state(), run)
    run.result = version
    run.save(update_fields=["result"])
    _update(run, "re-embedding the collection")
    reembedded_at = time.perf_counter()
    pooled = collection_pooled(heads, images).numpy()
    if vision_tower != encoder.vision_tower_fingerprint:  # vision blocks changed: cache the new outputs
        store_tower_outputs(vision_tower, image_ids, pooled)
    reproject_collection(version, image_ids, pooled, heads.visual_projection.weight.detach().cpu())
    timings["reembed_s"] = time.perf_counter() - reembedded_at
    _update(run, "embedding captions and building the index")
    finish_version(version)
    run.metrics["timings"] = timings
    return version


def _bound(estimate: GateEstimate) -> str:
    return "unknown" if estimate.lower_bound is None else f"{estimate.lower_bound:.4f}"


def _scorable(searches: list[LoggedSearch], image_row: dict[int, int]) -> list[LoggedSearch]:
    """The searches restricted to images this run has inputs for (the rest cannot be re-ranked)."""
    kept = []
    for search in searches:
        known = np.asarray([int(i) in image_row for i in search.images], dtype=bool)
        if known.any():
            kept.append(LoggedSearch(search.query, search.images[known], search.positions[known], search.chosen[known]))
    return kept


def _trained(heads: TowerHeads) -> str:
    if heads.vision_layers == heads.text_layers:
        layers = heads.vision_layers
        return "projections" if not layers else f"last {layers} block(s) of each tower + projections"
    return f"last {heads.vision_layers} vision and {heads.text_layers} text block(s) + projections"


def _finish(run: FineTuneRun, outcome: str, message: str, metrics: dict | None = None) -> FineTuneRun:
    run.stage, run.progress = "", 1.0
    return run.finish(outcome, message, metrics)
