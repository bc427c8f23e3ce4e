from django.apps import AppConfig
from django.db.models.signals import post_migrate


class FeedbackConfig(AppConfig):
    name = "feedback"

    def ready(self) -> None:
        from feedback import schema  # noqa: F401, PLC0415 - registers the API key scheme with drf-spectacular
        from feedback.throttling import check_settings  # noqa: PLC0415 - needs the models loaded

        check_settings()
        post_migrate.connect(create_log_partitions_ahead, sender=self)


def create_log_partitions_ahead(sender, **kwargs) -> None:
    """Every migrate brings the log's day partitions up to date (the beat task keeps them so)."""
    from feedback.partitions import create_partitions_ahead  # noqa: PLC0415 - needs the apps loaded

    create_partitions_ahead()
