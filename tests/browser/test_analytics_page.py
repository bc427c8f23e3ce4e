"""Issue 24, item 1 in a real Chromium: the search analytics page with seeded traffic shows what a direct
count of the raw log finds, its filter works as an admin uses it, and axe-core finds nothing serious."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model

from feedback.analytics.fold import fold_search_rollups
from feedback.models import SearchEvent
from tests.analytics_traffic import QUERIES, direct_counts, seed_traffic
from tests.browser.axe import assert_no_serious_axe_violations

pytestmark = pytest.mark.browser

START = datetime(2026, 11, 3, 9, tzinfo=UTC)
SINCE, UNTIL = START.replace(hour=0), START.replace(hour=0) + timedelta(days=2)
SCREENSHOT = Path(django_settings.BASE_DIR) / "docs" / "analytics-page.png"  # the README's picture


def sign_in(page, live_server) -> None:
    get_user_model().objects.create_superuser("boss", "boss@example.com", "a-long-test-password")
    page.goto(live_server.url + "/admin/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")


def shown(page) -> dict[str, str]:
    """The headline figures as the browser renders them (the per-day table repeats the keys, hidden)."""
    return {
        key: page.locator(f"dl.loupe-figures dd[data-figure={key}]").inner_text()
        for key in ["searches", "users", "clicks", "no_results", "ratings", "click_through_rate", "mean_rating"]
    }


def expected(surface: str) -> dict[str, str]:
    direct = direct_counts(SINCE, UNTIL, surface)
    return {
        "searches": str(direct["searches"]),
        "users": str(direct["users"]),
        "clicks": str(direct["clicks"]),
        "no_results": str(direct["no_results"]),
        "ratings": str(direct["ratings"]),
        "click_through_rate": f"{direct['click_through_rate']:.1%}",
        "mean_rating": f"{direct['mean_rating']:.3f}",
    }


def test_the_page_shows_a_direct_count_and_filters_by_surface(live_server, transactional_db, page, screenshot):
    seed_traffic(START)
    fold_search_rollups()
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/admin/analytics/?start=2026-11-03&end=2026-11-04&bucket=hour")
    assert int(shown(page)["searches"]) > 20
    assert shown(page) == expected("")
    assert page.locator("svg.loupe-chart").count() == 6
    # each query's row in the top queries shows its first-page searches as counted from the log
    rows = page.locator("table#top-queries tbody tr")
    listed = {rows.nth(n).get_attribute("data-query"): rows.nth(n).locator("td").nth(1).inner_text()
              for n in range(rows.count())}  # fmt: skip
    logged = SearchEvent.objects.filter(page=1, created_at__gte=SINCE, created_at__lt=UNTIL)
    assert listed == {q: str(logged.filter(normalised_query=q).count()) for q in QUERIES}
    assert_no_serious_axe_violations(page)
    screenshot("all-surfaces")
    page.click("#toggle-nav-sidebar")  # the README's picture: the page without the admin's app list
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.evaluate("window.scrollTo(0, 0)")  # the toggle's click scrolled it into view
    page.screenshot(path=str(SCREENSHOT))
    page.click("#toggle-nav-sidebar")

    page.select_option("#id_surface", "partner")  # the admin's way: the filter form
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**surface=partner**")
    assert shown(page) == expected("partner")
    assert_no_serious_axe_violations(page)
    screenshot("partner")


def test_a_bad_range_says_why_in_the_page(live_server, transactional_db, page):
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/admin/analytics/?start=2026-11-05&end=2026-11-01")
    assert "ends before it starts" in page.locator(".errorlist").inner_text()
    assert page.locator("svg.loupe-chart").count() == 0
    assert_no_serious_axe_violations(page)
