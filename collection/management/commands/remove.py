"""manage.py remove: take images down by id (``collection.takedown``), from the command line or a file of ids.

    manage.py remove 12 13 14
    manage.py remove --file ids.txt      # one id per line; blank lines and # comments are skipped
    manage.py remove --resume            # finish a takedown whose process died between batches

Nothing is removed unless every given id is a whole number, so a typo in a file of 10,000 ids stops
the command before the first batch rather than after half of them.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from collection.takedown import remove_images, unfinished


def image_id(word: str, where: str) -> int:
    """A whole positive number, or a CommandError saying where the bad one is."""
    if not (word.isascii() and word.isdigit() and len(word) <= 18) or int(word) == 0:
        raise CommandError(f"{where}: {word!r} is not an image id (a whole number from 1). Nothing was removed.")
    return int(word)


def ids_in_file(path: Path) -> list[int]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror or exc}. Nothing was removed.") from None
    ids = []
    for n, line in enumerate(lines, 1):
        word = line.split("#", 1)[0].strip()
        if word:
            ids.append(image_id(word, f"{path}, line {n}"))
    return ids


class Command(BaseCommand):
    help = "Take images down: gone from every search, with their files and vectors; their feedback is kept detached."

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", help="Image ids.")
        parser.add_argument("--file", type=Path, help="A file of image ids, one per line.")
        parser.add_argument("--resume", action="store_true", help="Finish takedowns that were interrupted.")

    def handle(self, *args, **opts):
        ids = [image_id(word, f"argument {n}") for n, word in enumerate(opts["ids"], 1)]
        if opts["file"] is not None:
            ids += ids_in_file(opts["file"])
        if opts["resume"]:
            ids += unfinished()
        if not ids:
            raise CommandError("Give image ids, --file with one id per line, or --resume.")
        done = remove_images(ids, requested_by="manage.py remove")
        if done.unknown:
            shown = ", ".join(map(str, done.unknown[:20])) + (" ..." if len(done.unknown) > 20 else "")
            self.stderr.write(self.style.WARNING(f"{len(done.unknown)} id(s) name no image (already gone?): {shown}"))
        if not done.removed:
            raise CommandError("No image was removed.")
        self.stdout.write(
            self.style.SUCCESS(
                f"Took down {len(done.removed)} image(s) in {done.batches} batch(es), the longest "
                f"{done.longest_batch_seconds:.2f} s: rows, captions, vectors of every encoder version and files "
                "removed; their impressions, clicks and ratings kept detached."
            )
        )
