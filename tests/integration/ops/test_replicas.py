"""Search reads on a real streaming replica (tests/streaming_replica.py); writes, feedback and fallbacks on the primary.

The tests commit (``transaction=True``): a replica sees only what the primary committed. An image added
while the replica's replay is paused exists on the primary only, so whether a search finds it says which
server answered.
"""

from __future__ import annotations

import math
import time

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from collection.embedding import embed_everything_missing
from collection.images import read_image
from collection.ingestion.service import add_image
from collection.models import Image
from collection.text_channels import shutdown_pool
from core.metrics import REPLICA_LAG_SECONDS, SEARCH_READS
from core.replica_health import replica_health
from core.replicas import PrimaryRouter
from feedback.capture import ClickInput, record_click
from feedback.identity import Viewer
from feedback.models import Click, SearchEvent
from searchapp.search import SearchRequest, SearchService
from tests.conftest import build_collection, image_bytes
from tests.streaming_replica import StreamingReplica, primary_lsn

ALIAS = "replica1"
pytestmark = pytest.mark.django_db(transaction=True, databases=[DEFAULT_DB_ALIAS, ALIAS])

VIEWER = Viewer(user_key="u-replica", session="s1")
NEW_CAPTION = "a zebra crossing seen from above"


@pytest.fixture(scope="module")
def streaming_replica(django_db_setup, django_db_blocker):
    """The replica, configured as ``replica1`` the way ``DATABASE_REPLICA_URLS`` does (the tests' flush skips a
    mirror: the replica is emptied by replaying the primary's)."""
    with django_db_blocker.unblock():
        connection.ensure_connection()
        replica = StreamingReplica.create(connection.settings_dict)
    replica_settings = {**replica.settings(connection.settings_dict["NAME"]), "TEST": {"MIRROR": DEFAULT_DB_ALIAS}}
    configured = connections.configure_settings(
        {DEFAULT_DB_ALIAS: connections.settings[DEFAULT_DB_ALIAS], ALIAS: replica_settings}
    )
    connections.settings[ALIAS] = configured[ALIAS]
    yield replica
    connections[ALIAS].close()
    del connections[ALIAS]
    del connections.settings[ALIAS]
    replica.remove()


@pytest.fixture
def replica(streaming_replica, settings):
    """Checked before each search; the text channels read on their own threads' connections."""
    if not streaming_replica.running():
        streaming_replica.start()
    settings.LOUPE_PARALLEL_CHANNELS = True
    settings.LOUPE_REPLICA_CHECK_SECONDS = 0
    settings.LOUPE_REPLICA_MAX_LAG_SECONDS = 30
    replica_health.forget()
    yield streaming_replica
    shutdown_pool()
    connections[ALIAS].close()
    replica_health.forget()
    if streaming_replica.running():
        streaming_replica.resume_replay()


def caught_up(replica: StreamingReplica) -> None:
    replica.wait_for(primary_lsn(connection))


def add_zebra() -> Image:
    image, _ = add_image(read_image(image_bytes(99)), captions=[NEW_CAPTION], tags=["zebra"])
    embed_everything_missing()
    return image


def found(response) -> set[int]:
    return {hit.image.pk for hit in response.hits}


def reads(replica_queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in replica_queries.captured_queries if "pg_is_in_recovery" not in q["sql"]]


def counted(database: str, reason: str) -> float:
    return SEARCH_READS.labels(database, reason)._value.get()


