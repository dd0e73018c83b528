"""The ```python blocks of memo's documentation pages, with the markers test_docs.py reads.

Shared by tests/integration/test_docs.py (which runs them all) and the tests that take one
sample from a page (the example backend of docs/backends.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DOCS", "README", "ROOT", "Block", "blocks"]

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
_BLOCK = re.compile(
    r"(?:<!--\s*test:\s*(?P<marker>[a-z]+)(?P<reason>[^>\n]*?)\s*-->\s*\n)?^```python[^\n]*\n(?P<code>.*?)^```\s*$"
    r"|^<!--\s*test:\s*setup\s*\n(?P<setup>.*?)^-->\s*$",
    re.S | re.M,
)


@dataclass
class Block:
    line: int
    code: str
    marker: str | None


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for m in _BLOCK.finditer(text):
        part = "code" if m.group("code") is not None else "setup"
        marker = m.group("marker") if part == "code" else "setup"
        found.append(Block(text.count("\n", 0, m.start(part)) + 1, m.group(part), marker))
    return found
