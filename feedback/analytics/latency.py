"""Latency as a histogram with geometric buckets, so p50 and p99 over any range come from summed counts.

Bucket 0 holds searches under 1 ms; bucket b >= 1 holds [1.1^(b-1), 1.1^b) ms. A percentile read back
is the bucket's geometric midpoint, within 5% of the exact value (half a bucket's 10% width), which is
finer than the run-to-run spread of the search's own latency (docs/performance.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

RATIO = 1.1
LAST_BUCKET = 250  # 1.1^250 ms is far beyond any timeout: every latency fits

# The bucket of ``latency_ms`` in SQL, as ``bucket_of`` computes it in Python.
BUCKET_SQL = (
    f"CASE WHEN latency_ms < 1 THEN 0 ELSE least({LAST_BUCKET}, floor(ln(latency_ms) / ln({RATIO}))::int + 1) END"
)


def bucket_of(latency_ms: float) -> int:
    if latency_ms < 1:
        return 0
    return min(LAST_BUCKET, math.floor(math.log(latency_ms) / math.log(RATIO)) + 1)


def bucket_midpoint(bucket: int) -> float:
    """The value a bucket stands for: its geometric midpoint (0.5 ms for the bucket under 1 ms)."""
    return 0.5 if bucket == 0 else RATIO ** (bucket - 0.5)


def percentile(counts: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile (0-1) of a histogram {bucket: searches}; None when it holds no search."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))  # nearest-rank definition
    seen = 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen >= rank:
            return bucket_midpoint(bucket)
    return bucket_midpoint(max(counts))


def add_counts(total: dict[int, int], more: Mapping[str | int, int]) -> None:
    """Add a stored histogram (JSON keys are strings) into ``total``."""
    for bucket, n in more.items():
        total[int(bucket)] = total.get(int(bucket), 0) + int(n)
