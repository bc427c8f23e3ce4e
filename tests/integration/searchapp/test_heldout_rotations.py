"""Which captions each held-out rotation asks and hides; a scored query the fit saw stops the run."""

import pytest

from collection.images import read_image
from collection.ingestion.service import add_image
from searchapp.evaluation import assert_disjoint, held_out_rotations
from searchapp.fusion_fit import LabelledQuery
from searchapp.heldout import HeldOutLeak
from tests.conftest import image_bytes

pytestmark = pytest.mark.django_db


def test_a_caption_repeating_an_earlier_one_is_hidden_with_it_and_never_asked():
    image, _ = add_image(
        read_image(image_bytes(1)),
        captions=[
            "A dog on a beach.",
            "A girl wearing a helmet, holding a baseball bat.",
            "a red bus",
            "A girl wearing a helmet holding a baseball bat",
        ],
    )
    captions = {c.position: c.pk for c in image.captions.all()}
    plans = held_out_rotations(4)
    assert plans[1].queries == [("A girl wearing a helmet, holding a baseball bat.", image.pk)]
    assert sorted(plans[1].hidden) == sorted([captions[1], captions[3]])  # the twin cannot answer it
    assert 3 not in plans  # the twin is never a query of its own
    assert plans[0].hidden == [captions[0]] and plans[2].hidden == [captions[2]]


def labelled(text: str, image_id: int, group: int) -> LabelledQuery:
    return LabelledQuery(text, frozenset({image_id}), {"clip": []}, {}, {}, group=group)


def test_a_scored_query_among_the_fitted_ones_stops_the_run():
    fitted = [labelled("A girl wearing a helmet, holding a bat.", 7, group=1)]
    assert_disjoint(fitted, [labelled("a girl wearing a helmet holding a bat", 8, group=0)])  # another image
    with pytest.raises(HeldOutLeak):
        assert_disjoint(fitted, [labelled("a girl wearing a helmet holding a bat", 7, group=0)])
