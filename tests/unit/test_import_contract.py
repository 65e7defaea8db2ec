"""The layer contract of docs/development.md, checked with import-linter on every test run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_layers_hold() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run(
        [exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_package_is_not_named_operator() -> None:
    import hosted_engine

    assert Path(hosted_engine.__file__).parent.name == "hosted_engine"
    assert not (ROOT / "operator" / "operator").exists()
