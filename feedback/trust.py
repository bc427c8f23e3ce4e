"""How much each search and click counts: feedback weighted by trust, so that made-up identities cannot outvote users.

User keys cost nothing (any cookie, any partner ``user=``), so a count of rows is a count of whatever
an attacker chose to send: about 420 fake users from one address in 15 s made an image #1 for a query
(issue 19, finding 3). The views of migration 0010 weigh the log instead, and everything that learns
from it reads them: the summaries' ``trusted_*`` columns (the ranking features), the training labels
and weights, and the promotion gate (``ranking.training_data``, ``ranking.gate``).

- **One identity counts once per impression**: only the first click on an (event, image) counts.
- **A bounded number of times per (query, image) per day**: an identity's counted clicks on one image
  for one normalised query on one day beyond ``DAILY_CAP_PER_QUERY_IMAGE`` weigh 0.
- **New identities count less** than established ones: an identity that is not an account starts at
  ``NEW_IDENTITY_WEIGHT`` and reaches 1 linearly with its age (``ESTABLISHED_AGE_DAYS``) or its earlier
  searches (``ESTABLISHED_SEARCHES``), whichever is further. Accounts cost a sign-up and count 1.
- **A burst of new identities from one network is damped**: the identities whose first search came
  from one network (``core.networks``) on one day share ``NETWORK_DAILY_NEWCOMERS`` newcomers' worth;
  beyond that each weighs ``NETWORK_DAILY_NEWCOMERS / newcomers``, for as long as it exists. A thousand
  identities from one /24 then weigh about what 5 new users do, wherever they click.

A search's trust is identity weight x burst weight; a counted click weighs its search's trust; the
trusted examinations are impressions weighted by trust and 1/position. Honest users are weighted the
same way among themselves, so the click-through rates the features read (trusted clicks over trusted
examinations) keep their meaning. The numbers are set in the migration's SQL (frozen); they are
repeated here for the code and the docs, and ``tests/integration/feedback/test_trust.py`` pins them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection

NEW_IDENTITY_WEIGHT = 0.25
ESTABLISHED_AGE_DAYS = 7
ESTABLISHED_SEARCHES = 10
NETWORK_DAILY_NEWCOMERS = 5
DAILY_CAP_PER_QUERY_IMAGE = 2

EVENT_TRUST_VIEW = "feedback_eventtrust"
CLICK_TRUST_VIEW = "feedback_clicktrust"


@dataclass(frozen=True)
class SearchTrust:
    """Who made a search, from which network they first came, and how much their feedback on it counts."""

    user_key: str
    network: str  # the identity's arrival network ("" unknown): what the gate groups by
    weight: float  # identity weight x burst weight, in (0, 1]


def search_trust(event_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, SearchTrust]:
    """The trust of each of these searches (one query)."""
    ids = list(event_ids)
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT event_id, user_key, first_network, identity_weight * burst_weight FROM {EVENT_TRUST_VIEW}"
            " WHERE event_id = ANY(%s::uuid[])",
            [ids],
        )
        return {row[0]: SearchTrust(row[1], row[2], float(row[3])) for row in cursor.fetchall()}


def counted_clicks(event_ids: Iterable[uuid.UUID]) -> dict[tuple[uuid.UUID, int], float]:
    """(event, image) -> the weight of its counted click, for the clicks on these searches that count at all."""
    ids = list(event_ids)
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT event_id, image_id, weight FROM {CLICK_TRUST_VIEW}"
            # A taken-down image's click is kept for position statistics but names no image (collection.takedown).
            " WHERE event_id = ANY(%s::uuid[]) AND weight > 0 AND image_id IS NOT NULL",
            [ids],
        )
        return {(row[0], int(row[1])): float(row[2]) for row in cursor.fetchall()}
