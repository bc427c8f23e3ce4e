"""What users told us: the searches they saw, what they clicked and how they rated it.

A ``SearchEvent`` is one served result list (an impression); its ``Impression`` rows are the list
exactly as shown: position, score and the feature vector used at serve time, so training later
sees what serving saw. Clicks and ratings join to the event by its id. Clicks and ratings carry a
client-supplied id, unique per user key, which makes recording them idempotent.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from collection.models import EncoderVersion, Image
from core.ids import uuid7


class SearchEvent(models.Model):
    class Surface(models.TextChoices):
        WEB = "web", "web page"
        API = "api", "partner API"
        SIMULATION = "sim", "simulation"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    user_key = models.CharField(max_length=200, db_index=True, help_text="Who searched (see feedback.identity).")
    session = models.CharField(max_length=64, blank=True)
    network = models.CharField(
        max_length=16,
        blank=True,
        default="",
        help_text="Keyed hash of the client's /24 (IPv4) or /48 (IPv6), core.networks; empty when unknown.",
    )
    surface = models.CharField(max_length=8, choices=Surface.choices, default=Surface.WEB)
    partner = models.ForeignKey(
        "feedback.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="search_events"
    )
    kind = models.CharField(max_length=8, help_text="text, image (uploaded) or similar (image of the collection).")
    query_text = models.TextField(blank=True)
    normalised_query = models.CharField(max_length=500, blank=True, db_index=True)
    query_image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    tags = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    page = models.PositiveIntegerField(default=1)
    page_size = models.PositiveIntegerField()
    experiment = models.ForeignKey(
        "ranking.Experiment",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="events",
        help_text="The experiment the user was in (exposure logging).",
    )
    arm = models.CharField(max_length=100, blank=True, help_text="Experiment arm (variant name), when in one.")
    ranker = models.CharField(max_length=100, default="embedding", help_text="Which ranker ordered the list.")
    encoder_version = models.ForeignKey(EncoderVersion, on_delete=models.PROTECT, related_name="+")
    feature_names = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    swap_position = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="k when positions k and k+1 were swapped on purpose (propensity slice)."
    )
    swap_with = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="The lower position of the swapped pair (a grid swap spans a row); empty: swap_position + 1.",
    )
    # The layout the person saw (feedback.layout), reported by the page's first beacon or the partner API:
    # cards in each row of the rendered grid, top to bottom (the last repeats below), and the rows on screen.
    layout_columns = ArrayField(
        models.PositiveSmallIntegerField(),
        null=True,
        blank=True,
        help_text="Cards in each row as rendered, top to bottom; empty: no layout reported (a list).",
    )
    layout_first_row = models.PositiveSmallIntegerField(null=True, blank=True, help_text="First row on screen.")
    layout_last_row = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Last row on screen.")
    explore_position = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The page position given to a deeper candidate on purpose (exploration slice)."
    )
    explore_from = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Where that explored candidate stood in the served order."
    )
    result_count = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        what = self.query_text or (f"image {self.query_image_id}" if self.query_image_id else self.kind)
        return f"{what!r} by {self.user_key} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class Impression(models.Model):
    """One image as shown in one event's list."""

    event = models.ForeignKey(SearchEvent, on_delete=models.CASCADE, related_name="impressions")
    # A taken-down image leaves its impressions, clicks and ratings detached (NULL; collection.takedown): the
    # list keeps its positions, so the other images' position statistics stay right.
    image = models.ForeignKey(Image, null=True, on_delete=models.SET_NULL, related_name="impressions")
    position = models.PositiveIntegerField(help_text="1-based, over the whole ranked list (page 2 starts after 1).")
    score = models.FloatField()
    features = ArrayField(models.FloatField(), default=list, blank=True, help_text="In event.feature_names order.")
    team = models.CharField(
        max_length=40, blank=True, default="", help_text="Interleaving: the arm whose ranker contributed this image."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event", "position"], name="impression_event_position"),
            models.UniqueConstraint(fields=["event", "image"], name="impression_event_image"),
        ]
        indexes = [models.Index(fields=["image"], name="impression_image")]

    def __str__(self) -> str:
        return f"image {self.image_id} at {self.position}"


