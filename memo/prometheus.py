"""Prometheus metrics for memo: an `on_event` subscriber (extra `memo[prometheus]`).

    from memo.prometheus import PrometheusMetrics

    metrics = PrometheusMetrics()            # registers on prometheus_client's default registry
    cache = memo.Cache(url, on_event=metrics)

Exports, labelled by `kind` (hit, miss, set, error... see `memo.Event`), `ns`
(the namespace) and `source` (cached, values, langgraph, sessions):

- `memo_events_total`: a counter of events;
- `memo_operation_duration_seconds`: a histogram of the backend time of the
  events that carry one.

Create one `PrometheusMetrics` per registry and process, and give it to every
Cache (a second one on the same registry is refused by prometheus_client as a
duplicate). `prometheus_client` is imported when this module is.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from ._events import Event

__all__ = ["BUCKETS", "PrometheusMetrics"]

#: Latency buckets in seconds: from a loopback round trip to a timed-out call.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

_LABELS = ("kind", "ns", "source")


class PrometheusMetrics:
    """Count memo events and observe their durations in Prometheus metrics.

    Args:
        registry: where the metrics are registered (default: the global
            `prometheus_client.REGISTRY`).
        prefix: the metric name prefix (default "memo").
        buckets: histogram buckets in seconds.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        prefix: str = "memo",
        buckets: tuple[float, ...] = BUCKETS,
    ) -> None:
        registry = REGISTRY if registry is None else registry
        self.events = Counter(
            f"{prefix}_events", "memo cache events, by kind, namespace and source", _LABELS, registry=registry
        )
        self.duration = Histogram(
            f"{prefix}_operation_duration_seconds",
            "seconds memo's backend operations took, by event kind, namespace and source",
            _LABELS,
            buckets=buckets,
            registry=registry,
        )
        # Label lookups cost more than the increment: keep each child once. A
        # histogram child is made only for labels whose events carry a duration.
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._histograms: dict[tuple[str, str, str], Any] = {}

    def __call__(self, event: Event) -> None:
        labels = (event.kind, event.ns, event.source)
        counter = self._counters.get(labels)
        if counter is None:
            counter = self._counters[labels] = self.events.labels(*labels)
        counter.inc()
        if event.duration is not None:
            histogram = self._histograms.get(labels)
            if histogram is None:
                histogram = self._histograms[labels] = self.duration.labels(*labels)
            histogram.observe(event.duration)
