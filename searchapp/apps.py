from django.apps import AppConfig


class SearchappConfig(AppConfig):
    """The product's face: the search pipeline, pages, the REST API, health and admin actions (no models)."""

    name = "searchapp"
    label = "search"
    verbose_name = "Search"
