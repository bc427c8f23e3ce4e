"""Partner API, read-only: experiments and their results. Needs a key with the experiments scope."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api_errors import ErrorSerializer
from core.errors import Refused
from feedback.api_keys import scope_required
from ranking.experiments.report import as_report
from ranking.experiments.results import results
from ranking.models import Experiment


class UnknownExperiment(Refused):
    code, status = "not_found", 404


class ExperimentSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Experiment
        fields = [
            "id",
            "name",
            "mode",
            "surface",
            "status",
            "primary_metric",
            "statistics",
            "traffic_share",
            "started_at",
            "stopped_at",
        ]


class ExperimentsView(APIView):
    permission_classes = [scope_required("experiments")]

    @extend_schema(
        summary="Experiments, newest first",
        responses={200: ExperimentSummarySerializer(many=True), 401: ErrorSerializer, 403: ErrorSerializer},
    )
    def get(self, request: Request) -> Response:
        return Response(ExperimentSummarySerializer(Experiment.objects.all()[:100], many=True).data)


class ExperimentResultsView(APIView):
    permission_classes = [scope_required("experiments")]

    @extend_schema(
        summary="An experiment's results: metrics per arm with 95% intervals and p-values, SRM check, verdict",
        responses={200: OpenApiTypes.OBJECT, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer},
    )
    def get(self, request: Request, experiment_id: int) -> Response:
        experiment = Experiment.objects.filter(pk=experiment_id).first()
        if experiment is None:
            raise UnknownExperiment(f"There is no experiment {experiment_id}.")
        return Response(as_report(results(experiment)))
