"""Run a module's memcached tests once per protocol: `pytestmark = pytest.mark.usefixtures("protocol")`.

`protocol` is parametrised over "classic" and "meta": every `MemcachedBackend`
the test builds without naming a protocol speaks that one. The same tests,
the same assertions: the two protocols must not differ in anything a caller
of the backend can see.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from memo._memcached import MemcachedBackend

__all__ = ["protocol"]


@pytest.fixture(params=["classic", "meta"])
def protocol(request: pytest.FixtureRequest) -> Iterator[str]:
    real_init = MemcachedBackend.__init__

    def init(self: MemcachedBackend, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("protocol", request.param)
        real_init(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MemcachedBackend, "__init__", init)
        yield request.param
