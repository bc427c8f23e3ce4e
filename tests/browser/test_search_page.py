"""Issue 24, items 3 and 4: the search page people enjoy, in a real Chromium, checked by axe-core.

Justified rows that keep each image's shape, the lightbox and its keys, paste and drop to search,
"Load more" logged batch by batch, dark mode, scores only for staff who ask, and no serious or critical
accessibility violation on the search page, the lightbox and the image page.
"""

import base64
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model

from feedback.models import Click, Impression, SearchEvent
from tests.browser.axe import assert_no_serious_axe_violations
from tests.conftest import ARTIFACTS, build_collection, image_bytes

pytestmark = pytest.mark.browser

# Landscape, portrait, square and panorama images, so the layout has shapes to keep.
SIZES = [(96, 72), (60, 96), (80, 80), (160, 60), (72, 96), (120, 68)]
SCREENSHOT = Path(django_settings.BASE_DIR) / "docs" / "search-page.png"

# A file in the page, built from bytes, in a DataTransfer: what a paste or a drop of an image carries.
TRANSFER = """(b64) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], "query.png", { type: "image/png" }));
  return transfer;
}"""


@pytest.fixture
def live_collection(transactional_db, service):
    return build_collection(service, SIZES)


def search(page, live_server, query: str = "a test picture") -> None:
    page.goto(live_server.url + "/?q=" + query.replace(" ", "+"))
    page.wait_for_selector("ol.grid li.card")


def card_boxes(page) -> list[dict]:
    return page.eval_on_selector_all(
        "ol.grid li.card img",
        """imgs => imgs.map(i => {
          const r = i.getBoundingClientRect();
          const natural = Number(i.getAttribute("width")) / Number(i.getAttribute("height"));
          return { top: Math.round(r.top), left: r.left, right: r.right, width: r.width, height: r.height,
                   ratio: i.width / i.height, natural: natural };
        })""",
    )


def test_justified_rows_keep_each_images_shape(live_server, live_collection, page, screenshot):
    search(page, live_server)
    page.mouse.wheel(0, 5000)
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.card img')).every(i => i.complete && i.naturalWidth > 0)"
    )
    boxes = card_boxes(page)
    assert len(boxes) == 12
    # Every image is shown at its own aspect ratio, to the tenth the layout's classes give (a tenth is at
    # most a 5% crop); in the old grid of equal boxes a 160×60 panorama was cut to 220×180.
    for box in boxes:
        assert box["ratio"] == pytest.approx(round(box["natural"] * 10) / 10, rel=0.02), box
    # Rows: the images of one row share a height, and every row but the last spans the grid's width.
    grid = page.locator("ol.grid").bounding_box()
    rows: dict[int, list[dict]] = {}
    for box in boxes:
        rows.setdefault(box["top"], []).append(box)
    assert len(rows) >= 3
    for top, row in list(rows.items())[:-1]:
        assert max(b["height"] for b in row) - min(b["height"] for b in row) < 2, top
        assert row[0]["left"] == pytest.approx(grid["x"], abs=1) and row[-1]["right"] == pytest.approx(
            grid["x"] + grid["width"], abs=2
        ), top
    # No emoji: the rating buttons draw SVG icons.
    assert page.locator(".card .rate button svg").count() == 24
    assert "👍" not in page.content()
    screenshot("justified")
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOT))  # the README's picture of the search page, 1280 px wide
    assert_no_serious_axe_violations(page)


def test_lightbox_steps_with_the_arrow_keys_and_closes_on_escape(live_server, live_collection, page, screenshot):
    search(page, live_server)
    event = SearchEvent.objects.get()
    cards = page.locator("ol.grid li.card")
    first_link = cards.nth(0).locator("a.result-link")
    second_link = cards.nth(1).locator("a.result-link")
    enlarge = cards.nth(0).get_by_role("button", name="Enlarge result 1")
    enlarge.focus()  # the keyboard reaches it; it shows on focus
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    image = dialog.locator("[data-lightbox-image]")
    assert image.get_attribute("src") == cards.nth(0).get_attribute("data-full")
    assert "Result 1 (1 of 12)" in dialog.inner_text()
    page.wait_for_function("() => document.querySelector('[data-lightbox-image]').naturalWidth > 0")
    screenshot("lightbox")
    assert_no_serious_axe_violations(page)

    page.keyboard.press("ArrowRight")
    assert image.get_attribute("src") == cards.nth(1).get_attribute("data-full")
    assert "Result 2 (2 of 12)" in dialog.inner_text()
    assert (
        dialog.get_by_role("link", name="More like this")
        .get_attribute("href")
        .endswith("?like=" + second_link.get_attribute("data-image-id"))
    )
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")  # already at the first: stays there
    assert "Result 1 (1 of 12)" in dialog.inner_text()
    page.keyboard.press("Escape")
    page.wait_for_selector("dialog[data-lightbox]", state="hidden")
    assert page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "Enlarge result 1"

    # Opening the first result was one click on it, as opening its page is; stepping to the second was not.
    page.wait_for_timeout(300)
    click = Click.objects.get()
    assert (click.event_id, click.position, click.image_id) == (
        event.pk,
        1,
        int(first_link.get_attribute("data-image-id")),
    )

    # "More like this" from the lightbox: a search by that image, logged as one.
    cards.nth(1).hover()
    cards.nth(1).get_by_role("button", name="Enlarge result 2").click()
    liked = second_link.get_attribute("data-image-id")
    dialog.get_by_role("link", name="More like this").click()
    page.wait_for_url(f"**/?like={liked}")
    page.wait_for_selector("ol.grid li.card")
    assert f"like image {liked}" in page.locator(".summary").inner_text()
    similar = SearchEvent.objects.get(kind="similar")
    assert similar.query_image_id == int(liked)
    shown = [int(i) for i in page.eval_on_selector_all(".result-link", "ls => ls.map(l => l.dataset.imageId)")]
    assert int(liked) not in shown and len(shown) == 11


