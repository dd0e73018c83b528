"""OpenTelemetry metrics for memo: an `on_event` subscriber (extra `memo[otel]`).

    from memo.otel import OpenTelemetryMetrics

    cache = memo.Cache(url, on_event=OpenTelemetryMetrics())   # the global MeterProvider

Records, with the attributes `memo.event` (hit, miss, set, error... see
`memo.Event`), `memo.namespace` and `memo.source` (cached, values, langgraph,
sessions):

- `memo.events`: a counter of events;
- `memo.operation.duration`: a histogram (seconds) of the backend time of the
  events that carry one.

Only `opentelemetry-api` is needed; the application configures the SDK and its
exporters. `opentelemetry` is imported when this module is.
"""

from __future__ import annotations

from opentelemetry import metrics

from ._events import Event

__all__ = ["OpenTelemetryMetrics"]


class OpenTelemetryMetrics:
    """Count memo events and record their durations with an OpenTelemetry meter.

    Args:
        meter_provider: where to get the meter (default: the global one, as set
            by `opentelemetry.metrics.set_meter_provider`).
    """

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        from . import __version__

        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter("memo", __version__)
        self.events = meter.create_counter(
            "memo.events", unit="{event}", description="memo cache events, by kind, namespace and source"
        )
        self.duration = meter.create_histogram(
            "memo.operation.duration",
            unit="s",
            description="seconds memo's backend operations took, by event kind, namespace and source",
        )
        self._attributes: dict[tuple[str, str, str], dict[str, str]] = {}

    def __call__(self, event: Event) -> None:
        key = (event.kind, event.ns, event.source)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = self._attributes[key] = {
                "memo.event": event.kind,
                "memo.namespace": event.ns,
                "memo.source": event.source,
            }
        self.events.add(1, attributes)
        if event.duration is not None:
            self.duration.record(event.duration, attributes)
