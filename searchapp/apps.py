from django.apps import AppConfig


class SearchappConfig(AppConfig):
    name = "searchapp"
    verbose_name = "Search"
