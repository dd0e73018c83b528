"""Many tenants in one long-lived process: per-namespace and per-function state stays bounded."""

from __future__ import annotations

from typing import Any

import pytest

import memo
from memo import _generations


def test_clear_touches_only_its_own_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = memo.Cache("memory://", max_entries=20_000)

    @cache.cached(ns="tenant-0")
    def report(x: int) -> int:
        return x

    for i in range(5000):
        cache.set("k", i, ns=f"tenant-{i}")
    assert report(1) == 1
    looked_at: list[str] = []
    record_keys = _generations.Generations.record_keys

    def counting(self: Any, name: str) -> list[str]:
        looked_at.append(name)
        return record_keys(self, name)

    monkeypatch.setattr(_generations.Generations, "record_keys", counting)
    before = dict(cache._generations)
    cache.clear("tenant-0")
    # The namespace and its one function's scope: not the 4,999 other tenants.
    scope = f"tenant-0{_generations.SCOPE}{report._self_memo.keys.function_id}"
    assert sorted(set(looked_at)) == ["tenant-0", scope]
    assert len(looked_at) == 3  # the record to write, then the two generations made of it
    changed = {name for name, entry in cache._generations.items() if before[name][0] != entry[0]}
    assert changed == {"tenant-0", scope}
    assert cache.get("k", ns="tenant-0") is None
    assert cache.get("k", ns="tenant-4999") == 4999
    assert report.get(1) is memo.MISS
    looked_at.clear()
    report.clear()  # one function's scope: only itself
    assert set(looked_at) == {scope}
