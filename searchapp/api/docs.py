"""The API docs pages under the Content-Security-Policy (docs/security.md).

Swagger UI keeps to the strict policy as it is (``SpectacularSwaggerSplitView`` serves its start script
from a URL). Redoc cannot: its bundle writes its styles into ``<style>`` elements at run time
(styled-components). Those elements carry a nonce that Redoc is given, and only this page's policy
allows that one nonce for styles; scripts stay ``'self'`` only.
"""

from __future__ import annotations

import secrets

from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularRedocView

from core.security_headers import allow_style_nonce


class RedocView(SpectacularRedocView):
    template_name = "api/redoc.html"

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        nonce = secrets.token_urlsafe(16)
        response.data["style_nonce"] = nonce
        allow_style_nonce(request._request, nonce)  # the HttpRequest the middleware sees, not DRF's wrapper
        return response
