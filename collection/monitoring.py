"""What this process serves, as a Prometheus gauge: a demo model (random weights) is an alert."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from collection.encoders import loaded_serving_choice


class ServingCollector(Collector):
    """What this process serves: a demo model (random weights, no semantic quality) is an alert."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        choice = loaded_serving_choice()
        demo = GaugeMetricFamily(
            "loupe_encoder_demo",
            "1 when this process serves the random-weight demo model (the configured model could not be loaded).",
        )
        demo.add_metric([], float(bool(choice and (choice.fell_back or choice.encoder.is_demo))))
        yield demo
