"""Recording searches, clicks and ratings: validation, idempotency, the per-user cap."""

import math

import pytest
from django.db import connection

from feedback.capture import (
    CapReached,
    ClickInput,
    ClientIdConflict,
    FeedbackError,
    NotShown,
    RatingInput,
    UnknownEvent,
    UnknownImage,
    record_click,
    record_rating,
)
from feedback.identity import Viewer
from feedback.impressions import counters
from feedback.models import Click, Impression, Rating, SearchEvent
from ranking.features import NAMES
from searchapp.search import SearchRequest
from tests.integration.feedback.conftest import ALICE

pytestmark = pytest.mark.django_db


def test_a_logged_search_stores_the_list_exactly_as_served(logged_search):
    event = SearchEvent.objects.get(pk=logged_search.event_id)
    assert (event.user_key, event.session, event.surface, event.kind) == (ALICE.user_key, "s1", "web", "text")
    assert event.query_text == "a test picture" and event.normalised_query == "a test picture"
    assert event.result_count == 6 and event.feature_names == NAMES
    assert event.encoder_version_id == logged_search.encoder.version_id
    shown = list(Impression.objects.filter(event=event).order_by("position"))
    assert [(i.image_id, i.position) for i in shown] == [(h.image.pk, h.position) for h in logged_search.hits]
    assert [i.score for i in shown] == pytest.approx([h.score for h in logged_search.hits])
    assert all(len(i.features) == len(NAMES) for i in shown)
    column = {name: i for i, name in enumerate(NAMES)}
    for impression, hit in zip(shown, logged_search.hits, strict=True):
        assert impression.features == pytest.approx(list(hit.features))
        assert impression.features[column["clip_cosine"]] == pytest.approx(hit.similarity, abs=1e-6)
        assert impression.features[column["first_stage_rank_log"]] == pytest.approx(math.log1p(hit.position))
    assert "log" in logged_search.timings_ms


def test_page_two_is_logged_with_its_own_positions(service, collection):
    response = service.search(SearchRequest(text="a test picture", page_size=4, page=2), ALICE)
    positions = list(Impression.objects.filter(event_id=response.event_id).values_list("position", flat=True))
    assert sorted(positions) == [5, 6, 7, 8]


