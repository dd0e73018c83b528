"""Many tenants: `clear(ns)` costs the same with 10 or 8,000 namespaces known to the process."""

from __future__ import annotations

from typing import Any

import pytest
from bench_helpers import role

import memo


@pytest.mark.parametrize(
    ("n", "label"),
    [(10, "memo clear(ns), 10 namespaces"), (8000, "memo clear(ns), 8,000 namespaces")],
    ids=["10", "8000"],
)
def test_clear_one_namespace(benchmark: Any, n: int, label: str) -> None:
    role(benchmark, "subject", label)
    benchmark.group = "clear-many-namespaces"
    cache = memo.Cache("memory://", max_entries=2 * n)
    for i in range(n):
        cache.set("k", i, ns=f"tenant-{i}")
    benchmark(cache.clear, "tenant-0")
    assert cache.get("k", ns="tenant-0") is None
    assert cache.get("k", ns=f"tenant-{n - 1}") == n - 1
