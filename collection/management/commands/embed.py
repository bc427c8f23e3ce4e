"""manage.py embed: compute the serving encoder's vectors for every image and caption lacking them."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from tqdm import tqdm

from collection.embedding import embed_captions, embed_collection, images_to_embed
from collection.index import ensure_hnsw_indexes
from collection.versions import sentence_version, serving_version


class Command(BaseCommand):
    help = "(Re)compute embeddings for the serving encoder version in batches; resumable."

    def add_arguments(self, parser):
        parser.add_argument("--recompute", action="store_true", help="Recompute vectors that already exist.")
        parser.add_argument("--batch-size", type=int, default=0)

    def handle(self, *args, **opts):
        choice, version = serving_version()
        if choice.fell_back:
            self.stderr.write(self.style.WARNING(f"Using the demo model: {choice.fallback_reason}"))
        pending = images_to_embed(version, opts["recompute"]).count()
        with tqdm(total=pending, desc=f"embed {version}", unit="img", disable=None) as bar:
            report = embed_collection(
                choice.encoder,
                version,
                recompute=opts["recompute"],
                batch_size=opts["batch_size"] or None,
                progress=bar.update,
            )
        self.stdout.write(
            f"{version}: {report.images} images and {report.captions} captions embedded"
            + (f", {report.failed} unreadable files" if report.failed else "")
        )
        sentence_encoder, text_version = sentence_version()
        if sentence_encoder is not None:
            done = embed_captions(sentence_encoder.encode_texts, text_version, recompute=opts["recompute"])
            ensure_hnsw_indexes(text_version)
            self.stdout.write(f"{text_version}: {done} caption vectors for the text channel")
