"""Partner API keys from the command line (the same as Django admin): create, list, revoke."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from feedback.api_keys import issue_key
from feedback.models import ApiKey


class Command(BaseCommand):
    help = "Create, list or revoke partner API keys. A new key is printed once; only its hash is stored."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a key and print it.")
        create.add_argument("name")
        create.add_argument("--scopes", default="search,feedback", help="Comma-separated: search, feedback, ingest.")
        create.add_argument("--per-minute", type=int, default=600, help="Requests per minute allowed.")
        sub.add_parser("list", help="List keys (never the keys themselves).")
        revoke = sub.add_parser("revoke", help="Revoke a key by its prefix.")
        revoke.add_argument("prefix")

    def handle(self, *args, **opts):
        getattr(self, f"_{opts['action']}")(opts)

    def _create(self, opts) -> None:
        scopes = [scope.strip() for scope in opts["scopes"].split(",") if scope.strip()]
        unknown = set(scopes) - set(ApiKey.Scope.values)
        if unknown or not scopes:
            raise CommandError(f"Scopes are some of {', '.join(ApiKey.Scope.values)}; got {opts['scopes']!r}.")
        if opts["per_minute"] < 1:
            raise CommandError("--per-minute must be at least 1.")
        issued = issue_key(opts["name"], scopes, requests_per_minute=opts["per_minute"])
        self.stderr.write(f"Created key {issued.api_key.prefix} for {opts['name']!r} ({', '.join(scopes)}).")
        self.stdout.write(issued.plaintext)

    def _list(self, opts) -> None:
        for key in ApiKey.objects.order_by("created_at"):
            state = "active" if key.is_active else f"revoked {key.revoked_at:%Y-%m-%d}"
            self.stdout.write(
                f"{key.prefix}  {key.name}  [{', '.join(key.scopes)}]  {key.requests_per_minute}/min  {state}"
            )

    def _revoke(self, opts) -> None:
        updated = ApiKey.objects.filter(prefix=opts["prefix"], revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if not updated:
            raise CommandError(f"No active key with prefix {opts['prefix']!r}.")
        self.stdout.write(f"Revoked {opts['prefix']}.")
