"""The fine-tune simulation's held-out coco images and captions, and the Caltech images its class precision ranks,
are held out from the base fit, the collection, the pairs, the logs and the reference captions: a leak stops it."""

from dataclasses import replace
from pathlib import Path

import pytest

from bench.finetune_held_out import (
    BASE_FIT_TEMPLATE,
    CocoImage,
    HeldOut,
    check_base_fit,
    check_collection,
    check_precision_pool,
    check_run,
    split_coco,
    split_reference,
)
from bench.held_out_queries import LeakageError, caltech_sets

CLASSES = [f"class {n}" for n in range(40)]


def material() -> HeldOut:
    images = [CocoImage(Path(f"/coco/{n:012d}.jpg"), (f"caption {n} a", f"caption {n} b")) for n in range(200)]
    kept, held = split_coco(images)
    fitted, reference = split_reference(kept)
    labelled = (Path("/caltech/ant/image_0001.jpg"),)
    texts = tuple(c for i in fitted for c in i.captions) + tuple(BASE_FIT_TEMPLATE.format(c) for c in CLASSES)
    sets = caltech_sets(CLASSES, seed=1, per_set=50, zipf=1.1)
    return HeldOut(sets, kept, held, tuple(i.path for i in fitted) + labelled, texts, reference)


def test_the_coco_split_is_stable_and_disjoint():
    held = material()
    assert 30 < len(held.coco_held_out) < 70 and len(held.coco_kept) + len(held.coco_held_out) == 200
    assert not {i.path for i in held.coco_kept} & {i.path for i in held.coco_held_out}
    assert split_coco(held.coco_kept + held.coco_held_out)[1] == held.coco_held_out  # by name, not by order
    check_base_fit(held)
    reference = set(held.coco_reference)  # the guard and gate half: a share of the kept images, by name
    assert 0.3 * len(held.coco_kept) < len(reference) < 0.7 * len(held.coco_kept) and reference < set(held.coco_kept)
    assert split_reference(held.coco_kept[::-1])[1] == held.coco_reference[::-1]


def test_a_reference_coco_image_or_caption_in_the_base_fit_stops_the_run():
    """The guard and gate captions come from the reference half: the base must never have fitted them (audit of
    h4, finding 5: the base was fitted to every kept caption, the gate's included)."""
    held = material()
    reference = held.coco_reference[0]
    with pytest.raises(LeakageError, match="reference coco images"):
        check_base_fit(replace(held, base_fit=(*held.base_fit, reference.path)))
    with pytest.raises(LeakageError, match="reference coco captions"):
        check_base_fit(replace(held, base_fit_texts=(*held.base_fit_texts, reference.captions[0])))


def test_a_held_out_coco_image_or_caption_in_the_base_fit_stops_the_run():
    held = material()
    leaked = held.coco_held_out[0]
    with pytest.raises(LeakageError, match="held-out coco images in the base fit"):
        check_base_fit(replace(held, base_fit=(*held.base_fit, leaked.path)))
    with pytest.raises(LeakageError, match="held-out coco captions in the base fit"):
        check_base_fit(replace(held, base_fit_texts=(*held.base_fit_texts, leaked.captions[1].upper())))


@pytest.mark.parametrize("name", ["repeat", "new_phrasings", "new_intents"])
def test_a_held_out_query_string_in_the_base_fit_stops_the_run(name):
    """The base used to be fitted to "a photo of a <class>", which new-intent queries also drew (audit of h4,
    finding 6); ``run_repetition`` re-runs this check once the query sets exist."""
    held = material()
    check_base_fit(held)  # the base-fit template is no query set's wording
    query = held.queries.held_out[name][0]
    with pytest.raises(LeakageError, match=f"{name} query strings in the base fit"):
        check_base_fit(replace(held, base_fit_texts=(*held.base_fit_texts, f"  {query.text.upper()} ")))


def test_a_held_out_coco_image_or_caption_in_the_collection_stops_the_run():
    held = material()
    sources = [str(i.path) for i in held.coco_kept]
    captions = [c for i in held.coco_reference for c in i.captions]  # the fitted half is ingested without
    check_collection(held, sources, captions)
    with pytest.raises(LeakageError, match="images in the collection"):
        check_collection(held, [*sources, str(held.coco_held_out[2].path)], captions)
    with pytest.raises(LeakageError, match="held-out coco captions in the collection"):
        check_collection(held, sources, [*captions, held.coco_held_out[2].captions[0]])
    fitted = next(i for i in held.coco_kept if i not in held.coco_reference)
    with pytest.raises(LeakageError, match="base-fit captions in the collection"):
        check_collection(held, sources, [*captions, fitted.captions[1]])


def test_a_held_out_caption_or_query_in_what_a_fine_tune_read_stops_the_run():
    held = material()
    first, second = held.coco_reference[:2]
    reference = {"guard": [first.captions[0]], "gate": [second.captions[0]], "anchor": []}
    trained = [q.text for q in held.queries.training]
    check_run(held, trained, trained, reference)
    caption = held.coco_held_out[0].captions[0]
    with pytest.raises(LeakageError, match="held-out coco captions in the search logs"):
        check_run(held, trained, [*trained, caption.upper()], reference)
    fitted = next(i for i in held.coco_kept if i not in held.coco_reference).captions[0]
    with pytest.raises(LeakageError, match="base-fit captions in the fine-tune's gate captions"):
        check_run(held, trained, trained, {**reference, "gate": [fitted]})
    with pytest.raises(LeakageError, match="among the fine-tune's pair queries"):
        check_run(held, [*trained, caption], trained, reference)
    with pytest.raises(LeakageError, match="in the fine-tune's gate captions"):
        check_run(held, trained, trained, {**reference, "gate": [caption]})
    with pytest.raises(LeakageError, match="in the fine-tune's guard captions"):
        check_run(held, trained, trained, {**reference, "guard": [f"  {caption.upper()} "]})
    new_intent = held.queries.held_out["new_intents"][0].text
    with pytest.raises(LeakageError, match="in the search logs"):
        check_run(held, trained, [*trained, new_intent], reference)


def test_an_image_the_base_was_fitted_to_in_the_precision_pool_stops_the_run():
    held = material()
    check_precision_pool(held, ["/caltech/ant/image_0002.jpg"])
    with pytest.raises(LeakageError, match="fitted to in the precision pool"):
        check_precision_pool(held, ["/caltech/ant/image_0002.jpg", "/caltech/ant/image_0001.jpg"])