def test_search_reads_on_the_replica_while_the_log_and_a_click_go_to_the_primary(replica):
    service = SearchService()
    build_collection(service)
    caught_up(replica)
    replica.pause_replay()
    zebra = add_zebra()  # committed on the primary, not replayed on the replica

    with (
        CaptureQueriesContext(connections[ALIAS]) as on_replica,
        CaptureQueriesContext(connection) as on_primary,
    ):
        response = service.search(SearchRequest(text=NEW_CAPTION, page_size=20), VIEWER)

    assert response.hits and zebra.pk not in found(response)  # answered by the replica, which cannot see it yet
    # The text channels (on pool threads) read the replica too: had one read the primary, it would have
    # ranked the zebra (its caption is the query), and the page, read from the replica, would lack its row.
    assert [hit.position for hit in response.hits] == list(range(1, len(response.hits) + 1))
    assert any("<=>" in sql for sql in reads(on_replica)), "the index query ran on the replica"
    assert any("searchapp_image" in sql and "array" in sql.lower() for sql in reads(on_replica)), "page rows"
    assert not any(sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")) for sql in reads(on_replica))
    assert any("feedback_searchevent" in q["sql"] and "INSERT" in q["sql"] for q in on_primary.captured_queries)
    assert not any("<=>" in q["sql"] for q in on_primary.captured_queries)

    # A click right after the search finds its event: feedback reads and writes the primary.
    hit = response.hits[0]
    record_click(
        VIEWER, ClickInput(event_id=response.event_id, image_id=hit.image.pk, position=hit.position, client_id="c-1")
    )
    assert Click.objects.filter(event_id=response.event_id).count() == 1
    assert SearchEvent.objects.filter(pk=response.event_id).exists()

    replica.resume_replay()
    caught_up(replica)
    assert zebra.pk in found(service.search(SearchRequest(text=NEW_CAPTION, page_size=20)))


def test_a_lagging_replica_is_skipped_and_a_quiet_caught_up_one_is_not(replica, settings):
    settings.LOUPE_REPLICA_MAX_LAG_SECONDS = 0.5
    service = SearchService()
    build_collection(service)
    caught_up(replica)
    # Nothing commits for longer than the limit: the last replayed commit is old, yet the replica is current.
    time.sleep(1.0)
    assert replica_health.state(ALIAS).usable and replica_health.state(ALIAS).lag_seconds == 0.0

    replica.pause_replay()
    zebra = add_zebra()
    replica.wait_for(primary_lsn(connection), replayed=False)  # received, not replayed: it lags
    time.sleep(0.6)
    skipped_before = counted(DEFAULT_DB_ALIAS, "replicas_unusable")
    with CaptureQueriesContext(connections[ALIAS]) as on_replica:
        response = service.search(SearchRequest(text=NEW_CAPTION, page_size=20))

    assert zebra.pk in found(response)  # the primary answered
    assert reads(on_replica) == []
    state = replica_health.state(ALIAS)
    assert not state.usable and state.reason.startswith("lags")
    assert counted(DEFAULT_DB_ALIAS, "replicas_unusable") == skipped_before + 1


def test_a_replica_stopped_mid_test_leaves_searches_working_from_the_primary(replica, settings):
    settings.LOUPE_REPLICA_CHECK_SECONDS = 3600  # it was fine at its last check: the search tries it
    service = SearchService()
    images = build_collection(service)
    caught_up(replica)
    assert service.search(SearchRequest(text="caption 3 of a test picture")).hits  # connections to it are open
    failed_before = counted(DEFAULT_DB_ALIAS, "replica_failed")

    replica.stop()
    response = service.search(SearchRequest(text="caption 3 of a test picture"), VIEWER)

    assert images[3].pk in found(response) and response.event_id is not None
    assert counted(DEFAULT_DB_ALIAS, "replica_failed") == failed_before + 1
    assert replica_health.state(ALIAS).reason.startswith("down")
    assert REPLICA_LAG_SECONDS.labels(ALIAS)._value.get() == math.inf  # what Prometheus scrapes
    # The next search does not try it again until its retry time: straight to the primary.
    skipped_before = counted(DEFAULT_DB_ALIAS, "replicas_unusable")
    assert images[5].pk in found(service.search(SearchRequest(text="caption 5 of a test picture")))
    assert counted(DEFAULT_DB_ALIAS, "replicas_unusable") == skipped_before + 1
    assert SearchEvent.objects.filter(pk=response.event_id).exists()


def test_a_search_inside_a_transaction_on_the_primary_reads_its_own_writes(replica):
    service = SearchService()
    build_collection(service)
    caught_up(replica)
    before = counted(DEFAULT_DB_ALIAS, "in_transaction")
    with transaction.atomic():
        zebra = add_zebra()  # not committed: only this transaction sees it
        assert zebra.pk in found(service.search(SearchRequest(text=NEW_CAPTION, page_size=20)))
    assert counted(DEFAULT_DB_ALIAS, "in_transaction") == before + 1


def test_rows_read_from_a_replica_are_written_to_the_primary_and_replicas_are_never_migrated(replica):
    build_collection(SearchService())
    caught_up(replica)
    image = Image.objects.using(ALIAS).order_by("pk").first()
    image.licence = "CC0"
    image.save()  # the router sends it to the primary: a replica would refuse a write
    assert Image.objects.get(pk=image.pk).licence == "CC0"
    router = PrimaryRouter()
    assert not router.allow_migrate(ALIAS, "searchapp") and router.allow_migrate(DEFAULT_DB_ALIAS, "searchapp")