class Click(models.Model):
    event = models.ForeignKey(SearchEvent, on_delete=models.CASCADE, related_name="clicks")
    image = models.ForeignKey(Image, null=True, on_delete=models.SET_NULL, related_name="clicks")
    position = models.PositiveIntegerField()
    user_key = models.CharField(max_length=200, help_text="Copied from the event, for the per-user cap.")
    client_id = models.CharField(max_length=64, help_text="Sender's id for this click: a resend is not doubled.")
    dwell_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time on the image, when known.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user_key", "client_id"], name="click_client_id")]
        indexes = [
            models.Index(fields=["user_key", "created_at"], name="click_user_time"),
            models.Index(fields=["event"], name="click_event"),
            models.Index(fields=["image"], name="click_image"),
        ]

    def __str__(self) -> str:
        return f"click on image {self.image_id} at {self.position}"


class Rating(models.Model):
    """A user's judgement of an image: thumbs (-1 or 1) or stars (1 to 5)."""

    class Scale(models.TextChoices):
        THUMBS = "thumbs", "thumbs up/down"
        STARS = "stars", "1-5 stars"

    user_key = models.CharField(max_length=200)
    image = models.ForeignKey(Image, null=True, on_delete=models.SET_NULL, related_name="ratings")
    event = models.ForeignKey(SearchEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="ratings")
    query_text = models.TextField(blank=True)
    scale = models.CharField(max_length=8, choices=Scale.choices)
    value = models.SmallIntegerField()
    client_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user_key", "client_id"], name="rating_client_id"),
            models.CheckConstraint(
                condition=(models.Q(scale="thumbs", value__in=[-1, 1]) | models.Q(scale="stars", value__range=(1, 5))),
                name="rating_value_in_scale",
            ),
        ]
        indexes = [
            models.Index(fields=["user_key", "created_at"], name="rating_user_time"),
            models.Index(fields=["image"], name="rating_image"),
        ]

    def __str__(self) -> str:
        return f"{self.value} ({self.scale}) for image {self.image_id}"

    @property
    def utility(self) -> float:
        """The rating on one 0-1 scale: thumbs down 0, up 1; stars 1 -> 0 ... 5 -> 1."""
        if self.scale == self.Scale.THUMBS:
            return 1.0 if self.value > 0 else 0.0
        return (self.value - 1) / 4


# ``Rating.utility`` in SQL, for queries over rating rows (thumbs are -1 / +1).
RATING_UTILITY_SQL = "CASE WHEN scale = 'thumbs' THEN (value + 1) / 2.0 ELSE (value - 1) / 4.0 END"


class ApiKey(models.Model):
    """A partner application's key. Only a hash is stored; the key itself is shown once, at creation."""

    class Scope(models.TextChoices):
        SEARCH = "search", "search"
        FEEDBACK = "feedback", "record clicks and ratings"
        INGEST = "ingest", "add images"
        EXPERIMENTS = "experiments", "read experiment results"

    name = models.CharField(max_length=200, help_text="Who this key is for.")
    prefix = models.CharField(max_length=16, unique=True, editable=False, help_text="Shown to identify the key.")
    hashed_secret = models.CharField(max_length=64, editable=False)
    scopes = ArrayField(models.CharField(max_length=16, choices=Scope.choices), default=list)
    requests_per_minute = models.PositiveIntegerField(default=600)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "partner API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ApiUsage(models.Model):
    """Requests per key per minute window: a shared counter for throttling across processes and machines."""

    key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    window_start = models.DateTimeField()
    requests = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "window_start"], name="api_usage_window")]

    def __str__(self) -> str:
        return f"{self.requests} requests from key {self.key_id} in the minute from {self.window_start:%H:%M}"


class FeedbackSummary(models.Model):
    """What both summaries count; rows are read-only (tables folded from hourly rollups, ``feedback.summary_fold``)."""

    impressions = models.BigIntegerField()
    clicks = models.BigIntegerField()
    ratings = models.BigIntegerField()
    mean_utility = models.FloatField(null=True, help_text="Mean rating on 0-1 (thumbs down 0, up 1; stars 1-5).")

    class Meta:
        abstract = True

    @property
    def click_through_rate(self) -> float | None:
        return self.clicks / self.impressions if self.impressions else None


