"""Throttles on search and feedback (issue 19, item 7), and the admin sign-in lockout.

The counters run on the embedded Redis (the production cache) in the tests marked so, and on the
per-process memory cache of tests/settings.py elsewhere; the logic is the same.
"""

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from rest_framework.test import APIClient

from config.settings import _throttle_redis_url
from core.embedded import embedded_redis
from feedback.throttling import check_settings
from tests.integration.feedback.conftest import bearer, key_with

pytestmark = pytest.mark.django_db

SEARCH = "/api/v1/search"


def _redis_cache(url: str) -> dict:
    """The production throttle cache (config/settings.py) at ``url``."""
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": url,
        "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
    }


@pytest.fixture
def redis_throttle(settings):
    """The throttle cache on the real (embedded) Redis, as in production, emptied first."""
    url = _throttle_redis_url(embedded_redis(django_settings.VAR_DIR).acquire())
    settings.CACHES = {**settings.CACHES, "throttle": _redis_cache(url)}
    caches["throttle"].clear()
    try:
        yield
    finally:
        caches["throttle"].clear()
        embedded_redis(django_settings.VAR_DIR).release()


def assert_throttled(response):
    assert response.status_code == 429, response.content
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == "throttled" and body["error"]["message"]
    assert 1 <= int(response["Retry-After"]) <= 60
    return body


def test_anonymous_api_search_is_throttled_per_address_on_redis(settings, redis_throttle, collection):
    settings.LOUPE_THROTTLE_ANON_SEARCH = "3/min"
    api = APIClient()
    assert [api.get(SEARCH, {"q": "photo"}).status_code for _ in range(3)] == [200, 200, 200]
    assert_throttled(api.get(SEARCH, {"q": "photo"}))
    # Another address has its own budget.
    assert api.get(SEARCH, {"q": "photo"}, REMOTE_ADDR="10.1.2.3").status_code == 200


def test_dropping_a_throttled_key_falls_to_the_address_budget(settings, collection):
    settings.LOUPE_THROTTLE_ANON_SEARCH = "3/min"
    key = key_with("search", per_minute=2)
    api = APIClient()
    assert api.get(SEARCH, {"q": "photo"}).status_code == 200  # anonymous: 1 of 3 from this address
    assert [api.get(SEARCH, {"q": "photo"}, **bearer(key)).status_code for _ in range(3)] == [200, 200, 429]
    # Without the header the caller is anonymous again, and the address's count was kept, not reset.
    assert [api.get(SEARCH, {"q": "photo"}).status_code for _ in range(3)] == [200, 200, 429]


