"""The one clock the engine reads: wall time, monotonic time and sleeping.

Leases wait, generations are trusted for a while, refreshes back off and values
carry their expiry: every rule that depends on time reads it here, so a test can
install a `FakeClock` and move time by hand instead of sleeping (`use`).

The functions are module attributes looked up at each call (`_clock.time()`),
which costs one attribute read on the hit path and lets `use` swap them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time as _time_module
from collections.abc import Awaitable, Callable, Iterator

__all__ = ["FakeClock", "asleep", "monotonic", "sleep", "time", "use"]

#: Seconds since the epoch (values' expiry headers).
time: Callable[[], float] = _time_module.time
#: Seconds on a clock that never goes back (lease waits, trust windows, back-off).
monotonic: Callable[[], float] = _time_module.monotonic
#: Block the calling thread.
sleep: Callable[[float], None] = _time_module.sleep


async def _asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


#: Suspend the calling task.
asleep: Callable[[float], Awaitable[None]] = _asleep


class FakeClock:
    """A clock that moves only when told to, or when somebody sleeps on it.

    `sleep(s)` and `asleep(s)` advance the clock by `s` at once (the async one
    still yields to the event loop once), so code that waits for a deadline
    reaches it without real waiting, and a test can assert how long it waited.
    """

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._wall = _time_module.time() if start is None else start
        self._mono = 1000.0
        #: Total seconds spent in `sleep`/`asleep`.
        self.slept = 0.0

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by `seconds`."""
        with self._lock:
            self._wall += seconds
            self._mono += seconds

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        self.slept += seconds
        self.advance(seconds)
        await asyncio.sleep(0)


@contextlib.contextmanager
def use(clock: FakeClock) -> Iterator[FakeClock]:
    """Make the engine read `clock` inside the block (tests only: not thread-scoped)."""
    global time, monotonic, sleep, asleep
    saved = time, monotonic, sleep, asleep
    time, monotonic, sleep, asleep = clock.time, clock.monotonic, clock.sleep, clock.asleep
    try:
        yield clock
    finally:
        time, monotonic, sleep, asleep = saved