@pytest.mark.parametrize("how", ["paste", "drop"])
def test_paste_or_drop_an_image_to_search_with_it(live_server, live_collection, page, screenshot, how):
    page.goto(live_server.url + "/")
    transfer = page.evaluate_handle(TRANSFER, base64.b64encode(image_bytes(4, SIZES[4])).decode())
    if how == "paste":
        page.evaluate("(t) => document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: t }))", transfer)
    else:
        page.dispatch_event("main", "dragenter", {"dataTransfer": transfer})
        assert page.locator("[data-drop-overlay]").is_visible()
        page.dispatch_event("main", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("ol.grid li.card")
    assert "for your image" in page.locator(".summary").inner_text()
    assert page.locator(".result-link").first.get_attribute("data-image-id") == str(live_collection[4].pk)
    assert SearchEvent.objects.get().kind == "image"
    screenshot(how)


def test_load_more_logs_each_batch_with_positions_continuing(live_server, live_collection, page, settings):
    settings.LOUPE_PAGE_SIZE = 5
    search(page, live_server)
    load_more = page.get_by_role("button", name="Load more")
    load_more.click()
    page.wait_for_function("() => document.querySelectorAll('ol.grid li.card').length === 10")
    load_more.click()
    page.wait_for_function("() => document.querySelectorAll('ol.grid li.card').length === 12")
    assert load_more.count() == 0 and page.locator('a[rel="next"]').count() == 0  # nothing further
    assert "Results 1–12" in page.locator(".summary").inner_text()

    events = list(SearchEvent.objects.order_by("page"))
    assert [e.page for e in events] == [1, 2, 3]
    assert len({(e.user_key, e.session) for e in events}) == 1  # one viewer's batches
    for event, positions in zip(events, [range(1, 6), range(6, 11), range(11, 13)], strict=True):
        logged = list(Impression.objects.filter(event=event).order_by("position").values_list("position", "image_id"))
        assert [p for p, _ in logged] == list(positions)
        on_page = page.eval_on_selector_all(
            f'li.card[data-event-id="{event.pk}"] .result-link',
            "ls => ls.map(l => [Number(l.dataset.position), Number(l.dataset.imageId)])",
        )
        assert [tuple(x) for x in on_page] == logged  # shown exactly as logged, batch by batch
    assert len({image for _, image in Impression.objects.values_list("position", "image_id")}) == 12

    # A click on a result of the second batch is credited to that batch's event, at its position.
    page.locator('.result-link[data-position="7"]').click()
    page.wait_for_url("**/images/*/?*")
    page.wait_for_timeout(300)
    click = Click.objects.get()
    assert (click.event_id, click.position) == (events[1].pk, 7)


def test_without_javascript_the_page_links_remain(live_server, live_collection, browser, settings):
    settings.LOUPE_PAGE_SIZE = 5
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        search(page, live_server)
        assert page.locator("button.load-more").count() == 0
        assert page.locator("[data-enlarge]").first.is_hidden()  # no lightbox without its script
        page.locator('a[rel="next"]').click()
        page.wait_for_selector('.result-link[data-position="6"]')
        assert [e.page for e in SearchEvent.objects.order_by("page")] == [1, 2]
    finally:
        context.close()


def test_dark_mode_follows_the_system(live_server, live_collection, browser):
    colours = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(color_scheme=scheme, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        try:
            search(page, live_server)
            colours[scheme] = page.evaluate(
                "() => [getComputedStyle(document.body).backgroundColor,"
                " getComputedStyle(document.querySelector('.card')).backgroundColor]"
            )
            if scheme == "dark":
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "test_dark_mode_follows_the_system-dark.png"), full_page=True)
                assert_no_serious_axe_violations(page)  # contrast holds in the dark palette too
        finally:
            context.close()
    assert colours["light"] == ["rgb(247, 248, 250)", "rgb(255, 255, 255)"]
    assert colours["dark"] == ["rgb(18, 22, 28)", "rgb(28, 34, 43)"]


def scores_shown(page) -> int:
    return page.locator('[data-testid="score"]').count()


def test_scores_only_for_staff_who_ask(live_server, live_collection, page):
    search(page, live_server, "a test picture&debug=1")
    assert scores_shown(page) == 0  # anonymous: never, debug or not
    assert "score 0." not in page.inner_text("main")

    get_user_model().objects.create_user("staff", "staff@example.com", "a-long-test-password", is_staff=True)
    page.goto(live_server.url + "/admin/login/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    search(page, live_server)
    assert scores_shown(page) == 0  # staff see what users see unless they ask
    search(page, live_server, "a test picture&debug=1")
    assert scores_shown(page) == 12
    assert "score 0." in page.inner_text("main") or "score 1." in page.inner_text("main")


def test_image_page_is_accessible(live_server, live_collection, page, screenshot):
    image = live_collection[3]
    page.goto(live_server.url + f"/images/{image.pk}/")
    page.wait_for_selector("article.image-detail")
    assert page.locator(".rate-large .stars button svg").count() == 5
    assert page.locator('[data-testid="score"]').count() == 0
    screenshot("image-page")
    assert_no_serious_axe_violations(page)
