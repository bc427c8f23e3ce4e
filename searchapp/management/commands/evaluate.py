"""manage.py evaluate: retrieval quality of the collection, printed and saved as JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from collection.fusion import CONVEX, RRF
from collection.models import Caption, FusionSetting, Image
from searchapp import evaluation, heldout_modes
from searchapp.fusion_fit import fit_convex, fit_weights
from searchapp.heldout import HeldOutLeak
from searchapp.search import SearchService


class Command(BaseCommand):
    help = (
        "Measure Recall@K (text-to-image and image-to-text), nDCG@K, MRR and Precision@K on the collection, "
        "using its captions and/or tags as ground truth. Prints a table and saves JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--by",
            choices=["captions", "tags", "heldout-captions", "heldout-image-to-text", "heldout-tags", "all"],
            default="all",
            help="heldout-*: leak-free, each rotation searched on a committed copy without its held-out captions "
            "(image to text: present only as the answers) or tags; fusion cross-fitted over the rotations.",
        )
        parser.add_argument("--rotations", type=int, default=5, help="heldout-captions: how many caption rotations.")
        parser.add_argument(
            "--calibrate",
            action="store_true",
            help="heldout-captions: store the fusion (convex or RRF, whichever scored better) and its weights.",
        )
        parser.add_argument(
            "--noisy-truth",
            type=float,
            nargs="+",
            default=[],
            metavar="SIGMA",
            help="heldout-captions: also score the fusions with CLIP replaced by relevance plus N(0, SIGMA) noise "
            "(a simulated useful CLIP; the demo CLIP has random weights).",
        )
        parser.add_argument("--k", type=int, nargs="+", default=[1, 5, 10])
        parser.add_argument("--template", default="a photo of a {}", help="How a tag becomes a query.")
        parser.add_argument("--limit", type=int, default=0, help="At most this many queries per direction.")
        parser.add_argument("--output", type=Path, default=None, help="JSON file (default var/eval/…).")

    def handle(self, *args, **opts):
        if any(k < 1 for k in opts["k"]):
            raise CommandError("Every --k must be at least 1.")
        if "{}" not in opts["template"]:
            raise CommandError("--template must contain {} where the tag goes.")
        service = SearchService()
        if not Image.objects.exists():
            raise CommandError("The collection is empty: ingest images first (manage.py ingest).")
        results: dict = {
            "encoder": {"version": service.version.pk, "name": service.version.name, "demo": service.version.is_demo},
            "images": Image.objects.count(),
            "ks": opts["k"],
        }
        if opts["by"] in ("captions", "all"):
            count = Caption.objects.count()
            if not count:
                if opts["by"] == "captions":
                    raise CommandError("The collection has no captions to evaluate with.")
            else:
                with tqdm(total=min(count, opts["limit"] or count), desc="text→image", disable=None) as bar:
                    results["text_to_image"] = evaluation.text_to_image(
                        service, ks=opts["k"], limit=opts["limit"], progress=bar.update
                    )
                results["image_to_text"] = evaluation.image_to_text(service, ks=opts["k"], limit=opts["limit"])
        if opts["by"] in ("tags", "all"):
            results["tags"] = evaluation.tag_queries(service, template=opts["template"], ks=opts["k"])
        if opts["by"] == "heldout-captions":
            self._held_out(service, results, opts)
        if opts["by"] in ("heldout-image-to-text", "heldout-tags"):
            self._held_out_mode(service, results, opts)
        self._print(results)
        output = opts["output"] or settings.VAR_DIR / "eval" / f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2))
        self.stdout.write(f"Saved {output}")

    def _held_out(self, service: SearchService, results: dict, opts: dict) -> None:
        if not 2 <= opts["rotations"] <= 10:
            raise CommandError("--rotations must be between 2 and 10 (weights are fitted on the other rotations).")
        held = Caption.objects.filter(position__lt=opts["rotations"]).count()
        if not held:
            raise CommandError("The collection has no captions to hold out.")
        if any(sigma <= 0 for sigma in opts["noisy_truth"]):
            raise CommandError("--noisy-truth takes positive noise levels (e.g. 0.25 0.5).")
        try:
            with tqdm(total=held, desc="held-out captions (served pass)", disable=None) as bar:
                measured = evaluation.held_out_captions(
                    service,
                    rotations=opts["rotations"],
                    ks=opts["k"],
                    progress=bar.update,
                    noisy_truth_sigmas=opts["noisy_truth"],
                )
        except (evaluation.EvaluationRefused, HeldOutLeak) as exc:
            raise CommandError(str(exc)) from None
        for name, metrics in measured["metrics"].items():
            results[f"heldout_{name}"] = metrics
        results["heldout_weights_by_rotation"] = measured["weights"]
        results["heldout_normalisation_by_rotation"] = measured["normalisations"]
        for name in (
            "served_differs_from_offline",
            "served_agrees_with_offline",
            "twins_not_queried",
            "served_minus_best_channel",
            "by_source",
        ):
            results[f"heldout_{name}"] = measured[name]
        if "noisy_truth" in measured:
            results["noisy_truth"] = measured["noisy_truth"]
        best = measured["served_minus_best_channel"]
        shown = ", ".join(
            f"{label} {best[label]['difference']:+.4f} [{best[label]['low']:+.4f}, {best[label]['high']:+.4f}]"
            for label in ("recall@1", "mrr")
        )
        self.stdout.write(f"Served minus the best channel ({best['best_channel']}), 95% paired bootstrap: {shown}")
        self._flag_disagreement(measured)
        if opts["calibrate"]:
            self._calibrate(service, measured)

    def _held_out_mode(self, service: SearchService, results: dict, opts: dict) -> None:
        if not 2 <= opts["rotations"] <= 10:
            raise CommandError("--rotations must be between 2 and 10 (weights are fitted on the other rotations).")
        if opts["calibrate"] or opts["noisy_truth"]:
            raise CommandError("--calibrate and --noisy-truth go with --by heldout-captions only.")
        image_to_text = opts["by"] == "heldout-image-to-text"
        if image_to_text and not Caption.objects.filter(position__lt=opts["rotations"]).exists():
            raise CommandError("The collection has no captions to hold out.")
        if not image_to_text and not Image.objects.exclude(tags=[]).exists():
            raise CommandError("The collection has no tagged images to hold out.")
        measure = heldout_modes.held_out_image_to_text if image_to_text else heldout_modes.held_out_tags
        prefix = "heldout_i2t" if image_to_text else "heldout_tags"
        try:
            with tqdm(desc=f"{opts['by']} (served pass)", disable=None) as bar:
                measured = measure(service, rotations=opts["rotations"], ks=opts["k"], progress=bar.update)
        except (evaluation.EvaluationRefused, HeldOutLeak) as exc:
            raise CommandError(str(exc)) from None
        for name, metrics in measured.pop("metrics").items():
            results[f"{prefix}_{name}"] = metrics
        measured.pop("ks", None)
        for name, value in measured.items():
            results[f"{prefix}_{name}"] = value
        best = measured.get("served_minus_best_channel") or measured["fused_minus_best_channel"]
        shown = ", ".join(
            f"{label} {best[label]['difference']:+.4f} [{best[label]['low']:+.4f}, {best[label]['high']:+.4f}]"
            for label in ("recall@1", "mrr")
        )
        self.stdout.write(f"Served minus the best channel ({best['best_channel']}), 95% paired bootstrap: {shown}")
        self._flag_disagreement(measured)

    def _flag_disagreement(self, measured: dict) -> None:
        if not measured["served_agrees_with_offline"]:
            self.stderr.write(
                "WARNING: served lists differ from the offline fusion of the recorded lists "
                "(served_agrees_with_offline false): the offline rows do not describe what serves."
            )

    def _calibrate(self, service: SearchService, measured: dict) -> None:
        """Store the fusion that did better on the cross-fitted figures, refitted on every held-out caption."""
        metrics = measured["metrics"]
        method = CONVEX if metrics["convex_fitted"]["mrr"] >= metrics["rrf_fitted"]["mrr"] else RRF
        labelled = measured["labelled"]
        channels = [c for c in evaluation.HELD_OUT_CHANNELS if any(c in q.rankings for q in labelled)]
        fit = fit_convex(labelled, channels) if method == CONVEX else fit_weights(labelled, method, channels)
        row = FusionSetting.objects.create(
            method=method,
            normalisation=fit.normalisation,
            encoder_version=service.version,
            clip_weight=fit.weights.get("clip", 0.0),
            fts_weight=fit.weights.get("fts", 0.0),
            caption_weight=fit.weights.get("caption", 0.0),
            fitted={
                "queries": fit.queries,
                "fitted_mrr": fit.mrr,
                # Optimistic: the method is the one whose cross-fitted figure was the better of the two, and any
                # later measurement of this fit on the same captions is in-sample.
                "cross_fitted_selection_biased": {
                    name: metrics[name] for name in ("rrf_fitted", "convex_fitted") if name in metrics
                },
                "command": "manage.py evaluate --by heldout-captions --calibrate",
            },
        )
        self.stdout.write(
            f"Stored {row}: weights {fit.weights}, normalisation {fit.normalisation} (fitted on all {fit.queries} "
            "held-out captions; the figures above "
            "are cross-fitted: each rotation scored with weights fitted on the others)."
        )

    def _print(self, results: dict) -> None:
        enc = results["encoder"]
        self.stdout.write(f"Encoder v{enc['version']} {enc['name']}{' (DEMO: random weights)' if enc['demo'] else ''}")
        sections = ["text_to_image", "image_to_text", "tags"] + [k for k in results if k.startswith("heldout_")]
        for section in sections:
            metrics = results.get(section)
            if not isinstance(metrics, dict) or "queries" not in metrics:
                continue
            self.stdout.write(f"\n{section}  ({metrics['queries']} queries)")
            wanted = [f"{m}@{k}" for m in ("recall", "hit", "ndcg", "precision") for k in results["ks"]] + ["mrr"]
            for name in wanted:
                if name in metrics:
                    self.stdout.write(f"  {name:<14} {metrics[name]:.4f}")
