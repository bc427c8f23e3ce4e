"""A person's search journey in a real headless Chromium against the live server."""

import pytest

from tests.conftest import build_collection, image_bytes

pytestmark = pytest.mark.browser


@pytest.fixture
def live_collection(transactional_db, service):
    return build_collection(service)


def test_search_open_an_image_and_find_more_like_it(live_server, live_collection, page, screenshot):
    page.goto(live_server.url + "/")
    assert page.get_by_test_id("demo-banner").is_visible()
    page.get_by_label("Search images").fill("a test picture")
    page.keyboard.press("Enter")
    page.wait_for_selector(".card")
    assert page.locator(".card").count() == 12
    assert "Results 1–12" in page.locator(".summary").inner_text()
    # Thumbnails really load (served from MEDIA_ROOT), they are not broken images. They load lazily,
    # so scroll to the end first.
    page.mouse.wheel(0, 5000)
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.card img')).every(i => i.complete && i.naturalWidth > 0)",
        timeout=15_000,
    )
    screenshot("results")

    first = page.locator(".result-link").first
    image_id = first.get_attribute("data-image-id")
    first.focus()
    page.keyboard.press("Enter")  # keyboard navigation opens the image
    page.wait_for_url(f"**/images/{image_id}/?*")  # the page learns which search result it was
    assert page.get_by_role("heading", name="More like this").is_visible()
    assert page.locator(".card").count() == 11
    assert page.locator(f'.result-link[data-image-id="{image_id}"]').count() == 0
    screenshot("image-page")


def test_search_with_an_uploaded_image(live_server, live_collection, page, screenshot, tmp_path):
    query = tmp_path / "query.png"
    query.write_bytes(image_bytes(4))
    page.goto(live_server.url + "/")
    page.set_input_files("#image", str(query))
    page.get_by_role("button", name="Find similar").click()
    page.wait_for_selector(".card")
    assert page.locator(".result-link").first.get_attribute("data-image-id") == str(live_collection[4].pk)
    screenshot("image-search")


def test_bad_input_shows_a_clear_message(live_server, live_collection, page):
    page.goto(live_server.url + "/?q=tag:")
    assert "empty tag" in page.get_by_role("alert").inner_text()


def test_tag_suggestions_while_typing(live_server, live_collection, page):
    page.goto(live_server.url + "/")
    page.get_by_label("Search images").press_sequentially("beach tag:od")
    # A function, not an expression: Playwright evaluates a polled expression with eval, which the CSP blocks.
    page.wait_for_function("() => document.querySelectorAll('#tag-suggestions option').length > 0")
    values = page.eval_on_selector_all("#tag-suggestions option", "options => options.map(o => o.value)")
    assert values == ["beach tag:odd "]
