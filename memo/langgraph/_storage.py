"""Storage keys of the graph cache: from LangGraph's `(namespace, key)` to a memcached key.

Keys: `<prefix><name>:<namespace, sanitised and shortened>:<digest><key>`.
The readable part is for people reading server dumps. `<digest>` is a
blake2b-128 of the exact namespace tuple and the generations it is read
under, computed once per namespace and generations; `<key>` is LangGraph's key
as it is when it is a 32-hex-digit digest (what LangGraph makes), else "h" and
a blake2b-128 of it (any length, any characters). So two (namespace, key)
pairs never share an entry, and a batch costs one string concatenation per key.

The generations of a namespace are the cache's own and one per leading part
of the tuple: `("a", "b")` is read under the generations of `("a",)` and
`("a", "b")`, so clearing `("a",)` drops `("a", "b")` too. The empty
namespace `()` has a generation of its own and is no part of the others:
clearing it drops only its own entries (`clear()` drops everything).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping

from langgraph.cache.base import FullKey, Namespace

from .._keys import safe_segment

__all__ = ["Space", "memo_namespace", "storage_keys"]

_KEY_VERSION = b"memo.langgraph/3"
#: `langgraph._internal._constants.CACHE_NS_WRITES`, left out of the readable part of keys.
_WRITES_NS = "__pregel_ns_writes"
#: LangGraph keys: 32 lowercase hex digits (an xxh3-128 digest).
_DIGEST_LEN = 32
_DIGEST_LENGTHS = {_DIGEST_LEN}
_HEX = b"0123456789abcdef"
#: The readable namespace label: at most 64 characters, so that the longest key
#: (64 prefix + 48 name + 2 colons + 64 label + 32 digest + 33 key) stays under 250 bytes.
_LABEL_MAX = 64


def _frame(*parts: bytes) -> bytes:
    """Length-prefix each part, so no sequence of parts can read as another."""
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def _hex(text: str) -> bool:
    """Whether `text` is lowercase hex digits only, in one C-level pass over its bytes."""
    return text.isascii() and not text.encode("ascii").translate(None, _HEX)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def memo_namespace(owner: str, ns: Namespace) -> str:
    """The memo namespace whose generation `clear([ns])` renews; "/" never occurs in `owner`."""
    return f"{owner}/{json.dumps(list(ns), ensure_ascii=True)}"


class Space:
    """What keys of one LangGraph namespace share, prepared once per generation."""

    __slots__ = ("chain", "made", "memo_ns", "seed", "static")

    def __init__(self, owner: str, static_prefix: str, ns: Namespace) -> None:
        self.memo_ns = memo_namespace(owner, ns)
        #: The memo namespaces whose generations keys of `ns` are read under: one per
        #: leading part of the tuple, the namespace itself last.
        self.chain = tuple(memo_namespace(owner, ns[:n]) for n in range(1, len(ns) + 1)) or (self.memo_ns,)
        label = "/".join(ns[1:] if ns[:1] == (_WRITES_NS,) else ns)
        self.static = f"{static_prefix}{safe_segment(label, _LABEL_MAX)}:"
        self.seed = _frame(len(ns).to_bytes(4, "big"), *map(_utf8, ns))
        #: The last prefix made, with the generations it was made for (one tuple: threads share it).
        self.made: tuple[str, tuple[str, ...], str] = ("", (), "")

    def prefix_for(self, owner_name: str, owner: str, gens: tuple[str, ...]) -> str:
        """Return `<static><digest of the exact namespace and its generations>`."""
        made_owner, made_gens, prefix = self.made
        if made_owner != owner or made_gens != gens:
            seed = _frame(_KEY_VERSION, owner_name.encode(), owner.encode(), *(g.encode() for g in gens))
            prefix = self.static + hashlib.blake2b(seed + self.seed, digest_size=16).hexdigest()
            self.made = (owner, gens, prefix)
        return prefix


def storage_keys(full_keys: Collection[FullKey], prefixes: Mapping[Namespace, str]) -> dict[FullKey, str]:
    """Map LangGraph keys to memcached keys; keys of namespaces not in `prefixes` are left out.

    The prefix ends in a digest of the exact namespace and its generations,
    so what follows only has to tell the keys of one namespace apart. A
    LangGraph key is a 32-hex-digit digest already, safe in memcached as it
    is, so it is appended unchanged (the whole batch is checked at once);
    any other string is replaced by "h" and its blake2b-128 digest, which is
    33 characters long and cannot equal a 32-digit key.
    """
    if set(map(len, keys := [full[1] for full in full_keys])) == _DIGEST_LENGTHS and _hex("".join(keys)):
        if len(prefixes) == 1:
            ((only, one),) = prefixes.items()
            return {full: one + full[1] for full in full_keys if full[0] == only}
        return {full: hit + full[1] for full in full_keys if (hit := prefixes.get(full[0])) is not None}
    out: dict[FullKey, str] = {}
    for full in full_keys:
        prefix = prefixes.get(full[0])
        if prefix is not None:
            key = full[1]
            if len(key) == _DIGEST_LEN and _hex(key):
                out[full] = prefix + key
            else:
                out[full] = f"{prefix}h{hashlib.blake2b(_utf8(key), digest_size=16).hexdigest()}"
    return out
