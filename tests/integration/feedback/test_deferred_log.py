"""Search logs written after the response by the log writer thread (LOUPE_DEFER_SEARCH_LOG, the default).

These tests commit for real (transactional_db): the writer has its own database connection.
"""

import time
import uuid

import pytest

from core.ids import uuid7
from feedback.capture import ClickInput, UnknownEvent, record_click
from feedback.identity import Viewer
from feedback.log_writer import flush_queued_logs, stop_writer
from feedback.models import Click, Impression, SearchEvent
from searchapp.search import SearchRequest

pytestmark = pytest.mark.django_db(transaction=True)
BOB = Viewer(user_key="anon:bob-token-00000000000", session="s2")


@pytest.fixture
def deferred(settings):
    settings.LOUPE_DEFER_SEARCH_LOG = True
    yield
    assert flush_queued_logs(timeout=10)
    stop_writer()  # its connection would keep the test database from being dropped


def test_the_answer_does_not_wait_for_its_log_and_the_log_arrives(service, collection, deferred):
    response = service.search(SearchRequest(text="a test picture", page_size=6), BOB)
    assert response.event_id is not None and response.event_id.version == 7
    assert flush_queued_logs(timeout=10)
    event = SearchEvent.objects.get(pk=response.event_id)
    shown = list(Impression.objects.filter(event=event).order_by("position").values_list("image_id", flat=True))
    assert shown == [hit.image.pk for hit in response.hits]


def test_a_click_right_after_the_search_waits_for_its_event(service, collection, deferred, monkeypatch):
    import feedback.impressions as impressions

    slow = impressions.write_search_log

    def slow_write(params):
        time.sleep(0.3)  # the writer is behind: the click arrives before the event exists
        return slow(params)

    monkeypatch.setattr(impressions, "write_search_log", slow_write)
    from feedback import log_writer

    stop_writer()
    monkeypatch.setattr(log_writer, "_writers", {})  # a new writer, which uses the slow write
    response = service.search(SearchRequest(text="a test picture", page_size=6), BOB)
    assert not SearchEvent.objects.filter(pk=response.event_id).exists()
    hit = response.hits[2]
    recorded = record_click(BOB, ClickInput(str(response.event_id), hit.image.pk, hit.position, "right-away"))
    assert recorded.created and Click.objects.filter(event_id=response.event_id).count() == 1


def test_an_old_or_unknown_event_is_refused_at_once(service, collection, deferred):
    for made_up in (uuid.uuid4(), uuid7(int(time.time() * 1000) - 3_600_000)):  # no time in it; an hour old
        started = time.monotonic()
        with pytest.raises(UnknownEvent):
            record_click(BOB, ClickInput(str(made_up), collection[0].pk, 1, f"x-{made_up.hex[:8]}"))
        assert time.monotonic() - started < 0.5  # no waiting for an event that cannot be queued


def test_stopping_the_writer_writes_what_is_queued(service, collection, deferred, monkeypatch):
    """What a normal exit runs (atexit): every queued log is written before the process ends."""
    import feedback.impressions as impressions
    from feedback import log_writer

    slow = impressions.write_search_log
    monkeypatch.setattr(impressions, "write_search_log", lambda params: (time.sleep(0.05), slow(params))[1])
    stop_writer()
    monkeypatch.setattr(log_writer, "_writers", {})
    ids = [service.search(SearchRequest(text=f"a test picture {n}", page_size=4), BOB).event_id for n in range(5)]
    assert SearchEvent.objects.filter(pk__in=ids).count() < 5  # still queued
    stop_writer()
    assert SearchEvent.objects.filter(pk__in=ids).count() == 5
