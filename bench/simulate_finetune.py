"""Simulated users fine-tune the encoder: does ground truth on held-out sets rise, and is a harmful setting refused?

The collection is Caltech 101 without labels (as in ``simulate_learning.py``) plus three quarters of
coco_mini with their captions (where the guard, gate and anchor captions come from); the other quarter
is held out from everything (``finetune_held_out``). A random-weight model knows nothing, so it would
have nothing to forget and, as measured (docs/finetuning.md), nothing to start from: with a random
base 98% of the images users clicked on were stray clicks. So a stand-in for pre-training comes first:
the tiny model's trainable part (``--layers``) is fitted to the kept coco_mini captions and to
``--base-labelled`` labelled images per Caltech class, captioned "caltech: <class>", a wording no query set uses (the
knowledge a real CLIP brings to the domain, in miniature). That model serves. Then, per repetition (seed):

1. simulated users search Caltech classes (the training phrasings of the classes ``caltech_sets``
   leaves in; a fifth of the classes is never searched) through the product (embedding order, the
   exploration and swap slices on) and click with the position-based model over a grid of
   ``--page-size`` results, examined with probability (1/position)^eta. The product is **not** told eta:
   it estimates examination from its swap slice as in production (positions 1-10), with its default
   prior below. Dwell times of wanted and stray clicks overlap (``dwell_ms``);
2. each round, ``ranking.finetune.service.fine_tune`` runs from the version production serves (round 1
   also a harmful setting from the base: ``--harmful-learning-rate``, no anchor, no WiSE-FT, no early
   stopping). The gate reads the clicks both versions would get on the test window's logged lists
   (inverse propensity); a version that passes serves the next round.

Reported, base against the final version: **ground truth** on held-out sets (class precision@10 per
query set over the Caltech images the base was not fitted to; recall@10 of the held-out coco
captions), and beside it the product's own figures (the gate estimate, chosen-image recall, which
favours the logger, and the reference captions, which are not held out from the guard and gate).
Leaks stop the run (``finetune_held_out``, ``held_out_queries``: ``LeakageError``).

Random-weight encoders measure the fine-tuning loop, not CLIP quality.

Run (from the repo root, after bin/setup dev):
    .venv/bin/python bench/simulate_finetune.py --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import simulate_learning as sim  # noqa: E402 - the same collection, users and click model

from bench.finetune_held_out import (  # noqa: E402
    BASE_FIT_TEMPLATE,
    CocoImage,
    HeldOut,
    check_base_fit,
    check_collection,
    check_precision_pool,
    check_run,
    split_coco,
    split_reference,
)
from bench.held_out_queries import SETS, QuerySets, caltech_sets  # noqa: E402

OUT = sim.OUT_DIR / "simulate_finetune.json"


def coco_images() -> list[CocoImage]:
    from collection.ingestion.sources import coco_items as items_of

    annotations = sim.COCO_MINI / "annotations"
    return [
        CocoImage(item.path, tuple(item.captions))
        for split in ("train2017", "val2017")
        for item in items_of(annotations / f"captions_{split}.json")
        if item.path.is_file()
    ]


def held_out_material(per_class: int) -> HeldOut:
    """The coco split and what the base is fitted to (the class queries come per repetition)."""
    kept, held = split_coco(coco_images())
    fitted, reference = split_reference(kept)
    labelled = labelled_sample(per_class)
    texts = [c for image in fitted for c in image.captions] + [BASE_FIT_TEMPLATE.format(n) for _, n in labelled]
    empty = QuerySets((), np.zeros(0), {name: () for name in SETS}, frozenset())
    paths = tuple(image.path for image in fitted) + tuple(p for p, _ in labelled)
    return HeldOut(empty, kept, held, paths, tuple(texts), reference)


def labelled_sample(per_class: int) -> list[tuple[Path, str]]:
    """``per_class`` Caltech images of each class (a fixed draw), with their class name."""
    rng = np.random.default_rng(0)
    sample = []
    for folder in sorted(p for p in sim.CALTECH.iterdir() if p.is_dir() and p.name != "BACKGROUND_Google"):
        files = sorted(folder.glob("*.jpg"))
        for i in sorted(rng.choice(len(files), size=min(per_class, len(files)), replace=False)):
            sample.append((files[i], folder.name.replace("_", " ").lower()))
    return sample


def pretrained_base(var_dir: Path, layers: int, per_class: int, epochs: int, held: HeldOut) -> Path:
    """The tiny model with its trainable part fitted to the kept coco_mini captions and a few labelled Caltech
    images (``held.base_fit``, checked against the held-out coco images first)."""
    import torch
    from PIL import Image as PILImage

    from collection.demo_model import build_demo_model
    from collection.encoders import MODEL_CARD_FILE, Encoder
    from ranking.finetune.heads import TowerHeads
    from ranking.finetune.tower_inputs import image_states, text_inputs
    from ranking.finetune.training import PairSet, fine_tune_heads

    check_base_fit(held)
    folder = base_folder(var_dir, layers, per_class)
    if (folder / MODEL_CARD_FILE).is_file():
        return folder
    encoder = Encoder(str(build_demo_model(var_dir / "models" / "tiny-clip")), local_files_only=True)
    items = tuple(i for i in held.coco_kept if i not in held.coco_reference)  # the fitted half only
    paths = [item.path for item in items] + [path for path, _ in labelled_sample(per_class)]
    if [str(p) for p in paths] != [str(p) for p in held.base_fit]:
        raise RuntimeError("the base would be fitted to other images than the held-out check read")
    texts, rows = [], []
    for row, item in enumerate(items):
        texts += item.captions
        rows += [row] * len(item.captions)
    for row, (_, name) in enumerate(labelled_sample(per_class), start=len(items)):
        texts.append(BASE_FIT_TEMPLATE.format(name))
        rows.append(row)

    def inputs(batch):
        opened = [PILImage.open(p).convert("RGB") for p in batch]
        if layers:
            return torch.from_numpy(image_states(encoder, opened, layers).astype(np.float32))
        return torch.from_numpy(encoder.encode_images_with_pooled(opened)[1])

    images = torch.cat([inputs(paths[i : i + 64]) for i in range(0, len(paths), 64)])
    heads = TowerHeads(encoder.model, layers)
    pairs = PairSet(np.arange(len(texts)), np.asarray(rows), np.ones(len(texts)))
    fine_tune_heads(
        heads,
        pairs,
        pairs,
        text_inputs(encoder, texts, layers),
        images,
        float(encoder.model.logit_scale.detach().exp()),
        learning_rate=3e-3,
        epochs=epochs,
        batch_size=128,
        negatives=0,
        early_stopping=False,
    )
    encoder.model.load_state_dict(heads.model_state(), strict=False)
    folder.mkdir(parents=True, exist_ok=True)
    encoder.model.save_pretrained(folder, safe_serialization=True)
    encoder.tokenizer.save_pretrained(folder)
    encoder.image_processor.save_pretrained(folder)
    card = {
        "name": f"tiny-clip pre-trained on 3/4 of coco_mini + {per_class} Caltech images per class",
        "demo": True,
        "description": "Random-weight tiny CLIP whose top was fitted to coco_mini captions and a few labelled "
        "Caltech images: a stand-in for pre-training, for the fine-tuning simulation.",
    }
    (folder / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2))
    return folder


def base_folder(var_dir: Path, layers: int, per_class: int) -> Path:
    return var_dir / "models" / f"tiny-clip-base-l{layers}-k{per_class}-coco-held-out-caltech-template-3way"


def ingest_reference(held: HeldOut) -> int:
    """The kept coco_mini images, the reference half with its captions; the held-out ones never enter."""
    from collection.images import read_image
    from collection.ingestion.service import add_image

    reference = set(held.coco_reference)
    for item in held.coco_kept:  # the fitted half without captions: the guard and gate never read them
        captions = list(item.captions) if item in reference else []
        add_image(read_image(item.path.read_bytes()), captions=captions, source=str(item.path))
    return len(held.coco_kept)


def simulate_feedback(labels: dict[int, str], args, seed: int, sets: QuerySets) -> None:
    """``args.searches`` searches by simulated users, with their clicks (client ids unique per ``seed``)."""
    from feedback.capture import ClickInput, record_click
    from feedback.identity import Viewer
    from searchapp.search import SearchRequest, SearchService

    users = sim.Users(labels, args, seed, sets)
    service = SearchService()
    started = time.perf_counter()
    for n in range(1, args.searches + 1):
        text, wanted = users.draw_query()
        viewer = Viewer(user_key=f"sim:ft-user-{int(users.rng.integers(args.users))}", surface="sim")
        response = service.search(SearchRequest(text=text, page_size=args.page_size), viewer)
        for i, hit in enumerate(users.clicks(response.hits, wanted)):
            dwell = dwell_ms(users.rng, labels.get(hit.image.pk) == wanted, args)
            click = ClickInput(str(response.event_id), hit.image.pk, hit.position, f"ft{seed}-{n}-{i}", dwell)
            record_click(viewer, click)
    print(f"  {args.searches} searches in {time.perf_counter() - started:.0f} s", flush=True)


def dwell_ms(rng, relevant: bool, args) -> int:
    """Time on the image page: log-normal around --dwell-relevant-s for a wanted image, --dwell-stray-s else.

    Dwell is a weak label: satisfied and unsatisfied clicks' dwell distributions overlap widely (Kim et al.,
    "Modeling dwell time to predict click-level satisfaction", WSDM 2014). With the defaults (medians 12 s
    and 6 s, sigma 1.0) the two densities overlap by 73% (2 Phi(-ln 2 / 2)); with the product's 5 s
    short-click bar 19% of wanted clicks look short and 57% of stray clicks look long. Before issue 17
    they were 20 s and 3 s with sigma 0.8: 24% overlap, so dwell nearly told the product the label.
    """
    median = args.dwell_relevant_s if relevant else args.dwell_stray_s
    return int(1000 * median * float(np.exp(args.dwell_sigma * rng.standard_normal())))


def version_scores(version, labels: dict[int, str], held: HeldOut, test_pairs) -> dict:
    """One version's numbers from its own stored vectors and text tower, comparable across versions.

    Ground truth on held-out sets (the headline):
    - ``precision@10``: per query set (repeat, new phrasings, new intents), the share of a class query's
      10 nearest Caltech images that are of its class, over the Caltech images the base was not fitted to;
    - ``held_out_caption_recall@10``: each held-out coco caption against the whole collection plus the
      held-out images (embedded from their pixels by this version), answered by its own image.
    Beside it, not held out: ``chosen_recall@10`` (the gate's old measure on the latest test pairs,
    favours the logger) and ``reference_recall@10`` (the kept coco captions, whence the guard and gate).
    """
    from PIL import Image as PILImage

    from collection.encoders import Encoder
    from collection.models import Caption, Image, ImageEmbedding

    rows = list(ImageEmbedding.objects.filter(encoder_version=version).values_list("image_id", "vector"))
    ids = np.asarray([r[0] for r in rows])
    vectors = np.stack([np.asarray(r[1], dtype=np.float32) for r in rows])
    row_of = {int(pk): i for i, pk in enumerate(ids)}
    encoder = Encoder(version.model_ref, local_files_only=True)

    def top10(texts: list[str], pool: np.ndarray) -> np.ndarray:
        return np.argsort(-(encoder.encode_texts(texts) @ pool.T), axis=1)[:, :10]

    fitted = {str(p) for p in held.base_fit}
    source = dict(Image.objects.filter(pk__in=list(labels)).values_list("pk", "source"))
    pool_ids = [pk for pk in labels if pk in row_of and source.get(pk) not in fitted]
    check_precision_pool(held, (source[pk] for pk in pool_ids))
    pool = vectors[[row_of[pk] for pk in pool_ids]]
    precision = {}
    for name in SETS:
        queries = held.queries.held_out[name]
        found = top10([q.text for q in queries], pool) if queries else np.zeros((0, 10), dtype=int)
        hits = [np.mean([labels[pool_ids[j]] == q.intent for j in row]) for row, q in zip(found, queries, strict=True)]
        precision[name] = float(np.mean(hits)) if hits else None
    opened = [PILImage.open(image.path).convert("RGB") for image in held.coco_held_out]
    held_vectors = encoder.encode_images(opened)
    everything = np.concatenate([vectors, held_vectors])
    captions = [(c, len(vectors) + n) for n, image in enumerate(held.coco_held_out) for c in image.captions]
    found = top10([c for c, _ in captions], everything)
    held_recall = float(np.mean([own in set(row) for row, (_, own) in zip(found, captions, strict=True)]))
    kept = list(Caption.objects.values_list("text", "image_id"))
    hits = top10([t for t, _ in kept], vectors)
    reference = np.mean([row_of[i] in set(row) for row, (_, i) in zip(hits, kept, strict=True)])
    texts = sorted({p.query for p in test_pairs})
    top = dict(zip(texts, top10(texts, vectors), strict=True)) if texts else {}
    chosen = [row_of.get(p.image_id) in set(top[p.query]) for p in test_pairs]
    return {
        "precision@10": precision,
        "held_out_caption_recall@10": held_recall,
        "held_out_captions": len(captions),
        "precision_pool": len(pool_ids),
        "chosen_recall@10": float(np.mean(chosen)) if chosen else None,
        "test_pairs": len(test_pairs),
        "reference_recall@10": float(reference),
    }


def latest_windows(options):
    from django.conf import settings
    from django.utils import timezone

    from ranking.finetune.pairs import windowed_pairs
    from ranking.training_data import estimated_propensity

    curve = estimated_propensity(None, settings.LOUPE_MAX_CANDIDATES, settings.LOUPE_SWAP_MAX_POSITION)
    return windowed_pairs(timezone.now(), curve, options.relevance, options.held_out_share), curve


def check_fine_tune_data(held: HeldOut, options) -> dict:
    """The pairs, logs and reference captions the last fine-tune read hold nothing held out (raises otherwise);
    returns the examination curve the product estimated, beside the simulator's truth."""
    from collection.models import Image
    from ranking.finetune.reference import reference_split

    windows, curve = latest_windows(options)
    image_row = {pk: n for n, pk in enumerate(Image.objects.order_by("pk").values_list("pk", flat=True))}
    split = reference_split(image_row, options.reference_captions, options.anchor_captions, options.seed)
    check_run(
        held,
        [p.query for p in windows.train + windows.validation + windows.test],
        sim.logged_queries(),
        {"guard": split.guard.texts, "gate": split.gate.texts, "anchor": split.anchor_texts},
    )
    return {"estimated_positions": list(curve.estimated_positions), "values@1-12": curve.values[:12].tolist()}


