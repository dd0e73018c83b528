"""memo's modules import downwards, and never in a circle.

The imports are read from the source (ast), not by importing anything. What counts:

- runtime mode: the imports a module runs when it is imported, i.e. every import
  statement outside function bodies (module level, inside `try`/`if` blocks and class
  bodies), except those under `if TYPE_CHECKING:`. A cycle here can break an import
  (a half-initialised module).
- typing mode: the runtime imports plus those under `if TYPE_CHECKING:`. A cycle here
  is still two modules that know each other: the design is circular even when Python
  copes with it.
- Imports inside a function body run at call time; they are left out of both modes.
- `from pkg import name` is an edge to `pkg.name` when that is a module of memo, else to
  `pkg` (its `__init__`). A module's own parent packages, which Python imports first,
  are not edges.

Layers, lowest first (a module may import its own layer and the ones below):

    core          binding, canonical forms, keys, codec, policy, errors, sentinels, settings
    engine        fills, leases, generations, single-flight, sans-I/O drivers, events, background
    edge          backends speaking bytes: the contract, memory, null, memcached, routing
    door          memo's public face: the package, Cache, @cached, values, defaults, lifespan
    integrations  langgraph, sessions, the CLI, metrics exporters, the pytest plugin

Known violations are listed below, each edge with the reason it exists; the list may
only shrink: an entry that no longer matches an import fails the test, so whoever
removes an import removes its entry too.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "memo"

#: Layer name and the module patterns (fnmatch) it holds, lowest first. The patterns of
#: the package layout under construction (memo._core.*, memo._engine.*, ...) are listed
#: beside today's names so that moving a module keeps its place.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "core",
        (
            "memo._binding",
            "memo._canonical",
            "memo._codec",
            "memo._errors",
            "memo._keys",
            "memo._policy",
            "memo._sentinels",
            "memo._settings",
            "memo._core",
            "memo._core.*",
        ),
    ),
    (
        "engine",
        (
            "memo._background",
            "memo._clock",
            "memo._context",
            "memo._drive",
            "memo._events",
            "memo._flight",
            "memo._generations",
            "memo._fill",
            "memo._leases",
            "memo._memo",
            "memo._near",
            "memo._tagged",
            "memo._tags",
            "memo._engine",
            "memo._engine.*",
        ),
    ),
    (
        "edge",
        (
            "memo._backend",
            "memo._memory",
            "memo._null",
            "memo._routing",
            "memo._memcached",
            "memo._memcached.*",
            "memo._backends",
            "memo._backends.*",
        ),
    ),
    (
        "door",
        (
            "memo",
            "memo._batch",
            "memo._cache",
            "memo._decorator",
            "memo._defaults",
            "memo._health",
            "memo._lifecycle",
            "memo._touch",
            "memo._values",
            "memo.cache",
            "memo.decorator",
        ),
    ),
    (
        "integrations",
        (
            "memo.__main__",
            "memo._cli",
            "memo.cli",
            "memo.langgraph",
            "memo.langgraph.*",
            "memo.otel",
            "memo.prometheus",
            "memo.sessions",
            "memo.sessions.*",
            "memo.testing",
        ),
    ),
]

#: Upward imports that exist today: (importer, imported, mode) -> why. Shrink only.
ALLOWED_UPWARD: dict[tuple[str, str, str], str] = {}

#: Edges that close a cycle today: (importer, imported, mode) -> why. Shrink only.
ALLOWED_CYCLE_EDGES: dict[tuple[str, str, str], str] = {
    # Cache builds the health check, which takes the Cache back (typed).
    ("memo._health", "memo._cache", "typing"): "health() takes a Cache",
}

MODES = ("runtime", "typing")


@dataclass
class Module:
    name: str
    path: Path
    runtime: set[str] = field(default_factory=set)
    typing: set[str] = field(default_factory=set)  # TYPE_CHECKING imports only

    def imports(self, mode: str) -> set[str]:
        return self.runtime | self.typing if mode == "typing" else set(self.runtime)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def statements(body: list[ast.stmt], typing: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """Statements that run at import time (and whether under TYPE_CHECKING), without function bodies."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node, typing
        if isinstance(node, ast.If):
            yield from statements(node.body, typing or is_type_checking(node.test))
            yield from statements(node.orelse, typing)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from statements(block, typing)
        elif isinstance(node, (ast.With, ast.ClassDef, ast.For, ast.While)):
            yield from statements(node.body, typing)


