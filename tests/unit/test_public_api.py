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
    "cached_many",
    "configure",
    "default_cache",
    "lifespan",
    "cache_lifespan",
    "Lifespan",
    "Cached",
    "AsyncCached",
    "CachedMany",
    "AsyncCachedMany",
    "Codec",
    "DecodeError",
    "register_type",
    "register_key_type",
    "Backend",
    "Capability",
    "PartialFailure",
    "Event",
    "UNSET",
    "MISS",
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
        "{'pymemcache', 'aiomcache', 'langgraph', 'pydantic', "
        "'prometheus_client', 'opentelemetry', 'pytest'}))"
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


def _runtime_imports(module: str) -> set[str]:
    """memo modules `module` imports when it runs (anything under `if TYPE_CHECKING:` left out)."""
    tree = ast.parse((Path(memo.__file__).parent / f"{module}.py").read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in typing_only:
            if node.module:
                found.add(node.module)
            else:
                found |= {alias.name for alias in node.names}
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    """No import circles (even deferred into a function), e.g. between `_cache` and `_decorator`.

    `_backend` loading a backend for a URL scheme when it is used is the one deferred edge
    allowed: the backends build on `_backend`, which names them only by scheme.
    """
    modules = [p.stem for p in Path(memo.__file__).parent.glob("*.py")]
    graph = {m: _runtime_imports(m) for m in modules}
    graph["_backend"] -= {"_memory", "_memcached", "_null"}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(m for m in modules if reaches(m, m, {m}))
    assert circles == [], f"modules in an import circle: {circles}"


def test_sentinels_are_one_per_meaning_and_survive_copies() -> None:
    import copy
    import pickle

    from memo._sentinels import MISS, NOT_GIVEN

    assert memo.UNSET is NOT_GIVEN and NOT_GIVEN is not MISS
    for sentinel in (NOT_GIVEN, MISS):
        assert copy.copy(sentinel) is sentinel and copy.deepcopy(sentinel) is sentinel
        assert pickle.loads(pickle.dumps(sentinel)) is sentinel
        assert not sentinel
