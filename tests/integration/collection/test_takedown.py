"""Takedowns (issue 20, item 4): every trace of an image goes, its feedback stays detached and never trains again."""

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from collection import takedown
from collection.models import (
    Caption,
    CaptionEmbedding,
    EncoderVersion,
    Image,
    ImageEmbedding,
    ImageTowerOutput,
    NearDuplicate,
    RemovedImage,
)
from collection.revisions import current_revision
from collection.takedown import remove_images, unfinished
from feedback.capture import ClickInput, RatingInput, record_click, record_rating
from feedback.identity import Viewer
from feedback.models import Click, ImageFeedbackSummary, Impression, Rating
from feedback.summaries import refresh_summaries
from ranking.finetune.pairs import RelevanceSettings, feedback_pairs
from ranking.propensity import power_law
from ranking.training_data import load_searches, swap_counts
from searchapp.search import SearchRequest
from tests.integration.feedback.test_click_graph import QUERY, accounts, choose, top_list

pytestmark = pytest.mark.django_db
ALICE = Viewer(user_key="anon:alice-token-0000000000", session="s1")
EVERY_PAIR = RelevanceSettings(min_relevance=0.0)


def files_of(image: Image) -> list[Path]:
    media = Path(django_settings.MEDIA_ROOT)
    return [media / image.file.name, media / image.thumbnail.name]


def clicked_and_rated(service, position: int, tag: str):
    """A logged search with a click at ``position`` and a good rating of that image: (response, image id)."""
    response = service.search(SearchRequest(text="a test picture", page_size=8), ALICE)
    image = response.hits[position - 1].image.pk
    record_click(ALICE, ClickInput(str(response.event_id), image, position, f"click-{tag}"))
    record_rating(ALICE, RatingInput(image, 1, f"rating-{tag}", "thumbs", str(response.event_id)))
    return response, image


def trained_images() -> tuple[int, set[int]]:
    """(rows in the ranker's training set, images in the fine-tuning pairs and their skipped negatives)."""
    until = timezone.now() + timedelta(seconds=1)
    pairs = feedback_pairs(None, until, power_law(100), EVERY_PAIR)
    return len(load_searches(None, until, power_law(100)).data.y), {p.image_id for p in pairs} | {
        i for p in pairs for i in p.skipped
    }


def test_a_takedown_removes_every_trace_and_nothing_else(
    collection, django_capture_on_commit_callbacks, tmp_path, settings
):
    gone, kept = collection[3], collection[4]
    other_version = EncoderVersion.objects.create(name="old", model_ref="old", fingerprint="f" * 64, dimension=3)
    ImageEmbedding.objects.create(image=gone, encoder_version=other_version, vector=[1, 0, 0])
    caption = gone.captions.first()
    CaptionEmbedding.objects.create(caption=caption, encoder_version=other_version, vector=[0, 1, 0])
    ImageTowerOutput.objects.create(image=gone, tower="t" * 64, pooled=[0.5, 0.5])
    # A near-duplicate group led by the removed image: its row goes, the other member stays grouped.
    NearDuplicate.objects.create(image=gone, encoder_version=other_version, group=gone.pk, similarity=1.0)
    NearDuplicate.objects.create(image=kept, encoder_version=other_version, group=gone.pk, similarity=0.99)
    settings.VAR_DIR = tmp_path  # the fine-tuning hidden states on disk (ranking.finetune.tower_inputs)
    part = tmp_path / "tower_states" / "abc" / "part-000000000001-2.npz"
    part.parent.mkdir(parents=True)
    np.savez(part, ids=np.asarray([gone.pk, kept.pk]), states=np.ones((2, 3, 4), dtype=np.float16))
    assert all(path.is_file() for path in files_of(gone) + files_of(kept))
    assert ImageEmbedding.objects.filter(image=gone).count() == 2
    before = current_revision()

    with django_capture_on_commit_callbacks(execute=True):
        done = remove_images([gone.pk, 999_999], requested_by="test")
        assert all(path.is_file() for path in files_of(gone))  # files wait for the commit
    assert done.removed == [gone.pk] and done.unknown == [999_999] and done.batches == 1

    assert not Image.objects.filter(pk=gone.pk).exists()
    assert not Caption.objects.filter(image_id=gone.pk).exists()
    assert not CaptionEmbedding.objects.filter(caption_id=caption.pk).exists()
    assert not ImageEmbedding.objects.filter(image_id=gone.pk).exists()  # every encoder version
    assert not ImageTowerOutput.objects.filter(image_id=gone.pk).exists()
    assert list(NearDuplicate.objects.values_list("image_id", "group")) == [(kept.pk, gone.pk)]
    assert not any(path.exists() for path in files_of(gone))
    with np.load(part) as data:
        assert data["ids"].tolist() == [kept.pk] and data["states"].shape == (1, 3, 4)
    record = RemovedImage.objects.get(image_id=gone.pk)
    assert record.sha256 == gone.sha256 and record.requested_by == "test"
    assert current_revision() == before + 2  # the fence's commit and the batch's: every cache key moves
    # The rest of the collection is whole.
    assert Image.objects.count() == 11 and all(path.is_file() for path in files_of(kept))
    assert ImageEmbedding.objects.filter(image=kept).exists() and kept.captions.count() == 2