class ExaminationWeight(models.Model):
    """The chance that a result at ``position`` is examined, as the summaries count it.

    Written by ``feedback.summaries.refresh_summaries`` when given a curve (the ranking layer passes the
    swap-estimated one that training weighs clicks by, ``ranking.summaries``); with no rows the summary
    views count 1/position. A position past the last row takes the last row's weight, as the training
    pairs do (``ranking.finetune.pairs``).
    """

    position = models.PositiveIntegerField(primary_key=True)
    weight = models.FloatField()

    class Meta:
        ordering = ["position"]

    def __str__(self) -> str:
        return f"position {self.position}: {self.weight:.4f}"


class ImageFeedbackSummary(FeedbackSummary):
    """Feedback per image (a table folded by ``feedback.summaries.refresh_summaries``)."""

    image = models.OneToOneField(Image, primary_key=True, on_delete=models.DO_NOTHING, related_name="+")
    examinations = models.FloatField(
        help_text="Impressions weighted by the examination curve (ExaminationWeight; 1/position until one is "
        "written): how often it was likely seen."
    )
    last_activity = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "feedback_imagesummary"
        verbose_name = "image feedback summary"
        verbose_name_plural = "image feedback summaries"

    def __str__(self) -> str:
        return f"image {self.image_id}"


class QueryFeedbackSummary(FeedbackSummary):
    """Feedback per normalised text query (a table folded with the image summaries)."""

    query = models.CharField(max_length=500, primary_key=True)
    searches = models.BigIntegerField()
    users = models.BigIntegerField()
    searches_with_click = models.BigIntegerField()
    last_searched = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "feedback_querysummary"
        verbose_name = "query feedback summary"
        verbose_name_plural = "query feedback summaries"

    def __str__(self) -> str:
        return self.query

    @property
    def abandonment(self) -> float | None:
        """Share of searches with no click at all."""
        return 1 - self.searches_with_click / self.searches if self.searches else None


class NetworkBurst(models.Model):
    """A network whose new identities on one day exceeded the trusted allowance (view ``feedback_networkburst``).

    Their feedback is already damped (``feedback.trust``); the admin lists them so a person can look at
    what they pushed. Read-only: computed from the log whenever it is read.
    """

    id = models.CharField(max_length=40, primary_key=True)
    network = models.CharField(max_length=16, help_text="Keyed hash of the /24 or /48 (core.networks).")
    day = models.DateField()
    newcomers = models.BigIntegerField(help_text="Identities whose first search came from this network that day.")
    burst_weight = models.FloatField(help_text="What each of them counts for (1 = not damped).")
    clicks = models.BigIntegerField(help_text="Clicks those identities made that count at all (first per impression).")
    top_query = models.CharField(max_length=500, blank=True, help_text="The (query, image) they clicked most.")
    top_image = models.ForeignKey(Image, null=True, on_delete=models.DO_NOTHING, related_name="+")
    top_clicks = models.BigIntegerField(help_text="Their clicks on that (query, image).")

    class Meta:
        managed = False
        db_table = "feedback_networkburst"
        ordering = ["-day", "-newcomers"]
        verbose_name = "suspicious burst of new identities"
        verbose_name_plural = "suspicious bursts of new identities"

    def __str__(self) -> str:
        return f"{self.newcomers} new identities from network {self.network} on {self.day}"


class ErasedUser(models.Model):
    """A user key whose feedback was erased on request (``feedback.erasure``): a record, and a fence for training.

    Only a digest of the key is kept (sha256 of the Loupe user key, e.g. ``partner:<prefix>:<id>``):
    enough to recognise the key's rows, not to read the partner's id back. Training-set builds,
    fine-tuning pairs and experiment reads leave out rows of this key dated up to ``erased_at`` plus a
    minute (searches still queued by a deferred log writer), so a build that runs while the batches
    are deleting, or a late log, cannot bring them back.
    """

    key_digest = models.CharField(max_length=64, unique=True, help_text="sha256 hex of the erased user key.")
    partner = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by = models.CharField(max_length=200, help_text="Who asked: a partner key's prefix or an admin user.")
    erased_at = models.DateTimeField(help_text="Rows of the key dated before this (plus a minute) are erased.")
    finished_at = models.DateTimeField(null=True, blank=True, help_text="When the last batch was deleted.")
    searches = models.PositiveIntegerField(default=0)
    clicks = models.PositiveIntegerField(default=0)
    ratings = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-erased_at"]
        verbose_name = "erased user"

    def __str__(self) -> str:
        return f"user {self.key_digest[:12]}… erased at {self.erased_at:%Y-%m-%d %H:%M}"


