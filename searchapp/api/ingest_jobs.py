"""Partner API: bulk ingest as jobs (ingest scope). ``POST /api/v1/ingest-jobs`` answers 202 at once; the
workers ingest the items in chunks and embed them; ``GET`` reads the progress and the per-item results.

The body is JSON lines (``application/x-ndjson``: one object a line) or JSON (``{"items": [...]}`` with
the same objects, or ``{"files": ["/path", ...]}``). A malformed line refuses the whole request (400,
naming the line); a path outside ``LOUPE_INGEST_ROOTS``, a URL off ``LOUPE_INGEST_URL_ALLOW`` or a bad
file is refused per item, with the reason, and the rest of the job goes on (docs/api.md).
"""

from __future__ import annotations

import json

from django.conf import settings
from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from collection.ingestion.jobs import JobLine, create_job, job_chunks
from collection.models import EXTERNAL_ID_PATTERN, IngestJob, IngestJobItem
from collection.tags import clean_tags, split_tag_list
from core.api_errors import ErrorSerializer
from core.api_parsers import MAX_JSON_DEPTH, BodyTooLarge, BoundedJSONParser, json_depth
from core.errors import Refused
from feedback.api_keys import catalogue_of, scope_required
from workers.tasks import ingest_job_chunk

ERRORS = {code: ErrorSerializer for code in (400, 401, 403, 413, 429)}


class UnknownIngestJob(Refused):
    code = "unknown_ingest_job"
    status = 404


class JsonLinesParser(BaseParser):
    """``application/x-ndjson``: one JSON object a line, blank lines skipped; bounded like the JSON parser."""

    media_type = "application/x-ndjson"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise BodyTooLarge(f"The body is over the {limit:,}-byte limit.")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("The body is not UTF-8.") from None
        items = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except (ValueError, RecursionError):
                raise ParseError(f"Line {number} is not JSON.") from None
            if json_depth(value) > MAX_JSON_DEPTH:
                raise ParseError(f"Line {number} nests deeper than {MAX_JSON_DEPTH} levels.")
            items.append(value)
        return {"items": items}


class JobLineSerializer(serializers.Serializer):
    path = serializers.CharField(required=False, max_length=4096, help_text="A file under the server's ingest folders.")
    url = serializers.CharField(required=False, max_length=2000, help_text="Or: an http(s) URL on an allowed host.")
    captions = serializers.ListField(child=serializers.CharField(max_length=2000), required=False, max_length=20)
    caption = serializers.CharField(required=False, max_length=2000, help_text="One caption (img2dataset style).")
    tags = serializers.JSONField(required=False, help_text="A list of tags or a comma-separated string.")
    licence = serializers.CharField(required=False, allow_blank=True, max_length=300)
    attribution = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    external_id = serializers.RegexField(
        f"^{EXTERNAL_ID_PATTERN}$",
        required=False,
        help_text="Your id for the image: a known one updates that image of your catalogue (outcome updated).",
    )

    def validate_tags(self, value):
        if isinstance(value, str):
            return split_tag_list(value)
        if isinstance(value, list) and all(isinstance(tag, str) for tag in value):
            return clean_tags(value)
        raise serializers.ValidationError("Give a list of strings or a comma-separated string.")

    def validate(self, attrs):
        if ("path" in attrs) == ("url" in attrs):
            raise serializers.ValidationError({"path": "Give exactly one of 'path' and 'url'."})
        return attrs


class IngestJobRequestSerializer(serializers.Serializer):
    items = JobLineSerializer(many=True, required=False)
    files = serializers.ListField(
        child=serializers.CharField(max_length=4096), required=False, help_text="Or: just file paths."
    )

    def validate(self, attrs):
        if ("items" in attrs) == ("files" in attrs):
            raise serializers.ValidationError({"items": "Give exactly one of 'items' and 'files'."})
        count = len(attrs.get("items") or attrs.get("files") or [])
        if not count:
            raise serializers.ValidationError({"items": "The job names no image."})
        if count > settings.LOUPE_INGEST_JOB_MAX_ITEMS:
            raise serializers.ValidationError(
                {"items": f"At most {settings.LOUPE_INGEST_JOB_MAX_ITEMS:,} items a job; split it."}
            )
        return attrs

    def job_lines(self) -> list[JobLine]:
        data = self.validated_data
        if "files" in data:
            return [JobLine(path=path) for path in data["files"]]
        return [
            JobLine(
                path=item.get("path", ""),
                url=item.get("url", ""),
                captions=tuple(item.get("captions") or ([item["caption"]] if item.get("caption") else [])),
                tags=tuple(item.get("tags") or ()),
                licence=item.get("licence", ""),
                attribution=item.get("attribution", ""),
                external_id=item.get("external_id", ""),
            )
            for item in data["items"]
        ]


