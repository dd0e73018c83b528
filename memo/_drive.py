"""Drivers: run a sans-I/O step generator with sync or async I/O.

Multi-step paths (filling under a lease, revalidating, reading generations)
are written once, as generators that yield what they need done and receive
its result, as httpx writes its auth flows. An op is `(Verb, args)`:

* a backend operation (`Verb.GET`, `Verb.LEASE`, `Verb.CAS`, ...): the sync driver
  calls `backend.get(*args)`, the async one awaits `backend.aget(*args)`;
* `Verb.SLEEP`: wait `args[0]` seconds on the engine's clock (`memo._clock`);
* `Verb.COMPUTE`: run the user's function: the driver's `compute`, or the callable
  the op names with its arguments (`(Verb.COMPUTE, (fn, *args))`); the async
  driver awaits what it returns when that is awaitable, so the user's function
  may be sync or async there.

Whatever an op or the user's function raises is thrown back into the generator
at its `yield`: a step decides itself whether to fail open (`BackendError`), and
releases what it holds (a lease) before letting anything else propagate.

Tearing down. Once something that is not an `Exception` was thrown in
(cancellation, `GeneratorExit`, `KeyboardInterrupt`), whatever the generator
still asks for is its clean-up. The async driver runs it in the same task when it
can; when it cannot await any more (`GeneratorExit`: the coroutine is being
closed, or the task is cancelled again during clean-up) it runs the rest with the
backend's sync methods, each bounded by the backend's timeouts, so a lease is
released on every way out.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from . import _clock

__all__ = ["Op", "Steps", "Verb", "run_async", "run_sync"]

T = TypeVar("T")


class Verb(str, enum.Enum):
    """What a step can ask its driver for: a backend operation, a pause, or the computation.

    A backend operation's value is its sync method's name; the async method is
    the same name with an `a` in front.
    """

    GET = "get"
    GET_MANY = "get_many"
    SET = "set"
    SET_MANY = "set_many"
    ADD = "add"
    DELETE = "delete"
    DELETE_MANY = "delete_many"
    GETS = "gets"
    CAS = "cas"
    TOUCH = "touch"
    LEASE = "lease"
    GET_ALL = "get_all"
    GET_ALL_MANY = "get_all_many"
    SET_ALL = "set_all"
    APPEND_ALL = "append_all"
    SLEEP = "sleep"
    COMPUTE = "compute"

    def __str__(self) -> str:
        return self.value


#: A step's request: (what, arguments). A plain string naming a backend method works too.
Op = tuple[Any, tuple[Any, ...]]
Steps = Generator[Op, Any, T]


def _no_compute() -> Any:
    raise RuntimeError("these steps asked to compute, but the driver was given nothing to run")


def _tearing_down(error: BaseException | None) -> bool:
    return error is not None and not isinstance(error, Exception)


def _sync_op(backend: Any, op: Any, args: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
    if op == "compute":
        return args[0](*args[1:]) if args else compute()
    if op == "sleep":
        _clock.sleep(args[0])
        return None
    return getattr(backend, op)(*args)


def run_sync(backend: Any, steps: Steps[T], compute: Callable[[], Any] = _no_compute) -> T:
    """Drive `steps` with the backend's sync methods."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            op, args = steps.send(send) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        try:
            send = _sync_op(backend, op, args, compute)
        except BaseException as exc:
            error, send = exc, None


async def _async_op(backend: Any, op: Any, args: tuple[Any, ...], compute: Any) -> Any:
    if op == "compute":
        result = args[0](*args[1:]) if args else (compute or _no_compute)()
        return (await result) if inspect.isawaitable(result) else result
    if op == "sleep":
        await _clock.asleep(args[0])
        return None
    return await getattr(backend, "a" + op)(*args)


class Closing(BaseException):
    """Thrown into steps in place of `GeneratorExit`: the coroutine driving them is being closed.

    A generator that receives `GeneratorExit` through `yield from` is closed, and
    may then not yield its clean-up; this exception lets it clean up like any
    other interruption, and the driver raises the `GeneratorExit` afterwards.
    """


async def run_async(backend: Any, steps: Steps[T], compute: Callable[[], Awaitable[Any]] | None = None) -> T:
    """Drive `steps` with the backend's async methods (see the module's notes on tearing down)."""
    send: Any = None
    error: BaseException | None = None
    cause: BaseException | None = None  # what is tearing the steps down, once something is
    closing: GeneratorExit | None = None
    while True:
        try:
            op, args = steps.send(send) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except Closing:
            raise closing from None  # type: ignore[misc]
        if _tearing_down(error):
            cause = error
        error = None
        if closing is not None:
            # This coroutine is being closed: it may not await any more.
            _finish_sync(backend, steps, op, args, cause)
            raise closing
        try:
            send = await _async_op(backend, op, args, compute)
        except GeneratorExit as exc:
            closing, error, send = exc, Closing(), None
        except BaseException as exc:
            if cause is not None and not isinstance(exc, Exception):
                # Cancelled again while cleaning up: finish the clean-up without awaiting.
                _finish_sync(backend, steps, op, args, cause)
                raise cause from None
            error, send = exc, None


def _finish_sync(
    backend: Any, steps: Steps[Any], op: Any, args: tuple[Any, ...], cause: BaseException | None
) -> None:
    """Run a tearing-down generator's remaining clean-up with sync I/O; swallow `cause` at its end."""
    while True:
        error: BaseException | None = None
        try:
            send = _sync_op(backend, op, args, _no_compute)
        except BaseException as exc:
            send, error = None, exc
        try:
            op, args = steps.send(send) if error is None else steps.throw(error)
        except StopIteration:
            return
        except BaseException as exc:
            if exc is cause:
                return
            raise
