"""Issue 20, item 2 on the page: filter by a metadata field and sort by date, typed as a user would."""

from __future__ import annotations

import pytest

from collection.metadata import declare_field
from collection.models import Image
from tests.browser.axe import assert_no_serious_axe_violations
from tests.conftest import build_collection

pytestmark = pytest.mark.browser


@pytest.fixture
def catalogue(transactional_db, service):
    """Twelve images: even seeds by smith, odd by jones, each taken on its own day (seed 5 has no date)."""
    images = build_collection(service)
    declare_field("author", "keyword")
    declare_field("taken", "date")
    for seed, image in enumerate(images):
        metadata = {"author": "smith" if seed % 2 == 0 else "jones"}
        if seed != 5:
            # Not in seed order, so "newest first" differs from both relevance and insertion order.
            metadata["taken"] = f"2020-{1 + (seed * 7) % 12:02d}-{10 + seed:02d}"
        Image.objects.filter(pk=image.pk).update(metadata=metadata)
    return {image.pk: Image.objects.get(pk=image.pk).metadata for image in images}


def shown(page) -> list[int]:
    return [int(i) for i in page.eval_on_selector_all("ol.grid a.result-link", "as => as.map(a => a.dataset.imageId)")]


def test_a_metadata_filter_and_newest_first_from_the_search_box(live_server, catalogue, page, screenshot):
    page.goto(live_server.url + "/")
    page.fill("#q", "a test picture author:jones")
    page.select_option("#sort", "date")
    page.click("form.search-form button[type=submit]")
    page.wait_for_selector("ol.grid li.card")
    ids = shown(page)
    jones = [pk for pk, metadata in catalogue.items() if metadata["author"] == "jones"]
    # Only jones's six images, every one of them (the filter selects before the nearest are taken).
    assert sorted(ids) == sorted(jones)
    # Newest first; the image without a date comes last.
    dated = [pk for pk in ids if "taken" in catalogue[pk]]
    assert [catalogue[pk]["taken"] for pk in dated] == sorted((catalogue[pk]["taken"] for pk in dated), reverse=True)
    assert "taken" not in catalogue[ids[-1]]
    assert "newest first" in page.inner_text(".results-summary, main")
    assert page.input_value("#sort") == "date"
    screenshot("filtered-newest-first")
    assert_no_serious_axe_violations(page)
    # Negation, and relevance order again: smith's six, in some order that is not forced by date.
    page.fill("#q", "a test picture -author:jones")
    page.select_option("#sort", "relevance")
    page.click("form.search-form button[type=submit]")
    page.wait_for_selector("ol.grid li.card")
    assert sorted(shown(page)) == sorted(pk for pk, m in catalogue.items() if m["author"] == "smith")


def test_a_filter_value_that_does_not_fit_its_field_says_so_on_the_page(live_server, catalogue, page):
    page.goto(live_server.url + "/?q=picture+taken>=someday")
    text = page.inner_text("main")
    assert "taken" in text and "date" in text.lower()
    assert page.locator("ol.grid li.card").count() == 0
