"""The analytics rollups equal a direct count of the log, after one fold or many, and the report filters them."""

from datetime import UTC, date, datetime, timedelta

import pytest

from feedback.analytics.fold import fold_search_rollups
from feedback.analytics.report import AnalyticsFilter, BadAnalyticsFilter, search_analytics
from feedback.erasure import key_digest
from feedback.models import AnalyticsUser, Click, DayUsers, QueryDay, Rating, SearchEvent, SearchHour, StaleSearchHour
from tests.analytics_traffic import direct_counts, encoder_version, log_search, seed_traffic, traffic_images

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 3, 9, tzinfo=UTC)
TWO_DAYS = AnalyticsFilter(start=date(2026, 11, 3), end=date(2026, 11, 4))


def snapshot() -> dict:
    """Every rollup row, without the fold time."""
    hours = {(r.pop("hour"), r.pop("surface")): r for r in SearchHour.objects.values().order_by("hour", "surface")}
    for row in hours.values():
        del row["id"], row["folded_at"]
    queries = sorted(
        QueryDay.objects.values_list("day", "surface", "query", "searches", "no_results", "clicked_searches")
    )
    users = sorted(
        (d, s, n, bytes(ids)) for d, s, n, ids in DayUsers.objects.values_list("day", "surface", "users", "user_ids")
    )
    return {"hours": hours, "queries": queries, "users": users}


@pytest.mark.parametrize("surface", ["", "page", "api", "partner"])
def test_the_report_equals_a_direct_count_of_the_log(surface):
    seed_traffic(START)
    fold_search_rollups()
    found = search_analytics(AnalyticsFilter(TWO_DAYS.start, TWO_DAYS.end, surface=surface))
    direct = direct_counts(TWO_DAYS.since, TWO_DAYS.until, surface)
    totals = found.totals
    assert direct["searches"] > 5
    for name in ["searches", "users", "clicked_searches", "clicks", "abandoned", "no_results", "ratings", "explored",
                 "swapped"]:  # fmt: skip
        assert getattr(totals, name) == direct[name], name
    assert totals.mean_rating == pytest.approx(direct["mean_rating"])
    assert totals.click_through_rate == pytest.approx(direct["click_through_rate"])
    assert totals.p50_ms == pytest.approx(direct["p50_ms"])
    assert sum(point.figures.searches for point in found.series) == direct["searches"]
    assert sum(c.clicks for c in found.channels) == direct["clicks"]


def test_daily_users_are_distinct_per_day_and_hourly_ones_per_hour():
    seed_traffic(START)
    fold_search_rollups()
    daily = search_analytics(TWO_DAYS)
    hourly = search_analytics(AnalyticsFilter(TWO_DAYS.start, TWO_DAYS.end, bucket="hour"))
    for point in daily.series:
        assert point.figures.users == direct_counts(point.at, point.at + timedelta(days=1))["users"]
    for point in hourly.series:
        assert point.figures.users == direct_counts(point.at, point.at + timedelta(hours=1))["users"]
    assert len(hourly.series) == 48 and len(daily.series) == 2


def test_range_users_are_the_union_of_the_days_and_surfaces_not_their_sum():
    images = traffic_images()
    days = [START, START + timedelta(days=1), START + timedelta(days=2)]
    for at in days:  # "anon:both" every day on two surfaces; one new user per day on the page
        log_search(at, images=images, user="anon:both")
        log_search(at, images=images, user="anon:both", surface="api")
        log_search(at, images=images, user=f"anon:only-{at.day}")
    fold_search_rollups()
    three_days = AnalyticsFilter(date(2026, 11, 3), date(2026, 11, 5))
    assert search_analytics(three_days).totals.users == 4 == direct_counts(three_days.since, three_days.until)["users"]
    assert [p.figures.users for p in search_analytics(three_days).series] == [2, 2, 2]
    page_only = AnalyticsFilter(three_days.start, three_days.end, surface="page")
    assert search_analytics(page_only).totals.users == 4
    api_only = AnalyticsFilter(three_days.start, three_days.end, surface="api")
    assert search_analytics(api_only).totals.users == 1
    # a day's ids are packed sorted, 4-byte big-endian: the dictionary's ids of that day's users
    day = DayUsers.objects.get(day=date(2026, 11, 4), surface="")
    ids = AnalyticsUser.objects.filter(key_digest__in=[key_digest("anon:both"), key_digest("anon:only-4")])
    assert bytes(day.user_ids) == b"".join(i.to_bytes(4, "big") for i in sorted(ids.values_list("id", flat=True)))
    # the dictionary keeps digests, never a user key (an erased user's key must not outlive their searches)
    assert set(AnalyticsUser.objects.values_list("key_digest", flat=True)) == {
        key_digest(k) for k in ["anon:both", "anon:only-3", "anon:only-4", "anon:only-5"]
    }


