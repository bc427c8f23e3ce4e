"""User erasure and export: a partner's user forgotten everywhere training looks, or shown everything we hold."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from feedback import erasure
from feedback.api_keys import issue_key
from feedback.capture import ClickInput, RatingInput, record_click, record_rating
from feedback.erasure import key_digest
from feedback.identity import partner_viewer
from feedback.models import Click, ErasedUser, Impression, Rating, SearchEvent
from ranking.experiments.actions import start
from ranking.experiments.results import results
from ranking.finetune.pairs import RelevanceSettings, feedback_pairs
from ranking.models import Experiment
from ranking.propensity import power_law
from ranking.training_data import load_searches
from searchapp.search import SearchRequest
from tests.integration.experiments.conftest import make_experiment
from tests.integration.feedback.conftest import bearer

pytestmark = pytest.mark.django_db
EVERY_PAIR = RelevanceSettings(min_relevance=0.0)


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def partners(collection, settings):
    settings.LOUPE_SWAP_SHARE = 0.0  # the same order for every search: positions name the same images
    settings.LOUPE_EXPLORE_SHARE = 0.0
    issued = issue_key("partner A", ["search", "feedback"]), issue_key("partner B", ["search", "feedback"])
    return [(key.api_key, key.plaintext) for key in issued]


def searched_and_clicked(service, api_key, user: str, position: int, tag: str, query: str = "a test picture"):
    """One search by the partner's ``user`` with a click at ``position`` and a good rating of that image."""
    viewer = partner_viewer(api_key, user)
    response = service.search(SearchRequest(text=query, page_size=8), viewer)
    image = response.hits[position - 1].image.pk
    record_click(viewer, ClickInput(str(response.event_id), image, position, f"click-{tag}"))
    record_rating(viewer, RatingInput(image, 5, f"rating-{tag}", "stars", str(response.event_id)))
    return response, image


def identities_trained_on() -> set[str]:
    return set(load_searches(None, timezone.now() + timedelta(seconds=1), power_law(100)).identities)


def pair_images() -> set[int]:
    return {p.image_id for p in feedback_pairs(None, timezone.now() + timedelta(seconds=1), power_law(100), EVERY_PAIR)}


def test_an_erased_users_events_appear_in_no_later_training_set(api, service, partners):
    (a, plain_a), _ = partners
    _, alices_image = searched_and_clicked(service, a, "alice", 5, "a1")
    _, bobs_image = searched_and_clicked(service, a, "bob", 2, "b1")
    alice, bob = f"partner:{a.prefix}:alice", f"partner:{a.prefix}:bob"
    assert identities_trained_on() == {alice, bob}
    assert {alices_image, bobs_image} <= pair_images()

    response = api.delete("/api/v1/users/alice", **bearer(plain_a))
    assert response.status_code == 200, response.content
    assert response.json() | {"erased_at": None} == {
        "user": "alice",
        "searches": 1,
        "clicks": 1,
        "ratings": 1,
        "erased_at": None,
    }
    assert identities_trained_on() == {bob}
    assert alices_image not in pair_images() and bobs_image in pair_images()
    assert not SearchEvent.objects.filter(user_key=alice).exists()
    assert not Rating.objects.filter(user_key=alice).exists() and not Click.objects.filter(user_key=alice).exists()
    assert Impression.objects.filter(event__user_key=bob).count() == 8  # the other user's lists are whole
    marker = ErasedUser.objects.get()
    assert marker.key_digest == key_digest(alice) and alice not in str(marker.__dict__)
    assert (marker.searches, marker.clicks, marker.ratings) == (1, 1, 1) and marker.finished_at is not None
    again = api.delete("/api/v1/users/alice", **bearer(plain_a))
    assert again.status_code == 200 and again.json()["searches"] == 0  # repeating an erasure is harmless


def test_the_fence_holds_while_rows_remain_and_lets_a_returning_user_in(service, partners):
    """Rows not yet deleted (a batch to come, a late deferred log) are out of training from the request on."""
    (a, _), _ = partners
    _, alices_image = searched_and_clicked(service, a, "alice", 5, "a1")
    searched_and_clicked(service, a, "bob", 2, "b1")
    alice = f"partner:{a.prefix}:alice"
    ErasedUser.objects.create(key_digest=key_digest(alice), requested_by="test", erased_at=timezone.now())
    assert alice not in identities_trained_on() and alices_image not in pair_images()
    later = timezone.now() + erasure.LATE_LOG_GRACE + timedelta(seconds=5)
    SearchEvent.objects.filter(user_key=alice).update(created_at=later)  # as if searched after the erasure
    Rating.objects.filter(user_key=alice).update(created_at=later)
    found = load_searches(None, later + timedelta(seconds=1), power_law(100))
    assert alice in found.identities  # new activity after the erasure is new data


def test_erasure_deletes_in_batches(api, service, partners, monkeypatch):
    (a, plain_a), _ = partners
    monkeypatch.setattr(erasure, "BATCH", 2)
    for n in range(5):
        searched_and_clicked(service, a, "carol", 1 + n, f"c{n}", query=f"a test picture {n}")
    response = api.delete("/api/v1/users/carol", **bearer(plain_a))
    assert response.json()["searches"] == 5 and response.json()["clicks"] == 5 and response.json()["ratings"] == 5
    assert not SearchEvent.objects.exists() and not Impression.objects.exists()


