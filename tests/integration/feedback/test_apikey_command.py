"""manage.py apikey: create (printed once), list (never the key), revoke."""

import io

import pytest
from django.core.management import CommandError, call_command

from feedback.api_keys import authenticated_use
from feedback.models import ApiKey

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command("apikey", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_create_list_revoke():
    plaintext = run("create", "Acme", "--scopes", "search,ingest", "--per-minute", "30").strip()
    key = authenticated_use(plaintext)
    assert key is not None and key.scopes == ["ingest", "search"] and key.requests_per_minute == 30
    listing = run("list")
    assert key.prefix in listing and "Acme" in listing and plaintext not in listing
    run("revoke", key.prefix)
    assert authenticated_use(plaintext) is None and ApiKey.objects.get().revoked_at is not None


@pytest.mark.parametrize(
    "args",
    [
        ("create", "x", "--scopes", "admin"),
        ("create", "x", "--scopes", ""),
        ("create", "x", "--per-minute", "0"),
        ("revoke", "nope"),
    ],
)
def test_bad_arguments_are_clear_errors(args):
    with pytest.raises(CommandError):
        run(*args)
    assert not ApiKey.objects.exists()