def targets(node: ast.Import | ast.ImportFrom, package: str, known: set[str]) -> set[str]:
    """The memo modules an import statement imports."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name.split(".")[0] == "memo"}
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    if source.split(".")[0] != "memo":
        return set()
    found = set()
    for alias in node.names:
        candidate = f"{source}.{alias.name}"
        found.add(candidate if candidate in known else source)
    return found


def read_modules() -> dict[str, Module]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(path) for path in paths}
    modules = {}
    for path in paths:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        module = Module(name, path)
        for node, under_type_checking in statements(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found = targets(node, package, known) - {name}
                (module.typing if under_type_checking else module.runtime).update(found)
        module.typing -= module.runtime
        modules[name] = module
    return modules


def layer_of(name: str) -> int | None:
    for index, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return index
    return None


def edges(modules: dict[str, Module], mode: str) -> set[tuple[str, str]]:
    return {(m.name, target) for m in modules.values() for target in m.imports(mode)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return read_modules()


# -- the reader itself ------------------------------------------------------------------


def test_the_reader_sees_what_each_mode_counts(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import _codec\n"
        "from ._keys import KeyMaker\n"
        "import memo._routing\n"
        "from memo import Cache\n"
        "try:\n    from ._settings import x\nexcept ImportError:\n    pass\n"
        "class C:\n    from ._null import NullBackend\n"
        "if TYPE_CHECKING:\n    from ._values import Values\n"
        "def f():\n    from ._cli import main\n"
    )
    known = {"memo", *(f"memo.{m}" for m in ("_codec", "_keys", "_routing", "_settings", "_null", "_values"))}
    runtime: set[str] = set()
    typing: set[str] = set()
    for node, under in statements(ast.parse(source.read_text()).body):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            (typing if under else runtime).update(targets(node, "memo", known))
    assert runtime == {"memo._codec", "memo._keys", "memo._routing", "memo", "memo._settings", "memo._null"}
    assert typing == {"memo._values"}


def test_the_cycle_finder_finds_a_circle_and_only_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_reader_finds_known_imports(modules: dict[str, Module]) -> None:
    # Anchors that hold however the package is laid out: the public package imports
    # the errors, and the errors import no module of memo.
    assert any(target.endswith("_errors") for target in modules["memo"].runtime)
    errors = [m for name, m in modules.items() if name.endswith("._errors")]
    assert errors and all(not m.runtime and not m.typing for m in errors)


# -- the rules ------------------------------------------------------------------------------


def test_every_module_has_a_layer(modules: dict[str, Module]) -> None:
    unplaced = sorted(name for name in modules if layer_of(name) is None)
    assert not unplaced, f"add these modules to LAYERS in {__file__}: {unplaced}"


@pytest.mark.parametrize("mode", MODES)
def test_no_import_cycles(modules: dict[str, Module], mode: str) -> None:
    allowed = {(a, b) for (a, b, m), _ in ALLOWED_CYCLE_EDGES.items() if m == mode or m == "runtime"}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for importer, imported in edges(modules, mode) - allowed:
        graph[importer].add(imported)
    assert cycles(graph) == [], f"import cycle among memo's modules ({mode} imports)"


@pytest.mark.parametrize("mode", MODES)
def test_imports_go_down_the_layers(modules: dict[str, Module], mode: str) -> None:
    allowed = {(a, b) for (a, b, m) in ALLOWED_UPWARD if m == mode or m == "runtime"}
    upward = []
    for importer, imported in sorted(edges(modules, mode) - allowed):
        low, high = layer_of(importer), layer_of(imported)
        if low is not None and high is not None and high > low:
            upward.append(f"{importer} ({LAYERS[low][0]}) imports {imported} ({LAYERS[high][0]})")
    assert upward == []


@pytest.mark.parametrize("allowed", [ALLOWED_UPWARD, ALLOWED_CYCLE_EDGES], ids=["upward", "cycles"])
def test_the_allow_lists_only_shrink(
    modules: dict[str, Module], allowed: dict[tuple[str, str, str], str]
) -> None:
    """Each listed edge still exists in its mode (and not already at runtime when listed as typing)."""
    stale = []
    for importer, imported, mode in allowed:
        module = modules.get(importer)
        counted = set() if module is None else module.runtime if mode == "runtime" else module.typing
        if imported not in counted:
            stale.append((importer, imported, mode))
    assert stale == [], "these imports are gone: delete their entries"


# -- integrations use a Cache's declared surface ------------------------------------------

#: Calls that name an attribute by a string.
_BY_NAME = {"getattr", "setattr", "hasattr", "delattr"}


def _is_cache(node: ast.expr) -> bool:
    """`cache`, `memo_cache`, `self.cache`, `self._cache`: an expression named as a Cache."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.lower().endswith("cache")


def _private(name: object) -> bool:
    return isinstance(name, str) and name.startswith("_") and not name.startswith("__")


def _reaches_in(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return _private(node.attr) and _is_cache(node.value)
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _BY_NAME
        and len(node.args) >= 2
        and _is_cache(node.args[0])
        and isinstance(node.args[1], ast.Constant)
        and _private(node.args[1].value)
    )


def private_cache_access(source: str) -> list[str]:
    """Each `<cache>._name` and `getattr(<cache>, "_name")` in `source`, as `line: expression`, in order."""
    found = sorted(
        (node.lineno, node.col_offset, ast.unparse(node))
        for node in ast.walk(ast.parse(source))
        if _reaches_in(node)
    )
    return [f"{line}: {text}" for line, _, text in found]


def test_the_scan_finds_private_cache_access() -> None:
    source = (
        "self.cache._get_many(keys)\n"
        "if cache._events.hook: memo_cache._emit('hit')\n"
        "emit = getattr(self.cache, '_emit', None)\n"
        "self._cache.stats(); cache.__class__; cache.emit('hit'); other._x; getattr(cache, 'emit')\n"
    )
    assert private_cache_access(source) == [
        "1: self.cache._get_many",
        "2: cache._events",
        "2: memo_cache._emit",
        "3: getattr(self.cache, '_emit', None)",
    ]


def test_integrations_use_only_the_declared_surface_of_a_cache(modules: dict[str, Module]) -> None:
    """memo.langgraph, memo.sessions, the CLI, the exporters and the pytest plugin call a Cache
    through its public methods (`emit`, `event_hook`, `get_many_bytes`, ...), never its
    underscore attributes: those may change without notice."""
    integrations = LAYERS.index(next(layer for layer in LAYERS if layer[0] == "integrations"))
    scanned, reaching = [], []
    for module in modules.values():
        if layer_of(module.name) == integrations:
            scanned.append(module.name)
            reaching += [f"{module.name}:{hit}" for hit in private_cache_access(module.path.read_text())]
    assert {"memo.langgraph._cache", "memo.sessions._cache", "memo._cli", "memo.otel"} <= set(scanned)
    assert reaching == []