def test_export_holds_exactly_that_users_rows(api, service, partners):
    (a, plain_a), (b, plain_b) = partners
    first, _ = searched_and_clicked(service, a, "alice", 3, "a1")
    second, _ = searched_and_clicked(service, a, "alice", 4, "a2", query="another picture")
    searched_and_clicked(service, a, "bob", 3, "b1")
    searched_and_clicked(service, b, "alice", 3, "other-partner")  # partner B's alice is someone else
    viewer = partner_viewer(a, "alice")
    record_rating(viewer, RatingInput(first.hits[0].image.pk, 1, "no-search", "thumbs", None, "red car"))
    alice = f"partner:{a.prefix}:alice"

    response = api.get("/api/v1/users/alice/export", **bearer(plain_a))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["user"] == "alice"
    assert {s["id"] for s in body["searches"]} == {str(first.event_id), str(second.event_id)}
    assert [s["query"] for s in body["searches"]] == ["a test picture", "another picture"]
    assert {c["id"] for c in body["clicks"]} == set(Click.objects.filter(user_key=alice).values_list("pk", flat=True))
    assert {r["id"] for r in body["ratings"]} == set(Rating.objects.filter(user_key=alice).values_list("pk", flat=True))
    assert len(body["ratings"]) == 3 and any(r["search"] is None and r["query"] == "red car" for r in body["ratings"])
    shown = {s["id"]: [(i["position"], i["image"]) for i in s["impressions"]] for s in body["searches"]}
    assert shown[str(first.event_id)] == [(h.position, h.image.pk) for h in first.hits]


def test_a_partner_cannot_erase_or_read_another_partners_user(api, service, partners):
    (a, _), (b, plain_b) = partners
    searched_and_clicked(service, a, "alice", 3, "a1")
    for path in ("/api/v1/users/alice", f"/api/v1/users/{a.prefix}:alice", f"/api/v1/users/partner:{a.prefix}:alice"):
        refused = api.delete(path, **bearer(plain_b))
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "unknown_user", path
        assert api.get(f"{path}/export", **bearer(plain_b)).status_code == 404
    assert SearchEvent.objects.filter(user_key=f"partner:{a.prefix}:alice").count() == 1
    assert not ErasedUser.objects.exists()


@pytest.mark.parametrize("user", ["x" * 129, "two words", "semi;colon", "%00"])
def test_bad_user_ids_are_a_400_in_the_error_shape(api, partners, user):
    (_, plain_a), _ = partners
    for response in (
        api.delete(f"/api/v1/users/{user}", **bearer(plain_a)),
        api.get(f"/api/v1/users/{user}/export", **bearer(plain_a)),
    ):
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "invalid_request" and "user" in response.json()["error"]["fields"]


def test_erasure_needs_a_key_with_the_feedback_scope(api, partners):
    assert api.delete("/api/v1/users/alice").status_code == 401
    search_only = issue_key("search only", ["search"]).plaintext
    refused = api.delete("/api/v1/users/alice", **bearer(search_only))
    assert refused.status_code == 403 and "feedback" in refused.json()["error"]["message"]
    assert api.get("/api/v1/users/alice/export", **bearer(search_only)).status_code == 403


def test_erasure_is_throttled_per_key(api, service, collection):
    limited = issue_key("tiny", ["feedback"], requests_per_minute=2).plaintext
    codes = [api.get("/api/v1/users/nobody/export", **bearer(limited)).status_code for _ in range(3)]
    assert codes == [404, 404, 429]


def test_admin_erases_the_users_of_selected_searches(admin_client, service, partners):
    (a, _), _ = partners
    searched_and_clicked(service, a, "alice", 3, "a1")
    searched_and_clicked(service, a, "bob", 3, "b1")
    alices = SearchEvent.objects.get(user_key=f"partner:{a.prefix}:alice")
    response = admin_client.post(
        "/admin/feedback/searchevent/", {"action": "erase_users", "_selected_action": [str(alices.pk)]}, follow=True
    )
    assert "Erased 1 user(s): 1 searches, 1 clicks, 1 ratings." in response.content.decode()
    assert list(SearchEvent.objects.values_list("user_key", flat=True)) == [f"partner:{a.prefix}:bob"]
    assert ErasedUser.objects.get().requested_by == "admin admin"
    assert admin_client.get("/admin/feedback/eraseduser/").status_code == 200


def test_an_experiment_loses_an_erased_user_whole(service, partners):
    (a, _), _ = partners
    experiment = make_experiment(
        statistics=Experiment.Statistics.FIXED, arms=[{"name": "control", "is_control": True}, {"name": "treatment"}]
    )
    start(experiment)
    arm_of = {}
    for n in range(6):
        for s in range(2):
            arm_of[n] = searched_and_clicked(service, a, f"user{n}", 2, f"x{n}-{s}")[0].arm

    def counted() -> dict[str, tuple[int, int]]:
        return {arm.variant.name: (arm.users, arm.searches) for arm in results(experiment).arms}

    before = counted()
    assert sum(users for users, _ in before.values()) == 6 and sum(s for _, s in before.values()) == 12
    ErasedUser.objects.create(
        key_digest=key_digest(f"partner:{a.prefix}:user0"), requested_by="test", erased_at=timezone.now()
    )  # the fence alone: rows still there
    fenced = counted()
    assert fenced[arm_of[0]] == (before[arm_of[0]][0] - 1, before[arm_of[0]][1] - 2)
    erasure.erase_user_key(f"partner:{a.prefix}:user1", partner=a, requested_by="test")
    after = counted()
    expected = {name: list(value) for name, value in fenced.items()}
    expected[arm_of[1]][0] -= 1
    expected[arm_of[1]][1] -= 2
    assert after == {name: tuple(value) for name, value in expected.items()}
