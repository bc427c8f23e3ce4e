"""The evaluate command on a small collection: mechanics that must hold whatever the model."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def test_evaluate_prints_and_saves_all_directions(collection, tmp_path):
    out = StringIO()
    output = tmp_path / "eval.json"
    call_command("evaluate", "--output", str(output), "--k", "1", "5", "12", stdout=out)
    results = json.loads(output.read_text())
    assert results["images"] == 12 and results["encoder"]["demo"] is True
    t2i, i2t, tags = results["text_to_image"], results["image_to_text"], results["tags"]
    assert t2i["queries"] == 24 and i2t["queries"] == 12 and tags["queries"] == 14
    # With 12 images, every image is within the top 12: recall@12 must be exactly 1.
    assert t2i["recall@12"] == pytest.approx(1.0)
    assert t2i["recall@1"] <= t2i["recall@5"] <= t2i["recall@12"]
    assert 0 < t2i["mrr"] <= 1 and 0 < i2t["hit@12"] <= 1
    text = out.getvalue()
    assert "DEMO: random weights" in text and "text_to_image  (24 queries)" in text and str(output) in text


def test_bad_arguments_and_empty_collections_are_clear_errors(db, tmp_path):
    with pytest.raises(CommandError, match="empty"):
        call_command("evaluate", "--output", str(tmp_path / "x.json"))
    with pytest.raises(CommandError, match="--k"):
        call_command("evaluate", "--k", "0")
    with pytest.raises(CommandError, match="template"):
        call_command("evaluate", "--template", "no placeholder")
