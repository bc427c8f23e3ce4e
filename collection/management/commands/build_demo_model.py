"""manage.py build_demo_model: write the tiny random-weight CLIP used by tests and offline runs."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from collection.demo_model import build_demo_model
from collection.model_card import MODEL_CARD_FILE


class Command(BaseCommand):
    help = "Build the tiny random-weight demo CLIP (a few MB) into LOUPE_DEMO_MODEL_DIR."

    def add_arguments(self, parser):
        parser.add_argument("--out", type=Path, default=None)
        parser.add_argument("--force", action="store_true")

    def handle(self, *args, **opts):
        out = opts["out"] or settings.LOUPE_DEMO_MODEL_DIR
        if (out / MODEL_CARD_FILE).is_file() and not opts["force"]:
            self.stdout.write(f"Demo model already at {out}")
            return
        build_demo_model(out)
        self.stdout.write(f"Built the demo model at {out}")
