"""Drivers: run a sans-I/O step generator with sync or async I/O.

Multi-step paths (filling under a lease, revalidating, reading generations)
are written once, as generators that yield what they need done and receive
its result, as httpx writes its auth flows. An op is `(name, args)`:

* a backend method name (`"get"`, `"lease"`, `"cas"`, ...): the sync driver
  calls `backend.get(*args)`, the async one awaits `backend.aget(*args)`;
* `"sleep"`: wait `args[0]` seconds (`time.sleep` / `asyncio.sleep`);
* `"compute"`: run the user's function: the driver's `compute`, or the callable
  the op names with its arguments (`("compute", (fn, *args))`); the async
  driver awaits what it returns when that is awaitable, so the user's function
  may be sync or async there.

A `BackendError` raised by an op, and anything the user's function raises, is
thrown back into the generator at its `yield`: a step decides itself whether
to fail open, and can release what it holds (a lease) before letting the
user's exception propagate unchanged.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from ._backend import Backend
from ._errors import BackendError

__all__ = ["Op", "Steps", "run_async", "run_sync"]

T = TypeVar("T")

#: What a step asks its driver to do: (operation name, arguments).
Op = tuple[str, tuple[Any, ...]]
Steps = Generator[Op, Any, T]


def _no_compute() -> Any:
    raise RuntimeError("these steps asked to compute, but the driver was given nothing to run")


def run_sync(backend: Backend, steps: Steps[T], compute: Callable[[], Any] = _no_compute) -> T:
    """Drive `steps` with the backend's sync methods."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            op, args = steps.send(send) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        if op == "compute":
            try:
                send = args[0](*args[1:]) if args else compute()
            except BaseException as exc:
                error, send = exc, None
        elif op == "sleep":
            time.sleep(args[0])
            send = None
        else:
            try:
                send = getattr(backend, op)(*args)
            except BackendError as exc:
                error, send = exc, None


async def run_async(
    backend: Backend, steps: Steps[T], compute: Callable[[], Awaitable[Any]] | None = None
) -> T:
    """Drive `steps` with the backend's async methods."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            op, args = steps.send(send) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        if op == "compute":
            try:
                send = args[0](*args[1:]) if args else (compute or _no_compute)()
                if inspect.isawaitable(send):
                    send = await send
            except BaseException as exc:
                error, send = exc, None
        elif op == "sleep":
            await asyncio.sleep(args[0])
            send = None
        else:
            try:
                send = await getattr(backend, "a" + op)(*args)
            except BackendError as exc:
                error, send = exc, None
