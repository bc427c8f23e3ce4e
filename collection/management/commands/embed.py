"""manage.py embed: compute the serving encoder's vectors for every image and caption lacking them.

By default the images are cut into chunks sent to the Celery workers (any number, on any machine that
shares the media volume; ``collection.embed_chunks``), and this command shows their progress; ``--local``
embeds in this process instead, as before. Resumable either way: run it again after an interruption.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from collection.embed_chunks import chunks_left, dispatch_run, resume_and_plan, workers_listening
from collection.embedding import embed_captions, embed_collection, images_to_embed
from collection.index import ensure_hnsw_indexes
from collection.versions import sentence_version, serving_version

STARTED_BY = "manage.py embed"


class Command(BaseCommand):
    help = (
        "(Re)compute embeddings for the serving encoder version: fanned out over the Celery workers in "
        "chunks (default) or in this process (--local); resumable."
    )

    def add_arguments(self, parser):
        parser.add_argument("--recompute", action="store_true", help="Recompute vectors that already exist.")
        parser.add_argument("--batch-size", type=int, default=0)
        parser.add_argument("--local", action="store_true", help="Embed in this process, without workers.")
        parser.add_argument(
            "--chunk-size", type=int, default=0, help="Images per worker task (LOUPE_EMBED_CHUNK_SIZE)."
        )
        parser.add_argument("--no-wait", action="store_true", help="Send the chunks and return; workers finish.")

    def handle(self, *args, **opts):
        choice, version = serving_version()
        if choice.fell_back:
            self.stderr.write(self.style.WARNING(f"Using the demo model: {choice.fallback_reason}"))
        if opts["local"]:
            self._embed_here(choice, version, opts)
        else:
            if not self._fan_out(choice, version, opts):
                return
        sentence_encoder, text_version = sentence_version()
        if sentence_encoder is not None:
            done = embed_captions(sentence_encoder.encode_texts, text_version, recompute=opts["recompute"])
            ensure_hnsw_indexes(text_version)
            self.stdout.write(f"{text_version}: {done} caption vectors for the text channel")

    def _embed_here(self, choice, version, opts) -> None:
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

    def _fan_out(self, choice, version, opts) -> bool:
        """Send the chunks; unless --no-wait, wait for the workers, then embed what is left of the captions."""
        if opts["chunk_size"] < 0:
            raise CommandError("--chunk-size must be positive.")
        runs = resume_and_plan(
            version, recompute=opts["recompute"], chunk_size=opts["chunk_size"] or None, started_by=STARTED_BY
        )
        sent = sum(dispatch_run(run) for run in runs)
        listening = workers_listening()
        self.stdout.write(
            f"{version}: {sent} chunks sent to the workers ({listening} listening"
            + ("; they wait in the queue until a worker starts, or use --local" if not listening else "")
            + ")."
        )
        if opts["no_wait"]:
            return False
        done, total = chunks_left(runs)
        with tqdm(total=total, initial=done, desc=f"embed {version} on workers", unit="img", disable=None) as bar:
            while done < total:
                time.sleep(1.0)
                done, _ = chunks_left(runs)
                bar.update(done - bar.n)
        captions = embed_captions(choice.encoder.encode_texts, version, recompute=opts["recompute"])
        ensure_hnsw_indexes(version)
        self.stdout.write(f"{version}: {total} images embedded by the workers, {captions} captions here")
        return True
