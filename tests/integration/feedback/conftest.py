"""Builders for feedback tests: a logged search, API keys."""

from __future__ import annotations

import pytest

from feedback.api_keys import issue_key
from feedback.identity import Viewer
from searchapp.search import SearchRequest

ALICE = Viewer(user_key="anon:alice-token-0000000000", session="s1")


@pytest.fixture
def logged_search(service, collection):
    """A text search by ALICE, logged: (response, its hits by position)."""
    response = service.search(SearchRequest(text="a test picture", page_size=6), ALICE)
    assert response.event_id is not None
    return response


def key_with(*scopes: str, per_minute: int = 600) -> str:
    return issue_key("partner app", list(scopes), requests_per_minute=per_minute).plaintext


def bearer(plaintext: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}
