"""``manage.py metadata``: declare and list the images' metadata fields (the schema ingest validates against).

manage.py metadata declare author keyword --description "photographer"
manage.py metadata declare date date
manage.py metadata list
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from collection.metadata import InvalidMetadata, declare_field, values_not_fitting
from collection.models import Image, MetadataField


class Command(BaseCommand):
    help = "Declare or list the metadata fields images may carry (keyword, number, date, boolean)."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        declare = actions.add_parser("declare", help="declare a field, or change its kind or description")
        declare.add_argument("name")
        declare.add_argument("kind", choices=MetadataField.Kind.values)
        declare.add_argument("--description", default="")
        actions.add_parser("list", help="the declared fields, with how many images carry each")

    def handle(self, *args, action: str, **options) -> None:
        if action == "list":
            self._list()
        else:
            self._declare(options["name"], options["kind"], options["description"])

    def _list(self) -> None:
        fields = list(MetadataField.objects.all())
        if not fields:
            self.stdout.write("No metadata fields are declared (manage.py metadata declare NAME KIND).")
        for field in fields:
            count = Image.objects.filter(metadata__has_key=field.name).count()
            self.stdout.write(f"{field.name}\t{field.kind}\t{count} images\t{field.description}")

    def _declare(self, name: str, kind: str, description: str) -> None:
        current = MetadataField.objects.filter(name=name).first()
        if current is not None and current.kind != kind:
            bad, examples = values_not_fitting(name, kind)
            if bad:
                raise CommandError(
                    f"{bad} stored images have a {name} value that is not a {kind} "
                    f"(e.g. {'; '.join(examples)}): nothing changed."
                )
        try:
            field = declare_field(name, kind, description)
        except InvalidMetadata as exc:
            raise CommandError(str(exc)) from None
        except ValidationError as exc:  # full_clean: a name that is not a field name
            raise CommandError(f"{name!r}: {'; '.join(exc.messages)}") from None
        verb = "Declared" if current is None else "Changed"
        self.stdout.write(f"{verb} {field.name} ({field.kind}).")
