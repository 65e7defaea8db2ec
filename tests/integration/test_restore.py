"""Restores on the lab: a corrupted backup is refused before anything is created; a good one
gives a new, working engine (same FQDN) and reports the hosts it no longer finds."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import (
    HOSTEDENGINES,
    STORAGEDOMAINS,
    Cluster,
    LabCluster,
    OperatorThread,
    conditions,
    field,
    wait_for,
)
from hosted_engine.adapters.kube import Resource, hostedengine_resource
from hostedengine_lab import NS, PVCS, ROOT, SECRETS, fast_spec, wait_up
from test_backup import (
    BACKUPS,
    BUCKET,
    DISK_BYTES,
    ENGINE,
    S3,
    SECRET_KEY,
    backup_body,
    engine_ready,
    moto_s3,
    s3_secret,
    s3_target,
    status,
    wait_runs,
)

pytestmark = pytest.mark.lab

CONTENT_SHA = "lab.hostedengine.io/content-sha256"
CONTENT_SIZE = "lab.hostedengine.io/content-size"
SEED = "lab.hostedengine.io/disk-seed"

RESTORES = hostedengine_resource("restores", namespaced=True)
DATAVOLUMES = Resource("cdi.kubevirt.io", "v1beta1", "datavolumes", namespaced=True)
VMS = Resource("kubevirt.io", "v1", "virtualmachines", namespaced=True)


@pytest.fixture
def s3() -> Iterator[S3]:
    yield from moto_s3()


def backed_up(cluster: Cluster, s3: S3 | None, spec: dict[str, Any] | None = None,
              directory: str | None = None) -> dict[str, Any]:
    """A running engine and one good backup of it on S3 (or in ``directory``); returns the run
    with the disk's raw SHA-256 under ``diskSha256``."""
    sha = engine_ready(cluster, spec)
    if s3 is not None:
        s3_secret(cluster)
        target = s3_target(s3)
    else:
        target = {"filesystem": {"path": directory}}
    cluster.create(BACKUPS, backup_body("before", target))
    st = wait_runs(cluster, "before", lambda runs: bool(runs), "the backup")
    run: dict[str, Any] = st["runs"][0]
    assert run["phase"] == "Succeeded", run
    return {**run, "diskSha256": sha}


def restored_content(cluster: Cluster, claim: str) -> tuple[str, int, str]:
    """(SHA-256, size, content seed) of what CDI wrote into the claim."""
    pvc = cluster.get(PVCS, claim, NS)
    assert pvc is not None
    notes = pvc["metadata"].get("annotations") or {}
    return notes.get(CONTENT_SHA, ""), int(notes.get(CONTENT_SIZE, -1)), notes.get(SEED, "")


def engine_disk_seed(cluster: Cluster, engine: str) -> str:
    """The content seed of the disk the engine's VM runs from."""
    vm = cluster.get(VMS, engine, NS)
    assert vm is not None
    volumes = vm["spec"]["template"]["spec"]["volumes"]
    claims = [v.get("dataVolume", {}).get("name") or v.get("persistentVolumeClaim", {}).get(
        "claimName") for v in volumes]
    seeds = [(cluster.get(PVCS, c, NS) or {}).get("metadata", {}).get("annotations", {}).get(
        SEED, "") for c in claims if c]
    return next((s for s in seeds if s.startswith("blob:")), "")


def restore_body(name: str, engine: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Restore",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"source": {"backup": {"name": "before"}}, "hostedEngineName": engine,
                     **spec}}


