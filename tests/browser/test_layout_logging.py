"""Issue 23, item 1: the page reports the grid each person saw, read from the rendered cards, at two widths."""

import time

import pytest

from feedback.models import SearchEvent
from tests.conftest import build_collection

pytestmark = pytest.mark.browser

# 96 x 72 images (aspect 4:3): four to a row in the 1,152 px a 1,280 px window leaves the results, one on a
# 360 px phone (a card's basis there is 182 px of 312).
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 740}


@pytest.fixture
def live_collection(transactional_db, service):
    return build_collection(service)


def rendered_rows(page) -> tuple[list[int], list[int]]:
    """The grid as the test reads it: cards per row (cards whose tops line up) and the rows in the viewport."""
    boxes = page.eval_on_selector_all(
        "ol.grid li.card", "cards => cards.map(c => { const r = c.getBoundingClientRect(); return [r.top, r.bottom]; })"
    )
    rows: list[list[float]] = []
    for top, bottom in boxes:
        if rows and abs(top - rows[-1][0]) < 2:
            rows[-1][1] = max(rows[-1][1], bottom)
            rows[-1][2] += 1
        else:
            rows.append([top, bottom, 1])
    height = page.viewport_size["height"]
    visible = [n for n, (top, bottom, _) in enumerate(rows, start=1) if bottom > 0 and top < height]
    return [int(size) for _, _, size in rows], [visible[0], visible[-1]]


def stored_layout(event_id: str, seconds: float = 10.0) -> SearchEvent:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        event = SearchEvent.objects.get(pk=event_id)
        if event.layout_columns is not None:
            return event
        time.sleep(0.1)
    raise AssertionError(f"no layout was stored for search {event_id}")


@pytest.mark.parametrize(("viewport", "first_row"), [(DESKTOP, 4), (PHONE, 1)])
def test_the_page_logs_the_grid_it_rendered(browser, live_server, live_collection, viewport, first_row):
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    try:
        page.goto(live_server.url + "/?q=a+test+picture")
        page.wait_for_selector("ol.grid li.card")
        event_id = page.get_attribute("ol.grid", "data-event-id")
        event = stored_layout(event_id)
        columns, on_screen = rendered_rows(page)
        assert columns[0] == first_row and sum(columns) == event.result_count == 12
        assert event.layout_columns == columns
        assert [event.layout_first_row, event.layout_last_row] == on_screen
        if first_row == 1:
            assert set(columns) == {1} and on_screen[1] < 12  # a phone shows a few rows; the rest are below
    finally:
        context.close()
