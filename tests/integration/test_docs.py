"""Every ```python block of the documentation (docs/*.md and README.md) runs.

The blocks of a page run in order in one namespace (a page reads as one
script), on memory:// unless a marker on the line before a block says what it
needs:

    <!-- test: memcached -->   memcached://127.0.0.1:11211 is replaced by the suite's server
    <!-- test: langgraph -->   needs the langgraph extra
    <!-- test: skip REASON --> shown, not run (docs/ only: every README block runs)

A synopsis that uses names it does not define (a `User` class, a `repo`) gets
them from a hidden block, an HTML comment the reader does not see, run in the
same namespace just before the next block:

    <!-- test: setup
    User = dict
    -->

Top-level `await` is allowed; a page's blocks share one event loop. What a
page changes in the process (environment variables, registered key types, the
default Cache) is undone after it.

Top-level `await` is allowed; a page's blocks share one event loop.

A `print(...)` line with a comment shows its output: the comment is checked
against what the line printed, `<name>` standing for a run of letters and digits
that changes between runs (a generation, a digest). Keys shown elsewhere (the
command line examples) are checked against the layout of a key memo builds.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from doc_blocks import DOCS, README, ROOT, Block, blocks

import memo
from memo import _canonical, _defaults

EXAMPLE_URL = "memcached://127.0.0.1:11211"


def all_pages() -> list[Path]:
    return [*sorted(DOCS.glob("*.md")), README]


def pages() -> list[object]:
    out: list[object] = []
    for page in all_pages():
        found = blocks(page)
        if not found:
            continue
        marks = [pytest.mark.memcached] if any(b.marker == "memcached" for b in found) else []
        out.append(pytest.param(page, marks=marks, id=page.name))
    return out


def test_markers_are_known() -> None:
    for page in all_pages():
        for block in blocks(page):
            assert block.marker in (None, "memcached", "langgraph", "skip", "setup"), (page.name, block.line)


def test_the_pages_have_samples() -> None:
    assert len(pages()) >= 9


def test_every_readme_block_runs() -> None:
    """The README is a synopsis readers copy from: none of its samples may be left unrun."""
    text = README.read_text()
    found = blocks(README)
    shown = [b for b in found if b.marker != "setup"]
    assert len(shown) == text.count("```python") >= 13
    assert [b.line for b in shown if b.marker == "skip"] == []


def test_setup_blocks_are_read_in_order(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- test: setup\nUser = dict\n-->\n\n"
        "```python\nu = User(id=1)\n```\n\n"
        "<!-- test: memcached -->\n```python\nprint(u)\n```\n"
    )
    assert blocks(page) == [
        Block(2, "User = dict\n", "setup"),
        Block(6, "u = User(id=1)\n", None),
        Block(11, "print(u)\n", "memcached"),
    ]


@pytest.mark.parametrize("page", pages())
def test_page_samples_run(
    page: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = blocks(page)
    # Every Cache a page makes, also those it replaces or never names (`from_env`, `from_url`),
    # is closed after it, as a program's exit would.
    made: list[memo.Cache] = []
    init = memo.Cache.__init__

    def tracked(self: memo.Cache, *args: object, **kwargs: object) -> None:
        made.append(self)
        init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(memo.Cache, "__init__", tracked)
    url = request.getfixturevalue("memcached_url") if any(b.marker == "memcached" for b in found) else None
    if any(b.marker == "langgraph" for b in found) and importlib.util.find_spec("langgraph") is None:
        pytest.fail("the documentation's LangGraph samples need the langgraph extra")
    # A real module, as a reader's script would be (dataclasses and pickling look it up).
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    loop = asyncio.new_event_loop()
    previous_default = _defaults._default
    saved_environ = dict(os.environ)
    saved_key_types = dict(_canonical._CANON), dict(_canonical._REGISTERED)

    printed: list[str] = []  # what the page's print() calls wrote, block by block
    namespace["print"] = lambda *args, **kwargs: printed.append(" ".join(map(str, args)))
    try:
        for block in found:
            if block.marker == "skip":
                continue
            code = block.code if url is None else block.code.replace(EXAMPLE_URL, url)
            compiled = compile(
                "\n" * (block.line - 1) + code,
                str(page),
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                dont_inherit=True,  # not this file's `from __future__ import annotations`
            )
            printed.clear()
            result = eval(compiled, namespace)
            if asyncio.iscoroutine(result):
                loop.run_until_complete(result)
            check_printed(page, block, printed)
    finally:
        for value in {id(c): c for c in [*made, *namespace.values(), _defaults._default]}.values():
            if isinstance(value, memo.Cache):  # the samples' connections, closed like a program would
                loop.run_until_complete(value.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        _defaults._default = previous_default
        os.environ.clear()
        os.environ.update(saved_environ)
        for registry, saved in zip((_canonical._CANON, _canonical._REGISTERED), saved_key_types, strict=True):
            registry.clear()
            registry.update(saved)  # type: ignore[attr-defined]
        del sys.modules[module.__name__]


_SHOWN = re.compile(r"^\s*print\(.*\)\s+# (?P<shown>.+?)\s*$", re.M)
_PLACEHOLDER = re.compile(r"<[a-z_]+>")


def shown_pattern(shown: str) -> re.Pattern[str]:
    """`shown` as a pattern: each `<name>` stands for a run of letters and digits."""
    parts = _PLACEHOLDER.split(shown)
    return re.compile("[0-9A-Za-z]+".join(map(re.escape, parts)))


def check_printed(page: Path, block: Block, printed: list[str]) -> None:
    shown = [m.group("shown") for m in _SHOWN.finditer(block.code)]
    if not shown:
        return
    assert len(printed) == len(shown), (page.name, block.line, printed)
    for text, comment in zip(printed, shown, strict=True):
        assert shown_pattern(comment).fullmatch(text), (
            f"{page.name}:{block.line}: printed {text!r}, shows {comment!r}"
        )


def test_shown_output_is_checked() -> None:
    assert shown_pattern("app:users:get_user:<generation>:<digest>").fullmatch("app:users:get_user:0af3:9e")
    assert not shown_pattern("app:users:<generation>").fullmatch("app:users:app.get_user:0af3")
    assert [m.group("shown") for m in _SHOWN.finditer("print(k)     # a:<b>\nprint(1)\n")] == ["a:<b>"]


_KEYED = memo.Cache("memory://", prefix="app:")


@_KEYED.cached(ns="users")
def get_user(user_id: int) -> dict[str, int]:
    """The function of the command line examples (`memo key app.users:get_user 42`)."""
    return {"id": user_id}


def test_keys_in_command_line_examples_have_memo_s_layout() -> None:
    real = get_user.key_for(42)
    layout = re.compile(re.sub(r"[0-9a-f]{16}:[0-9a-f]{32}$", "[0-9a-f]{16}:[0-9a-f]{32}", re.escape(real)))
    shown = re.findall(r"memo inspect \S+ '([^']+)'", (DOCS / "operations.md").read_text())
    assert shown
    for key in shown:
        assert layout.fullmatch(key), f"{key!r} is not laid out as memo's keys are ({real!r})"


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """What CI's `scripts/dev docs` checks, early: a docstring griffe cannot parse fails here."""
    # Not a service: where the docs group is missing (the other-Python runs), CI's own
    # `scripts/dev docs` step builds the site.
    pytest.importorskip("mkdocs", reason="the docs dependency group is not installed (scripts/dev docs)")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
