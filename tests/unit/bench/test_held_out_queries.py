"""The learning simulation's held-out sets are what their names say, and a leak stops the run."""

from dataclasses import replace

import pytest

from bench.held_out_queries import (
    LeakageError,
    Query,
    caltech_sets,
    check_held_out,
    check_logs,
    check_traffic,
    coco_sets,
    new_phrasing_traffic,
    normalised,
)

CLASSES = [f"class {n}" for n in range(40)]


def test_caltech_sets_are_disjoint_by_construction():
    sets = caltech_sets(CLASSES, seed=1, per_set=200, zipf=1.1)
    trained = {normalised(q.text) for q in sets.training}
    trained_intents = {q.intent for q in sets.training}
    assert len(sets.new_intents) == 8 and not sets.new_intents & trained_intents
    assert all(normalised(q.text) in trained for q in sets.held_out["repeat"])
    assert not trained & {normalised(q.text) for q in sets.held_out["new_phrasings"]}
    assert {q.intent for q in sets.held_out["new_phrasings"]} <= trained_intents
    assert {q.intent for q in sets.held_out["new_intents"]} <= sets.new_intents


def test_a_held_out_string_in_the_training_traffic_stops_the_simulation():
    sets = caltech_sets(CLASSES, seed=1, per_set=50, zipf=1.1)
    leaked = sets.held_out["new_phrasings"][0]
    with pytest.raises(LeakageError, match="new_phrasings"):
        check_held_out(replace(sets, training=(*sets.training, Query(leaked.text.upper(), leaked.intent))))


def test_a_new_intent_with_training_traffic_stops_the_simulation():
    sets = caltech_sets(CLASSES, seed=2, per_set=50, zipf=1.1)
    intent = sorted(sets.new_intents)[0]
    with pytest.raises(LeakageError, match="new intents with training traffic"):
        check_held_out(replace(sets, training=(*sets.training, Query(f"some other words for {intent}", intent))))


def test_a_held_out_string_found_in_the_search_logs_stops_the_simulation():
    sets = caltech_sets(CLASSES, seed=3, per_set=50, zipf=1.1)
    check_logs(sets, [q.text for q in sets.training])  # training traffic alone is fine
    with pytest.raises(LeakageError, match="search logs"):
        check_logs(sets, [q.text for q in sets.training] + [f"  {sets.held_out['new_intents'][0].text} "])


def test_coco_query_captions_are_never_ingested_and_a_caption_leak_stops_it():
    captions = {f"image-{n}": [f"caption {n} {k}" for k in range(5)] for n in range(30)}
    sets, ingest = coco_sets(captions, seed=1, per_set=40, zipf=1.1)
    ingested = {t for texts in ingest.values() for t in texts}
    for name in ("repeat", "new_phrasings", "new_intents"):
        assert not ingested & {q.text for q in sets.held_out[name]}
    leaked = sets.held_out["new_intents"][0].text
    with pytest.raises(LeakageError, match="collection's captions"):
        check_held_out(sets, collection_texts=[*ingested, leaked])


def test_experiment_traffic_asks_the_trained_intents_as_often_in_new_wordings_only():
    sets = caltech_sets(CLASSES, seed=4, per_set=1, zipf=1.1)
    traffic = new_phrasing_traffic(sets)
    trained = {normalised(q.text) for q in sets.training}
    assert not trained & {normalised(q.text) for q in traffic.training}
    assert [q.intent for q in traffic.training] == [q.intent for q in sets.training]
    assert traffic.weights.tolist() == sets.weights.tolist()
    assert len({q.text for q in traffic.training}) == len(traffic.training)


def test_an_evaluated_query_string_in_the_rankers_training_searches_stops_the_experiments():
    sets = caltech_sets(CLASSES, seed=5, per_set=1, zipf=1.1)
    traffic = new_phrasing_traffic(sets)
    check_traffic(traffic, [q.text for q in sets.training])  # the training strings alone are fine
    with pytest.raises(LeakageError, match="ranker's training searches"):
        check_traffic(traffic, [q.text for q in sets.training] + [f" {traffic.training[-1].text.upper()}"])


def test_a_repeat_query_that_is_not_a_training_string_stops_the_simulation():
    sets = caltech_sets(CLASSES, seed=6, per_set=20, zipf=1.1)
    stray = Query("a drawing of a class 3", "class 3")
    held_out = {**sets.held_out, "repeat": (*sets.held_out["repeat"], stray)}
    with pytest.raises(LeakageError, match="repeat queries that are not training strings"):
        check_held_out(replace(sets, held_out=held_out))


def test_a_new_phrasing_of_an_intent_without_training_traffic_stops_the_simulation():
    sets = caltech_sets(CLASSES, seed=7, per_set=20, zipf=1.1)
    unseen = sorted(sets.new_intents)[0]
    held_out = {
        **sets.held_out,
        "new_phrasings": (*sets.held_out["new_phrasings"], Query(f"an image of a {unseen}", unseen)),
    }
    with pytest.raises(LeakageError, match="new phrasings of intents with no training traffic"):
        check_held_out(replace(sets, held_out=held_out))


def test_a_new_intent_query_for_an_intent_that_was_not_left_out_stops_the_simulation():
    sets = caltech_sets(CLASSES, seed=8, per_set=20, zipf=1.1)
    seen = sets.training[0].intent
    held_out = {
        **sets.held_out,
        "new_intents": (*sets.held_out["new_intents"], Query(f"a close-up of the {seen}", seen)),
    }
    with pytest.raises(LeakageError, match="new-intent queries for intents that are not left out"):
        check_held_out(replace(sets, held_out=held_out))
