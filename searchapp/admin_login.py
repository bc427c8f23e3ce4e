"""The admin sign-in form, with a lockout after repeated failures for one username from one address.

Without it the admin login took passwords as fast as a client could post them. Failures are counted
in the shared throttle cache per (client address, username), so a guesser is stopped after
``LOUPE_ADMIN_LOGIN_FAILURES`` tries for ``LOUPE_ADMIN_LOCKOUT_SECONDS``, while the same account can
still sign in from elsewhere (locking the account itself would let anyone lock the admins out).
While locked, even the right password is refused, so the lockout cannot be used as an oracle.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from core import rate_limits
from feedback.throttling import request_address


def _failures_key(address: str, username: str) -> str:
    pair = f"{address}\n{username.strip().lower()}"
    return f"admin-login:{hashlib.sha256(pair.encode()).hexdigest()[:32]}"


class LockoutAuthenticationForm(AdminAuthenticationForm):
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "locked": (
            "Too many failed sign-ins for this username from your address. "
            "Sign-in is locked for %(minutes)d minutes; try again later."
        ),
    }

    def clean(self):
        key = _failures_key(request_address(self.request), self.data.get("username", ""))
        if rate_limits.count(key) >= settings.LOUPE_ADMIN_LOGIN_FAILURES:
            raise ValidationError(
                self.error_messages["locked"],
                code="locked",
                params={"minutes": max(1, settings.LOUPE_ADMIN_LOCKOUT_SECONDS // 60)},
            )
        try:
            cleaned = super().clean()
        except ValidationError as exc:
            if getattr(exc, "code", None) == "invalid_login":
                rate_limits.add(key, settings.LOUPE_ADMIN_LOCKOUT_SECONDS)
            raise
        rate_limits.reset(key)
        return cleaned