def in_hour(events, offset: int):
    hour = START + timedelta(hours=offset)
    return [e for e in events if hour <= e.created_at < hour + timedelta(hours=1)]


def test_incremental_folds_equal_a_full_recount_including_late_arrivals():
    events = seed_traffic(START, searches=40)
    images = traffic_images()
    unclicked = next(e for e in in_hour(events, 1) if e.page == 1 and e.result_count and not e.clicks.exists())
    changes = {
        "a search in a new hour": lambda: log_search(START + timedelta(hours=5), images=images, user="anon:n", click=1),
        "a late click on a folded hour's search": lambda: Click.objects.create(
            event=unclicked, image=images[0], position=1, user_key=unclicked.user_key, client_id="late"
        ),
        "a late rating": lambda: Rating.objects.create(
            user_key="anon:r", image=images[0], event=in_hour(events, 3)[0], scale="thumbs", value=1, client_id="r"
        ),
        "a search logged late into a folded hour": lambda: log_search(
            START + timedelta(minutes=3), images=images, user="anon:late", query="old map"
        ),
        "a deleted search": lambda: SearchEvent.objects.filter(pk=in_hour(events, 25)[0].pk).delete(),
        "a search moved to another hour": lambda: SearchEvent.objects.filter(pk=in_hour(events, 26)[0].pk).update(
            created_at=START + timedelta(hours=3)
        ),
    }
    fold_search_rollups()
    assert not StaleSearchHour.objects.exists()
    for name, change in changes.items():
        before = snapshot()
        change()
        assert fold_search_rollups().hours >= 1, name
        incremental = snapshot()
        assert incremental != before, name
        fold_search_rollups(everything=True)
        assert snapshot() == incremental, name

    SearchHour.objects.all().delete()
    QueryDay.objects.all().delete()
    DayUsers.objects.all().delete()
    fold_search_rollups()  # with no rollups at all the fold recounts the whole log
    assert snapshot() == incremental
    assert search_analytics(TWO_DAYS).totals.searches == direct_counts(TWO_DAYS.since, TWO_DAYS.until)["searches"]


def test_a_fold_with_nothing_new_recounts_nothing():
    seed_traffic(START, searches=10)
    assert fold_search_rollups().hours > 0
    assert fold_search_rollups().hours == 0


def test_query_gaps_list_queries_without_results_and_without_clicks():
    images = traffic_images()
    encoder_version()
    for n in range(3):
        log_search(START, images=images, user=f"anon:g{n}", query="unicorn", results=0)
        log_search(START, images=images, user=f"anon:g{n}", query="old map")
        log_search(START, images=images, user=f"anon:g{n}", query="red bicycle", click=1)
    fold_search_rollups()
    found = search_analytics(TWO_DAYS)
    assert [(q.query, q.no_results) for q in found.no_result_queries] == [("unicorn", 3)]
    assert [(q.query, q.searches) for q in found.no_click_queries] == [("old map", 3)]
    assert [q.query for q in found.top_queries] == ["old map", "red bicycle", "unicorn"]


def test_the_date_range_leaves_out_searches_outside_it():
    seed_traffic(START)
    fold_search_rollups()
    first_day = search_analytics(AnalyticsFilter(TWO_DAYS.start, TWO_DAYS.start))
    day = direct_counts(TWO_DAYS.since, TWO_DAYS.since + timedelta(days=1))
    assert first_day.totals.searches == day["searches"] < search_analytics(TWO_DAYS).totals.searches
    assert first_day.totals.users == day["users"]


@pytest.mark.parametrize(
    "fields",
    [
        {"surface": "fax"},
        {"bucket": "minute"},
        {"end": date(2026, 11, 1)},
        {"end": date(2028, 1, 1)},
        {"bucket": "hour", "end": date(2026, 12, 30)},
    ],  # fmt: skip
)
def test_a_bad_filter_is_refused(fields):
    with pytest.raises(BadAnalyticsFilter):
        AnalyticsFilter(**{"start": date(2026, 11, 3), "end": date(2026, 11, 4), **fields})