def run_repetition(seed: int, base, labels: dict[int, str], args, default, harmful, held: HeldOut) -> dict:
    """``args.rounds`` rounds of feedback and a fine-tune from the version production serves; the first round's
    feedback also feeds the harmful setting (from the base). Production serves each version that passes."""
    from dataclasses import replace

    from collection.models import EncoderVersion
    from ranking.finetune.service import fine_tune
    from ranking.finetune.versions import promote_encoder

    sets = caltech_sets(sorted(set(labels.values())), seed=seed, per_set=args.held_out, zipf=args.zipf)
    held = replace(held, queries=sets)
    check_base_fit(held)  # now with the query sets: no held-out query string is a base-fit text
    rep: dict = {
        "seed": seed,
        "rounds": [],
        "never_searched_classes": sorted(sets.new_intents),
        "held_out_sizes": {name: len(sets.held_out[name]) for name in SETS},
    }
    serving = base
    for round_number in range(1, args.rounds + 1):
        simulate_feedback(labels, args, seed * 100 + round_number, sets)
        runs = [("default", serving, default)] + ([("harmful", base, harmful)] if round_number == 1 else [])
        result = {"round": round_number, "from_version": serving.pk}
        for name, start, options in runs:
            started = time.perf_counter()
            run = fine_tune(start, options)
            result[name] = {
                "outcome": run.outcome,
                "message": run.message,
                "metrics": run.metrics,
                "settings": run.settings,
                "seconds": round(time.perf_counter() - started, 1),
                "version": run.result_id,
            }
            print(
                f"  round {round_number}, {name} from v{start.pk}: {run.outcome}: {run.message} "
                f"({result[name]['seconds']} s)",
                flush=True,
            )
        result["examination"] = check_fine_tune_data(held, default)  # a leak stops the run here
        if result["default"]["version"] is not None:
            serving = EncoderVersion.objects.get(pk=result["default"]["version"])
            promote_encoder(serving, "simulation")
        rep["rounds"].append(result)
    test_pairs = latest_windows(default)[0].test
    rep["base_scores"] = version_scores(base, labels, held, test_pairs)
    rep["final_version"] = serving.pk
    rep["final_scores"] = version_scores(serving, labels, held, test_pairs)
    print(f"  base v{base.pk} {rep['base_scores']}\n  final v{serving.pk} {rep['final_scores']}", flush=True)
    # The next repetition starts from the base again.
    from ranking.experiments.serving import forget_cached_configs
    from ranking.models import ServingConfig

    ServingConfig.objects.all().delete()
    forget_cached_configs()  # production caches the config for seconds: the next seed must not see this one's
    return rep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--searches", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--eta", type=float, default=0.5, help="examination (1/position)^eta: grids are scanned deep")
    parser.add_argument("--page-size", type=int, default=48, help="results per page (an image grid)")
    parser.add_argument("--click-relevant", type=float, default=0.9)
    parser.add_argument("--click-noise", type=float, default=0.05)
    parser.add_argument("--explore-share", type=float, default=0.3)
    parser.add_argument("--swap-share", type=float, default=0.05, help="the swap slice: examination is measured")
    parser.add_argument("--held-out", type=int, default=300, help="class queries per held-out set")
    parser.add_argument("--dwell-relevant-s", type=float, default=12.0, help="median time on a wanted image")
    parser.add_argument("--dwell-stray-s", type=float, default=6.0, help="median time on a stray click")
    parser.add_argument("--dwell-sigma", type=float, default=1.0, help="log-normal spread of both")
    parser.add_argument("--rounds", type=int, default=3, help="feedback rounds, each ended by a fine-tune")
    parser.add_argument("--layers", type=int, default=1, help="blocks of each tower the fine-tune trains")
    parser.add_argument("--base-labelled", type=int, default=10, help="labelled images per class in the base")
    parser.add_argument("--pretrain-epochs", type=int, default=60)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--patience", type=int, default=25)
    parser.add_argument("--anchor-weight", type=float, default=100.0)
    parser.add_argument("--harmful-learning-rate", type=float, default=1e-2)
    parser.add_argument("--var-dir", type=Path, default=sim.ROOT / "var" / "sim-ft")
    parser.add_argument("--caltech-limit", type=int, default=0, help="a sample of Caltech (0: all; a smoke run)")
    parser.add_argument("--keep", action="store_true", help="reuse the ingested collection in --var-dir")
    parser.add_argument("--output", type=Path, default=OUT)
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="combine the JSON of runs with one seed each (run side by side) and stop"
    )
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.output)
        return
    for needed in (sim.CALTECH, sim.COCO_MINI):
        if not needed.is_dir():
            sys.exit(f"This simulation needs {needed} (the shared folder beside the repo).")
    args.dataset, args.model = "caltech101", "position"
    if not args.keep:
        import shutil

        shutil.rmtree(args.var_dir, ignore_errors=True)
    args.var_dir.mkdir(parents=True, exist_ok=True)
    base_dir = base_folder(args.var_dir, args.layers, args.base_labelled)
    os.environ.update(
        {
            "LOUPE_VAR_DIR": str(args.var_dir),
            "LOUPE_CLIP_MODEL": str(base_dir),
            "LOUPE_DEMO_MODEL_DIR": str(args.var_dir / "models" / "tiny-clip"),
            "LOUPE_RERANK": "false",  # the feedback comes from the embedding order (plus exploration)
            "LOUPE_TEXT_CHANNEL": "false",
            "LOUPE_EXPLORE_SHARE": str(args.explore_share),
            # The product measures examination from its swap slice and keeps its default prior below it: it
            # is not told the simulator's eta (before issue 17 it was, LOUPE_PROPENSITY_EXPONENT=eta).
            "LOUPE_SWAP_SHARE": str(args.swap_share),
            "LOUPE_RESULT_CACHE_SECONDS": "0",
            "LOUPE_DEFER_SEARCH_LOG": "false",  # one process that clicks at once: write each log before its clicks
            "LOUPE_FEEDBACK_HOURLY_CAP": "100000",
            "DJANGO_SETTINGS_MODULE": "config.settings",
        }
    )
    os.environ.pop("LOUPE_PROPENSITY_EXPONENT", None)  # the product's default prior
    sys.path.insert(0, str(sim.ROOT))
    import django

    django.setup()
    from django.conf import settings as loupe_settings
    from django.core.management import call_command

    # config/settings.py reads .env without overwriting: one there could set eta back without anyone noticing.
    if loupe_settings.LOUPE_PROPENSITY_EXPONENT != 1.0:
        raise SystemExit(
            f"LOUPE_PROPENSITY_EXPONENT is {loupe_settings.LOUPE_PROPENSITY_EXPONENT} (from .env?): the product "
            "must not be told the simulator's examination exponent; remove it and rerun."
        )

    call_command("migrate", verbosity=0)
    held = held_out_material(args.base_labelled)
    print(
        f"Pre-training the base ({len(held.coco_kept) - len(held.coco_reference)} coco_mini images' captions + "
        f"labelled Caltech sample; {len(held.coco_reference)} kept for the guard and gate, never fitted; "
        f"{len(held.coco_held_out)} coco_mini images held out)...",
        flush=True,
    )
    pretrained_base(args.var_dir, args.layers, args.base_labelled, args.pretrain_epochs, held)
    print("Ingesting the kept coco_mini with captions and Caltech 101 without labels...", flush=True)
    print(f"  {ingest_reference(held)} coco_mini images with captions", flush=True)
    labels = sim.ingest_unlabelled(args.caltech_limit)
    from collection.models import Caption, Image

    check_collection(
        held, Image.objects.values_list("source", flat=True), Caption.objects.values_list("text", flat=True)
    )
    from collection.versions import serving_version
    from ranking.finetune.service import FineTuneSettings

    base = serving_version()[1]
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "propensity_exponent": loupe_settings.LOUPE_PROPENSITY_EXPONENT,  # the product's prior, checked above
        "base": {"version": base.pk, "model": str(base_dir)},
        "repetitions": [],
    }
    default = FineTuneSettings(
        layers=args.layers,
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        patience=args.patience,
        anchor_weight=args.anchor_weight,
    )
    harmful = FineTuneSettings(
        layers=args.layers,
        learning_rate=args.harmful_learning_rate,
        epochs=args.epochs,
        anchor_weight=0.0,
        wise_ft=False,
        early_stopping=False,
    )
    for seed in args.seeds:
        print(f"Repetition with seed {seed}:", flush=True)
        sim.forget_feedback()
        results["repetitions"].append(run_repetition(seed, base, labels, args, default, harmful, held))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2, default=str))
    results["summary"] = summarise(results["repetitions"])
    args.output.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results["summary"], indent=1))
    plot(results, args.output.with_suffix(".png"))
    print(f"Saved {args.output} and {args.output.with_suffix('.png')}")


