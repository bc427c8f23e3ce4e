from django.apps import AppConfig


class FeedbackConfig(AppConfig):
    name = "feedback"

    def ready(self) -> None:
        from feedback import schema  # noqa: F401, PLC0415 - registers the API key scheme with drf-spectacular
        from feedback.throttling import check_settings  # noqa: PLC0415 - needs the models loaded

        check_settings()
