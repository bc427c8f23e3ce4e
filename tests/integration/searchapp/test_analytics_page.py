"""The search analytics page: what it shows equals a direct count of the log; filters, links, refusals."""

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from feedback.analytics.fold import fold_search_rollups
from feedback.models import SearchEvent
from ranking.models import RankerVersion
from tests.analytics_traffic import direct_counts, seed_traffic

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 3, 9, tzinfo=UTC)
RANGE = "start=2026-11-03&end=2026-11-04"


@pytest.fixture
def boss(client):
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "a-long-test-password")
    client.force_login(user)
    return user


def figures(html: str) -> dict[str, str]:
    """The headline figures (the first one of each key: the per-bucket table repeats them)."""
    found = {}
    for key, value in re.findall(r'<dd data-figure="([a-z0-9_]+)">([^<]*)</dd>', html):
        found.setdefault(key, unescape(value))
    return found


@pytest.mark.parametrize("surface", ["", "page", "partner"])
def test_the_page_shows_what_a_direct_count_finds(client, boss, surface):
    seed_traffic(START)
    fold_search_rollups()
    response = client.get(f"/admin/analytics/?{RANGE}&surface={surface}")
    assert response.status_code == 200
    shown = figures(response.content.decode())
    direct = direct_counts(START.replace(hour=0), START.replace(hour=0) + timedelta(days=2), surface)
    assert shown["searches"] == str(direct["searches"])
    assert shown["users"] == str(direct["users"])
    assert shown["clicks"] == str(direct["clicks"])
    assert shown["no_results"] == str(direct["no_results"])
    assert shown["click_through_rate"] == f"{direct['click_through_rate']:.1%}"
    assert shown["mean_rating"] == f"{direct['mean_rating']:.3f}"
    assert shown["p50_ms"] == f"{direct['p50_ms']:.0f} ms"
    assert response.content.decode().count('class="loupe-chart"') == 6


def test_query_links_open_the_search_and_its_logged_events(client, boss):
    seed_traffic(START)
    fold_search_rollups()
    html = client.get(f"/admin/analytics/?{RANGE}&surface=page").content.decode()
    table = html[html.index('id="no-results"') :]
    search_url, events_url = (unescape(u) for u in re.findall(r'<a href="([^"]+)"', table)[:2])
    assert parse_qs(urlparse(search_url).query) == {"q": ["zzz nothing here"]}
    assert client.get(search_url).status_code == 200
    events = client.get(events_url)
    assert events.status_code == 200, events_url
    expected = SearchEvent.objects.filter(
        normalised_query="zzz nothing here", surface="web", created_at__gte=START.replace(hour=0),
        created_at__lt=START.replace(hour=0) + timedelta(days=2)
    ).count()  # fmt: skip
    assert events.context["cl"].result_count == expected > 0


def test_promotions_are_marked_on_the_charts(client, boss):
    seed_traffic(START, searches=20)
    fold_search_rollups()
    RankerVersion.objects.create(
        status="active",
        feature_names=[],
        trained_from=START,
        trained_until=START,
        promoted_at=START + timedelta(hours=2),
    )
    html = client.get(f"/admin/analytics/?{RANGE}").content.decode()
    assert html.count('class="loupe-promotion" data-kind="ranker"') == 6
    assert "promoted" in html


@pytest.mark.parametrize(
    "query", ["surface=fax", "start=2026-11-05&end=2026-11-01", "start=yesterday", "bucket=hour&start=2026-01-01"]
)
def test_a_bad_filter_is_a_400_that_says_why(client, boss, query):
    response = client.get(f"/admin/analytics/?{query}")
    assert response.status_code == 400
    assert b"errorlist" in response.content


def test_only_staff_who_may_read_the_search_log_see_it(client):
    assert client.get("/admin/analytics/").status_code == 302  # to the admin login
    staff = get_user_model().objects.create_user("clerk", password="a-long-test-password", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/analytics/").status_code == 403
    assert b"Search analytics" not in client.get("/admin/").content
    staff.user_permissions.add(Permission.objects.get(codename="view_searchevent"))
    assert client.get("/admin/analytics/").status_code == 200
    assert b'href="/admin/analytics/"' in client.get("/admin/").content
