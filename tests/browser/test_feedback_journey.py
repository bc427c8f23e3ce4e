"""Feedback from a real browser: a click sent by sendBeacon, dwell time, ratings without a reload."""

import pytest

from feedback.models import Click, Impression, Rating, SearchEvent
from tests.conftest import build_collection

pytestmark = pytest.mark.browser


@pytest.fixture
def live_collection(transactional_db, service):
    return build_collection(service)


def wait_for(predicate, page, timeout_ms: int = 10_000):
    """Poll the database while the browser's beacons arrive (they are asynchronous by design)."""
    waited = 0
    while not predicate():
        assert waited < timeout_ms, "the feedback never arrived"
        page.wait_for_timeout(100)
        waited += 100


def test_search_click_rate_and_find_the_rows(live_server, live_collection, page, screenshot):
    page.goto(live_server.url + "/")
    page.get_by_label("Search images").fill("another view number 5")
    page.keyboard.press("Enter")
    page.wait_for_selector(".card")
    event = SearchEvent.objects.get()
    assert page.locator("ol.grid").get_attribute("data-event-id") == str(event.pk)
    assert event.user_key.startswith("anon:") and event.surface == "web"
    assert Impression.objects.filter(event=event).count() == page.locator(".card").count()

    # Rate the second result with the keyboard, without leaving the page.
    second = page.locator(".card").nth(1)
    rated_image = int(second.locator(".result-link").get_attribute("data-image-id"))
    second.get_by_role("button", name="Good result").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(".card >> nth=1 >> text=Thanks, saved.")
    assert second.get_by_role("button", name="Good result").get_attribute("aria-pressed") == "true"
    rating = Rating.objects.get()
    assert (rating.image_id, rating.value, rating.scale, rating.event_id) == (rated_image, 1, "thumbs", event.pk)
    assert rating.user_key == event.user_key and rating.query_text == "another view number 5"
    screenshot("rated")

    # Click the third result: the beacon records it, the image page knows where it came from.
    third = page.locator(".result-link").nth(2)
    clicked_image = int(third.get_attribute("data-image-id"))
    third.click()
    page.wait_for_url(f"**/images/{clicked_image}/?*")
    wait_for(lambda: Click.objects.exists(), page)
    click = Click.objects.get()
    assert (click.event_id, click.image_id, click.position) == (event.pk, clicked_image, 3)
    assert click.dwell_ms is None

    # Stars on the image page, tied to the same search.
    page.get_by_role("button", name="4 stars").click()
    page.wait_for_selector("text=Thanks, saved.")
    stars = Rating.objects.get(scale="stars")
    assert (stars.image_id, stars.value, stars.event_id) == (clicked_image, 4, event.pk)
    screenshot("image-rated")

    # Leaving the page sends the time spent on it, on the same click (not a second click).
    page.wait_for_timeout(300)
    page.goto(live_server.url + "/")
    wait_for(lambda: Click.objects.get().dwell_ms is not None, page)
    assert Click.objects.count() == 1 and Click.objects.get().dwell_ms >= 300


def test_the_same_browser_keeps_its_user_key(live_server, live_collection, page):
    for query in ("a test picture", "another view"):
        page.goto(live_server.url + "/?q=" + query.replace(" ", "+"))
        page.wait_for_selector(".card")
    keys = set(SearchEvent.objects.values_list("user_key", flat=True))
    sessions = set(SearchEvent.objects.values_list("session", flat=True))
    assert len(keys) == 1 and len(sessions) == 1
