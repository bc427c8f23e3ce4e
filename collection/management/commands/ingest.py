"""manage.py ingest SOURCE [SOURCE ...]: add images with their captions and tags, then embed them."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from collection.embedding import ImageVectorBatches, embed_everything_missing, images_to_embed
from collection.ingestion.one_pass import ingest_items
from collection.ingestion.sources import SOURCE_FORMATS, SourceError, detect_items
from collection.text_index import refresh_lexeme_stats
from collection.versions import serving_version


class Command(BaseCommand):
    help = (
        "Ingest images from a folder (sub-folder names become tags), a COCO captions JSON, a caption table "
        "(CSV image,caption; Flickr30k image_name| comment_number| comment; JSONL url/caption or file/text; "
        "one row per caption is merged per image) or a labels JSON (file -> 'a, b'). Duplicates (same bytes) "
        "are skipped, bad files reported; re-running resumes. New images are then embedded with the serving encoder."
    )

    def add_arguments(self, parser):
        parser.add_argument("sources", nargs="+", type=Path)
        parser.add_argument(
            "--images-dir", type=Path, help="Where the files named by a COCO, labels JSON or caption table are."
        )
        parser.add_argument(
            "--format",
            dest="source_format",
            choices=SOURCE_FORMATS,
            default="auto",
            help="Read every source as this format instead of detecting it from the extension and header.",
        )
        parser.add_argument("--no-folder-tags", action="store_true", help="Do not turn folder names into tags.")
        parser.add_argument("--limit", type=int, default=0, help="Ingest at most this many items per source.")
        parser.add_argument("--no-embed", action="store_true", help="Only store the images; embed later.")

    def handle(self, *args, **opts):
        total_added = 0
        # New images are embedded in the same pass as they are stored (each file decoded once); captions,
        # images that were already present and anything a failure left are embedded after, by _embed.
        embed = None if opts["no_embed"] else ImageVectorBatches(*self._serving())
        for source in opts["sources"]:
            if not source.exists():
                raise CommandError(f"{source} does not exist.")
            try:
                items = list(
                    detect_items(
                        source,
                        images_dir=opts["images_dir"],
                        folder_tags=not opts["no_folder_tags"],
                        source_format=opts["source_format"],
                    )
                )
            except SourceError as exc:
                raise CommandError(str(exc)) from None
            if opts["limit"]:
                items = items[: opts["limit"]]
            with tqdm(total=len(items), desc=f"ingest {source.name}", unit="img", disable=None) as bar:
                report = ingest_items(items, progress=lambda _item: bar.update(1), embed=embed)
            for path, reason in report.failed:
                self.stderr.write(f"  skipped {path}: {reason}")
            self.stdout.write(
                f"{source}: {report.added} added, "
                + (f"{report.updated} updated (known external id), " if report.updated else "")
                + f"{report.duplicates} already present, {len(report.failed)} skipped"
            )
            total_added += report.added
        if total_added:
            refresh_lexeme_stats()
        if embed is not None:
            self._embed(embed.embedded)

    @staticmethod
    def _serving():
        choice, version = serving_version()
        return choice.encoder, version

    def _embed(self, embedded_while_ingesting: int) -> None:
        _, version = serving_version()
        pending = images_to_embed(version).count()
        with tqdm(total=pending, desc=f"embed with {version}", unit="img", disable=None) as bar:
            result = embed_everything_missing(progress=bar.update)
        images = embedded_while_ingesting + result["images"]
        self.stdout.write(f"Embedded {images} images and {result['captions']} captions with {version}.")
