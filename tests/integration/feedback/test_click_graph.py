"""The feedback retrieval channel (feedback.click_graph): what people chose comes back, and nothing less does.

Real searches, clicks, ratings and summary refreshes over the twelve-image collection and the demo CLIP.
The text channels are off where the test is about depth, so CLIP's list is the first stage and goes
``page_size + 1`` deep: an image CLIP ranks 6th or lower for a page of 4 is beyond what the first stage
hands on, and only the feedback channel can bring it.
"""

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from feedback.capture import ClickInput, RatingInput, record_click, record_rating
from feedback.click_graph import MIN_TRUSTED_USERS, PAST_QUERY_TABLE, TOP_VIEW, chosen_images
from feedback.erasure import erase_user_key, key_digest
from feedback.identity import Viewer
from feedback.models import ErasedUser
from feedback.summaries import refresh_summaries
from ranking.experiments.actions import start
from searchapp.search import SearchRequest
from tests.integration.experiments.conftest import make_experiment

pytestmark = pytest.mark.django_db

QUERY = "a red bicycle"
PARAPHRASE = "a red bike"  # demo CLIP cosine to QUERY 0.94: above the channel's 0.9
UNRELATED = "a plate of pasta"  # 0.82: below it
PAGE = 4  # the first stage goes PAGE + 1 deep


@pytest.fixture(autouse=True)
def clip_only(settings):
    settings.LOUPE_TEXT_CHANNEL = False
    settings.LOUPE_FEEDBACK_CHANNEL = True


def accounts(n: int, start: int = 0) -> list[Viewer]:
    """Established identities: an account counts 1 in feedback.trust."""
    return [Viewer(user_key=f"account:{start + i}", network=f"home-{start + i}") for i in range(n)]


def clip_order(service, text: str) -> list[int]:
    return [hit.image.pk for hit in service.search(SearchRequest(text=text, page_size=12)).hits]


def first_page(service, text: str) -> list[int]:
    return [hit.image.pk for hit in service.search(SearchRequest(text=text, page_size=PAGE)).hits]


def deep_for_both(service) -> int:
    """An image CLIP ranks beyond the first stage's depth for QUERY and for PARAPHRASE."""
    query, paraphrase = clip_order(service, QUERY), clip_order(service, PARAPHRASE)
    deep = [i for i in query[PAGE + 1 :] if i in paraphrase[PAGE + 1 :]]
    assert deep, "the collection needs an image CLIP ranks low for both phrasings"
    return deep[-1]


def choose(service, viewers: list[Viewer], image_id: int, *, text: str = QUERY, times: int = 1) -> None:
    """Each viewer searches ``text`` ``times`` times (all twelve images shown) and clicks ``image_id``."""
    for viewer in viewers:
        for n in range(times):
            response = service.search(SearchRequest(text=text, page_size=12), viewer)
            hit = next(h for h in response.hits if h.image.pk == image_id)
            record_click(viewer, ClickInput(str(response.event_id), image_id, hit.position, f"c{n}-{image_id}"))


def top_list(query: str = QUERY) -> dict[int, float]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT image_id, trusted_users FROM {TOP_VIEW} WHERE query = %s", [query])
        return dict(cursor.fetchall())


def test_the_demo_model_puts_the_paraphrase_near_and_the_unrelated_query_far(service, settings):
    """The premise of the paraphrase tests, checked rather than assumed."""
    vectors = service.encoder.encode_texts([QUERY, PARAPHRASE, UNRELATED])
    near, far = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert near >= settings.LOUPE_FEEDBACK_CHANNEL_MIN_SIMILARITY > far


def test_one_click_does_not_make_a_result(service, collection):
    target = deep_for_both(service)
    choose(service, accounts(1), target)
    refresh_summaries()
    assert top_list() == {}
    assert target not in first_page(service, QUERY)


def test_many_clicks_from_one_identity_do_not_make_a_result(service, collection):
    target = deep_for_both(service)
    choose(service, accounts(1), target, times=4)
    with connection.cursor() as cursor:  # one click a day, so feedback.trust's daily cap leaves each counting
        cursor.execute(
            "UPDATE feedback_click c SET created_at = c.created_at - n.nth * interval '1 day'"
            " FROM (SELECT id, row_number() OVER (ORDER BY id) AS nth FROM feedback_click) n WHERE n.id = c.id"
        )
    refresh_summaries()
    assert top_list() == {}  # one identity votes once, however often it clicks
    assert target not in first_page(service, QUERY)


def test_new_identities_count_by_their_trust(service, collection):
    """As many new identities as the floor's number of accounts weigh 0.25 each: not enough."""
    target = deep_for_both(service)
    newcomers = [Viewer(user_key=f"anon:new-{n:04d}-0000000000", network=f"net-{n}") for n in range(3)]
    choose(service, newcomers, target)
    refresh_summaries()
    assert top_list() == {}