def test_a_partner_end_user_has_a_budget_of_their_own(settings, collection):
    settings.LOUPE_THROTTLE_USER_SEARCH = "2/min"
    key = key_with("search")
    api = APIClient()
    statuses = [api.get(SEARCH, {"q": "photo", "user": "alice"}, **bearer(key)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert api.get(SEARCH, {"q": "photo", "user": "bob"}, **bearer(key)).status_code == 200


def test_forwarded_for_counts_only_from_a_trusted_proxy(settings, collection):
    settings.LOUPE_THROTTLE_ANON_SEARCH = "2/min"
    api = APIClient()
    # Not trusted: a made-up X-Forwarded-For is not a fresh budget.
    spoofed = [api.get(SEARCH, {"q": "photo"}, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code for n in range(3)]
    assert spoofed == [200, 200, 429]
    settings.LOUPE_TRUSTED_PROXIES = ["127.0.0.1"]
    # Behind a trusted proxy: the client it names is counted (its own entries on the left cannot help).
    forwarded = {"HTTP_X_FORWARDED_FOR": "1.2.3.4, 203.0.113.7"}
    assert [api.get(SEARCH, {"q": "photo"}, **forwarded).status_code for _ in range(3)] == [200, 200, 429]
    assert api.get(SEARCH, {"q": "photo"}, HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 200


def test_page_search_is_throttled_with_a_page_and_retry_after(settings, collection):
    settings.LOUPE_THROTTLE_ANON_SEARCH = "2/min"
    page = Client()
    assert [page.get("/", {"q": "photo"}).status_code for _ in range(2)] == [200, 200]
    response = page.get("/", {"q": "photo"})
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert b"Too many search requests" in response.content
    assert page.get("/").status_code == 200  # the page itself, without a search, is not counted


def test_page_beacons_are_throttled_per_address_and_per_cookie(settings, db):
    settings.LOUPE_THROTTLE_ANON_FEEDBACK = "2/min"
    settings.LOUPE_THROTTLE_USER_FEEDBACK = "0/min"
    beacon = Client()
    assert [beacon.post("/feedback/click", {}).status_code for _ in range(2)] == [400, 400]
    assert_throttled(beacon.post("/feedback/click", {}))
    assert_throttled(beacon.post("/feedback/rate", {}))
    # Per cookie: one visitor moving between addresses keeps one budget.
    settings.LOUPE_THROTTLE_ANON_FEEDBACK = "0/min"
    settings.LOUPE_THROTTLE_USER_FEEDBACK = "2/min"
    visitor = Client()
    visitor.get("/")  # sets the user key cookie
    codes = [visitor.post("/feedback/rate", {}, REMOTE_ADDR=f"10.0.0.{n}").status_code for n in range(3)]
    assert codes[:2] == [400, 400] and codes[2] == 429


def test_partner_feedback_is_throttled_per_end_user(settings, db):
    settings.LOUPE_THROTTLE_USER_FEEDBACK = "2/min"
    key = key_with("feedback")
    api = APIClient()
    rating = {"image_id": 999999, "value": 1, "client_id": "c1", "user": "alice"}
    codes = [api.post("/api/v1/feedback/ratings", rating, format="json", **bearer(key)).status_code for _ in range(3)]
    assert 429 not in codes[:2] and codes[2] == 429
    assert_throttled(api.post("/api/v1/feedback/ratings", rating, format="json", **bearer(key)))


def test_search_still_answers_when_the_throttle_cache_is_down(settings, collection, tmp_path):
    settings.LOUPE_THROTTLE_ANON_SEARCH = "1/min"
    settings.CACHES = {**settings.CACHES, "throttle": _redis_cache(f"unix://{tmp_path / 'no-redis.sock'}?db=1")}
    api = APIClient()
    assert [api.get(SEARCH, {"q": "photo"}).status_code for _ in range(3)] == [200, 200, 200]


def test_admin_sign_in_locks_an_address_and_username_out(settings, redis_throttle):
    settings.LOUPE_ADMIN_LOGIN_FAILURES = 3
    User.objects.create_user("admin", password="right-horse-battery", is_staff=True, is_superuser=True)
    browser = Client()

    def sign_in(password: str, **extra):
        return browser.post("/admin/login/?next=/admin/", {"username": "admin", "password": password}, **extra)

    for _ in range(3):
        response = sign_in("wrong")
        assert response.status_code == 200 and b"Please enter the correct username" in response.content
    locked = sign_in("right-horse-battery")
    assert locked.status_code == 200 and b"Too many failed sign-ins" in locked.content
    assert b"locked for 15 minutes" in locked.content and "_auth_user_id" not in browser.session
    # The account still signs in from another address.
    elsewhere = sign_in("right-horse-battery", REMOTE_ADDR="10.9.9.9")
    assert elsewhere.status_code == 302 and "_auth_user_id" in browser.session


def test_an_unreadable_throttle_setting_stops_the_start(settings):
    check_settings()
    settings.LOUPE_THROTTLE_ANON_SEARCH = "fast"
    with pytest.raises(ImproperlyConfigured, match="LOUPE_THROTTLE_ANON_SEARCH: 'fast' is not a rate"):
        check_settings()
    settings.LOUPE_THROTTLE_ANON_SEARCH = "120/min"
    settings.LOUPE_TRUSTED_PROXIES = ["nginx"]
    with pytest.raises(ImproperlyConfigured, match="LOUPE_TRUSTED_PROXIES: 'nginx'"):
        check_settings()
