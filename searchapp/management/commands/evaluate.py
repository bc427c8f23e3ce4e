"""manage.py evaluate: retrieval quality of the collection, printed and saved as JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from collection.models import Caption, Image
from collection.versions import sentence_version
from searchapp import evaluation
from searchapp.search import SearchService


class Command(BaseCommand):
    help = (
        "Measure Recall@K (text-to-image and image-to-text), nDCG@K, MRR and Precision@K on the collection, "
        "using its captions and/or tags as ground truth. Prints a table and saves JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument("--by", choices=["captions", "tags", "heldout-captions", "all"], default="all")
        parser.add_argument("--rotations", type=int, default=5, help="heldout-captions: how many caption rotations.")
        parser.add_argument(
            "--calibrate",
            action="store_true",
            help="heldout-captions: store the measured fusion weights of the CLIP and caption-vector channels.",
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
        self._print(results)
        output = opts["output"] or settings.VAR_DIR / "eval" / f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2))
        self.stdout.write(f"Saved {output}")

    def _held_out(self, service: SearchService, results: dict, opts: dict) -> None:
        if not 1 <= opts["rotations"] <= 10:
            raise CommandError("--rotations must be between 1 and 10.")
        held = Caption.objects.filter(position__lt=opts["rotations"]).count()
        if not held:
            raise CommandError("The collection has no captions to hold out.")
        with tqdm(total=held, desc="held-out captions", disable=None) as bar:
            channels = evaluation.held_out_captions(
                service, rotations=opts["rotations"], ks=opts["k"], progress=bar.update
            )
        for name, metrics in channels.items():
            results[f"heldout_{name}"] = metrics
        weights = evaluation.calibrated_weights(channels, Image.objects.count())
        results["calibrated_weights"] = weights
        self.stdout.write(f"Measured fusion weights (MRR above chance, best = 1): {weights}")
        if opts["calibrate"]:
            service.version.fusion_weight = weights.get("clip", 0.0)
            service.version.save(update_fields=["fusion_weight"])
            _, text_version = sentence_version()
            if text_version is not None and "caption" in weights:
                text_version.fusion_weight = weights["caption"]
                text_version.save(update_fields=["fusion_weight"])
            self.stdout.write(
                f"Stored: CLIP v{service.version.pk} weight {weights.get('clip', 0.0)}, caption vectors "
                f"{weights.get('caption')}. The full-text weight is a setting: LOUPE_FTS_WEIGHT={weights.get('fts')}"
            )

    def _print(self, results: dict) -> None:
        enc = results["encoder"]
        self.stdout.write(f"Encoder v{enc['version']} {enc['name']}{' (DEMO: random weights)' if enc['demo'] else ''}")
        sections = ["text_to_image", "image_to_text", "tags"] + [k for k in results if k.startswith("heldout_")]
        for section in sections:
            if section not in results:
                continue
            metrics = results[section]
            self.stdout.write(f"\n{section}  ({metrics['queries']} queries)")
            wanted = [f"{m}@{k}" for m in ("recall", "hit", "ndcg", "precision") for k in results["ks"]] + ["mrr"]
            for name in wanted:
                if name in metrics:
                    self.stdout.write(f"  {name:<14} {metrics[name]:.4f}")
