"""docs/api.md's curl examples, run in order against a live server: each answer's status is the one the
page writes under the command (``# 201 ...``), so the partner guide cannot drift from the API."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from collection.metadata import declare_field
from feedback.api_keys import issue_key
from tests.conftest import image_bytes

pytestmark = pytest.mark.django_db(transaction=True)

GUIDE = Path(django_settings.BASE_DIR) / "docs" / "api.md"


def examples(text: str) -> list[tuple[str, int | None]]:
    """(command, expected status) for each curl of the guide's sh blocks; continuation lines joined."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        lines = block.replace("\\\n", " ").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("curl "):
                following = lines[i + 1] if i + 1 < len(lines) else ""
                status = re.match(r"# (\d{3})\b", following)
                found.append((line, int(status.group(1)) if status else None))
            elif line.startswith("NEXT_CURSOR="):
                found.append(("NEXT_CURSOR", None))
    return found


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_every_curl_example_of_the_partner_guide_answers_as_written(live_server, service, settings, tmp_path):
    settings.LOUPE_CATALOGUE_SETTLE_SECONDS = 0  # the listing example follows its writes at once
    declare_field("price", "number")
    declare_field("author", "keyword")
    (tmp_path / "kite.jpg").write_bytes(image_bytes(1, fmt="JPEG"))
    (tmp_path / "kite-retouched.jpg").write_bytes(image_bytes(2, fmt="JPEG"))
    key = issue_key("stock library", ["search", "feedback", "ingest"]).plaintext
    env = {"PATH": "/usr/bin:/bin", "LOUPE": live_server.url, "KEY": key}
    answers: list[dict] = []
    body: dict = {}
    for command, expected in examples(GUIDE.read_text()):
        if command == "NEXT_CURSOR":
            env["NEXT_CURSOR"] = body["next_cursor"]  # what the page before handed out, as the guide says
            continue
        result = subprocess.run(
            ["bash", "-c", f"{command} -s -o answer.json -w '%{{http_code}}'"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        status = int(result.stdout or 0)
        answer = (tmp_path / "answer.json").read_text() if (tmp_path / "answer.json").exists() else ""
        assert status == (expected or 200), (command, status, answer[:500])
        body = json.loads(answer) if answer.strip() else {}
        (tmp_path / "answer.json").unlink(missing_ok=True)
        answers.append(body)
    # The guide's lifecycle, all of it, with the answers it describes: add, upsert, patch, take down, list, list on.
    added, upserted, patched, _deleted, listing, later = answers
    assert added["created"] and added["image"]["external_id"] == "sku-1"
    assert upserted["updated"] and upserted["image"]["id"] == added["image"]["id"]
    assert patched["captions"] == ["a red kite over a windmill"] and patched["metadata"] == {"price": 12.5}
    assert listing["results"] == [] and [(t["id"], t["external_id"]) for t in listing["removed"]] == [
        (added["image"]["id"], "sku-1")
    ]
    assert later == {"results": [], "removed": [], "next_cursor": listing["next_cursor"], "has_more": False}
