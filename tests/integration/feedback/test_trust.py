"""Trust-weighted feedback (feedback.trust): what a click and a search count for, in the real views."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client

from core.networks import network_key
from feedback.capture import ClickInput, record_click
from feedback.identity import Viewer
from feedback.models import NetworkBurst, SearchEvent
from feedback.summaries import QUERY_IMAGE_SUMMARY_VIEW, refresh_summaries
from feedback.trust import (
    DAILY_CAP_PER_QUERY_IMAGE,
    NETWORK_DAILY_NEWCOMERS,
    NEW_IDENTITY_WEIGHT,
    counted_clicks,
    search_trust,
)
from searchapp.search import SearchRequest

pytestmark = pytest.mark.django_db

QUERY = "a test picture"


def search(service, viewer: Viewer):
    response = service.search(SearchRequest(text=QUERY, page_size=6), viewer)
    assert response.event_id is not None
    return response


def click(viewer: Viewer, response, position: int, client_id: str) -> None:
    hit = response.hits[position - 1]
    record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, client_id))


def query_image_summary(image_id: int) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT impressions, clicks, trusted_impressions, trusted_clicks FROM {QUERY_IMAGE_SUMMARY_VIEW}"
            " WHERE query = %s AND image_id = %s",
            [QUERY, image_id],
        )
        row = cursor.fetchone()
    return dict(zip(("impressions", "clicks", "trusted_impressions", "trusted_clicks"), row, strict=True))


def test_one_identity_counts_once_per_impression(service, collection):
    """Three clicks on one shown image (three client ids): the raw count says 3, what learning reads says 1."""
    viewer = Viewer(user_key="anon:flooder-000000000000", network="n1")
    response = search(service, viewer)
    for n in range(3):
        click(viewer, response, 2, f"c{n}")
    image = response.hits[1].image.pk
    refresh_summaries()
    summary = query_image_summary(image)
    trust = search_trust([response.event_id])[response.event_id].weight
    assert summary["clicks"] == 3 and summary["impressions"] == 1  # no longer one impression per click
    assert summary["trusted_clicks"] == pytest.approx(trust) and trust == pytest.approx(NEW_IDENTITY_WEIGHT)
    assert counted_clicks([response.event_id]) == {(response.event_id, image): pytest.approx(trust)}


def test_clicks_on_one_query_and_image_are_capped_per_identity_per_day(service, collection):
    viewer = Viewer(user_key="anon:repeater-00000000000", network="n1")
    responses = [search(service, viewer) for _ in range(DAILY_CAP_PER_QUERY_IMAGE + 3)]
    image = responses[0].hits[0].image.pk
    for n, response in enumerate(responses):
        hit = next(h for h in response.hits if h.image.pk == image)
        record_click(viewer, ClickInput(str(response.event_id), image, hit.position, f"c{n}"))
    counted = counted_clicks([r.event_id for r in responses])
    assert sorted(counted) == sorted((r.event_id, image) for r in responses[:DAILY_CAP_PER_QUERY_IMAGE])
    refresh_summaries()
    trust = search_trust([r.event_id for r in responses])
    expected = sum(trust[r.event_id].weight for r in responses[:DAILY_CAP_PER_QUERY_IMAGE])
    assert query_image_summary(image)["trusted_clicks"] == pytest.approx(expected)
    # The next day counts again (the click's own day decides).
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE feedback_click SET created_at = created_at + interval '1 day' WHERE event_id = %s",
            [responses[-1].event_id],
        )
    assert (responses[-1].event_id, image) in counted_clicks([responses[-1].event_id])


def test_new_identities_count_less_than_established_ones(service, collection):
    newcomer = Viewer(user_key="anon:newcomer-0000000000", network="n1")
    regular = Viewer(user_key="anon:regular-00000000000", network="n2")
    account = Viewer(user_key="account:7", network="n3")
    first = search(service, newcomer)
    regular_searches = [search(service, regular) for _ in range(11)]
    by_account = search(service, account)
    trust = search_trust([first.event_id, by_account.event_id, *(r.event_id for r in regular_searches)])
    assert trust[first.event_id].weight == pytest.approx(NEW_IDENTITY_WEIGHT)
    assert trust[regular_searches[5].event_id].weight == pytest.approx(0.25 + 0.75 * 5 / 10)
    assert trust[regular_searches[10].event_id].weight == pytest.approx(1.0)  # 10 earlier searches: established
    assert trust[by_account.event_id].weight == 1.0
    # Age establishes too: a second search 8 days after the first counts fully.
    SearchEvent.objects.filter(pk=first.event_id).update(created_at=first_time(first) - timedelta(days=8))
    later = search(service, newcomer)
    assert search_trust([later.event_id])[later.event_id].weight == pytest.approx(1.0)


def first_time(response):
    return SearchEvent.objects.get(pk=response.event_id).created_at


def test_a_burst_of_new_identities_from_one_network_is_damped(service, collection, admin_client):
    burst = [Viewer(user_key=f"anon:bot-{n:04d}-000000000000", network="botnet") for n in range(20)]
    events = []
    for n, viewer in enumerate(burst):
        response = search(service, viewer)
        click(viewer, response, 4, f"b{n}")
        events.append(response)
    target = events[0].hits[3].image.pk
    honest = [Viewer(user_key=f"anon:user-{n:04d}-00000000000", network=f"home-{n}") for n in range(3)]
    honest_events = [search(service, v) for v in honest]
    trust = search_trust([r.event_id for r in events + honest_events])
    damping = NETWORK_DAILY_NEWCOMERS / len(burst)
    assert all(trust[r.event_id].weight == pytest.approx(NEW_IDENTITY_WEIGHT * damping) for r in events)
    assert all(trust[r.event_id].weight == pytest.approx(NEW_IDENTITY_WEIGHT) for r in honest_events)
    refresh_summaries()
    summary = query_image_summary(target)
    assert summary["trusted_clicks"] == pytest.approx(len(burst) * NEW_IDENTITY_WEIGHT * damping)
    # Impressions are damped for bursts only: the flood's 20 count 5, each honest search counts 1.
    assert summary["trusted_impressions"] == pytest.approx(NETWORK_DAILY_NEWCOMERS + len(honest))
    # The admin lists the burst, with what it pushed; the honest networks are not listed.
    row = NetworkBurst.objects.get()
    assert (row.network, row.newcomers, row.clicks, row.top_query, row.top_image_id, row.top_clicks) == (
        "botnet",
        20,
        20,
        QUERY,
        target,
        20,
    )
    assert row.burst_weight == pytest.approx(damping)
    page = admin_client.get("/admin/feedback/networkburst/")
    assert page.status_code == 200 and b"botnet" in page.content


def test_page_searches_record_the_client_network(collection):
    Client(REMOTE_ADDR="203.0.113.7").get("/", {"q": QUERY})
    Client(REMOTE_ADDR="203.0.113.200").get("/", {"q": QUERY})
    Client(REMOTE_ADDR="198.51.100.1").get("/", {"q": QUERY})
    networks = list(SearchEvent.objects.order_by("created_at").values_list("network", flat=True))
    assert networks[0] == networks[1] == network_key("203.0.113.7") != networks[2]
    assert networks[2] == network_key("198.51.100.1") and len(networks[0]) == 16
