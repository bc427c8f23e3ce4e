"""API shapes of clicks, ratings and their batches."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from collection.models import EXTERNAL_ID_PATTERN, Image
from core.errors import UnknownImage
from feedback.capture import CLIENT_ID, MAX_DWELL_MS, ClickInput, RatingInput
from feedback.identity import PARTNER_USER
from feedback.layout import Layout, parse_layout
from feedback.models import Rating


class NamedImageSerializer(serializers.Serializer):
    """An image named by Loupe's ``image_id`` or by the caller's ``external_id`` (in the key's catalogue,
    given as ``context["catalogue"]``); the external id is resolved to ``image_id`` here."""

    image_id = serializers.IntegerField(min_value=1, max_value=2**62, required=False)
    external_id = serializers.RegexField(
        f"^{EXTERNAL_ID_PATTERN}$", required=False, help_text="Or: your own id of the image (your catalogue's)."
    )

    def validate(self, attrs):
        if ("image_id" in attrs) == ("external_id" in attrs):
            raise serializers.ValidationError({"image_id": "Give exactly one of 'image_id' and 'external_id'."})
        if "external_id" in attrs:
            catalogue = self.context.get("catalogue", "")
            image_id = Image.objects.filter(catalogue=catalogue, external_id=attrs["external_id"]).values_list(
                "pk", flat=True
            )
            if not image_id:
                raise UnknownImage(
                    f"There is no image with external id {attrs['external_id']!r} in this catalogue.",
                    field="external_id",
                )
            attrs["image_id"] = image_id[0]
        return attrs


class ClickSerializer(NamedImageSerializer):
    event_id = serializers.UUIDField(help_text="The event_id of the search whose results were clicked.")
    position = serializers.IntegerField(min_value=1, max_value=10_000, help_text="As given in the search results.")
    client_id = serializers.RegexField(
        CLIENT_ID, help_text="Your id for this click (1-64 chars): sending it again does not count it twice."
    )
    dwell_ms = serializers.IntegerField(required=False, min_value=0, max_value=MAX_DWELL_MS)

    def to_input(self) -> ClickInput:
        data = self.validated_data
        return ClickInput(
            event_id=str(data["event_id"]),
            image_id=data["image_id"],
            position=data["position"],
            client_id=data["client_id"],
            dwell_ms=data.get("dwell_ms"),
        )


class RatingSerializer(NamedImageSerializer):
    value = serializers.IntegerField(min_value=-1, max_value=5, help_text="thumbs: 1 or -1; stars: 1 to 5.")
    scale = serializers.ChoiceField(choices=Rating.Scale.choices, default=Rating.Scale.THUMBS)
    client_id = serializers.RegexField(CLIENT_ID, help_text="Your id for this rating: resending it is harmless.")
    event_id = serializers.UUIDField(required=False, help_text="The search that showed the image, when there was one.")
    query = serializers.CharField(
        required=False, allow_blank=True, max_length=settings.LOUPE_MAX_QUERY_CHARS, help_text="Without event_id."
    )
    user = serializers.RegexField(PARTNER_USER, required=False, help_text="Your end user's id (without event_id).")

    def to_input(self) -> RatingInput:
        data = self.validated_data
        return RatingInput(
            image_id=data["image_id"],
            value=data["value"],
            scale=data["scale"],
            client_id=data["client_id"],
            event_id=str(data["event_id"]) if data.get("event_id") else None,
            query_text=data.get("query", ""),
        )


class LayoutSerializer(serializers.Serializer):
    """The grid one search's results were shown in (``feedback.layout``)."""

    event_id = serializers.UUIDField(help_text="The event_id of the search whose results were laid out.")
    layout = serializers.JSONField(
        help_text='{"columns": 4, "rows_on_screen": [1, 2]}: cards per row (a number, or one per row from the '
        "top when rows differ) and the rows on screen when the results were first shown (optional)."
    )

    def validate_layout(self, value) -> Layout:
        return parse_layout(value)  # LayoutError: a 400 in the API's error shape, naming the part at fault


class LayoutStoredSerializer(serializers.Serializer):
    stored = serializers.BooleanField(help_text="False when a layout was already stored for this search.")


class RecordedSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="item.pk")
    client_id = serializers.CharField(source="item.client_id")
    created = serializers.BooleanField(help_text="False when this client_id was already recorded (a resend).")


def batch_serializer(item_serializer: type[serializers.Serializer]) -> type[serializers.Serializer]:
    class Batch(serializers.Serializer):
        items = serializers.ListField(
            child=serializers.DictField(),
            min_length=1,
            max_length=settings.LOUPE_FEEDBACK_BATCH_MAX,
            help_text=f"Up to {settings.LOUPE_FEEDBACK_BATCH_MAX} items, each as the single endpoint takes it; "
            f"each is recorded or refused on its own.",
        )

    Batch.__name__ = f"{item_serializer.__name__.removesuffix('Serializer')}BatchSerializer"
    return Batch


ClickBatchSerializer = batch_serializer(ClickSerializer)
RatingBatchSerializer = batch_serializer(RatingSerializer)


class BatchItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    client_id = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=["created", "duplicate", "rejected"])
    id = serializers.IntegerField(required=False)
    error = serializers.DictField(required=False)


class BatchResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = BatchItemResultSerializer(many=True)
