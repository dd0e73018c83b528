"""The public door: exactly these names, and integrations loaded only when used."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import memo

PUBLIC = {
    "Cache",
    "cached",
    "configure",
    "default_cache",
    "Cached",
    "AsyncCached",
    "Codec",
    "DecodeError",
    "register_type",
    "register_key_type",
    "Backend",
    "PartialFailure",
    "UNSET",
    "MemoError",
    "ConfigurationError",
    "UnkeyableArgumentError",
    "SerializationError",
    "BackendError",
    "BackendUnavailable",
    "BackendTimeout",
    "BackendProtocolError",
}


def test_exported_names_are_pinned() -> None:
    assert set(memo.__all__) == PUBLIC
    assert all(hasattr(memo, name) for name in PUBLIC)


def test_every_error_is_a_memo_error() -> None:
    for name in PUBLIC:
        obj = getattr(memo, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, memo.MemoError), name
            assert obj.__doc__


def test_importing_memo_loads_no_client_or_integration() -> None:
    code = (
        "import sys, memo; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pymemcache', 'aiomcache', 'langgraph', 'pydantic'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


PURE = {"_keys", "_binding", "_canonical", "_codec", "_policy", "_errors", "_sentinels"}
FORBIDDEN = {"asyncio", "socket", "ssl", "selectors", "threading", "pymemcache", "aiomcache", "langgraph"}


def _imports(module: str) -> set[str]:
    tree = ast.parse((Path(memo.__file__).parent / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(("." * node.level) + (node.module or ""))
    return found


def test_the_core_imports_no_io() -> None:
    """Keys, codec and policy are pure: no client, no sockets, no asyncio; only other pure modules."""
    for module in PURE:
        for name in _imports(module):
            if name.startswith("."):
                assert name[1:] in PURE, f"{module} imports {name}"
            else:
                assert name.split(".")[0] not in FORBIDDEN, f"{module} imports {name}"
