"""Test settings: the product's settings with a separate var/ folder and the tiny demo model.

Tests never reach for the hub: the encoder is the demo model, loaded through the same code path
as any model folder, and fallback is off so a broken model fails loudly instead of falling back.
"""

import os
from pathlib import Path

_TEST_VAR = Path(__file__).resolve().parent.parent / "var" / "test"
os.environ.setdefault("LOUPE_VAR_DIR", str(_TEST_VAR))
os.environ.setdefault("LOUPE_CLIP_MODEL", str(Path(os.environ["LOUPE_VAR_DIR"]) / "models" / "tiny-clip"))
os.environ.setdefault("LOUPE_DEMO_MODEL_DIR", os.environ["LOUPE_CLIP_MODEL"])
os.environ.setdefault("LOUPE_ENCODER_FALLBACK", "false")

from config.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Most tests run inside a transaction that other connections cannot see, so the text channels run
# in the test's own thread; tests/integration/collection/test_text_channel.py runs them in parallel on purpose.
LOUPE_PARALLEL_CHANNELS = False

# No randomly swapped result pairs in tests (tests that need the propensity slice turn it on).
LOUPE_SWAP_SHARE = 0.0
LOUPE_EXPLORE_SHARE = 0.0
LOUPE_EXPERIMENT_CHECK_SECONDS = 0

# Whole served orders are not reused between searches in tests (collections change inside a test);
# tests/integration/searchapp/test_result_cache.py turns it on.
LOUPE_RESULT_CACHE_SECONDS = 0

# Throttle counters in this process's memory, emptied before each test (tests/conftest.py), so one
# test's requests never count against another's; tests/integration/feedback/test_throttling.py
# runs them on the real Redis.
CACHES = {**CACHES, "throttle": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "throttle"}}  # noqa: F405

# Image vectors come from eager PyTorch in tests, so that vectors stored by one path and recomputed by another
# compare exactly; tests/integration/collection/test_fast_image.py turns the ONNX/int8 image tower on.
LOUPE_ONNX_IMAGE = False
