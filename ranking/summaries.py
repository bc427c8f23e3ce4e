"""The feedback summaries count examinations by the curve training weighs clicks by.

The ranker's click-rate features (``ranking.features``: clicks over examinations) read the summary
views; training weighs clicks by the swap-estimated examination curve (``ranking.training_data.
estimated_propensity``: the power-law prior where swaps are scarce). Each refresh hands that curve to
the views, so a feature and the training label discount position the same way (issue 17, finding 7).
"""

from __future__ import annotations

from django.conf import settings

from feedback.summaries import refresh_summaries
from ranking.training_data import estimated_propensity


def refresh_with_estimated_curve() -> dict:
    """Refresh the summaries with the current estimated curve; says which positions were estimated."""
    curve = estimated_propensity(None, settings.LOUPE_MAX_CANDIDATES, settings.LOUPE_SWAP_MAX_POSITION)
    took = refresh_summaries(curve.values.tolist())
    estimated = curve.estimated_positions
    source = f"swap-estimated at positions {estimated}" if estimated else "power-law prior (too few swaps yet)"
    return {"seconds": took, "examination_curve": source}
