"""OpenAPI description of the partner key authentication (drf-spectacular picks it up on import)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "feedback.api_keys.ApiKeyAuthentication"
    name = "partnerKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A partner API key (`loupe_...`) from Django admin, as `Authorization: Bearer <key>` "
            "or `X-API-Key: <key>`. Scopes: search, feedback, ingest.",
        }
