from django.apps import AppConfig


class CollectionConfig(AppConfig):
    """The images, their captions, encoder versions and vectors.

    The label stays ``searchapp``: the tables (``searchapp_image``, ...) and migrations were made under
    it before this package had its own folder, and keeping it moves no table.
    """

    name = "collection"
    label = "searchapp"
    verbose_name = "Collection"
