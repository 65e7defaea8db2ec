"""The StorageDomain examples parse, pass every validation rule, and render what they say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hosted_engine.logic import storage as s
from hosted_engine.models import StorageDomain

ROOT = Path(__file__).resolve().parents[3]
FILES = sorted([*(ROOT / "examples" / "storagedomains").glob("*.yaml"),
                *(ROOT / "examples" / "lab").glob("storagedomain*.yaml")])


def domains(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text())
            if d and d.get("kind") == "StorageDomain"]


def test_every_type_has_an_example() -> None:
    types = {d["spec"]["type"] for f in FILES for d in domains(f)}
    assert types == {"nfs", "iscsi", "fc", "glusterfs", "csi"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_is_valid_and_renders(path: Path) -> None:
    docs = domains(path)
    assert docs, f"{path} holds no StorageDomain"
    for doc in docs:
        parsed = s.parse(doc)
        assert isinstance(parsed, StorageDomain), parsed
        assert s.validate(parsed, []) == []
        volumes = s.render_volumes(parsed)
        assert (volumes == []) == (parsed.spec.type == "csi")
        for pv in volumes:
            assert pv["spec"]["storageClassName"] == s.storage_class_name(parsed)


def test_lab_example_is_the_hosted_engine_domain_with_a_data_domain_beside_it() -> None:
    lab = [d for f in FILES if f.parent.name == "lab" for d in domains(f)]
    roles = {d["metadata"]["name"]: d["spec"]["role"] for d in lab}
    assert roles == {"hosted-engine": "hostedEngine", "data": "data"}
