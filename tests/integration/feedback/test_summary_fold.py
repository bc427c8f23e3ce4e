"""The folded summaries equal a full recomputation by the old views' SQL, on a randomised log with trust
weights (new identities, a burst of newcomers from one network, accounts, the daily click cap), the
written examination curve, late rows dated in the past, erasure and a fold run twice."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from feedback.erasure import erase_user_key
from feedback.models import Click, Impression, Rating, SearchEvent
from feedback.summaries import refresh_summaries, write_examination_curve
from feedback.summary_fold import fold_summaries
from feedback.summary_recomputation import create_full_views, refresh_full_views
from tests.analytics_traffic import encoder_version, traffic_images

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 2, 9, tzinfo=UTC)
QUERIES = ["red bicycle", "sunset beach", "old map"]
COLUMNS = {
    "feedback_imagesummary": (
        ("image_id",),
        "impressions, clicks, ratings, last_activity",
        "examinations, mean_utility, trusted_impressions, trusted_examinations, trusted_clicks",
    ),
    "feedback_queryimagesummary": (
        ("query", "image_id"),
        "impressions, clicks",
        "examinations, trusted_impressions, trusted_examinations, trusted_clicks",
    ),
    "feedback_querysummary": (
        ("query",),
        "searches, users, impressions, clicks, searches_with_click, ratings, last_searched",
        "mean_utility",
    ),
}


def rows(table: str, suffix: str = "") -> dict:
    key, exact, approximate = COLUMNS[table]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(key)}, {exact}, {approximate} FROM {table}{suffix}")
        return {row[: len(key)]: row[len(key) :] for row in cursor.fetchall()}


def assert_equal_to_full_recomputation() -> None:
    refresh_full_views()
    for table, (_, exact, _) in COLUMNS.items():
        folded, full = rows(table), rows(table, "_full")
        assert folded.keys() == full.keys(), table
        exact_count = len(exact.split(","))
        for key, values in full.items():
            assert folded[key][:exact_count] == values[:exact_count], (table, key)
            expected = [
                None if v is None else pytest.approx(float(v), rel=1e-9, abs=1e-9) for v in values[exact_count:]
            ]
            assert list(folded[key][exact_count:]) == expected, (table, key)


class Log:
    """A random search log written row by row, with the times set after the fact (as late rows arrive)."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.images = traffic_images(6)
        self.version = encoder_version()
        self.clicks = 0

    def search(self, user: str, at: datetime, network: str = "", query: str | None = None) -> SearchEvent:
        query = self.rng.choice(QUERIES) if query is None else query
        event = SearchEvent.objects.create(
            user_key=user,
            network=network,
            kind="text" if query else "similar",
            query_text=query,
            normalised_query=query,
            page_size=4,
            encoder_version=self.version,
            result_count=4,
        )
        SearchEvent.objects.filter(pk=event.pk).update(created_at=at)
        event.created_at = at
        shown = self.rng.sample(self.images, 4)
        Impression.objects.bulk_create(
            Impression(event=event, image=image, position=p, score=1.0) for p, image in enumerate(shown, start=1)
        )
        if self.rng.random() < 0.6:
            self.click(event, self.rng.randrange(4), at + timedelta(seconds=self.rng.randrange(1, 300)))
        if self.rng.random() < 0.15:  # a second click on the same result counts once in the trusted columns
            self.click(event, 0, at + timedelta(seconds=400))
        if self.rng.random() < 0.2:
            self.rate(user, shown[0], event, at + timedelta(seconds=500))
        return event

    def click(self, event: SearchEvent, index: int, at: datetime) -> Click:
        impression = event.impressions.order_by("position")[index]
        self.clicks += 1
        click = Click.objects.create(
            event=event,
            image=impression.image,
            position=impression.position,
            user_key=event.user_key,
            client_id=f"c{self.clicks}",
        )
        Click.objects.filter(pk=click.pk).update(created_at=at)
        return click

    def rate(self, user: str, image, event: SearchEvent | None, at: datetime) -> None:
        self.clicks += 1
        scale, value = self.rng.choice([("thumbs", 1), ("thumbs", -1), ("stars", 4), ("stars", 2)])
        rating = Rating.objects.create(
            user_key=user, image=image, event=event, scale=scale, value=value, client_id=f"r{self.clicks}"
        )
        Rating.objects.filter(pk=rating.pk).update(created_at=at)

    def traffic(self, users: list[tuple[str, str]], searches: int, start: datetime, hours: int) -> None:
        for _ in range(searches):
            user, network = self.rng.choice(users)
            self.search(user, start + timedelta(minutes=self.rng.randrange(hours * 60)), network)


HONEST = [(f"anon:user-{n}", f"net{n % 3}") for n in range(8)] + [("account:7", "net1"), ("anon:no-network", "")]
BURST = [(f"anon:burst-{n}", "netburst") for n in range(7)]


