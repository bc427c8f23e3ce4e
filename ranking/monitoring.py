"""Training and fine-tuning runs as Prometheus gauges, read from the database at scrape time.

Workers may run on other machines, so nothing is counted in process: the database is the record.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count, Max
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ranking.index_recall import latest_index_recalls
from ranking.models import FineTuneRun, RankerVersion, TrainingRun


class TrainingCollector(Collector):
    """Training and fine-tuning runs as the database records them (workers may run anywhere)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        runs = GaugeMetricFamily(
            "loupe_training_runs", "Learning attempts recorded, by kind and outcome.", labels=["kind", "outcome"]
        )
        last = GaugeMetricFamily(
            "loupe_training_last_finished_timestamp_seconds",
            "When the last learning attempt of each kind finished (Unix time).",
            labels=["kind"],
        )
        for kind, model in (("ranker", TrainingRun), ("encoder", FineTuneRun)):
            for row in model.objects.values("outcome").annotate(n=Count("pk")):
                runs.add_metric([kind, row["outcome"]], row["n"])
            finished = model.objects.aggregate(at=Max("finished_at"))["at"]
            if finished is not None:
                last.add_metric([kind], finished.timestamp())
        yield runs
        yield last
        active = RankerVersion.objects.filter(status=RankerVersion.Status.ACTIVE).values_list("pk", flat=True).first()
        yield GaugeMetricFamily("loupe_active_ranker_version", "The active ranker's id (0: none).", value=active or 0)


class IndexRecallCollector(Collector):
    """The newest measured recall@k of each servable encoder version's index, and the alert threshold."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        recall = GaugeMetricFamily(
            "loupe_index_recall",
            "recall@k the HNSW index served on the last daily sample, against an exact scan (ranking.index_recall).",
            labels=["encoder_version", "k"],
        )
        measured = GaugeMetricFamily(
            "loupe_index_recall_measured_timestamp_seconds",
            "When each version's index recall was last measured (Unix time).",
            labels=["encoder_version"],
        )
        for row in latest_index_recalls():
            recall.add_metric([str(row.encoder_version_id), str(row.k)], row.recall)
            measured.add_metric([str(row.encoder_version_id)], row.measured_at.timestamp())
        yield recall
        yield measured
        threshold = settings.LOUPE_MIN_INDEX_RECALL
        yield GaugeMetricFamily("loupe_index_recall_threshold", "Alert below this recall.", value=threshold)