def test_a_failed_log_write_does_not_fail_the_search(service, collection):
    """A real database error (a trigger refusing inserts): the search is answered, the failure counted."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql;"
            "CREATE TRIGGER refuse BEFORE INSERT ON feedback_impression FOR EACH ROW EXECUTE FUNCTION refuse();"
        )
    before = counters().get("failures", 0)
    response = service.search(SearchRequest(text="a test picture", page_size=3), ALICE)
    assert len(response.hits) == 3 and response.event_id is None
    assert counters()["failures"] == before + 1
    assert not SearchEvent.objects.exists()  # the event was rolled back with its impressions


def click(event, hit, client_id="c1", **extra):
    return ClickInput(event_id=str(event), image_id=hit.image.pk, position=hit.position, client_id=client_id, **extra)


def test_a_click_is_stored_once_however_often_it_is_sent(logged_search):
    hit = logged_search.hits[2]
    first = record_click(ALICE, click(logged_search.event_id, hit))
    again = record_click(ALICE, click(logged_search.event_id, hit, dwell_ms=1500))
    assert first.created and not again.created and first.item.pk == again.item.pk
    stored = Click.objects.get()
    assert (stored.image_id, stored.position, stored.user_key) == (hit.image.pk, 3, ALICE.user_key)
    assert stored.dwell_ms == 1500  # the resend carried the dwell time


def test_a_client_id_reused_for_another_click_is_a_conflict(logged_search):
    hits = logged_search.hits
    record_click(ALICE, click(logged_search.event_id, hits[0]))
    with pytest.raises(ClientIdConflict):
        record_click(ALICE, click(logged_search.event_id, hits[1]))
    assert Click.objects.count() == 1


def test_clicks_must_name_an_image_shown_at_that_position(logged_search, collection):
    event, hits = logged_search.event_id, logged_search.hits
    shown = {h.image.pk for h in hits}
    never_shown = next(image for image in collection if image.pk not in shown)
    with pytest.raises(NotShown):
        record_click(ALICE, ClickInput(str(event), never_shown.pk, 1, "c-unseen"))
    with pytest.raises(NotShown):
        record_click(ALICE, ClickInput(str(event), hits[0].image.pk, 2, "c-wrong-position"))
    with pytest.raises(FeedbackError):
        record_click(ALICE, ClickInput(str(event), hits[0].image.pk, 0, "c-zero"))
    with pytest.raises(FeedbackError):
        record_click(ALICE, ClickInput("not-a-uuid", hits[0].image.pk, 1, "c-bad-event"))
    with pytest.raises(FeedbackError):
        record_click(ALICE, ClickInput(str(event), hits[0].image.pk, 1, "bad id with spaces"))
    assert not Click.objects.exists()


def test_nobody_can_click_on_someone_elses_search(logged_search):
    mallory = Viewer(user_key="anon:mallory-token-00000000")
    with pytest.raises(UnknownEvent):
        record_click(mallory, click(logged_search.event_id, logged_search.hits[0]))


def test_ratings_thumbs_and_stars_validated_and_idempotent(logged_search, collection):
    hit = logged_search.hits[0]
    up = record_rating(ALICE, RatingInput(hit.image.pk, 1, "r1", event_id=str(logged_search.event_id)))
    assert up.created and up.item.query_text == "a test picture" and up.item.utility == 1.0
    assert not record_rating(ALICE, RatingInput(hit.image.pk, 1, "r1", event_id=str(logged_search.event_id))).created
    stars = record_rating(ALICE, RatingInput(collection[0].pk, 4, "r2", scale="stars", query_text="cats"))
    assert stars.item.utility == 0.75 and stars.item.event is None
    for bad in (
        RatingInput(hit.image.pk, 0, "r3"),
        RatingInput(hit.image.pk, 6, "r4", scale="stars"),
        RatingInput(hit.image.pk, 1, "r5", scale="likes"),
    ):
        with pytest.raises(FeedbackError):
            record_rating(ALICE, bad)
    with pytest.raises(UnknownImage):
        record_rating(ALICE, RatingInput(10**9, 1, "r6"))
    with pytest.raises(ClientIdConflict):
        record_rating(ALICE, RatingInput(hit.image.pk, -1, "r1"))
    assert Rating.objects.count() == 2


def test_a_rating_tied_to_a_search_must_be_of_an_image_it_showed(logged_search, collection):
    shown = {h.image.pk for h in logged_search.hits}
    never_shown = next(image for image in collection if image.pk not in shown)
    with pytest.raises(NotShown):
        record_rating(ALICE, RatingInput(never_shown.pk, 1, "r1", event_id=str(logged_search.event_id)))


def test_one_user_can_add_only_so_much_per_hour(logged_search, settings):
    settings.LOUPE_FEEDBACK_HOURLY_CAP = 3
    hits = logged_search.hits
    record_click(ALICE, click(logged_search.event_id, hits[0], "a"))
    record_click(ALICE, click(logged_search.event_id, hits[1], "b"))
    record_rating(ALICE, RatingInput(hits[0].image.pk, 1, "c"))
    with pytest.raises(CapReached) as refused:
        record_click(ALICE, click(logged_search.event_id, hits[2], "d"))
    assert 1 <= refused.value.retry_after <= 3601
    assert not record_click(ALICE, click(logged_search.event_id, hits[0], "a")).created  # resends still answer
    other = Viewer(user_key="anon:bob-token-000000000000")
    assert record_rating(other, RatingInput(hits[0].image.pk, 1, "a")).created  # the cap is per user
    assert Click.objects.count() + Rating.objects.count() == 4


def test_feedback_reaches_the_next_searchs_features(logged_search, service):
    """A click, once summarised, shows in the image's priors and in this query's statistics."""
    from feedback.summaries import refresh_summaries

    clicked = logged_search.hits[3]
    record_click(ALICE, click(logged_search.event_id, clicked, "c-prior"))
    refresh_summaries()
    again = service.search(SearchRequest(text="A  test picture", page_size=6), ALICE)  # same normalised query
    column = {name: i for i, name in enumerate(NAMES)}
    by_image = {hit.image.pk: hit.features for hit in again.hits}
    other = next(hit for hit in logged_search.hits if hit.image.pk != clicked.image.pk)
    assert by_image[clicked.image.pk][column["ctr_debiased"]] > by_image[other.image.pk][column["ctr_debiased"]]
    assert by_image[clicked.image.pk][column["query_ctr"]] > by_image[other.image.pk][column["query_ctr"]]
    assert by_image[clicked.image.pk][column["query_impressions_log"]] == pytest.approx(math.log1p(1))
