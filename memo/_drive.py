"""Drivers of sans-I/O steps: each multi-step backend flow is written once, as a generator.

A step generator yields `(backend method name, arguments)` and receives the
method's result; `run_sync` calls the backend's sync methods, `run_async` the
async twins (`"get"` -> `aget`). The pseudo-method `"sleep"` pauses. An
exception a method raises is thrown into the generator at its `yield`, so a step
can handle a failure (or let it propagate). So the generation and lease flows
are written once and both flavours run the same code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from typing import Any, TypeVar

from ._backend import Backend

__all__ = ["Op", "run_async", "run_sync"]

T = TypeVar("T")

#: What a step asks the driver to do: (backend method name, arguments).
Op = tuple[str, tuple[Any, ...]]


def run_sync(backend: Backend, steps: Generator[Op, Any, T]) -> T:
    """Drive a sans-I/O generator with the backend's sync methods."""
    try:
        method, args = next(steps)
        while True:
            try:
                if method == "sleep":
                    time.sleep(*args)
                    result = None
                else:
                    result = getattr(backend, method)(*args)
            except Exception as exc:
                method, args = steps.throw(exc)
            else:
                method, args = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(backend: Backend, steps: Generator[Op, Any, T]) -> T:
    """Drive a sans-I/O generator with the backend's async methods."""
    try:
        method, args = next(steps)
        while True:
            try:
                if method == "sleep":
                    await asyncio.sleep(*args)
                    result = None
                else:
                    result = await getattr(backend, "a" + method)(*args)
            except Exception as exc:
                method, args = steps.throw(exc)
            else:
                method, args = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
