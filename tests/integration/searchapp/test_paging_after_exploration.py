"""A later page of a search whose first page the exploration slice changed continues that first page:
no result shown twice ("Load more" appended a duplicate card), none skipped (issue 24)."""

import re
from html import unescape

import pytest

from feedback.models import SearchEvent
from searchapp.search import SearchRequest

pytestmark = pytest.mark.django_db
QUERY = "a test picture"


def shown(html: str) -> list[tuple[int, int]]:
    """(position, image id) of each result card on the page."""
    cards = re.findall(r'class="result-link" data-image-id="(\d+)" data-position="(\d+)"', html)
    return [(int(position), int(image)) for image, position in cards]


def next_link(html: str) -> str:
    return unescape(re.search(r'<a rel="next" href="([^"]+)"', html).group(1))


@pytest.mark.parametrize("run", range(3))  # the slot and the candidate are drawn at random each time
def test_the_next_page_continues_an_explored_first_page(client, service, collection, settings, run):
    settings.LOUPE_PAGE_SIZE = 4
    settings.LOUPE_SWAP_SHARE, settings.LOUPE_EXPLORE_SHARE, settings.LOUPE_EXPLORE_MIN_POSITION = 0.0, 1.0, 1
    settings.LOUPE_RERANK_DEPTH = 8  # the explored candidate comes from the second page (positions 5-8)
    unchanged = [h.image.pk for h in service.search(SearchRequest(text=QUERY, page_size=12)).hits]

    first = client.get("/?q=a+test+picture").content.decode()
    event = SearchEvent.objects.get()
    assert event.explore_position is not None and 5 <= event.explore_from <= 8
    second = client.get("/" + next_link(first)).content.decode()
    third = client.get("/" + next_link(second)).content.decode()

    pages = [shown(html) for html in (first, second, third)]
    assert [[p for p, _ in page] for page in pages] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    images = [image for page in pages for _, image in page]
    assert len(set(images)) == len(images) == 12  # nothing twice, nothing skipped
    expected = list(unchanged)
    expected.insert(event.explore_position - 1, expected.pop(event.explore_from - 1))
    assert images == expected  # the first page as explored, then the rest in the served order
    assert [e.page for e in SearchEvent.objects.order_by("page")] == [1, 2, 3]  # each batch logged
    assert SearchEvent.objects.exclude(explore_position=None).count() == 1  # only the first page is a slice


def test_a_first_page_without_exploration_drops_a_move_carried_back_to_it(client, collection, settings):
    settings.LOUPE_PAGE_SIZE = 4
    settings.LOUPE_SWAP_SHARE, settings.LOUPE_EXPLORE_SHARE = 0.0, 0.0
    first = client.get("/?q=a+test+picture&explored=6-2").content.decode()  # "Previous" from page 2
    assert "explored" not in next_link(first)
    second = client.get("/" + next_link(first)).content.decode()
    images = [image for page in (first, second) for _, image in shown(page)]
    assert len(set(images)) == len(images) == 8


@pytest.mark.parametrize("explored", ["3-2", "5-9", "9999-1", "x-1"])
def test_an_impossible_move_is_a_400(client, collection, settings, explored):
    settings.LOUPE_PAGE_SIZE = 4
    response = client.get(f"/?q=a+test+picture&page=2&explored={explored}")
    assert response.status_code == 400
    assert not SearchEvent.objects.exists()