class SearchHour(models.Model):
    """Search analytics for one hour on one surface (``surface`` empty: all surfaces together).

    A rollup of first-page searches (a search is its first page, as ``ranking.experiments.results``
    counts), folded from the log by ``feedback.analytics.fold``; the analytics page reads these rows,
    never the log. Distinct users are counted per row, so the all-surfaces row is stored rather than
    summed (a signed-in account searches on the page and through the API under one key).
    """

    hour = models.DateTimeField()
    surface = models.CharField(max_length=8, blank=True, help_text="page, api, partner or sim; empty: all.")
    searches = models.BigIntegerField()
    users = models.BigIntegerField(help_text="Distinct user keys in this hour.")
    clicked_searches = models.BigIntegerField()
    clicks = models.BigIntegerField()
    abandoned = models.BigIntegerField(help_text="Searches with neither a click nor a rating.")
    no_results = models.BigIntegerField()
    ratings = models.BigIntegerField()
    rating_sum = models.FloatField(help_text="Sum of rating utilities (0-1).")
    latency_buckets = models.JSONField(default=dict, help_text="Searches per latency bucket (feedback.analytics).")
    clicks_by_channel = models.JSONField(default=dict, help_text="Clicks per retrieval channel that ranked it best.")
    explored = models.BigIntegerField(help_text="Searches in the exploration slice.")
    swapped = models.BigIntegerField(help_text="Searches in the swap (propensity) slice.")
    folded_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["hour", "surface"], name="search_hour_surface")]

    def __str__(self) -> str:
        return (
            f"{self.searches} searches on {self.surface or 'all surfaces'} in the hour from {self.hour:%Y-%m-%d %H:00}"
        )


class QueryDay(models.Model):
    """Searches per normalised text query, day and surface: the top queries and the content and relevance gaps."""

    day = models.DateField()
    surface = models.CharField(max_length=8)
    query = models.CharField(max_length=500)
    searches = models.BigIntegerField()
    no_results = models.BigIntegerField()
    clicked_searches = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "surface", "query"], name="query_day_surface")]

    def __str__(self) -> str:
        return f"{self.query!r}: {self.searches} searches on {self.day}"


class AnalyticsUser(models.Model):
    """A small integer for each user key that has searched, so a day's users fit in a sorted int array.

    Keyed by the key's digest (``feedback.erasure.key_digest``, the form an erasure marker already
    keeps), not the key itself: the dictionary outlives the searches, so an erased user leaves no key.
    """

    id = models.AutoField(primary_key=True)  # int4: dense ids make the page's union a bitmap
    key_digest = models.CharField(max_length=64, unique=True)

    def __str__(self) -> str:
        return f"analytics user {self.id}"


class DayUsers(models.Model):
    """Who searched on which day and surface ('' = all surfaces): the distinct count, and the users' ids
    (``AnalyticsUser``) sorted, so distinct users over any range of days is an exact union of arrays.

    The ids are packed 4-byte big-endian integers (``int4send``), read straight into numpy: as an int4[]
    the server's array_send of 870k ids (30 days at 1M searches) alone took 140 ms, twice the page's
    share for it (docs/performance.md).
    """

    day = models.DateField()
    surface = models.CharField(max_length=8)
    users = models.IntegerField()
    user_ids = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "surface"], name="day_users_surface")]

    def __str__(self) -> str:
        return f"{self.users} users on {self.day} ({self.surface or 'all surfaces'})"


class StaleSearchHour(models.Model):
    """An hour whose rollups are out of date: written by database triggers on every change to a search,
    click or rating (the click's or rating's search's hour), removed by the fold that recounts it.

    Triggers rather than a time watermark: a click arrives hours after its search, and a log row can
    commit after a later one, so "rows created since the last fold" misses both; a mark commits with
    the row that caused it, and the fold deletes only the marks it saw.
    """

    hour = models.DateTimeField()

    def __str__(self) -> str:
        return f"stale hour {self.hour:%Y-%m-%d %H:00}"
