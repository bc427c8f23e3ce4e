from django.apps import AppConfig


class RankingConfig(AppConfig):
    name = "ranking"

    def ready(self) -> None:
        from collection.takedown import images_removed  # noqa: PLC0415 (apps load before models import)
        from ranking.finetune.state_files import forget_removed_images  # noqa: PLC0415 (needs settings)

        # The fine-tuning hidden states live in files the takedown's foreign keys cannot reach.
        images_removed.connect(forget_removed_images, dispatch_uid="ranking-forget-tower-states")
