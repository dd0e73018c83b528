"""The batch plan, shared by sync and async: group by server, one request each, combine.

A batch (`get_many`, `set_many`, `delete_many`) is split by the server each key
routes to; each group becomes one request (a multi-key `get`, or pipelined
`set`/`delete` commands); the drivers run the requests - in turn (sync) or
concurrently (async) - and hand back one outcome per group, a result or the
`BackendError` it failed with. Everything else happens here, once: grouping,
refusing oversize values, merging the outcomes, and deciding between success,
`PartialFailure` (some servers failed: the result carries what arrived) and
the first error (all failed). Groups are keyed by `Server` object, not by
index, so a node list swapped by auto-discovery in the middle of a batch
cannot misdirect it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._backend import CasItem, PartialFailure, SetItem
from .._errors import BackendError
from ._server import Server
from ._topology import Topology
from ._wire import ServerError, expiry, key_bytes, keys_bytes

__all__ = [
    "KeyGroups",
    "all_outcome",
    "any_down",
    "combine",
    "is_down",
    "split_down",
    "split_items",
    "WriteGroups",
    "finish",
    "group_items",
    "group_keys",
    "merge_deleted",
    "merge_found",
    "merge_not_stored",
]

#: Keys by server: (key, key bytes) in the order given.
KeyGroups = dict[Server, list[tuple[str, bytes]]]
#: Writes by server: (key, key bytes, value, exptime).
WriteGroups = dict[Server, list[tuple[str, bytes, bytes, int]]]


def group_keys(topology: Topology, keys: Iterable[str]) -> KeyGroups:
    """Split keys by the server each routes to, keeping each group in the order given."""
    groups: KeyGroups = {}
    servers = topology.servers
    if len(servers) == 1:
        listed = list(keys)
        pairs = list(zip(listed, keys_bytes(listed), strict=True))
        return {servers[0]: pairs} if pairs else groups
    index = topology.index
    for key in keys:
        kb = key_bytes(key)
        server = servers[index(kb)]
        group = groups.get(server)
        if group is None:
            groups[server] = [(key, kb)]
        else:
            group.append((key, kb))
    return groups


def group_items(
    topology: Topology, items: Iterable[SetItem] | Iterable[CasItem], limit: int, not_stored: list[str]
) -> dict[Server, list[Any]]:
    """Group writes by server; values above `limit` bytes are listed in `not_stored` instead.

    Each item, `(key, value, ttl)` (`SetItem`) or `(key, value, ttl, unique)` (`CasItem`),
    becomes `(key, key bytes, value, exptime)`, with the unique last if it had one.
    """
    groups: dict[Server, list[Any]] = {}
    servers = topology.servers
    single = servers[0] if len(servers) == 1 else None
    index = topology.index
    listed: list[Any] = list(items)
    exptimes: dict[Any, int] = {}  # a batch's items mostly share one ttl
    for item, kb in zip(listed, keys_bytes([item[0] for item in listed]), strict=True):
        key, value, ttl = item[0], item[1], item[2]
        if len(value) > limit:
            not_stored.append(key)
            continue
        if type(value) is not bytes:
            value = bytes(value)
        server = single if single is not None else servers[index(kb)]
        exp = exptimes.get(ttl)
        if exp is None:
            exp = exptimes[ttl] = expiry(ttl)
        entry = (key, kb, value, exp) if len(item) == 3 else (key, kb, value, exp, item[3])
        group = groups.get(server)
        if group is None:
            groups[server] = [entry]
        else:
            group.append(entry)
    return groups


def merge_found(groups: KeyGroups, outcomes: Sequence[Any]) -> tuple[dict[str, bytes], list[BaseException]]:
    """Combine `{key bytes: value}` outcomes of multi-key gets into `{key: value}`."""
    found: dict[str, bytes] = {}
    errors: list[BaseException] = []
    for pairs, outcome in zip(groups.values(), outcomes, strict=True):
        if isinstance(outcome, BaseException):
            errors.append(outcome)
            continue
        # A reply holds only keys asked for (`Fetch`, `whole_get`): looked up all at once.
        key_of = {kb: key for key, kb in pairs}
        found.update(zip(map(key_of.__getitem__, outcome), outcome.values(), strict=True))
    return found, errors


def merge_not_stored(
    groups: Mapping[Server, Sequence[tuple[Any, ...]]], outcomes: Sequence[Any], not_stored: list[str]
) -> list[BaseException]:
    """Add each group's refused keys (all of a failed group's) to `not_stored`; return the errors.

    An error line from a server (`ServerError`) means "not stored", not a failure.
    """
    errors: list[BaseException] = []
    for entries, outcome in zip(groups.values(), outcomes, strict=True):
        if isinstance(outcome, BaseException):
            not_stored += [entry[0] for entry in entries]  # (key, ...)
            if not isinstance(outcome, ServerError):
                errors.append(outcome)
        else:
            not_stored += outcome
    return errors


def merge_deleted(groups: KeyGroups, outcomes: Sequence[Any]) -> tuple[list[str], list[BaseException]]:
    """Return the keys whose delete was not confirmed, and the errors."""
    unconfirmed: list[str] = []
    errors: list[BaseException] = []
    for pairs, outcome in zip(groups.values(), outcomes, strict=True):
        if isinstance(outcome, BaseException):
            unconfirmed += [key for key, _ in pairs]
            errors.append(outcome)
    return unconfirmed, errors


def finish(operation: str, result: Any, errors: Sequence[BaseException], groups: int) -> None:
    """Raise the first error when every group failed, `PartialFailure` when some did."""
    if not errors:
        return
    if len(errors) == groups:
        raise errors[0]
    raise PartialFailure(
        f"{operation}: {len(errors)} of {groups} memcached servers failed; first error: {errors[0]}",
        result,
        errors,
    )


def all_outcome(servers: Sequence[Server], outcomes: Sequence[Any]) -> list[tuple[Server, Any]]:
    """Pair each server of a `get_all`/`set_all` with its outcome; raise if all failed."""
    if outcomes and all(isinstance(o, BackendError) for o in outcomes):
        raise outcomes[0]
    return [(s, o) for s, o in zip(servers, outcomes, strict=True) if not isinstance(o, BaseException)]


# -- the gutter pool's plan (`_gutter`) ------------------------------------------------

_monotonic = time.monotonic


def is_down(server: Server) -> bool:
    """Whether a server's breaker is open now (a half-open one is up: the next call probes it)."""
    until = server.blocked_until
    return bool(until) and _monotonic() < until


