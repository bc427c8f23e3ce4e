from django.apps import AppConfig


class SearchappConfig(AppConfig):
    """The product's face: the search pipeline, pages, the REST API, health and admin actions (no models)."""

    name = "searchapp"
    label = "search"
    verbose_name = "Search"

    def ready(self) -> None:
        from feedback.erasure import user_erased  # noqa: PLC0415 (apps load before models import)
        from searchapp.result_cache import forget_erased_user  # noqa: PLC0415 (needs settings)

        # An erased user's personalised orders leave this process's result cache with the marker.
        user_erased.connect(forget_erased_user, dispatch_uid="search-forget-personal-orders")
