"""Tags: invalidate every entry that depends on something, without a scan.

Each tag has a version: a random token stored under its own key
(`<prefix>~t:<digest of the tag>`). An entry stored by a tagged function carries
the versions of its tags, read before the function ran, in an envelope around
its encoded bytes:

    b"\\xfft" | count (1 byte) | count × 16-byte token | the codec's bytes

A hit reads the entry and its tags' versions in one `get_many` and is a hit only
when every version it carries is still the current one. `invalidate_tags`
writes new tokens, so every entry stored before is a miss from then on, in every
process. A version the backend lost (evicted, restarted) is a miss as well, and
the next fill writes a new token: an entry can never be revived by a lost tag.

A tag invalidated while a fill computes is safe too: the fill stores the
versions it read before computing, which are no longer current.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from ._canonical import canonical
from ._drive import Steps, Verb
from ._errors import ConfigurationError

__all__ = [
    "ENVELOPE",
    "bump",
    "ensure_versions",
    "param_tag",
    "tag_key",
    "unwrap",
    "wrap",
]

#: The first bytes of a tagged entry (never the start of the codec's bytes, `m`).
ENVELOPE = b"\xfft"
TOKEN = 16


def new_token() -> bytes:
    return os.urandom(TOKEN // 2).hex().encode("ascii")


def tag_key(prefix: str, tag: str) -> str:
    """The backend key of a tag's version."""
    if not isinstance(tag, str):
        raise ConfigurationError(f"a tag is a str, got {type(tag).__name__} {tag!r}")
    digest = hashlib.blake2b(tag.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"{prefix}~t:{digest}"


def param_tag(name: str, value: Any) -> str:
    """The tag a parameter's value gives (`tags=("author_id",)`): exact about types (`1` is not `"1"`)."""
    return f"{name}={orjson.dumps(canonical(value)).decode()}"


def wrap(versions: Sequence[bytes], data: bytes) -> bytes:
    """Put the versions an entry depends on in front of its encoded bytes."""
    return ENVELOPE + bytes([len(versions)]) + b"".join(versions) + data


def unwrap(raw: bytes, current: Sequence[bytes | None] | None) -> bytes | None:
    """The codec's bytes of a tagged entry, or None when a version it carries is not current.

    `current=None`: strip the envelope without checking (the caller produced it).
    """
    if not raw.startswith(ENVELOPE) or len(raw) < 3:
        return None
    count = raw[2]
    end = 3 + count * TOKEN
    if current is not None:
        if len(current) != count:
            return None
        for i, version in enumerate(current):
            if version is None or raw[3 + i * TOKEN : 3 + (i + 1) * TOKEN] != version:
                return None
    return raw[end:]


def ensure_versions(keys: Sequence[str], versions: list[bytes | None]) -> Steps[list[bytes]]:
    """Give every tag a version before computing: create the missing ones (first `add` wins)."""
    out: list[bytes] = []
    for key, version in zip(keys, versions, strict=True):
        if version is None:
            token = new_token()
            if not (yield (Verb.ADD, (key, token, None))):
                found = yield (Verb.GET, (key,))
                token = found if isinstance(found, bytes) and len(found) == TOKEN else token
            version = token
        out.append(version)
    return out


def bump(keys: Iterable[str]) -> Steps[int]:
    """Give each tag a new version; return how many were written."""
    written = 0
    for key in keys:
        written += bool((yield (Verb.SET, (key, new_token(), None))))
    return written
