"""The collection: images, their captions, and their vectors under each encoder version."""

from __future__ import annotations

import re

from django.contrib.postgres.expressions import ArraySubquery
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.contrib.postgres.search import SearchVectorField
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Exists, OuterRef
from django.db.models.functions import Now
from pgvector.django import VectorField


class EncoderVersion(models.Model):
    """One set of encoder weights. Every vector in the database belongs to exactly one version.

    A version is identified by where its model comes from and a fingerprint of its weights, so a
    changed model at the same path or hub id is a new version, never silently mixed with the old.
    """

    class Status(models.TextChoices):
        BUILDING = "building", "building (embedding the collection; cannot serve yet)"
        READY = "ready", "ready"
        RETIRED = "retired", "retired"

    class Kind(models.TextChoices):
        IMAGE_TEXT = "image_text", "image-text (CLIP family)"
        SENTENCE = "sentence", "sentence (text only)"

    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.IMAGE_TEXT)
    name = models.CharField(max_length=200)
    model_ref = models.CharField(max_length=1000, help_text="Hugging Face hub id or local folder.")
    fingerprint = models.CharField(max_length=64, help_text="sha256 over the weight files.")
    dimension = models.PositiveIntegerField()
    is_demo = models.BooleanField(
        default=False, help_text="A random-weight demo model: its results carry no semantic quality."
    )
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    fusion_weight = models.FloatField(
        null=True,
        blank=True,
        help_text="Weight of this encoder's channel in rank fusion, as measured by `evaluate --calibrate`. "
        "Empty: 1, or 0 for a demo model (declared to have no semantic quality).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model_ref", "fingerprint"], name="encoder_version_unique")]

    def __str__(self) -> str:
        return f"v{self.pk} {self.name}"

    @property
    def channel_weight(self) -> float:
        if self.fusion_weight is not None:
            return self.fusion_weight
        return 0.0 if self.is_demo else 1.0


# External ids travel in URLs (``/api/v1/images/ext:<id>``): no slash, space or percent sign, so a path
# names one image whatever a proxy decodes.
EXTERNAL_ID_PATTERN = r"[A-Za-z0-9._:@+\-]{1,200}"


class Image(models.Model):
    """An image of the collection, stored once by content (sha256) under MEDIA_ROOT."""

    sha256 = models.CharField(max_length=64, unique=True)
    file = models.FileField(max_length=300)
    thumbnail = models.FileField(max_length=300)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=16)
    byte_size = models.PositiveBigIntegerField()
    tags = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    source = models.CharField(max_length=2000, blank=True, help_text="Where it was ingested from.")
    licence = models.CharField(max_length=300, blank=True)
    attribution = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Tags (weight A) and captions (weight B) for full-text search; kept by collection.text_index.
    text_document = SearchVectorField(null=True, editable=False)
    # Kept with text_document: lets fusion know, without another query, that the caption channel could see it.
    has_captions = models.BooleanField(default=False, editable=False)
    # The partner's fields (date taken, author, licence, ...), checked against the declared MetadataFields
    # by collection.metadata.validate_metadata before they are stored.
    metadata = models.JSONField(default=dict, blank=True)
    # Whose image it is: the partner key's name (its catalogue), or "" for the global catalogue (admin and
    # CLI ingests). A partner updates only its own catalogue's images.
    # db_default too: bulk loads that COPY rows (bench/search_latency.py) name only the columns they fill.
    catalogue = models.CharField(max_length=200, blank=True, default="", db_default="")
    # The partner's own id for the image, unique within its catalogue; ingest naming a known one updates it.
    # Null, not "", is "no external id": the partial unique index leaves exactly those rows out.
    external_id = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())

    class Meta:
        constraints = [
            # Partial: images without an external id (most of a CLI-ingested collection) take no index space.
            models.UniqueConstraint(
                fields=["catalogue", "external_id"],
                condition=models.Q(external_id__isnull=False),
                name="image_external_id_unique",
            )
        ]
        indexes = [
            GinIndex(fields=["tags"], name="image_tags_gin"),
            GinIndex(fields=["text_document"], name="image_text_document_gin"),
            # Keyword and boolean filters are containment (metadata @> {"author": "smith"}); jsonb_path_ops
            # indexes exactly that operator and is a third the size of the default jsonb_ops.
            GinIndex(OpClass("metadata", name="jsonb_path_ops"), name="image_metadata_gin"),
            # The catalogue listing's order (collection.catalogue_listing): a partner's images by last change.
            models.Index(fields=["catalogue", "updated_at", "id"], name="image_catalogue_listing"),
        ]

    def __str__(self) -> str:
        return f"image {self.pk} ({self.sha256[:12]})"

    @property
    def caption(self) -> str:
        """The first caption, if any."""
        texts = self.caption_texts()
        return texts[0] if texts else ""

    def caption_texts(self) -> list[str]:
        """The caption texts in order (read once; ``with_caption_texts`` reads many images' in one query)."""
        texts = getattr(self, "_caption_texts", None)
        if texts is None:
            texts = self._caption_texts = [caption.text for caption in self.captions.all()]
        return texts

    @classmethod
    def with_caption_texts(cls, ids: list[int], using: str = "default") -> list[Image]:
        """These images (without their full-text document) and their caption texts, in one query (on ``using``)."""

        texts = Caption.objects.filter(image_id=OuterRef("pk")).order_by("position", "pk").values("text")
        # Images fenced by a takedown whose batch has not run yet are no longer shown (collection.takedown).
        found = (
            cls.objects.using(using)
            .filter(pk__in=ids)
            .exclude(Exists(RemovedImage.objects.using(using).filter(image_id=OuterRef("pk"))))
        )
        images = list(found.defer("text_document").annotate(_captions=ArraySubquery(texts)))
        for image in images:
            image._caption_texts = image._captions
        return images


