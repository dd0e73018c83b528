"""The value API and the event hook on the hit path, beside an @cached hit, on one local memcached."""

from __future__ import annotations

import asyncio
from typing import Any

from bench_helpers import SMALL, bench_async, role

import memo


def test_value_hit_baseline_cached(benchmark: Any, memo_cache: memo.Cache) -> None:
    """The baseline: a hit of an `@cached` function."""
    role(benchmark, "baseline", "memo @cached")
    benchmark.group = "value-hit"

    @memo_cache.cached(ns="bench", ttl=600)
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(42)
    assert benchmark(get_user, 42) == SMALL


def test_value_hit_get(benchmark: Any, memo_cache: memo.Cache) -> None:
    role(benchmark, "subject", "memo cache.get")
    benchmark.group = "value-hit"
    memo_cache.set("user:42", SMALL, ns="bench", ttl=600)
    assert benchmark(memo_cache.get, "user:42", ns="bench") == SMALL


def test_value_hit_get_prometheus(benchmark: Any, memo_cache: memo.Cache) -> None:
    """The same hit, each event counted and timed by the Prometheus subscriber."""
    from prometheus_client import CollectorRegistry

    from memo.prometheus import PrometheusMetrics

    role(benchmark, "subject", "memo cache.get + PrometheusMetrics")
    benchmark.group = "value-hit"
    memo_cache.on_event = PrometheusMetrics(CollectorRegistry())
    memo_cache.set("user:42", SMALL, ns="bench", ttl=600)
    assert benchmark(memo_cache.get, "user:42", ns="bench") == SMALL


def test_value_hit_get_otel(benchmark: Any, memo_cache: memo.Cache) -> None:
    """The same hit, each event counted and recorded through the OpenTelemetry SDK."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from memo.otel import OpenTelemetryMetrics

    role(benchmark, "subject", "memo cache.get + OpenTelemetryMetrics")
    benchmark.group = "value-hit"
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    memo_cache.on_event = OpenTelemetryMetrics(provider)
    memo_cache.set("user:42", SMALL, ns="bench", ttl=600)
    assert benchmark(memo_cache.get, "user:42", ns="bench") == SMALL
    provider.shutdown()


def test_value_hit_aget(benchmark: Any, memo_cache: memo.Cache, loop: asyncio.AbstractEventLoop) -> None:
    role(benchmark, "subject", "memo await cache.aget")
    benchmark.group = "value-hit-async"
    loop.run_until_complete(memo_cache.aset("user:42", SMALL, ns="bench", ttl=600))
    assert bench_async(benchmark, loop, lambda: memo_cache.aget("user:42", ns="bench")) == SMALL
    loop.run_until_complete(memo_cache.aclose())


def test_value_hit_async_baseline_cached(
    benchmark: Any, memo_cache: memo.Cache, loop: asyncio.AbstractEventLoop
) -> None:
    role(benchmark, "baseline", "memo async @cached")
    benchmark.group = "value-hit-async"

    @memo_cache.cached(ns="bench", ttl=600)
    async def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    loop.run_until_complete(get_user(42))
    assert bench_async(benchmark, loop, lambda: get_user(42)) == SMALL
    loop.run_until_complete(memo_cache.aclose())
