"""The previous release of memo, loaded beside this one for same-run comparisons.

Its modules are read from the release's commit with `git show` into a temporary
package named `memo_previous` (memo's modules import each other relatively, so
the copy runs as it was released). Nothing is installed; without git or the
commit (a shallow clone), `load()` returns None and the comparison is skipped.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

#: memo 0.1.0.
RELEASE = "ec2c42af299d2bb7d03ba25cb22d165f29c50fb1"
NAME = "memo_previous"
ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def load() -> ModuleType | None:
    """Import the previous release as `memo_previous`, or return None when it cannot be had."""
    if NAME in sys.modules:
        return sys.modules[NAME]
    try:
        files = [f for f in _git("ls-tree", "--name-only", RELEASE, "memo/").split() if f.endswith(".py")]
        target = Path(tempfile.mkdtemp(prefix="memo-previous-")) / NAME
        target.mkdir()
        for name in files:
            (target / Path(name).name).write_text(_git("show", f"{RELEASE}:{name}"))
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_file_location(
        NAME, target / "__init__.py", submodule_search_locations=[str(target)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    spec.loader.exec_module(module)
    return module