METADATA_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Names the search API and query syntax already use, and the endings of the API's filters (FIELD_from,
# FIELD_to, FIELD_not): a field by such a name could not be filtered on.
RESERVED_FIELD_NAMES = {"q", "tag", "tags", "page", "page_size", "min_score", "max_drop", "user", "session"}
RESERVED_FIELD_NAMES |= {"sort", "filter", "format", "image", "image_id"}
RESERVED_ENDINGS = ("_from", "_to", "_not")


def validate_field_name(name: str) -> None:
    if not METADATA_FIELD_NAME.match(name):
        raise ValidationError("Lower-case letters, digits and _, starting with a letter (e.g. taken_on).")
    if name in RESERVED_FIELD_NAMES or name.endswith(RESERVED_ENDINGS):
        raise ValidationError(f"{name!r} is taken by the search API; the endings _from, _to and _not too.")


class MetadataField(models.Model):
    """One declared field of the images' metadata (one collection per deployment, so one schema).

    Metadata naming an undeclared field, or a value of the wrong type, is refused at ingest and update
    (``collection.metadata.validate_metadata``), so filters and date sort can trust what is stored.
    """

    class Kind(models.TextChoices):
        KEYWORD = "keyword", "keyword (exact text: author, licence, orientation)"
        NUMBER = "number", "number (price, rating)"
        DATE = "date", "date (YYYY-MM-DD, or an ISO date and time)"
        BOOLEAN = "boolean", "boolean (true / false)"

    name = models.CharField(max_length=40, unique=True, validators=[validate_field_name])
    kind = models.CharField(max_length=8, choices=Kind.choices)
    description = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class Caption(models.Model):
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="captions")
    text = models.TextField()
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["image_id", "position"]
        constraints = [models.UniqueConstraint(fields=["image", "text"], name="caption_unique_per_image")]

    def __str__(self) -> str:
        return self.text


class ImageEmbedding(models.Model):
    """An image's vector under one encoder version (L2-normalised, so cosine = dot product).

    The column has no fixed dimension; each version gets its own partial HNSW index over
    ``vector::vector(dimension)`` (see ``collection.index``), so versions of different sizes coexist.
    """

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="embeddings")
    encoder_version = models.ForeignKey(EncoderVersion, on_delete=models.CASCADE, related_name="image_embeddings")
    vector = VectorField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["encoder_version", "image"], name="image_embedding_unique")]

    def __str__(self) -> str:
        return f"image {self.image_id} under encoder v{self.encoder_version_id}"


class CaptionEmbedding(models.Model):
    """A caption's text vector under one encoder version, for image-to-text search."""

    caption = models.ForeignKey(Caption, on_delete=models.CASCADE, related_name="embeddings")
    encoder_version = models.ForeignKey(EncoderVersion, on_delete=models.CASCADE, related_name="caption_embeddings")
    vector = VectorField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["encoder_version", "caption"], name="caption_embedding_unique")]

    def __str__(self) -> str:
        return f"caption {self.caption_id} under encoder v{self.encoder_version_id}"


