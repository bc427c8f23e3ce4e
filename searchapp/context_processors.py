"""Template context shared by every page."""

from __future__ import annotations

from collection.encoders import DEMO_NOTICE, serving_encoder
from collection.model_names import public_model_name


def encoder_notice(request) -> dict:
    """The demo-model banner, shown on every page while the random-weight demo model serves."""
    choice = serving_encoder()
    if choice.encoder.is_demo:
        return {
            "demo_notice": DEMO_NOTICE,
            "demo_requested_model": public_model_name(choice.requested_ref) if choice.fell_back else "",
        }
    return {}
