"""Time-ordered event ids: version 7 layout, order, and the age they tell."""

import uuid

from core.ids import created_seconds_ago, uuid7


def test_uuid7_layout_and_order():
    first, second = uuid7(1_700_000_000_000), uuid7(1_700_000_000_001)
    assert first.version == 7 and first.variant == uuid.RFC_4122
    assert first.int >> 80 == 1_700_000_000_000
    assert first < second  # later ids sort later (index locality)
    assert uuid7() != uuid7()  # 74 random bits


def test_created_seconds_ago():
    assert abs(created_seconds_ago(uuid7())) < 1.0
    assert created_seconds_ago(uuid7(0)) > 1e9  # 1970
    assert created_seconds_ago(uuid.uuid4()) is None  # no time in it