class ImageTowerOutput(models.Model):
    """The image tower's pooled output (before the projection) for one image, under one tower's weights.

    Fine-tuning that changes only the projections re-projects these instead of re-running the tower:
    an epoch costs matrix products, and re-embedding the collection under a new version takes seconds.
    Kept in Postgres so every worker machine shares them.
    """

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="tower_outputs")
    tower = models.CharField(max_length=64, help_text="sha256 of the image tower's weights (not the projection).")
    pooled = VectorField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tower", "image"], name="tower_output_unique")]

    def __str__(self) -> str:
        return f"tower {self.tower[:12]} output of image {self.image_id}"


class CatalogueRevision(models.Model):
    """One row counting the changes to stored images (updates, replaced files, removals).

    Every web process keys its result and image caches by this number, read once per search, so an edit
    committed in one process is never served stale by another (``collection.revisions``).
    """

    number = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"catalogue revision {self.number}"


class FusionSetting(models.Model):
    """How text searches fuse their channels, fitted for one CLIP version: the newest row for the serving
    version serves (``collection.fusion_setting``). None: reciprocal rank with the channels' own weights."""

    class Method(models.TextChoices):
        RRF = "rrf", "reciprocal rank"
        CONVEX = "convex", "convex combination of normalised scores"

    method = models.CharField(max_length=8, choices=Method.choices)
    encoder_version = models.ForeignKey(EncoderVersion, on_delete=models.CASCADE, related_name="fusion_settings")
    clip_weight = models.FloatField()
    fts_weight = models.FloatField()
    caption_weight = models.FloatField()
    # collection.fusion.NORMALISATIONS; chosen with the weights on held-out captions (convex only).
    normalisation = models.CharField(max_length=16, default="max")
    fitted = models.JSONField(
        default=dict, blank=True, help_text="How the weights were fitted: queries, rotations, metrics."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.method} fusion for encoder v{self.encoder_version_id}"

    @property
    def weights(self) -> dict[str, float]:
        return {"clip": self.clip_weight, "fts": self.fts_weight, "caption": self.caption_weight}


