"""The test tree itself: pytest imports test modules and their helpers by basename
(rootdir-relative "prepend" import mode), so two files with the same name in different folders
break the collection of the whole suite. Name files after their folder (test_sim_*.py, ...)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_python_file_basenames_are_unique() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if path.name in {"conftest.py", "__init__.py"}:
            continue
        seen[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, f"rename these so every basename is unique: {clashes}"
