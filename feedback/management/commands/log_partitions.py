"""The search log's day partitions from the command line: list them, or create the days ahead now."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from feedback.partitions import create_partitions_ahead, partition_sizes


class Command(BaseCommand):
    help = "List the search log's partitions, or create today's and the next days' (what the beat task does)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser(
            "list", help="Each partition of feedback_searchevent and feedback_impression: bounds, rows, size."
        )
        create = sub.add_parser("create", help="Create today's partition and the next days' if missing.")
        create.add_argument("--days-ahead", type=int, default=None, help="Default: LOUPE_LOG_PARTITION_DAYS_AHEAD.")

    def handle(self, *args, **opts):
        getattr(self, f"_{opts['action']}")(opts)

    def _list(self, opts) -> None:
        sizes = partition_sizes()
        if not sizes:
            raise CommandError("The search log is not partitioned: run migrate (feedback 0021).")
        for size in sizes:
            self.stdout.write(
                f"{size.partition:40} {size.rows:>12,} rows {size.bytes / 2**20:>10.1f} MiB  {size.bounds}"
            )

    def _create(self, opts) -> None:
        if opts["days_ahead"] is not None and opts["days_ahead"] < 0:
            raise CommandError("--days-ahead must be 0 or more.")
        made = create_partitions_ahead(days_ahead=opts["days_ahead"])
        created = ", ".join(day.isoformat() for day in made.created) or "none (all there)"
        self.stdout.write(f"Created: {created}; partitions through {made.through.isoformat()}.")
