"""Module-level memoized functions that tests send to other processes (see test_pickling.py).

They use the default Cache, which each process builds from `$MEMO_URL`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import memo


@memo.cached(ns="pickled")
def square(x: int) -> list[int]:
    """x², and the process that computed it."""
    return [x * x, os.getpid()]


@memo.cached(ns="pickled")
async def acube(x: int) -> list[int]:
    """x³, and the process that computed it."""
    return [x**3, os.getpid()]


def run_async(fn: Callable[[int], Awaitable[Any]], x: int) -> Any:
    """Await `fn(x)` in a new event loop (`fn` arrives pickled)."""
    return asyncio.run(fn(x))  # type: ignore[arg-type]


def fill(fn: Callable[[int], Any], xs: list[int]) -> None:
    """A `Process` target: call `fn` on each of `xs`."""
    for x in xs:
        fn(x)