class IngestJob(models.Model):
    """A bulk ingest sent through the API (``POST /api/v1/ingest-jobs``), run on the workers in chunks.

    Its progress is read from its items (counted by outcome), so it is right however many workers ran it
    and however often a chunk was redone.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"

    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    requested_by = models.CharField(max_length=16, blank=True, help_text="Prefix of the API key that sent it.")
    catalogue = models.CharField(max_length=200, blank=True, default="", help_text="Whose images it adds.")
    chunk_size = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"ingest job {self.pk} ({self.status})"

    def counts(self) -> dict[str, int]:
        """Items per outcome, every outcome present (0 when none)."""
        counted = dict(self.items.values_list("outcome").annotate(n=models.Count("pk")).order_by())
        return {outcome: counted.get(outcome, 0) for outcome in IngestJobItem.Outcome.values}


class IngestJobItem(models.Model):
    """One line of an ingest job and what became of it.

    (Not ``IngestItem``: that name is the parsed source line of ``collection.ingestion.sources``.)
    """

    class Outcome(models.TextChoices):
        PENDING = "pending"
        STORED = "stored", "stored (new image)"
        DUPLICATE = "duplicate", "already in the collection"
        UPDATED = "updated", "updated (its external id was known)"
        REFUSED = "refused"

    job = models.ForeignKey(IngestJob, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField(help_text="Line number in the request, from 1.")
    path = models.CharField(max_length=4096, blank=True)
    url = models.CharField(max_length=2000, blank=True)
    external_id = models.CharField(max_length=200, blank=True)
    captions = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    licence = models.CharField(max_length=300, blank=True)
    attribution = models.CharField(max_length=2000, blank=True)
    outcome = models.CharField(max_length=9, choices=Outcome.choices, default=Outcome.PENDING)
    reason = models.CharField(max_length=500, blank=True, help_text="Why it was refused.")
    image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "position"]
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="ingest_item_position_unique")]
        indexes = [models.Index(fields=["job", "outcome"], name="ingest_item_job_outcome")]

    def __str__(self) -> str:
        return f"item {self.position} of job {self.job_id}: {self.outcome}"


class EmbedRun(models.Model):
    """Embedding fanned out over the workers: the images to embed under one version, cut into chunks."""

    encoder_version = models.ForeignKey(EncoderVersion, on_delete=models.CASCADE, related_name="embed_runs")
    recompute = models.BooleanField(default=False)
    started_by = models.CharField(max_length=100, blank=True, help_text="'manage.py embed', 'ingest job 7', ...")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"embed run {self.pk} ({self.encoder_version_id})"

    def progress(self) -> tuple[int, int]:
        """(chunks done, chunks in all)."""
        chunks = self.chunks.aggregate(
            done=models.Count("pk", filter=models.Q(done_at__isnull=False)), all=models.Count("pk")
        )
        return chunks["done"], chunks["all"]


class EmbedChunk(models.Model):
    """A few images that one worker embeds and stores in one transaction (``collection.embed_chunks``).

    ``stored_times`` counts the commits that stored this chunk's vectors: 1 once done, whatever was
    redelivered or killed on the way (the tests check it); ``attempts`` counts the deliveries that began it.
    """

    run = models.ForeignKey(EmbedRun, on_delete=models.CASCADE, related_name="chunks")
    image_ids = ArrayField(models.BigIntegerField())
    attempts = models.PositiveIntegerField(default=0)
    stored_times = models.PositiveIntegerField(default=0)
    embedded = models.PositiveIntegerField(default=0, help_text="Vectors stored (unreadable files are not).")
    failed = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, help_text="The worker that stored it.")
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "pk"]

    def __str__(self) -> str:
        return f"chunk {self.pk} of embed run {self.run_id}"


class NearDuplicate(models.Model):
    """An image found nearly identical to others under one encoder version: one row per grouped image.

    ``group`` is the group's first image (the lowest id); search collapses a group to its best-ranked
    member, and admin lists the groups (``collection.near_duplicates``). Images in no group have no row.
    """

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    encoder_version = models.ForeignKey(EncoderVersion, on_delete=models.CASCADE, related_name="+")
    # Not a foreign key: a group outlives the removal of its first image (its other members stay grouped).
    group = models.BigIntegerField(help_text="The group's first image id (the lowest when it was found).")
    similarity = models.FloatField(help_text="Cosine similarity to the nearest image of its group it was found with.")
    found_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["encoder_version", "image"], name="near_duplicate_unique")]
        indexes = [models.Index(fields=["encoder_version", "group"], name="near_duplicate_group")]
        ordering = ["group", "image_id"]

    def __str__(self) -> str:
        return f"image {self.image_id} in group {self.group}"


class NearDuplicateScan(models.Model):
    """How far the near-duplicate scan has gone under one encoder version: images above ``last_image_id``
    are new to it, and the next scan compares just them with everything."""

    encoder_version = models.OneToOneField(EncoderVersion, on_delete=models.CASCADE, related_name="+")
    last_image_id = models.BigIntegerField(default=0)
    similarity = models.FloatField()
    scanned_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"near-duplicate scan of v{self.encoder_version_id} up to image {self.last_image_id}"


class RemovedImage(models.Model):
    """An image taken down (``collection.takedown``): the record of it, and the fence that keeps it out of training.

    Written for every id of a takedown in one commit before the first batch is deleted, so a training
    build that runs while the batches delete sees none of the images rather than some; afterwards the
    feedback rows that showed the image are detached (their image is NULL) and the fence still names
    the id for anything that kept it (a file cache, an export). Image ids are never reused.
    """

    image_id = models.BigIntegerField(unique=True, help_text="The removed image's id.")
    sha256 = models.CharField(max_length=64, help_text="Its content hash, to answer 'was this file taken down?'.")
    requested_by = models.CharField(max_length=200, help_text="Who asked: a partner key, an admin user, the CLI.")
    removed_at = models.DateTimeField(auto_now_add=True)
    # Whose it was and under which id, so the catalogue listing can tell its partner it is gone (a tombstone).
    catalogue = models.CharField(max_length=200, blank=True, default="", db_default="")
    external_id = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["-removed_at", "-image_id"]
        indexes = [models.Index(fields=["catalogue", "removed_at", "image_id"], name="removed_image_listing")]

    def __str__(self) -> str:
        return f"image {self.image_id} taken down at {self.removed_at:%Y-%m-%d %H:%M}"
