"""The Backup and Restore examples are valid objects, and their schedules fire."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hosted_engine.logic import backup as lb
from hosted_engine.models import Backup, Restore

ROOT = Path(__file__).resolve().parents[3]
FILES = [*sorted(ROOT.glob("examples/backup*.yaml")), ROOT / "examples" / "restore.yaml"]


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_objects_are_valid(path: Path) -> None:
    kinds = {"Backup": Backup, "Restore": Restore}
    found = [d for d in documents(path) if d["kind"] in kinds]
    assert found, f"{path.name} holds no Backup or Restore"
    for doc in found:
        obj = kinds[doc["kind"]].model_validate(doc)
        if isinstance(obj, Backup) and obj.spec.schedule:
            now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
            assert lb.next_fire(obj.spec.schedule, obj.spec.time_zone, now) > now