def test_feedback_is_kept_detached_and_never_trains_again(service, collection):
    response, clicked = clicked_and_rated(service, 3, "a")
    _, other = clicked_and_rated(service, 2, "b")
    rows_before, images_before = trained_images()
    assert {clicked, other} <= images_before
    refresh_summaries()
    assert ImageFeedbackSummary.objects.filter(image_id=clicked).exists()
    swaps_before = swap_counts(None, 5)

    remove_images([clicked], requested_by="test")

    shown = list(Impression.objects.filter(event_id=response.event_id).order_by("position"))
    assert [i.position for i in shown] == list(range(1, 9))  # the list keeps its positions
    assert shown[2].image_id is None and all(i.image_id is not None for i in shown if i.position != 3)
    click = Click.objects.get(client_id="click-a")
    assert click.image_id is None and click.position == 3  # position statistics still count it
    assert Rating.objects.get(client_id="rating-a").image_id is None
    assert swap_counts(None, 5)[2].normal_lower_clicks == swaps_before[2].normal_lower_clicks
    rows_after, images_after = trained_images()
    assert clicked not in images_after and other in images_after and None not in images_after  # nor a detached None
    # The first search's group goes (its one positive was the removed image); the second loses that one row.
    assert rows_after == rows_before - 8 - 1
    refresh_summaries()  # the views refresh with detached rows
    assert not ImageFeedbackSummary.objects.filter(image_id=clicked).exists()


def test_the_fence_holds_before_the_batch_runs(service, collection):
    """A takedown that died after its fence committed: its images are neither shown nor trained on, and resume."""
    _, clicked = clicked_and_rated(service, 3, "a")
    image = Image.objects.get(pk=clicked)
    before = service.search(SearchRequest(text="a test picture", page_size=12)).hits
    RemovedImage.objects.create(image_id=clicked, sha256=image.sha256, requested_by="test")
    assert clicked not in trained_images()[1]
    hits = service.search(SearchRequest(text="a test picture", page_size=12)).hits
    assert {hit.image.pk for hit in hits} == {hit.image.pk for hit in before} - {clicked}
    assert unfinished() == [clicked]
    call_command("remove", "--resume")
    assert not Image.objects.filter(pk=clicked).exists() and unfinished() == []


def test_a_large_takedown_runs_in_batches(collection, monkeypatch):
    sizes = []
    delete_batch = takedown._delete_batch
    monkeypatch.setattr(takedown, "_delete_batch", lambda ids: sizes.append(len(ids)) or delete_batch(ids))
    done = remove_images([image.pk for image in collection[:11]], requested_by="test", batch=4)
    assert sizes == [4, 4, 3] and done.batches == 3 and len(done.removed) == 11
    assert done.longest_batch_seconds > 0
    assert list(Image.objects.values_list("pk", flat=True)) == [collection[11].pk]


def test_remove_command(collection, tmp_path, capsys):
    listed = tmp_path / "ids.txt"
    listed.write_text(f"# licence expired\n{collection[0].pk}\n\n{collection[1].pk}  # author withdrew it\n")
    call_command("remove", str(collection[2].pk), "999999", "--file", str(listed))
    out = capsys.readouterr()
    assert "Took down 3 image(s) in 1 batch(es)" in out.out
    assert "1 id(s) name no image (already gone?): 999999" in out.err
    assert Image.objects.count() == 9

    listed.write_text(f"{collection[3].pk}\n12a\n")
    with pytest.raises(CommandError, match=r"ids.txt, line 2: '12a' is not an image id.*Nothing was removed"):
        call_command("remove", "--file", str(listed))
    with pytest.raises(CommandError, match="argument 1: 'abc'"):
        call_command("remove", "abc")
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("remove", "--file", str(tmp_path / "missing.txt"))
    with pytest.raises(CommandError, match="Give image ids"):
        call_command("remove")
    with pytest.raises(CommandError, match="No image was removed"):
        call_command("remove", "999999")
    assert Image.objects.count() == 9  # none of the refused commands removed anything


def test_a_taken_down_images_votes_leave_the_feedback_channels_top_list(service, collection):
    """Its detached clicks must not pool into a NULL "image" holding one of the query's places."""
    chosen = collection[5].pk
    choose(service, accounts(3), chosen)  # three trusted users: enough for the top list
    refresh_summaries()
    assert chosen in top_list(QUERY)

    remove_images([chosen], requested_by="test")
    refresh_summaries()
    assert top_list(QUERY) == {}
