"""memo.prometheus and memo.otel: what they export, read back as a scraper or exporter would."""

from __future__ import annotations

from typing import Any

import pytest

import memo


def exercise(cache: memo.Cache) -> None:
    cache.get("k", ns="users")  # miss
    cache.set("k", 1, ns="users")  # set
    cache.get("k", ns="users")  # hit
    cache.get("k", ns="users")  # hit
    cache.get("k", ns="orders")  # miss in another namespace


def test_prometheus_counters_and_histograms() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from memo.prometheus import PrometheusMetrics

    registry = CollectorRegistry()
    exercise(memo.Cache(on_event=PrometheusMetrics(registry)))
    text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def sample(name: str, kind: str, ns: str, **extra: str) -> Any:
        labels = {"kind": kind, "ns": ns, "source": "values", **extra}
        return samples.get((name, tuple(sorted(labels.items()))))

    assert sample("memo_events_total", "hit", "users") == 2
    assert sample("memo_events_total", "miss", "users") == 1
    assert sample("memo_events_total", "set", "users") == 1
    assert sample("memo_events_total", "miss", "orders") == 1
    assert sample("memo_events_total", "hit", "orders") is None
    assert sample("memo_operation_duration_seconds_count", "hit", "users") == 2
    assert sample("memo_operation_duration_seconds_bucket", "hit", "users", le="+Inf") == 2
    assert sample("memo_operation_duration_seconds_sum", "hit", "users") > 0


def test_prometheus_prefix_and_a_second_instance_shares_the_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from memo.prometheus import PrometheusMetrics

    registry = CollectorRegistry()
    PrometheusMetrics(registry, prefix="app_cache")(memo.Event("hit", "n", duration=0.001))
    assert (
        'app_cache_events_total{kind="hit",ns="n",source="cached"} 1.0' in generate_latest(registry).decode()
    )
    # Two Caches each built with its own PrometheusMetrics (an app factory called twice).
    second = PrometheusMetrics(registry, prefix="app_cache")
    exercise(memo.Cache(on_event=second))
    exercise(memo.Cache(on_event=PrometheusMetrics(registry, prefix="app_cache")))
    text = generate_latest(registry).decode()
    assert 'app_cache_events_total{kind="hit",ns="n",source="cached"} 1.0' in text
    assert 'app_cache_events_total{kind="hit",ns="users",source="values"} 4.0' in text
    with pytest.raises(memo.ConfigurationError, match="share that one instance"):
        PrometheusMetrics(registry, prefix="app_cache", buckets=(0.1, 1.0))


def test_prometheus_names_taken_by_another_collector_are_a_configuration_error() -> None:
    from prometheus_client import CollectorRegistry, Counter

    from memo.prometheus import PrometheusMetrics

    registry = CollectorRegistry()
    Counter("taken_events", "not memo's", registry=registry)
    with pytest.raises(memo.ConfigurationError, match=r"taken_\* are already registered .* another prefix="):
        PrometheusMetrics(registry, prefix="taken")
    Counter("half_operation_duration_seconds", "not memo's", registry=registry)
    with pytest.raises(memo.ConfigurationError, match="half_"):
        PrometheusMetrics(registry, prefix="half")
    # Nothing of the refused instance stays registered.
    assert "half_events" not in {m.name for m in registry.collect()}


def test_opentelemetry_counters_and_histograms() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from memo.otel import OpenTelemetryMetrics

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    exercise(memo.Cache(on_event=OpenTelemetryMetrics(provider)))
    data = reader.get_metrics_data()
    assert data is not None
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"memo.events", "memo.operation.duration"} <= set(metrics)

    def point(name: str, kind: str, ns: str) -> Any:
        want = {"memo.event": kind, "memo.namespace": ns, "memo.source": "values"}
        found = [p for p in metrics[name].data.data_points if dict(p.attributes or {}) == want]
        return found[0] if found else None

    assert point("memo.events", "hit", "users").value == 2
    assert point("memo.events", "miss", "users").value == 1
    assert point("memo.events", "miss", "orders").value == 1
    assert point("memo.events", "set", "users").value == 1
    duration = point("memo.operation.duration", "hit", "users")
    assert duration.count == 2 and duration.sum > 0
    assert metrics["memo.operation.duration"].unit == "s"
    provider.shutdown()


def test_events_without_a_duration_are_counted_only() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from memo.prometheus import PrometheusMetrics

    registry = CollectorRegistry()
    PrometheusMetrics(registry)(memo.Event("stale", "n", duration=None, source="langgraph"))
    text = generate_latest(registry).decode()
    assert 'memo_events_total{kind="stale",ns="n",source="langgraph"} 1.0' in text
    assert 'memo_operation_duration_seconds_count{kind="stale"' not in text


def test_session_events_are_exported() -> None:
    """The session helpers report through the same hook: scraped with source="sessions"."""
    from prometheus_client import CollectorRegistry, generate_latest

    from memo.prometheus import PrometheusMetrics
    from memo.sessions import SessionCache

    registry = CollectorRegistry()
    sessions = SessionCache(memo.Cache(on_event=PrometheusMetrics(registry)), ns="web", owner="user_id")
    db: dict[str, dict[str, int]] = {}
    sid = sessions.new_id()
    sessions.create(sid, insert=lambda: db.setdefault(sid, {"user_id": 1}))
    sessions.get(sid, user_id=1, load=db.get)  # a hit
    sessions.get(sid, user_id=2, load=db.get)  # a hit, another user's session: also forbidden
    text = generate_latest(registry).decode()
    assert 'memo_events_total{kind="set",ns="web",source="sessions"} 1.0' in text
    assert 'memo_events_total{kind="hit",ns="web",source="sessions"} 2.0' in text
    assert 'memo_events_total{kind="forbidden",ns="web",source="sessions"} 1.0' in text
