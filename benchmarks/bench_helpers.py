"""Values and helpers shared by the benchmark modules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

#: A typical small cached result: what a "get user" function returns.
SMALL: dict[str, Any] = {
    "id": 42,
    "name": "Ann Example",
    "email": "ann@example.com",
    "roles": ["admin", "dev"],
    "active": True,
    "score": 97.5,
}
#: A ~10 KB result.
LARGE: dict[str, Any] = {
    "items": [
        {"id": i, "title": f"item number {i}", "price": i * 1.25, "tags": ["a", "b"]} for i in range(140)
    ]
}


def bench_async(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    op: Callable[[], Coroutine[Any, Any, Any]],
    ops: int = 200,
) -> Any:
    """Time `ops` sequential awaits of `op()` per round; the report divides by `ops`."""

    async def batch() -> Any:
        result = None
        for _ in range(ops):
            result = await op()
        return result

    benchmark.extra_info["ops_per_round"] = ops
    return benchmark(lambda: loop.run_until_complete(batch()))


def role(benchmark: Any, name: str, library: str) -> None:
    """Label a case for the report: `baseline`, `floor` or `subject`, and its library."""
    benchmark.extra_info["role"] = name
    benchmark.extra_info["library"] = library