class IngestJobSerializer(serializers.ModelSerializer):
    total = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField(help_text="Items per outcome: pending, stored, duplicate, refused.")

    class Meta:
        model = IngestJob
        fields = ["id", "status", "created_at", "finished_at", "total", "counts"]

    def get_total(self, job: IngestJob) -> int:
        return sum(self._counts(job).values())

    def get_counts(self, job: IngestJob) -> dict[str, int]:
        return self._counts(job)

    def _counts(self, job: IngestJob) -> dict[str, int]:
        if not hasattr(job, "_counted"):
            job._counted = job.counts()
        return job._counted


class IngestJobItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = IngestJobItem
        fields = ["position", "path", "url", "external_id", "outcome", "reason", "image", "done_at"]


class IngestJobItemsPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    page = serializers.IntegerField()
    page_size = serializers.IntegerField()
    items = IngestJobItemSerializer(many=True)


def _own_job(request: Request, job_id: int) -> IngestJob:
    """The job, if the requesting key sent it: another partner's job is as unknown as a missing one."""
    job = IngestJob.objects.filter(pk=job_id, requested_by=request.auth.prefix).first()
    if job is None:
        raise UnknownIngestJob(f"No ingest job {job_id} for this key.")
    return job


class IngestJobsView(APIView):
    parser_classes = [JsonLinesParser, BoundedJSONParser]
    permission_classes = [scope_required("ingest")]

    @extend_schema(
        summary="Start a bulk ingest job (JSON lines or JSON), run by the workers",
        request={"application/json": IngestJobRequestSerializer, "application/x-ndjson": JobLineSerializer},
        responses={202: IngestJobSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ParseError("Give JSON lines, or a JSON object with 'items' or 'files'.")
        params = IngestJobRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        job = create_job(
            params.job_lines(),
            chunk_size=settings.LOUPE_INGEST_JOB_CHUNK_SIZE,
            requested_by=request.auth.prefix,
            catalogue=catalogue_of(request),
        )
        chunks = job_chunks(job)
        transaction.on_commit(lambda: [ingest_job_chunk.delay(job.pk, first, last) for first, last in chunks])
        return Response(IngestJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class IngestJobView(APIView):
    permission_classes = [scope_required("ingest")]

    @extend_schema(summary="An ingest job's progress", responses={200: IngestJobSerializer, 404: ErrorSerializer})
    def get(self, request: Request, job_id: int) -> Response:
        return Response(IngestJobSerializer(_own_job(request, job_id)).data)


class ItemsQuerySerializer(serializers.Serializer):
    page = serializers.IntegerField(required=False, min_value=1, max_value=100_000, default=1)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=500, default=100)
    outcome = serializers.ChoiceField(choices=IngestJobItem.Outcome.values, required=False)


class IngestJobItemsView(APIView):
    permission_classes = [scope_required("ingest")]

    @extend_schema(
        summary="An ingest job's per-item results, paged in request order",
        parameters=[
            OpenApiParameter("page", int, description="From 1."),
            OpenApiParameter("page_size", int, description="1-500, default 100."),
            OpenApiParameter("outcome", str, enum=IngestJobItem.Outcome.values, description="Only these."),
        ],
        responses={200: IngestJobItemsPageSerializer, 400: ErrorSerializer, 404: ErrorSerializer},
    )
    def get(self, request: Request, job_id: int) -> Response:
        job = _own_job(request, job_id)
        query = ItemsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        page, size = query.validated_data["page"], query.validated_data["page_size"]
        items = job.items.order_by("position")
        if "outcome" in query.validated_data:
            items = items.filter(outcome=query.validated_data["outcome"])
        body = {
            "count": items.count(),
            "page": page,
            "page_size": size,
            "items": items[(page - 1) * size : page * size],
        }
        return Response(IngestJobItemsPageSerializer(body).data)