def restore_status(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict((cluster.get(RESTORES, name, NS) or {}).get("status") or {})


def finished(cluster: Cluster, name: str, timeout: float = 60) -> dict[str, Any]:
    def describe() -> Any:
        return {"restore": restore_status(cluster, name), "dataVolumes": [
            (d["metadata"]["name"], d.get("status")) for d in cluster.list(DATAVOLUMES, NS)]}

    return wait_for(f"restore {name} finished", lambda: (
        st if (st := restore_status(cluster, name)).get("phase") in ("Succeeded", "Failed")
        else None), timeout=timeout, describe=describe)


def test_a_corrupted_object_is_detected_and_nothing_is_created(cluster: Cluster, s3: S3) -> None:
    run = backed_up(cluster, s3)
    key = f"lab/{NS}/{ENGINE}/{run['id']}/disk.img.gz"
    data = bytearray(s3.get(key))
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the disk
    s3.put(key, bytes(data))

    cluster.create(RESTORES, restore_body("bad", "engine-new"))
    st = finished(cluster, "bad")
    assert st["phase"] == "Failed" and st["run"] == run["id"]
    objects = {m["object"] for m in st["mismatches"]}
    assert "disk.img.gz" in objects
    assert st["objectsVerified"] == 2  # the two definitions are fine
    conds = conditions(cluster.get(RESTORES, "bad", NS))
    assert (conds["Verified"]["status"], conds["Verified"]["reason"]) == \
        ("False", "ChecksumMismatch")
    assert conds["Succeeded"]["status"] == "False"
    assert wait_for(
        "the expected Events",
        lambda: "ChecksumMismatch" in cluster.event_reasons("bad", NS),
        timeout=30)
    # refused before anything was created
    assert cluster.get(HOSTEDENGINES, "engine-new", NS) is None
    assert cluster.list(DATAVOLUMES, NS, label_selector="hostedengine.io/restore") == []
    assert "verifiedAt" not in st

    # the same run found directly on the target (no Backup object): refused the same way
    body = restore_body("lost", "engine-new")
    body["spec"]["source"] = {"location": {"target": s3_target(s3),
                                           "run": f"{NS}/{ENGINE}/{run['id']}"}}
    cluster.create(RESTORES, body)
    st = finished(cluster, "lost")
    assert st["phase"] == "Failed" and st["run"] == run["id"]
    assert [m["object"] for m in st["mismatches"]] == ["disk.img.gz"]
    assert cluster.get(HOSTEDENGINES, "engine-new", NS) is None

    # a tampered manifest is caught too (its checksum is in the Backup's status)
    mkey = f"lab/{NS}/{ENGINE}/{run['id']}/manifest.json"
    manifest = json.loads(s3.get(mkey))
    for entry in manifest["objects"]:
        if entry["name"] == "disk.img.gz":
            entry["sha256"] = __import__("hashlib").sha256(bytes(data)).hexdigest()
            entry["size"] = len(data)
    s3.put(mkey, json.dumps(manifest).encode())
    cluster.create(RESTORES, restore_body("forged", "engine-new"))
    st = finished(cluster, "forged")
    assert st["phase"] == "Failed"
    objects = {m["object"] for m in st["mismatches"]}
    assert "manifest.json" in objects and any(o.startswith("disk.img.gz") for o in objects)
    assert cluster.get(HOSTEDENGINES, "engine-new", NS) is None


def test_restore_of_a_working_engine_gives_a_new_engine_and_reports_missing_hosts(
        cluster: Cluster, s3: S3, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    spec = fast_spec()
    spec["hosts"] = {"names": ["node-1", "node-2", "node-3", "node-9"]}  # node-9 is retired
    run = backed_up(cluster, s3, spec)
    # the engine is lost
    cluster.delete(HOSTEDENGINES, ENGINE, NS)
    cluster.wait_gone(HOSTEDENGINES, ENGINE, NS, timeout=60)
    wait_for("engine VM gone", lambda: cluster.get(VMS, ENGINE, NS) is None, timeout=60)

    # the new environment's storage: a CSI data domain (the FC LUN stays with the lost engine)
    cluster.apply_yaml(ROOT / "examples" / "lab" / "storagedomain-data.yaml")
    cluster.wait_field(STORAGEDOMAINS, "data", "status.state", "Active", timeout=30)

    cluster.create(RESTORES, restore_body("back", "engine-restored", cleanMissingHosts=True,
                                          storageDomain="data"))
    st = finished(cluster, "back", timeout=90)
    assert st["phase"] == "Succeeded", st
    assert st["run"] == run["id"] and st["hostedEngine"] == "engine-restored"
    assert st["objectsVerified"] == 3 and not st.get("mismatches")
    assert st["missingHosts"] == [
        {"name": "node-9", "reason": "no such Host in this cluster", "cleaned": True}]
    conds = conditions(cluster.get(RESTORES, "back", NS))
    assert conds["Verified"]["status"] == "True" and conds["Succeeded"]["status"] == "True"
    assert wait_for(
        "the expected Events",
        lambda: {"RestoreVerified", "RestoreSucceeded"} <= set(cluster.event_reasons("back", NS)),
        timeout=30)

    new = cluster.get(HOSTEDENGINES, "engine-restored", NS)
    assert new is not None
    assert new["spec"]["vm"]["network"]["fqdn"] == "engine.lab.example"  # same FQDN
    assert new["spec"]["vm"]["image"] == {"pvc": {"claimName": "engine-restored-restored-disk"},
                                          "version": "4.5"}
    assert new["spec"]["hosts"]["names"] == ["node-1", "node-2", "node-3"]
    assert new["spec"]["vm"]["disk"]["storageDomain"] == "data"
    assert not new["metadata"].get("ownerReferences")  # deleting the Restore keeps the engine
    dv = cluster.get(DATAVOLUMES, "engine-restored-restored-disk", NS)
    assert dv is not None
    assert dv["spec"]["source"]["s3"]["url"] == \
        f"{s3.endpoint}/{BUCKET}/lab/{NS}/{ENGINE}/{run['id']}/disk.img.gz"
    # CDI downloaded the stored disk from S3: the claim holds exactly the backed-up bytes
    sha, size, seed = restored_content(cluster, "engine-restored-restored-disk")
    assert (sha, size) == (run["diskSha256"], DISK_BYTES)
    # the engine made from the backup comes up, from a clone of those bytes
    wait_up(cluster, name="engine-restored", timeout=90)
    assert field(cluster.get(HOSTEDENGINES, "engine-restored", NS), "status.state") == "EngineUp"
    assert engine_disk_seed(cluster, "engine-restored") == seed
    # the copied S3 keys never show in status or Events
    text = json.dumps(cluster.get(RESTORES, "back", NS)) + json.dumps(
        cluster.events_for("back", NS))
    assert SECRET_KEY not in text and SECRET_KEY not in caplog.text
    assert cluster.get(SECRETS, "engine-restored-restored-disk", NS) is not None
    assert status(cluster, "before")["lastSuccessfulRun"] == run["id"]


@pytest.mark.skipif(os.environ.get("HE_LONG_TESTS") != "1",
                    reason="long variant (HE_LONG_TESTS=1): CDI's restarts are covered in "
                    "tests/kubevirt/test_kubevirt_storage.py")
def test_an_import_cdi_keeps_restarting_fails_the_restore_with_its_message(
        cluster: Cluster, s3: S3) -> None:
    run = backed_up(cluster, s3)
    # a consistent copy of the run whose engine records a 1Mi disk (the real one is 3 MiB)
    src, dst = f"lab/{NS}/{ENGINE}/{run['id']}", f"lab/{NS}/{ENGINE}/small"
    manifest = json.loads(s3.get(f"{src}/manifest.json"))
    for entry in manifest["objects"]:
        data = s3.get(f"{src}/{entry['name']}")
        if entry["name"] == "hostedengine.yaml":
            data = data.replace(b"size: 20Gi", b"size: 1Mi")
            assert b"size: 1Mi" in data
            entry["size"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        s3.put(f"{dst}/{entry['name']}", data)
    s3.put(f"{dst}/manifest.json", json.dumps(manifest).encode())
    cluster.apply_yaml(ROOT / "examples" / "lab" / "storagedomain-data.yaml")
    cluster.wait_field(STORAGEDOMAINS, "data", "status.state", "Active", timeout=30)
    cluster.create(RESTORES, restore_body(
        "too-small", "engine-small", storageDomain="data",
        source={"location": {"target": s3_target(s3), "run": f"{NS}/{ENGINE}/small"}}))
    st = finished(cluster, "too-small", timeout=90)
    assert st["phase"] == "Failed", st
    assert st["objectsVerified"] == 3  # verified first: the import is what fails
    assert "import of the disk failed 3 times" in st["message"]
    assert "larger than the reported available storage" in st["message"]
    dv = cluster.get(DATAVOLUMES, "engine-small-restored-disk", NS)
    assert dv is not None and dv["status"]["restartCount"] >= 3
    assert dv["status"]["phase"] == "ImportInProgress"  # CDI itself never gives up
    assert cluster.get(HOSTEDENGINES, "engine-small", NS) is None


def test_restore_refuses_a_backup_without_a_good_run(cluster: Cluster) -> None:
    cluster.ensure_namespace(NS)
    cluster.create(RESTORES, restore_body("orphan", "engine-x"))
    st = finished(cluster, "orphan")
    assert st["phase"] == "Failed" and "Backup before not found" in st["message"]
    assert cluster.get(HOSTEDENGINES, "engine-x", NS) is None
    assert conditions(cluster.get(RESTORES, "orphan", NS))["Succeeded"]["reason"] == \
        "RestoreRefused"


def test_restart_in_the_middle_of_a_restore_resumes_it(
        lab_cluster: LabCluster, make_operator: Callable[..., OperatorThread], s3: S3) -> None:
    first = make_operator()
    cluster = Cluster(lab_cluster, first)
    run = backed_up(cluster, s3)
    cluster.apply_yaml(ROOT / "examples" / "lab" / "storagedomain-data.yaml")
    cluster.wait_field(STORAGEDOMAINS, "data", "status.state", "Active", timeout=30)
    cluster.create(RESTORES, restore_body("again", "engine-two", storageDomain="data"))
    # stop the operator once the disk import has started (verified, nothing else created)
    wait_for("disk import started", lambda: cluster.list(
        DATAVOLUMES, NS, label_selector="hostedengine.io/restore=again") or None, timeout=60)
    first.stop()
    assert restore_status(cluster, "again")["phase"] == "Restoring"

    cluster = Cluster(lab_cluster, make_operator())
    st = finished(cluster, "again", timeout=90)
    assert st["phase"] == "Succeeded" and st["run"] == run["id"]
    assert len(cluster.list(DATAVOLUMES, NS, label_selector="hostedengine.io/restore")) == 1
    assert [h["metadata"]["name"] for h in cluster.list(HOSTEDENGINES, NS)] == [
        "engine", "engine-two"]
    reasons = cluster.event_reasons("again", NS)
    assert reasons.count("RestoreVerified") == 1 and reasons.count("RestoreSucceeded") == 1
