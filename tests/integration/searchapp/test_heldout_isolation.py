"""What the held-out copy cannot hide by itself is refused or checked (audit of issue 18, findings 1, 2, 10).

A streaming replica gets the copy only by WAL replay and ignores a search_path naming a schema it lacks,
so the evaluation refuses to run with one configured. A connection to another alias opened before the
copy still searches the live tables: the visibility check runs on every alias and catches it. Clicks
live in the live tables: a held-out caption searched and chosen from before the evaluation must not
help the served search (the feedback channel is off for both passes). The lexeme counts the full-text
channel reads are compared with ``ts_stat`` over the visible documents.
"""

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections

from feedback.capture import ClickInput, record_click
from feedback.identity import Viewer
from feedback.summaries import refresh_summaries
from searchapp import evaluation
from searchapp.heldout import HeldOut, HeldOutLeak, assert_held_out, collection_without
from searchapp.search import SearchRequest, SearchService
from tests.integration.searchapp.test_heldout_leaks import IMAGES, build_planted_collection, planted_caption


@pytest.fixture
def extra_alias():
    """Another database alias on the primary's database, removed afterwards."""
    added = []

    def add(alias: str, **extra) -> None:
        configured = connections.configure_settings(
            {
                DEFAULT_DB_ALIAS: connections.settings[DEFAULT_DB_ALIAS],
                alias: {**connections.settings[DEFAULT_DB_ALIAS], **extra},
            }
        )
        connections.settings[alias] = configured[alias]
        added.append(alias)

    yield add
    for alias in added:
        connections[alias].close()
        del connections[alias]
        del connections.settings[alias]


def held_out_first_captions(images) -> HeldOut:
    captions = [image.captions.get(position=0).pk for image in images]
    return HeldOut(captions=captions, images=[image.pk for image in images])


@pytest.mark.django_db(transaction=True)
def test_the_evaluation_refuses_to_run_with_streaming_replicas_configured(extra_alias):
    service = SearchService()
    build_planted_collection()
    extra_alias("replica1", LOUPE_REPLICA=True)
    with pytest.raises(HeldOutLeak, match="Streaming replicas are configured"):
        evaluation.held_out_captions(service, rotations=2)


@pytest.mark.django_db(transaction=True)
def test_lexeme_counts_that_still_count_a_held_out_caption_are_caught():
    from collection.text_channels import shutdown_pool

    images = build_planted_collection()
    held = held_out_first_captions(images)
    try:
        with collection_without(held) as schema:
            with connection.cursor() as cursor:  # the counts as the live view has them: with the held-out words
                cursor.execute(f"DELETE FROM {schema}.searchapp_lexemestat")
                cursor.execute(f"INSERT INTO {schema}.searchapp_lexemestat SELECT * FROM public.searchapp_lexemestat")
            with pytest.raises(HeldOutLeak):
                assert_held_out(held)
    finally:
        shutdown_pool()


@pytest.mark.django_db(transaction=True)
def test_clicks_on_held_out_captions_images_before_the_evaluation_do_not_raise_the_served_metric(settings):
    from collection.text_channels import shutdown_pool

    settings.LOUPE_FEEDBACK_CHANNEL = True  # on in the deployment: the evaluation must switch it off itself
    service = SearchService()
    images = build_planted_collection()
    viewers = [Viewer(user_key=f"account:{i}", network=f"home-{i}") for i in range(4)]
    try:
        # Every held-out caption of both rotations searched and its own image chosen, by enough trusted people.
        for seed, image in enumerate(images):
            for rotation in (0, 1):
                for viewer in viewers:
                    response = service.search(SearchRequest(text=planted_caption(seed, rotation), page_size=12), viewer)
                    hit = next(h for h in response.hits if h.image.pk == image.pk)
                    record_click(
                        viewer, ClickInput(str(response.event_id), image.pk, hit.position, f"c{seed}-{rotation}")
                    )
        refresh_summaries()
        chosen = service.search(SearchRequest(text=planted_caption(0, 0), page_size=12))
        assert chosen.hits[0].image.pk == images[0].pk  # the click graph answers a held-out caption live
        metrics = evaluation.held_out_captions(service, rotations=2, ks=(1, 5, 10))["metrics"]
    finally:
        shutdown_pool()
    guess = 3 / IMAGES  # chance is 1/12; the clicks would give 1.0
    for name in ("served", "served_sequential", "convex_fitted", "rrf_own_weights"):
        assert metrics[name]["recall@1"] <= guess, (name, metrics[name])


REPORTING = "reporting"


@pytest.fixture(scope="module")
def reporting_alias(django_db_setup, django_db_blocker):
    """Another alias on the primary's database, for the rest of the module (so it runs last): added before
    the test's database access is set up, as pytest-django needs."""
    configured = connections.configure_settings(
        {DEFAULT_DB_ALIAS: connections.settings[DEFAULT_DB_ALIAS], REPORTING: connections.settings[DEFAULT_DB_ALIAS]}
    )
    connections.settings[REPORTING] = configured[REPORTING]
    yield REPORTING
    connections[REPORTING].close()
    del connections[REPORTING]
    del connections.settings[REPORTING]


@pytest.mark.django_db(transaction=True, databases=[DEFAULT_DB_ALIAS, REPORTING])
def test_a_connection_to_another_alias_that_still_sees_the_live_tables_stops_the_evaluation(reporting_alias):
    from collection.text_channels import shutdown_pool

    images = build_planted_collection()
    with connections[REPORTING].cursor() as cursor:  # opened before the copy: never re-pathed
        cursor.execute("SELECT 1")
    try:
        with pytest.raises(HeldOutLeak, match=REPORTING), collection_without(held_out_first_captions(images)):
            pass
    finally:
        shutdown_pool()