def test_enough_trusted_users_bring_an_image_the_first_stage_missed(service, collection):
    target = deep_for_both(service)
    assert target not in first_page(service, QUERY) and target not in first_page(service, PARAPHRASE)
    choose(service, accounts(int(MIN_TRUSTED_USERS) - 1), target)
    refresh_summaries()
    assert target not in first_page(service, QUERY)  # one user short of the floor
    choose(service, accounts(1, start=10), target)
    refresh_summaries()
    assert top_list() == {target: pytest.approx(MIN_TRUSTED_USERS)}
    assert target in first_page(service, QUERY)
    assert target in first_page(service, PARAPHRASE)  # a past query near it
    assert target not in first_page(service, UNRELATED)  # a past query too far
    response = service.search(SearchRequest(text=PARAPHRASE, page_size=PAGE))
    hit = next(h for h in response.hits if h.image.pk == target)
    assert hit.channels == ("feedback",)


def test_a_good_rating_on_a_search_is_a_vote(service, collection):
    target = deep_for_both(service)
    choose(service, accounts(int(MIN_TRUSTED_USERS) - 1), target)
    rater = accounts(1, start=20)[0]
    response = service.search(SearchRequest(text=QUERY, page_size=12), rater)
    record_rating(rater, RatingInput(target, 1, "r1", event_id=str(response.event_id), query_text=QUERY))
    refresh_summaries()
    assert target in top_list()


def test_erased_users_do_not_count(service, collection):
    target = deep_for_both(service)
    voters = accounts(int(MIN_TRUSTED_USERS))
    choose(service, voters, target)
    refresh_summaries()
    assert target in first_page(service, QUERY)
    # The marker alone fences the rows (an erasure still deleting in batches): they no longer count.
    ErasedUser.objects.create(key_digest=key_digest(voters[0].user_key), requested_by="test", erased_at=timezone.now())
    refresh_summaries()
    assert top_list() == {} and target not in first_page(service, QUERY)
    with connection.cursor() as cursor:  # the query's vector went with its last top-list row
        cursor.execute(f"SELECT count(*) FROM {PAST_QUERY_TABLE} WHERE query = %s", [QUERY])
        assert cursor.fetchone()[0] == 0
    erase_user_key(voters[0].user_key, partner=None, requested_by="test")
    refresh_summaries()
    assert top_list() == {}


def test_a_switched_off_channel_serves_the_orders_of_before(service, collection, settings):
    """Byte-identical: the same images with the same scores, with the text channels fused too."""
    settings.LOUPE_TEXT_CHANNEL = True
    target = deep_for_both(service)

    def served(text: str) -> list[tuple[int, float]]:
        return [(h.image.pk, h.score) for h in service.search(SearchRequest(text=text, page_size=PAGE)).hits]

    before = {text: served(text) for text in (QUERY, PARAPHRASE)}
    choose(service, accounts(int(MIN_TRUSTED_USERS)), target)
    refresh_summaries()
    assert any(served(text) != before[text] for text in before)  # on, the channel changes something
    settings.LOUPE_FEEDBACK_CHANNEL = False
    assert {text: served(text) for text in before} == before


def test_the_channel_scores_by_similarity_and_lift(service, collection):
    """The same string counts at similarity 1; a paraphrase at its cosine; a score is similarity x lift."""
    target = deep_for_both(service)
    choose(service, accounts(int(MIN_TRUSTED_USERS)), target)
    refresh_summaries()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT lift FROM {TOP_VIEW} WHERE query = %s AND image_id = %s", [QUERY, target])
        lift = cursor.fetchone()[0]
    vectors = service.encoder.encode_texts([QUERY, PARAPHRASE])
    own = chosen_images(service.version, vectors[0], QUERY, depth=10, min_similarity=0.9)
    near = chosen_images(service.version, vectors[1], PARAPHRASE, depth=10, min_similarity=0.9)
    assert [n.id for n in own] == [target] and own[0].score == pytest.approx(lift, rel=1e-4)
    assert [n.id for n in near] == [target]
    assert near[0].score == pytest.approx(float(np.dot(vectors[0], vectors[1])) * lift, rel=1e-3)


def test_an_experiment_arm_can_switch_the_channel_off(service, collection):
    target = deep_for_both(service)
    choose(service, accounts(int(MIN_TRUSTED_USERS)), target)
    refresh_summaries()
    experiment = make_experiment(
        arms=[{"name": "control", "is_control": True}, {"name": "no feedback channel", "feedback_channel": False}]
    )
    start(experiment, "tester")
    seen = {}
    for n in range(16):
        viewer = Viewer(user_key=f"anon:arm-user-{n:04d}-000000")
        response = service.search(SearchRequest(text=QUERY, page_size=PAGE), viewer)
        seen.setdefault(response.arm, set()).add(target in [h.image.pk for h in response.hits])
    assert seen == {"control": {True}, "no feedback channel": {False}}
