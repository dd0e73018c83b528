"""Prometheus metrics for memo: an `on_event` subscriber (extra `memo[prometheus]`).

    from memo.prometheus import PrometheusMetrics

    metrics = PrometheusMetrics()            # registers on prometheus_client's default registry
    cache = memo.Cache(url, on_event=metrics)

Exports, labelled by `kind` (hit, miss, set, error... see `memo.Event`), `ns`
(the namespace) and `source` (cached, values, langgraph, sessions):

- `memo_events_total`: a counter of events;
- `memo_operation_duration_seconds`: a histogram of the backend time of the
  events that carry one.

Several `PrometheusMetrics` on one registry (two Caches built as above, an app
factory called twice) share the metrics registered first, so counts add up in
one series; one that asks for other buckets is refused with a
`memo.ConfigurationError` (share one instance instead). `prometheus_client` is
imported when this module is.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from ._errors import ConfigurationError
from ._events import Event

__all__ = ["BUCKETS", "PrometheusMetrics"]

#: Latency buckets in seconds: from a loopback round trip to a timed-out call.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

_LABELS = ("kind", "ns", "source")

#: registry -> metric prefix -> (counter, histogram, buckets) registered there by memo.
_REGISTERED: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, tuple[Counter, Histogram, Any]]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


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
        with _lock:
            known = _REGISTERED.setdefault(registry, {})
            if prefix in known:
                self.events, self.duration, registered_buckets = known[prefix]
                if registered_buckets != tuple(buckets):
                    raise ConfigurationError(
                        f"PrometheusMetrics(prefix={prefix!r}) is already registered on this registry "
                        f"with buckets {registered_buckets}: share that one instance between Caches "
                        "(or give this one another prefix or registry)"
                    )
            else:
                self.events, self.duration = _register(registry, prefix, buckets)
                known[prefix] = (self.events, self.duration, tuple(buckets))
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


def _register(
    registry: CollectorRegistry, prefix: str, buckets: tuple[float, ...]
) -> tuple[Counter, Histogram]:
    try:
        events = Counter(
            f"{prefix}_events", "memo cache events, by kind, namespace and source", _LABELS, registry=registry
        )
    except ValueError as exc:  # prometheus_client: "Duplicated timeseries in CollectorRegistry"
        raise _taken(prefix, exc) from None
    try:
        duration = Histogram(
            f"{prefix}_operation_duration_seconds",
            "seconds memo's backend operations took, by event kind, namespace and source",
            _LABELS,
            buckets=buckets,
            registry=registry,
        )
    except ValueError as exc:
        registry.unregister(events)
        raise _taken(prefix, exc) from None
    return events, duration


def _taken(prefix: str, exc: ValueError) -> ConfigurationError:
    return ConfigurationError(
        f"metrics named {prefix}_* are already registered on this registry by something other "
        f"than memo ({exc}): pass another prefix= or registry= to PrometheusMetrics"
    )