def any_down(topology: Topology) -> bool:
    """Whether some server of the topology is marked down (a batch must then be split)."""
    return any(is_down(server) for server in topology.servers)


def split_down(topology: Topology, keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split keys into those whose server is up and those whose server is marked down."""
    up: list[str] = []
    down: list[str] = []
    servers, index = topology.servers, topology.index
    for key in keys:
        (down if is_down(servers[index(key_bytes(key))]) else up).append(key)
    return up, down


def split_items(topology: Topology, items: Iterable[SetItem]) -> tuple[list[SetItem], list[SetItem]]:
    """`split_down` for writes."""
    up: list[SetItem] = []
    down: list[SetItem] = []
    servers, index = topology.servers, topology.index
    for item in items:
        (down if is_down(servers[index(key_bytes(item[0]))]) else up).append(item)
    return up, down


def combine(operation: str, outcomes: Sequence[Any], empty: Any) -> Any:
    """Merge the outcomes of one batch sent to two pools (each a result or the error it raised).

    Results are dicts (merged) or lists (concatenated); a `PartialFailure`
    contributes what arrived. Raises like `finish`: the first error when every
    part failed, `PartialFailure` with the merged result when some did.
    """
    result = empty
    errors: list[BaseException] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            errors.append(outcome)
            if not isinstance(outcome, PartialFailure):
                continue
            outcome = outcome.result
        if outcome:
            if isinstance(result, dict):
                result.update(outcome)
            else:
                result += outcome
    if errors and all(not isinstance(e, PartialFailure) for e in errors) and len(errors) == len(outcomes):
        raise errors[0]
    if errors:
        raise PartialFailure(f"{operation}: {errors[0]}", result, errors)
    return result
