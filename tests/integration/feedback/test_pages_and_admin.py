"""Feedback from our own pages (CSRF kept), the user key cookie, admin pages and summaries."""

import re

import pytest
from django.test import Client

from feedback.identity import SESSION_COOKIE, USER_COOKIE
from feedback.models import ApiKey, Click, Rating, SearchEvent
from feedback.summaries import refresh_summaries

pytestmark = pytest.mark.django_db


def searched(client, q="a test picture"):
    """The search's logged event, named by the page itself (its cards carry the event id): the events of one
    test can share a timestamp to the microsecond on a fast machine, so "the latest" would be a guess."""
    response = client.get("/", {"q": q})
    assert response.status_code == 200
    event_id = re.search(r'data-event-id="([0-9a-f-]{36})"', response.content.decode()).group(1)
    return SearchEvent.objects.get(pk=event_id), response


def test_anonymous_visitors_get_a_stable_user_key(collection):
    browser = Client()
    first, response = searched(browser)
    assert USER_COOKIE in response.cookies and SESSION_COOKIE in response.cookies
    assert response.cookies[USER_COOKIE]["httponly"] and response.cookies[USER_COOKIE]["samesite"] == "Lax"
    second, response = searched(browser, "another view")
    assert first.user_key == second.user_key and first.user_key.startswith("anon:")
    assert USER_COOKIE not in response.cookies  # not re-issued
    stranger, _ = searched(Client())
    assert stranger.user_key != first.user_key


def test_a_forged_cookie_value_is_replaced(collection):
    browser = Client()
    browser.cookies[USER_COOKIE] = "account:1"  # not a token: cannot pose as an account
    event, response = searched(browser)
    assert event.user_key.startswith("anon:") and event.user_key != "anon:account:1"
    assert USER_COOKIE in response.cookies


def test_logged_in_users_are_keyed_by_account(admin_client, admin_user, collection):
    event, _ = searched(admin_client)
    assert event.user_key == f"account:{admin_user.pk}"


def test_page_feedback_keeps_csrf_protection(collection):
    browser = Client(enforce_csrf_checks=True)
    event, response = searched(browser)
    image = event.impressions.get(position=1).image_id
    form = {"event_id": str(event.pk), "image_id": image, "position": 1, "client_id": "c1"}
    assert browser.post("/feedback/click", form).status_code == 403
    token = re.search(r'name="csrf-token" content="([^"]+)"', response.content.decode()).group(1)
    accepted = browser.post("/feedback/click", {**form, "csrfmiddlewaretoken": token})
    assert accepted.status_code == 201 and accepted.json()["created"] is True
    assert browser.post("/feedback/click", {**form, "csrfmiddlewaretoken": token}).status_code == 200
    rated = browser.post("/feedback/rate", {"image_id": image, "value": -1, "client_id": "r1"}, HTTP_X_CSRFTOKEN=token)
    assert rated.status_code == 201 and Rating.objects.get().value == -1
    bad = browser.post("/feedback/rate", {"image_id": "x", "value": 1, "client_id": "r2"}, HTTP_X_CSRFTOKEN=token)
    assert bad.status_code == 400 and bad.json()["error"]["fields"] == {"image_id": "image_id must be a whole number."}
    assert browser.get("/feedback/click").status_code == 405
    assert Click.objects.count() == 1


def test_summaries_count_impressions_clicks_and_ratings(client, collection):
    event, _ = searched(client)
    first = event.impressions.get(position=1).image_id
    token = client.cookies["csrftoken"].value
    client.post(
        "/feedback/click",
        {"event_id": str(event.pk), "image_id": first, "position": 1, "client_id": "c", "csrfmiddlewaretoken": token},
    )
    client.post(
        "/feedback/rate",
        {
            "image_id": first,
            "value": 5,
            "scale": "stars",
            "client_id": "r",
            "event_id": str(event.pk),
            "csrfmiddlewaretoken": token,
        },
    )
    searched(client)  # the same query again, no click
    refresh_summaries()
    from feedback.models import ImageFeedbackSummary, QueryFeedbackSummary

    image = ImageFeedbackSummary.objects.get(image_id=first)
    assert (image.impressions, image.clicks, image.ratings, image.mean_utility) == (2, 1, 1, 1.0)
    assert image.click_through_rate == 0.5
    query = QueryFeedbackSummary.objects.get(query="a test picture")
    assert (query.searches, query.users, query.clicks, query.ratings) == (2, 1, 1, 1)
    assert query.abandonment == 0.5 and query.impressions == 2 * event.result_count


def test_admin_browses_feedback_and_summaries(admin_client, collection):
    event, _ = searched(admin_client)
    refresh_summaries()
    for url in (
        "/admin/feedback/searchevent/",
        f"/admin/feedback/searchevent/{event.pk}/change/",
        "/admin/feedback/click/",
        "/admin/feedback/rating/",
        "/admin/feedback/imagefeedbacksummary/",
        "/admin/feedback/queryfeedbacksummary/",
        "/admin/feedback/searchevent/?surface=web&kind=text",
        "/admin/feedback/searchevent/?q=picture",
    ):
        assert admin_client.get(url).status_code == 200, url
    detail = admin_client.get(f"/admin/feedback/searchevent/{event.pk}/change/").content.decode()
    assert "a test picture" in detail and detail.count("<img") >= event.result_count
    assert (
        admin_client.post(
            "/admin/feedback/queryfeedbacksummary/", {"action": "refresh_now", "index": 0}, follow=True
        ).status_code
        == 200
    )


def test_admin_creates_a_key_shown_once_and_revokes_it(admin_client, collection):
    response = admin_client.post(
        "/admin/feedback/apikey/add/",
        {"name": "Acme", "scopes": ["search", "feedback"], "requests_per_minute": 100},
        follow=True,
    )
    plaintext = re.search(r'data-testid="new-api-key">([^<]+)<', response.content.decode()).group(1)
    stored = ApiKey.objects.get()
    assert stored.scopes == ["search", "feedback"] and plaintext.startswith(f"loupe_{stored.prefix}_")
    assert plaintext not in admin_client.get(f"/admin/feedback/apikey/{stored.pk}/change/").content.decode()
    assert Client().get("/api/v1/search", {"q": "x"}, HTTP_AUTHORIZATION=f"Bearer {plaintext}").status_code == 200
    admin_client.post("/admin/feedback/apikey/", {"action": "revoke", "_selected_action": [stored.pk]})
    assert Client().get("/api/v1/search", {"q": "x"}, HTTP_AUTHORIZATION=f"Bearer {plaintext}").status_code == 401


def test_feedback_pages_are_not_editable_in_admin(admin_client, collection):
    assert admin_client.get("/admin/feedback/click/add/").status_code == 403
    assert admin_client.get("/admin/feedback/searchevent/add/").status_code == 403
