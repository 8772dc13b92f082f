"""Prometheus metrics for the processes that serve no HTTP of their own (engines, consumers).

``serve(port, name, stats)`` exposes, on ``http://<host>:<port>/metrics``, prometheus_client's
process metrics (CPU, memory, open files, start time) and Python's (GC), and the process's own
counters, read from its stats object at each scrape: the hot path only increments plain integer
fields, as it did before, and pays nothing for being watched. The API serves its own ``/metrics``
(``matchbox.api.ops``), with the same process metrics.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class StatsCollector(Collector):
    """A stats dataclass's fields as metrics ``matchbox_<name>_<field>``: a counter (``_total``)
    for each field not in ``gauges``, each with ``labels``; and the extra gauges ``extra()`` gives."""

    def __init__(
        self,
        name: str,
        stats: Callable[[], Any],
        labels: Mapping[str, str],
        gauges: frozenset[str] = frozenset(),
        extra: Callable[[], Mapping[str, float]] = dict,
    ) -> None:
        self.name = name
        self.stats = stats
        self.labels = dict(labels)
        self.gauges = gauges
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        names, values = list(self.labels), list(self.labels.values())
        found = self.stats()
        for field in dataclasses.fields(found):
            value = getattr(found, field.name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            metric_name = f"matchbox_{self.name}_{field.name}"
            family: CounterMetricFamily | GaugeMetricFamily
            if field.name in self.gauges:
                family = GaugeMetricFamily(metric_name, f"{self.name} {field.name}", labels=names)
            else:
                family = CounterMetricFamily(metric_name, f"{self.name} {field.name}", labels=names)
            family.add_metric(values, value)
            yield family
        for key, value in self.extra().items():
            gauge = GaugeMetricFamily(f"matchbox_{self.name}_{key}", f"{self.name} {key}", labels=names)
            gauge.add_metric(values, value)
            yield gauge


def serve(port: int, host: str, collector: Collector) -> None:
    """The process's metrics on ``host:port`` (0: none), in a daemon thread."""
    if not port:
        return
    REGISTRY.register(collector)
    try:
        start_http_server(port, addr=host)
    except OSError as exc:  # the port is taken: the process runs on, unwatched, and says so
        log.warning("metrics not served: %s", exc, extra={"port": port})
        return
    log.info("metrics served", extra={"url": f"http://{host}:{port}/metrics"})
