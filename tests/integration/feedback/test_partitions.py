"""The search log partitioned by day (feedback.partitions, migration 0021): days made ahead, a day made around
a legacy id that falls in it (the id stays in the default with its list and its click), a time range that
reads only its days, a click right after a search finding its event, and the command."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from core.ids import uuid7
from feedback.capture import ClickInput, record_click
from feedback.models import Click, Impression, SearchEvent
from feedback.partitions import LogDay, create_partitions_ahead, day_floor, event_ids_between
from tests.analytics_traffic import encoder_version, traffic_images
from tests.integration.feedback.conftest import ALICE

pytestmark = pytest.mark.django_db


def partition_of(table: str, key: str, value) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {table} WHERE {key} = %s", [value])
        return cursor.fetchone()[0]


def bounds_of(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = %s", [name])
        row = cursor.fetchone()
    return row[0] if row else ""


def version4_id_on(day: date) -> uuid.UUID:
    """A version 4 (random) id whose first 48 bits happen to read as ``day`` at noon: old ids can."""
    noon = day_floor(day).int + ((12 * 3600 * 1000) << 80)
    value = (noon | 0x1234_5678_9ABC_DEF0_1234) & ~(0xF << 76) | (0x4 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    found = uuid.UUID(int=value)
    assert found.version == 4
    return found


def logged_event(event_id: uuid.UUID, images: list, user: str = "anon:partitions") -> SearchEvent:
    event = SearchEvent.objects.create(
        id=event_id,
        user_key=user,
        kind="text",
        query_text="red bicycle",
        normalised_query="red bicycle",
        page_size=2,
        encoder_version=encoder_version(),
        result_count=2,
    )
    Impression.objects.bulk_create(
        Impression(event=event, image=image, position=p, score=1.0) for p, image in enumerate(images, start=1)
    )
    return event


def test_migrate_made_today_and_the_days_ahead_and_the_task_makes_the_next():
    today = datetime.now(UTC).date()
    for offset in range(8):  # LOUPE_LOG_PARTITION_DAYS_AHEAD = 7
        for table in ("feedback_searchevent", "feedback_impression"):
            low, high = LogDay(table, today + timedelta(days=offset)).bounds
            assert bounds_of(LogDay(table, today + timedelta(days=offset)).name) == (
                f"FOR VALUES FROM ('{low}') TO ('{high}')"
            )
    assert bounds_of("feedback_searchevent_default") == "DEFAULT"

    later = today + timedelta(days=30)
    made = create_partitions_ahead(today=later, days_ahead=2)
    assert made.created == [later, later + timedelta(days=1), later + timedelta(days=2)]
    assert bounds_of(LogDay("feedback_impression", later + timedelta(days=2)).name)
    assert create_partitions_ahead(today=later, days_ahead=2).created == []  # run again: nothing to do


def test_a_legacy_id_in_a_new_days_range_stays_in_the_default_and_the_day_is_made_around_it():
    images = traffic_images(2)
    day = datetime.now(UTC).date() + timedelta(days=40)
    legacy = logged_event(version4_id_on(day), images)
    Click.objects.create(event=legacy, image=images[0], position=1, user_key=legacy.user_key, client_id="legacy")

    assert create_partitions_ahead(today=day, days_ahead=0).created == [day]

    low, high = LogDay("feedback_searchevent", day).bounds
    after = uuid.UUID(int=legacy.id.int + 1)
    for table in ("feedback_searchevent", "feedback_impression"):
        name = LogDay(table, day).name
        assert bounds_of(name) == f"FOR VALUES FROM ('{low}') TO ('{legacy.id}')"
        assert bounds_of(f"{name}_2") == f"FOR VALUES FROM ('{after}') TO ('{high}')"
    assert partition_of("feedback_searchevent", "id", legacy.id) == "feedback_searchevent_default"
    assert partition_of("feedback_impression", "event_id", legacy.id) == "feedback_impression_default"
    # New searches of that day land in its pieces, on both sides of the old id.
    for ms_offset in (1, 20 * 3600 * 1000):
        event = logged_event(uuid7(int((low.int >> 80) + ms_offset)), images, user="anon:later")
        assert partition_of("feedback_searchevent", "id", event.id).startswith(LogDay("feedback_searchevent", day).name)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the deferred foreign keys hold now, not only at commit


def test_a_time_range_reads_only_its_days():
    images = traffic_images(2)
    today = datetime.now(UTC).date()
    morning = datetime.combine(today, datetime.min.time(), tzinfo=UTC) + timedelta(hours=6)
    logged_event(uuid7(int(morning.timestamp() * 1000)), images)
    low, high = event_ids_between(morning - timedelta(hours=1), morning + timedelta(hours=1))
    with connection.cursor() as cursor:
        cursor.execute(
            """EXPLAIN (FORMAT TEXT) SELECT e.normalised_query, im.image_id
            FROM feedback_searchevent e JOIN feedback_impression im ON im.event_id = e.id
            WHERE e.id >= %(low)s AND e.id < %(high)s AND im.event_id >= %(low)s AND im.event_id < %(high)s""",
            {"low": low, "high": high},
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SELECT count(*) FROM feedback_searchevent WHERE id >= %s AND id < %s", [low, high])
        assert cursor.fetchone()[0] == 1
    # Every table or index the plan reads is of today's partitions: no other day, and not the default.
    tag = f"_p{today:%Y%m%d}"
    touched = {word for word in plan.replace("(", " ").split() if word.startswith("feedback_")}
    assert touched and all(
        name.startswith((f"feedback_searchevent{tag}", f"feedback_impression{tag}")) for name in touched
    ), plan


def test_a_click_right_after_a_search_finds_its_event(logged_search):
    event_id = logged_search.event_id
    assert partition_of("feedback_searchevent", "id", event_id) == (
        f"feedback_searchevent_p{datetime.now(UTC).date():%Y%m%d}"
    )
    first = logged_search.hits[0]
    given = ClickInput(event_id=str(event_id), image_id=first.image.pk, position=first.position, client_id="now")
    recorded = record_click(ALICE, given)
    assert recorded.created and recorded.item.event_id == event_id


def test_the_command_lists_the_days_and_refuses_a_negative_horizon():
    out = StringIO()
    call_command("log_partitions", "list", stdout=out)
    listed = out.getvalue()
    assert "feedback_searchevent_default" in listed and "DEFAULT" in listed
    assert f"feedback_impression_p{datetime.now(UTC).date():%Y%m%d}" in listed
    with pytest.raises(CommandError, match="--days-ahead must be 0 or more"):
        call_command("log_partitions", "create", "--days-ahead", "-1")
