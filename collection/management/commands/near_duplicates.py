"""``manage.py near_duplicates``: group near-duplicate images now (the workers do it hourly).

manage.py near_duplicates                 # images embedded since the last scan
manage.py near_duplicates --rescan --similarity 0.97
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from collection.near_duplicates import NearDuplicateScanRefused, scan
from collection.versions import serving_version


class Command(BaseCommand):
    help = "Find near-duplicate images under the serving encoder and store their groups (admin: Near duplicates)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--similarity", type=float, help="cosine threshold (default 0.95)")
        parser.add_argument("--neighbours", type=int, help="nearest images compared per image (default 10)")
        parser.add_argument("--rescan", action="store_true", help="compare every image again, not just new ones")

    def handle(self, *args, similarity, neighbours, rescan, **options) -> None:
        _, version = serving_version()
        try:
            result = scan(version, similarity=similarity, neighbours=neighbours, rescan=rescan)
        except NearDuplicateScanRefused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Compared {result.images_scanned} images{' (full rescan)' if result.full_rescan else ''}: "
            f"{result.pairs_found} near pairs; {result.groups} groups hold {result.images_grouped} images."
        )