@pytest.fixture
def log():
    write_examination_curve([1.0, 0.6, 0.4])
    create_full_views()
    log = Log(seed=21)
    log.traffic(HONEST + BURST, searches=70, start=START, hours=30)
    log.rate("anon:user-1", log.images[2], None, START + timedelta(hours=3))  # a rating with no search
    return log


def test_the_first_fold_counts_the_whole_log_as_the_views_did(log):
    fold = fold_summaries()
    assert fold.everything and fold.searches == SearchEvent.objects.count()
    assert_equal_to_full_recomputation()


def test_new_searches_recount_only_their_hours_and_keep_every_number(log):
    fold_summaries()
    log.traffic(HONEST, searches=12, start=START + timedelta(hours=40), hours=2)
    fold = fold_summaries()
    assert not fold.everything
    # The new hours, and those of the same users' clicks earlier that day (the daily cap): not the log.
    assert fold.searches < SearchEvent.objects.count() / 3
    assert_equal_to_full_recomputation()
    assert fold_summaries().hours == 0  # nothing changed: nothing recounted
    assert_equal_to_full_recomputation()


def test_a_search_dated_before_a_users_first_moves_their_later_searches(log):
    fold_summaries()
    # Every later search of this user now has one more earlier search and an older first-seen (so more
    # trust), in hours nobody marked.
    first = SearchEvent.objects.filter(user_key="anon:user-2").order_by("created_at").first()
    log.search("anon:user-2", first.created_at - timedelta(hours=2), "net2", query="")
    assert not fold_summaries().everything
    assert_equal_to_full_recomputation()


def test_a_newcomer_in_a_bursting_cohort_lowers_every_members_weight(log):
    fold_summaries()
    burst_day = SearchEvent.objects.filter(user_key="anon:burst-0").order_by("created_at").first().created_at
    log.search("anon:burst-new", burst_day.replace(hour=23, minute=59), "netburst", query="")
    assert not fold_summaries().everything
    assert_equal_to_full_recomputation()


def test_a_deleted_click_lets_a_click_on_yesterdays_search_under_the_daily_cap(log):
    """The cap counts a user's clicks on one (query, image) by the day they were made: removing this
    morning's first click brings this morning's click on yesterday evening's search under it."""
    day = START + timedelta(days=3)
    image = log.images[0]
    searches = [log.search("anon:capped", day + timedelta(hours=h), "net0", query="old map") for h in (-2, 1, 2)]
    for event, clicked_at in zip(
        searches,
        (day + timedelta(hours=3), day + timedelta(hours=1, minutes=10), day + timedelta(hours=2, minutes=10)),
        strict=True,
    ):
        Click.objects.filter(event=event).delete()
        if not event.impressions.filter(image=image).exists():
            event.impressions.filter(position=4).update(image=image)
        log.click(
            event,
            list(event.impressions.order_by("position").values_list("image", flat=True)).index(image.pk),
            clicked_at,
        )
    fold_summaries()
    assert_equal_to_full_recomputation()
    Click.objects.filter(event=searches[1]).delete()
    assert not fold_summaries().everything
    assert_equal_to_full_recomputation()


def test_an_erased_user_leaves_the_summaries(log):
    fold_summaries()
    before = rows("feedback_querysummary")
    erase_user_key("anon:burst-3", partner=None, requested_by="test")
    erase_user_key("anon:user-4", partner=None, requested_by="test")
    # The newest activity in the log: the images it touched have an older last activity afterwards.
    newest = SearchEvent.objects.order_by("-created_at").first().user_key
    erase_user_key(newest, partner=None, requested_by="test")
    fold = fold_summaries()
    assert not fold.everything
    assert_equal_to_full_recomputation()
    assert rows("feedback_querysummary") != before
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM feedback_queryuser WHERE user_key IN ('anon:burst-3', 'anon:user-4')"
            " UNION ALL SELECT count(*) FROM feedback_summaryidentity WHERE user_key IN ('anon:burst-3', 'anon:user-4')"
        )
        assert [row[0] for row in cursor.fetchall()] == [0, 0]


def test_a_new_curve_recounts_everything_and_a_near_one_is_not_written(log):
    fold_summaries()
    assert refresh_summaries([1.0, 0.5, 0.3, 0.2])["everything"]
    assert_equal_to_full_recomputation()
    log.traffic(HONEST, searches=3, start=START + timedelta(hours=50), hours=1)
    near = refresh_summaries([1.0, 0.502, 0.3, 0.2])  # within 1% at every position: kept, folded incrementally
    assert not near["everything"]
    assert_equal_to_full_recomputation()


def test_a_deleted_image_leaves_the_summaries_with_its_rows(log):
    fold_summaries()
    gone = log.images[1].pk
    log.images[1].delete()  # its impressions, clicks and ratings go with it (no hour is marked for impressions)
    fold_summaries()
    assert_equal_to_full_recomputation()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM feedback_imagehour WHERE image_id = %s", [gone])
        assert cursor.fetchone()[0] == 0
