"""The pvc target's data mover (a stdlib script run in a Job) against the operator's own checks:
what it writes verifies, a corrupted object is found, a folder is removed."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hosted_engine.adapters import pvcmover
from hosted_engine.adapters.export import verification_from_measures
from hosted_engine.logic import backup as lb

RAW = hashlib.shake_256(b"disk").digest(300_000)


def _run(tmp_path: Path) -> tuple[Path, str]:
    """A run folder as the mover's write mode leaves it (the disk written like an export)."""
    folder = tmp_path / "ns" / "engine" / "r1"
    folder.mkdir(parents=True)
    objects = []
    disk = gzip.compress(RAW, mtime=0)
    (folder / lb.DISK).write_bytes(disk)
    objects.append(lb.StoredObject(lb.DISK, len(disk), lb.sha256_hex(disk), len(RAW),
                                   lb.sha256_hex(RAW)))
    for name, text in ((lb.VM_DEFINITION, "kind: VirtualMachine\n"),
                       (lb.HE_DEFINITION, "spec:\n  vm:\n    network: {fqdn: e.example}\n")):
        (folder / name).write_text(text)
        objects.append(lb.StoredObject(name, len(text), lb.sha256_hex(text.encode())))
    body = lb.manifest_body(namespace="ns", backup="b", run_id="r1",
                            created_at=datetime(2026, 1, 1, tzinfo=UTC), operator_version="0",
                            source={})
    body["objects"] = [o.as_dict() for o in objects]
    manifest = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
    (folder / lb.MANIFEST).write_bytes(manifest)
    return folder, lb.sha256_hex(manifest)


def test_a_good_run_verifies_and_a_corrupted_one_does_not(tmp_path: Path) -> None:
    folder, manifest_sha = _run(tmp_path)
    measured = pvcmover.verify(str(tmp_path), "ns/engine/r1")
    check = verification_from_measures(measured, manifest_sha)
    assert check.mismatches == [] and check.verified == 3
    assert check.he_definition["spec"]["vm"]["network"]["fqdn"] == "e.example"
    data = bytearray((folder / lb.DISK).read_bytes())
    data[100] ^= 0xFF  # one flipped bit inside the compressed disk
    (folder / lb.DISK).write_bytes(bytes(data))
    (folder / lb.VM_DEFINITION).unlink()
    check = verification_from_measures(pvcmover.verify(str(tmp_path), "ns/engine/r1"),
                                       manifest_sha)
    assert {m.object.split(" ")[0] for m in check.mismatches} == {lb.DISK, lb.VM_DEFINITION}
    assert check.verified == 1 and check.he_definition


def test_a_changed_manifest_is_a_mismatch(tmp_path: Path) -> None:
    _run(tmp_path)
    check = verification_from_measures(pvcmover.verify(str(tmp_path), "ns/engine/r1"), "0" * 64)
    assert [m.object for m in check.mismatches] == [lb.MANIFEST]


def test_delete_and_the_result_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run(tmp_path)
    assert pvcmover.main(["delete", str(tmp_path), "ns/engine/r1"]) == 0
    assert json.loads(capsys.readouterr().out.split("RESULT ", 1)[1]) == {"removed": 4}
    assert not (tmp_path / "ns" / "engine" / "r1").exists()
    assert pvcmover.main(["verify", str(tmp_path), "ns/engine/r1"]) == 1
    assert capsys.readouterr().out.startswith("ERROR FileNotFoundError")