def merge(paths: list[Path], output: Path) -> None:
    """One result from runs of one seed each with the same settings (side by side on a shared machine)."""
    runs = [json.loads(path.read_text()) for path in paths]
    ignored = {"seeds", "var_dir", "output", "merge", "keep"}
    settings = [{k: v for k, v in r["config"].items() if k not in ignored} for r in runs]
    if any(s != settings[0] for s in settings):
        sys.exit("These runs were made with different settings; they cannot be one result.")
    seeds = [rep["seed"] for r in runs for rep in r["repetitions"]]
    if len(set(seeds)) != len(seeds):
        sys.exit(f"A seed is in more than one of these runs ({seeds}): each repetition must count once.")
    results = {
        **runs[0],
        "repetitions": [rep for r in runs for rep in r["repetitions"]],
        "merged_from": [str(p) for p in paths],
    }
    results["config"] = {**runs[0]["config"], "seeds": [rep["seed"] for rep in results["repetitions"]]}
    results["summary"] = summarise(results["repetitions"])
    output.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results["summary"], indent=1))
    plot(results, output.with_suffix(".png"))
    print(f"Saved {output} and {output.with_suffix('.png')}")


def summarise(repetitions: list[dict]) -> dict:
    def stats(values: list[float]) -> dict:
        return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}

    def gain(result: dict, key: str) -> float:
        numbers = result["metrics"].get(key) or {}
        return numbers["after"] - numbers["before"] if numbers else float("nan")

    def change(rep: dict, read) -> float:
        return read(rep["final_scores"]) - read(rep["base_scores"])

    first = [r["rounds"][0] for r in repetitions]
    ground_truth = {
        f"precision@10 {name}": stats([change(r, lambda s, n=name: s["precision@10"][n]) for r in repetitions])
        for name in SETS
    }
    ground_truth["held_out_caption_recall@10"] = stats(
        [change(r, lambda s: s["held_out_caption_recall@10"]) for r in repetitions]
    )
    return {
        "ground_truth_final_vs_base": ground_truth,
        "not_held_out_final_vs_base": {
            key: stats([change(r, lambda s, k=key: s[k]) for r in repetitions])
            for key in ("chosen_recall@10", "reference_recall@10")
        },
        # Not held out either (the test window's logged searches, what the gate reads): its new pairs, and every
        # click (the seen pairs reward remembering).
        "not_held_out_round1_gate_estimate_gain": {
            part: stats(
                [
                    gain({"metrics": (r["default"]["metrics"].get("gate_estimate") or {}).get("parts", {})}, part)
                    for r in first
                ]
            )
            for part in ("new pairs", "seen pairs", "all", "repeat queries", "new queries")
        },
        "round1_reference_change": stats([gain(r["default"], "reference_recall@10") for r in first]),
        "default_outcomes": [[x["default"]["outcome"] for x in r["rounds"]] for r in repetitions],
        "harmful_reference_change": stats([gain(r["harmful"], "reference_recall@10") for r in first]),
        "harmful_refused": [r["harmful"]["outcome"] == "refused" for r in first],
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (f"class precision@10, {name.replace('_', ' ')}", lambda s, n=name: s["precision@10"][n]) for name in SETS
    ]
    panels.append(("recall@10 of held-out coco captions", lambda s: s["held_out_caption_recall@10"]))
    panels.append(("not held out: reference captions (guard, gate)", lambda s: s["reference_recall@10"]))
    rounds = results["config"]["rounds"]
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 4.2))
    for ax, (title, read) in zip(axes, panels, strict=True):
        for n, rep in enumerate(results["repetitions"]):
            ax.plot(
                [0, 1],
                [read(rep["base_scores"]), read(rep["final_scores"])],
                "-o",
                color=f"C{n}",
                label=f"seed {rep['seed']}: {rounds} rounds, gated",
            )
        ax.set_xticks([0, 1], ["base", "final"])
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, None)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        "Encoder fine-tuning from simulated clicks (Caltech 101, tiny random-weight CLIP): ground truth on "
        "held-out sets, base against the final version",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
