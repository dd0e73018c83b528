"""Sentinels: one object per meaning, each named for what it says.

- `NOT_GIVEN`: an argument was not passed (distinct from None, which often
  means something, e.g. `ttl=None` is "never expire"). Public as `memo.UNSET`.
- `MISS`: there is no cached value (distinct from a cached None).

Both survive `copy`/`pickle` as themselves, so identity checks stay true.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MISS", "NOT_GIVEN"]


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return self._name  # pickled and copied by name: the module global itself

    def __copy__(self) -> _Sentinel:
        return self

    def __deepcopy__(self, memo: Any) -> _Sentinel:
        return self


#: An argument that was not passed.
NOT_GIVEN: Any = _Sentinel("NOT_GIVEN")
#: No cached value (a cached None is a value).
MISS: Any = _Sentinel("MISS")
