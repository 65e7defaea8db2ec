"""Backups on the lab: a working engine backed up to a real S3 server (moto's server mode on
127.0.0.1) and to a directory, on a per-second cron; retention, maxFailures and suspension,
the failover-host workflow, an operator restart in the middle of a run.

The lab's disks are deterministic byte streams of the claim's capacity (see
hosted_engine.lab.kubevirt.diskstream); the engine's claim is given a small capacity so that a
run moves a few MiB, and every stored disk is checked against the lab's own checksum.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from harness import (
    HOSTEDENGINES,
    HOSTS,
    STORAGEDOMAINS,
    Cluster,
    LabCluster,
    OperatorThread,
    conditions,
    field,
    wait_for,
)
from hosted_engine.adapters.kube import Resource, hostedengine_resource
from hosted_engine.lab.apiserver.tls import generate as generate_certificates
from hosted_engine.lab.kubevirt.diskstream import disk_sha256
from hostedengine_lab import NS, PVCS, ROOT, SECRETS, he_body, prepare, wait_up
from moto.server import ThreadedMotoServer

pytestmark = pytest.mark.lab

BACKUPS = hostedengine_resource("backups", namespaced=True)
SNAPSHOTS = Resource("snapshot.kubevirt.io", "v1beta1", "virtualmachinesnapshots", True)
EXPORTS = Resource("export.kubevirt.io", "v1beta1", "virtualmachineexports", True)
VMS = Resource("kubevirt.io", "v1", "virtualmachines", True)
JOBS = Resource("batch", "v1", "jobs", True)
CONFIGMAPS = Resource("", "v1", "configmaps", True)
DATAVOLUMES = Resource("cdi.kubevirt.io", "v1beta1", "datavolumes", True)
RESTORES = hostedengine_resource("restores", namespaced=True)
ENGINE = "engine"
DISK_CLAIM = "engine-disk"
DISK_BYTES = 3 * 1024 * 1024 + 12345  # not a multiple of a block
BUCKET = "engine-backups"
ACCESS_KEY = "AKIDBACKUPTEST"
SECRET_KEY = "s3cr3t-never-shown-9f2c"
EVERY_SECOND = "* * * * * *"


# -- fixtures -----------------------------------------------------------------------------------


class S3:
    def __init__(self, endpoint: str, verify: str | bool = True) -> None:
        self.endpoint = endpoint
        self.client: Any = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", verify=verify,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def keys(self, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=BUCKET, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents") or [])
        return sorted(out)

    def get(self, key: str) -> bytes:
        data: bytes = self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return data

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=BUCKET, Key=key, Body=data)


def moto_s3() -> Iterator[S3]:
    """A fresh moto S3 server on 127.0.0.1 with the bucket (shared by the restore tests)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        store = S3(f"http://{host}:{port}")
        # moto keeps its state per process: start from an empty server
        requests.post(f"{store.endpoint}/moto-api/reset", timeout=10).raise_for_status()
        store.client.create_bucket(Bucket=BUCKET)
        yield store
    finally:
        server.stop()


@pytest.fixture
def s3() -> Iterator[S3]:
    yield from moto_s3()


def engine_ready(cluster: Cluster, spec: dict[str, Any] | None = None) -> str:
    """Hosts, the hosted-engine StorageDomain, a running engine with a small disk; returns the
    SHA-256 its backups must hold."""
    prepare(cluster, power=False)
    cluster.create(HOSTEDENGINES, he_body(spec))
    wait_up(cluster, timeout=60)
    pvc = cluster.get(PVCS, DISK_CLAIM, NS)
    assert pvc is not None
    cluster.patch_status(PVCS, DISK_CLAIM, {"capacity": {"storage": str(DISK_BYTES)}}, NS)
    seed = (pvc["metadata"].get("annotations") or {}).get("lab.hostedengine.io/disk-seed") or \
        f"{NS}/{DISK_CLAIM}"
    return disk_sha256(seed, DISK_BYTES)


def s3_secret(cluster: Cluster) -> None:
    cluster.create(SECRETS, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": NS},
        "data": {"accessKeyId": base64.b64encode(ACCESS_KEY.encode()).decode(),
                 "secretAccessKey": base64.b64encode(SECRET_KEY.encode()).decode()}})


def s3_target(s3: S3, prefix: str = "lab") -> dict[str, Any]:
    return {"s3": {"endpoint": s3.endpoint, "bucket": BUCKET, "prefix": prefix,
                   "credentialsSecretRef": {"name": "s3-creds"}}}


def backup_body(name: str, target: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Backup",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"source": {"hostedEngine": ENGINE}, "target": target, **spec}}


def status(cluster: Cluster, name: str) -> dict[str, Any]:
    obj = cluster.get(BACKUPS, name, NS) or {}
    return dict(obj.get("status") or {})


def wait_runs(cluster: Cluster, name: str, check: Callable[[list[dict[str, Any]]], bool],
              what: str, timeout: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        st = status(cluster, name)
        return st if check(list(st.get("runs") or [])) else None

    return wait_for(what, probe, timeout=timeout, describe=lambda: status(cluster, name))


def succeeded(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r["phase"] == "Succeeded"]


def no_children(cluster: Cluster) -> bool:
    return not cluster.list(SNAPSHOTS, NS) and not cluster.list(EXPORTS, NS)


def verify_run(read: Callable[[str], bytes], prefix: str, expected_disk_sha: str,
               manifest_sha: str | None = None) -> dict[str, Any]:
    """Check a stored run the way a restore does: manifest, then every object."""
    raw_manifest = read(f"{prefix}/manifest.json")
    if manifest_sha is not None:
        assert hashlib.sha256(raw_manifest).hexdigest() == manifest_sha
    manifest = json.loads(raw_manifest)
    assert manifest["formatVersion"] == 1
    names = {o["name"]: o for o in manifest["objects"]}
    assert set(names) == {"disk.img.gz", "virtualmachine.yaml", "hostedengine.yaml"}
    for name, entry in names.items():
        data = read(f"{prefix}/{name}")
        assert len(data) == entry["size"], name
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
    disk = gzip.decompress(read(f"{prefix}/disk.img.gz"))
    assert len(disk) == DISK_BYTES == names["disk.img.gz"]["rawSize"]
    assert hashlib.sha256(disk).hexdigest() == expected_disk_sha == \
        names["disk.img.gz"]["rawSha256"]
    assert b"fqdn: engine.lab.example" in read(f"{prefix}/hostedengine.yaml")
    return manifest


def assert_no_secret(cluster: Cluster, name: str, caplog: pytest.LogCaptureFixture) -> None:
    text = json.dumps(cluster.get(BACKUPS, name, NS)) + json.dumps(cluster.events_for(name, NS))
    assert SECRET_KEY not in text and SECRET_KEY not in caplog.text


# -- tests --------------------------------------------------------------------------------------


def test_one_shot_backup_to_s3_is_complete_verified_and_cleaned_up(
        cluster: Cluster, s3: S3, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    disk_sha = engine_ready(cluster)
    s3_secret(cluster)
    cluster.create(BACKUPS, backup_body("once", s3_target(s3)))

    st = wait_runs(cluster, "once", lambda runs: bool(runs), "one run finished")
    (run,) = st["runs"]
    assert run["phase"] == "Succeeded", run
    assert run["trigger"] == "OneShot"
    assert st["phase"] == "Succeeded" and st["lastSuccessfulRun"] == run["id"]
    assert "currentRun" not in st and "nextRunTime" not in st
    prefix = f"lab/{NS}/{ENGINE}/{run['id']}"
    assert run["location"] == f"s3://{BUCKET}/{prefix}"
    assert s3.keys(prefix) == sorted(f"{prefix}/{n}" for n in (
        "disk.img.gz", "hostedengine.yaml", "manifest.json", "virtualmachine.yaml"))
    manifest = verify_run(s3.get, prefix, disk_sha, run["manifestSha256"])
    assert manifest["source"]["fqdn"] == "engine.lab.example"
    assert run["sizeBytes"] == sum(o["size"] for o in manifest["objects"]) + len(
        s3.get(f"{prefix}/manifest.json"))
    conds = conditions(cluster.get(BACKUPS, "once", NS))
    assert conds["LastRunSucceeded"]["status"] == "True"
    assert conds["Ready"]["status"] == "True"
    # snapshot, export and its token are gone once the run is over
    wait_for("run's children removed", lambda: no_children(cluster))
    assert cluster.get(SECRETS, f"once-{run['id']}", NS) is None
    assert wait_for(
        "the expected Events",
        lambda: {"BackupStarted", "BackupSucceeded"} <= set(cluster.event_reasons("once", NS)),
        timeout=30)
    assert_no_secret(cluster, "once", caplog)


def test_scheduled_backups_to_a_directory_keep_the_last_two(
        cluster: Cluster, tmp_path: Path) -> None:
    disk_sha = engine_ready(cluster)
    target = {"filesystem": {"path": str(tmp_path)}}
    cluster.create(BACKUPS, backup_body("nightly", target, schedule=EVERY_SECOND,
                                        timeZone="Europe/Paris", retention={"keepLast": 2}))

    st = wait_runs(cluster, "nightly", lambda runs: len(
        [r for r in runs if r["phase"] in ("Succeeded", "Deleted")]) >= 4, "four scheduled runs")
    cluster.patch(BACKUPS, "nightly", {"spec": {"suspend": True}}, NS)
    st = wait_for("suspended, no run in flight", lambda: (
        s if (s := status(cluster, "nightly")).get("phase") == "Suspended" else None))
    runs = st["runs"]
    assert all(r["trigger"] == "Schedule" for r in runs)
    assert len({r["id"] for r in runs}) == len(runs)
    kept = [r for r in runs if r["phase"] == "Succeeded"]
    deleted = [r for r in runs if r["phase"] == "Deleted"]
    assert len(kept) == 2 and len(deleted) >= 2
    assert kept[0]["id"] == st["lastSuccessfulRun"]  # the newest is always kept
    run_dirs = sorted(p.name for p in (tmp_path / NS / ENGINE).iterdir())
    assert run_dirs == sorted(r["id"] for r in kept)
    for run in kept:
        verify_run(lambda key: (tmp_path / key).read_bytes(), f"{NS}/{ENGINE}/{run['id']}",
                   disk_sha, run["manifestSha256"])
    assert conditions(cluster.get(BACKUPS, "nightly", NS))["Suspended"]["reason"] == \
        "SuspendedByUser"
    wait_for("children removed", lambda: no_children(cluster))


def test_max_failures_suspends_the_schedule_until_the_spec_changes(
        cluster: Cluster, s3: S3, caplog: pytest.LogCaptureFixture) -> None:
    engine_ready(cluster)
    s3_secret(cluster)
    bad = s3_target(s3)
    bad["s3"]["bucket"] = "no-such-bucket"
    cluster.create(BACKUPS, backup_body("flaky", bad, schedule=EVERY_SECOND, maxFailures=2))

    st = wait_for("suspended after two failures", lambda: (
        s if (s := status(cluster, "flaky")).get("phase") == "Suspended" else None), timeout=60)
    assert st["consecutiveFailures"] == 2
    assert [r["phase"] for r in st["runs"]] == ["Failed", "Failed"]
    assert "NoSuchBucket" in st["runs"][0]["message"]
    assert "nextRunTime" not in st and "currentRun" not in st
    cond = conditions(cluster.get(BACKUPS, "flaky", NS))["Suspended"]
    assert (cond["status"], cond["reason"]) == ("True", "MaxFailuresReached")
    # kopf posts Events through a queue, a moment after the status patch: wait for them.
    assert wait_for("the failure and suspension Events", lambda: {
        "BackupFailed", "BackupSuspended"} <= set(cluster.event_reasons("flaky", NS)), timeout=30)
    wait_for("failed runs cleaned up", lambda: no_children(cluster))
    assert s3.keys(f"lab/{NS}") == []  # a failed run leaves nothing behind

    # a spec change (the right bucket) resumes the schedule
    cluster.patch(BACKUPS, "flaky", {"spec": {"target": s3_target(s3)}}, NS)
    st = wait_runs(cluster, "flaky", lambda runs: bool(succeeded(runs)), "a good run")
    assert st["consecutiveFailures"] == 0
    assert conditions(cluster.get(BACKUPS, "flaky", NS))["Suspended"]["status"] == "False"
    assert_no_secret(cluster, "flaky", caplog)


def test_failover_host_is_put_in_maintenance_for_the_run_and_activated_after(
        cluster: Cluster, tmp_path: Path) -> None:
    engine_ready(cluster)
    engine_host = field(cluster.get(HOSTEDENGINES, ENGINE, NS), "status.host")
    spare = next(n for n in ("node-1", "node-2", "node-3") if n != engine_host)
    seen: list[str] = []
    cluster.create(BACKUPS, backup_body("with-spare", {"filesystem": {"path": str(tmp_path)}},
                                        failoverHost=spare))

    def probe() -> dict[str, Any] | None:
        host_state = field(cluster.get(HOSTS, spare), "status.state")
        if host_state and (not seen or seen[-1] != host_state):
            seen.append(host_state)
        st = status(cluster, "with-spare")
        return st if st.get("runs") else None

    st = wait_for("run finished", probe, timeout=90)
    assert st["runs"][0]["phase"] == "Succeeded", st["runs"][0]
    assert "Maintenance" in seen
    wait_for("spare host active again", lambda: field(cluster.get(HOSTS, spare),
                                                      "status.state") == "Up", timeout=60)
    annotations = (cluster.get(HOSTS, spare) or {})["metadata"].get("annotations") or {}
    assert "hostedengine.io/maintenance-request" not in annotations
    assert wait_for(
        "the expected Events",
        lambda: "FailoverHostInMaintenance" in cluster.event_reasons("with-spare", NS),
        timeout=30)


def test_restart_in_the_middle_of_a_run_resumes_it_once_without_orphans(
        lab_cluster: LabCluster, make_operator: Callable[..., OperatorThread],
        tmp_path: Path) -> None:
    first = make_operator()
    cluster = Cluster(lab_cluster, first)
    disk_sha = engine_ready(cluster)
    cluster.create(BACKUPS, backup_body("resume", {"filesystem": {"path": str(tmp_path)}}))
    # stop the operator as soon as the run has a snapshot (mid-run)
    wait_for("run has a snapshot", lambda: cluster.list(SNAPSHOTS, NS) or None, timeout=60)
    first.stop()
    st = status(cluster, "resume")
    run_id = st["currentRun"]["id"]
    assert not st.get("runs")

    second = make_operator()
    cluster = Cluster(lab_cluster, second)
    st = wait_runs(cluster, "resume", lambda runs: bool(runs), "the run finished")
    (run,) = st["runs"]
    assert (run["id"], run["phase"]) == (run_id, "Succeeded")
    verify_run(lambda key: (tmp_path / key).read_bytes(), f"{NS}/{ENGINE}/{run_id}", disk_sha)
    assert [p.name for p in (tmp_path / NS / ENGINE).iterdir()] == [run_id]
    assert sorted(p.name for p in (tmp_path / NS / ENGINE / run_id).iterdir()) == [
        "disk.img.gz", "hostedengine.yaml", "manifest.json", "virtualmachine.yaml"]
    wait_for("no orphan snapshot or export", lambda: no_children(cluster))
    assert cluster.event_reasons("resume", NS).count("BackupStarted") == 1


def test_invalid_spec_is_reported_and_nothing_runs(cluster: Cluster, tmp_path: Path) -> None:
    cluster.ensure_namespace(NS)
    body = backup_body("bad", {"filesystem": {"path": str(tmp_path)}})
    body["spec"]["source"]["hostedEngine"] = "Not_A_Name"
    with pytest.raises(Exception, match="hostedEngine"):
        cluster.create(BACKUPS, body)  # the schema refuses what it can
    cluster.create(BACKUPS, backup_body("nosource", {"filesystem": {"path": str(tmp_path)}}))
    st = wait_runs(cluster, "nosource", lambda runs: bool(runs), "run failed")
    assert st["runs"][0]["phase"] == "Failed"
    assert "does not exist" in st["runs"][0]["message"]
    assert list(tmp_path.iterdir()) == []


def test_a_pvc_target_is_written_and_restored_by_data_mover_jobs(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    sha = engine_ready(cluster)
    cluster.apply_yaml(ROOT / "examples" / "lab" / "storagedomain-data.yaml")
    cluster.wait_field(STORAGEDOMAINS, "data", "status.state", "Active", timeout=30)
    cluster.create(PVCS, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "backups", "namespace": NS},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "lab-csi",
                 "resources": {"requests": {"storage": "1Gi"}}}})
    cluster.create(BACKUPS, backup_body("claim", {"pvc": {"claimName": "backups",
                                                           "path": "engine-backups"}}))
    st = wait_runs(cluster, "claim", lambda runs: bool(runs), "the run", timeout=90)
    run = st["runs"][0]
    assert run["phase"] == "Succeeded", run
    assert run["location"] == f"pvc://{NS}/backups/engine-backups/{NS}/{ENGINE}/{run['id']}"
    assert len(run["manifestSha256"]) == 64 and run["sizeBytes"] > DISK_BYTES // 2
    # the writer Job ran with the claim mounted, then was cleaned up with the run
    wait_for("no snapshot, export or data mover Job left", lambda: no_children(cluster) and not [
        j for j in cluster.list(JOBS, NS) if "data-mover" in str(j["metadata"].get("labels"))],
        timeout=30)

    # restore from it: a Job measures the run, another streams the disk to CDI's upload proxy
    cluster.create(RESTORES, {
        "apiVersion": "hostedengine.io/v1alpha1", "kind": "Restore",
        "metadata": {"name": "from-claim", "namespace": NS},
        "spec": {"source": {"backup": {"name": "claim"}}, "hostedEngineName": "engine-c",
                 "storageDomain": "data"}})

    def restored() -> dict[str, Any] | None:
        st = dict((cluster.get(RESTORES, "from-claim", NS) or {}).get("status") or {})
        return st if st.get("phase") in ("Succeeded", "Failed") else None

    rst = wait_for("the restore", restored, timeout=90, describe=lambda: (
        cluster.get(RESTORES, "from-claim", NS) or {}).get("status"))
    assert rst["phase"] == "Succeeded", rst
    assert rst["objectsVerified"] == 3
    pvc = cluster.get(PVCS, "engine-c-restored-disk", NS)
    assert pvc is not None
    notes = pvc["metadata"]["annotations"]
    assert notes["lab.hostedengine.io/content-sha256"] == sha
    assert notes["lab.hostedengine.io/content-size"] == str(DISK_BYTES)
    movers = [j for j in cluster.list(JOBS, NS) if "data-mover" in str(j["metadata"].get(
        "labels"))]
    assert {j["metadata"]["labels"]["hostedengine.io/data-mover"] for j in movers} == {
        "restore-verify", "restore-upload"}
    for job in movers:
        assert job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {
            "claimName": "backups", "readOnly": True}
    # a second run, then the first one deleted: a Job removes its folder from the claim
    cluster.patch(BACKUPS, "claim", {"metadata": {"annotations": {
        "hostedengine.io/run-now": "second"}}}, NS)
    wait_runs(cluster, "claim", lambda runs: len(succeeded(runs)) == 2, "the second run",
              timeout=90)
    cluster.patch(BACKUPS, "claim", {"metadata": {"annotations": {
        "hostedengine.io/delete-run": run["id"]}}}, NS)
    wait_runs(cluster, "claim", lambda runs: runs[-1]["phase"] == "Deleted", "deleted")
    remover = wait_for("the remover Job done", lambda: next((
        j for j in cluster.list(JOBS, NS) if j["metadata"]["labels"].get(
            "hostedengine.io/data-mover") == "backup-delete"
        and (j.get("status") or {}).get("succeeded")), None), timeout=60)
    assert remover["spec"]["template"]["spec"]["containers"][0]["command"][-1] == \
        f"engine-backups/{NS}/{ENGINE}/{run['id']}"
    # the tokens reach the Jobs through Secrets only: never in a ConfigMap or a status
    text = json.dumps([cluster.get(BACKUPS, "claim", NS), cluster.get(RESTORES, "from-claim",
                                                                      NS)])
    text += json.dumps(cluster.list(CONFIGMAPS, NS))
    for secret in cluster.list(SECRETS, NS):
        for value in (secret.get("data") or {}).values():
            token = base64.b64decode(value).decode(errors="replace")
            if len(token) >= 20:
                assert token not in text and token not in caplog.text


def test_run_now_annotation_runs_once_per_id(cluster: Cluster, tmp_path: Path) -> None:
    engine_ready(cluster)
    target = {"filesystem": {"path": str(tmp_path)}}
    cluster.create(BACKUPS, backup_body("yearly", target, schedule="0 0 1 1 *"))
    cluster.wait_field(BACKUPS, "yearly", "status.phase", "Scheduled", namespace=NS)
    assert status(cluster, "yearly")["nextRunTime"].endswith("-01-01T00:00:00Z")

    cluster.patch(BACKUPS, "yearly", {"metadata": {"annotations": {
        "hostedengine.io/run-now": "first"}}}, NS)
    st = wait_runs(cluster, "yearly", lambda runs: bool(runs), "the manual run")
    assert [(r["trigger"], r["phase"]) for r in st["runs"]] == [("Manual", "Succeeded")]
    assert st["lastRunNowID"] == "first" and st["runs"][0]["id"].endswith("-m")
    # the same id again: nothing; a new id: one more run
    cluster.patch(BACKUPS, "yearly", {"metadata": {"labels": {"touched": "yes"}}}, NS)
    cluster.patch(BACKUPS, "yearly", {"metadata": {"annotations": {
        "hostedengine.io/run-now": "second"}}}, NS)
    st = wait_runs(cluster, "yearly", lambda runs: len(runs) == 2, "the second manual run")
    assert [r["phase"] for r in st["runs"]] == ["Succeeded", "Succeeded"]
    assert st["lastRunNowID"] == "second" and st["phase"] == "Scheduled"


APP_BYTES = 1024 * 1024 + 77


def app_vm(cluster: Cluster, name: str, labels: dict[str, str]) -> str:
    """A stopped VirtualMachine with a small disk of its own; returns its disk's SHA-256."""
    claim = f"{name}-disk"
    if cluster.get(STORAGEDOMAINS, "data") is None:  # a CSI data domain for the VMs' disks
        cluster.apply_yaml(ROOT / "examples" / "lab" / "storagedomain-data.yaml")
    cluster.wait_field(STORAGEDOMAINS, "data", "status.state", "Active", timeout=30)
    cluster.create(PVCS, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": NS},
        "spec": {"accessModes": ["ReadWriteMany"],
                 "storageClassName": "lab-csi",
                 "resources": {"requests": {"storage": str(APP_BYTES)}}}})
    cluster.create(VMS, {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"runStrategy": "Halted", "template": {"spec": {
            "domain": {"devices": {}, "memory": {"guest": "1Gi"}},
            "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": claim}}]}}}})
    wait_for(f"{claim} bound", lambda: field(cluster.get(PVCS, claim, NS), "status.phase")
             == "Bound", timeout=30)
    cluster.patch_status(PVCS, claim, {"capacity": {"storage": str(APP_BYTES)}}, NS)
    return disk_sha256(f"{NS}/{claim}", APP_BYTES)


def test_directory_target_selected_vms_deleting_runs_and_restoring_through_cdi_upload(
        cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One engine for four behaviours (CI time): vmSelector, delete-run (failed, good, refused
    for the only good run, through the annotation and the CLI) and a restore of a directory run
    through CDI's upload proxy that gives the backed-up bytes back."""
    from hosted_engine.cli.main import main

    engine_sha = engine_ready(cluster)
    app_sha = app_vm(cluster, "app", {"tier": "backend"})
    app_vm(cluster, "scratch", {"tier": "test"})
    folder = tmp_path / NS / ENGINE
    cluster.create(BACKUPS, backup_body(
        "pick", {"filesystem": {"path": str(tmp_path)}},
        source={"hostedEngine": ENGINE, "vmSelector": {"matchLabels": {"tier": "backend"}}}))
    (tmp_path / "not-a-directory").write_text("")  # every run of "broken" fails
    cluster.create(BACKUPS, backup_body(
        "broken", {"filesystem": {"path": str(tmp_path / "not-a-directory")}}))
    st = wait_runs(cluster, "pick", lambda runs: len(succeeded(runs)) == 1, "the first run")
    oldest = st["runs"][0]
    assert oldest["virtualMachines"] == ["app"]
    manifest = json.loads((folder / oldest["id"] / "manifest.json").read_bytes())
    assert manifest["source"]["virtualMachines"] == ["app"]
    objects = {o["name"]: o for o in manifest["objects"]}
    assert set(objects) == {"disk.img.gz", "virtualmachine.yaml", "hostedengine.yaml",
                            "vm-app-disk.img.gz", "vm-app.yaml"}
    for name, entry in objects.items():
        data = (folder / oldest["id"] / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
    app_disk = gzip.decompress((folder / oldest["id"] / "vm-app-disk.img.gz").read_bytes())
    assert len(app_disk) == APP_BYTES and hashlib.sha256(app_disk).hexdigest() == app_sha
    assert objects["disk.img.gz"]["rawSha256"] == engine_sha
    assert b"tier: backend" in (folder / oldest["id"] / "vm-app.yaml").read_bytes()

    # deleting runs: a failed run always goes (annotation)
    failed = wait_runs(cluster, "broken", lambda runs: bool(runs), "the failed run")["runs"][0]
    assert failed["phase"] == "Failed"
    cluster.patch(BACKUPS, "broken", {"metadata": {"annotations": {
        "hostedengine.io/delete-run": failed["id"]}}}, NS)
    st = wait_runs(cluster, "broken", lambda runs: runs[0]["phase"] == "Deleted", "deleted")
    assert st["lastDeleteRun"] == failed["id"]
    # a good one while another good one is left (CLI): its folder goes, the last successful run
    # moves to the one left
    cluster.patch(BACKUPS, "pick", {"metadata": {"annotations": {
        "hostedengine.io/run-now": "again"}}}, NS)
    st = wait_runs(cluster, "pick", lambda runs: len(succeeded(runs)) == 2, "the second run")
    newest = st["runs"][0]["id"]
    kc = ["--kubeconfig", str(cluster.kubeconfig), "-n", NS]
    assert main(["backup", "delete-run", "pick", newest, *kc]) == 0
    assert f"run {newest} deleted" in capsys.readouterr().out
    st = status(cluster, "pick")
    assert [(r["id"], r["phase"]) for r in st["runs"]] == [
        (newest, "Deleted"), (oldest["id"], "Succeeded")]
    assert st["lastSuccessfulRun"] == oldest["id"]
    assert [p.name for p in folder.iterdir()] == [oldest["id"]]
    # the only good run left is never deleted: refused, with a Warning Event
    assert main(["backup", "delete-run", "pick", oldest["id"], *kc]) == 1
    assert "was not deleted (Succeeded)" in capsys.readouterr().err
    assert wait_for("the refusal Event", lambda: "DeleteRunRefused" in cluster.event_reasons(
        "pick", NS), timeout=30)
    assert [p.name for p in folder.iterdir()] == [oldest["id"]]

    # restore the run left: CDI cannot read the directory, so the operator uploads the disk
    cluster.create(RESTORES, {
        "apiVersion": "hostedengine.io/v1alpha1", "kind": "Restore",
        "metadata": {"name": "from-dir", "namespace": NS},
        "spec": {"source": {"backup": {"name": "pick"}}, "hostedEngineName": "engine-dir",
                 "storageDomain": "data"}})

    def restored() -> dict[str, Any] | None:
        st = dict((cluster.get(RESTORES, "from-dir", NS) or {}).get("status") or {})
        return st if st.get("phase") in ("Succeeded", "Failed") else None

    rst = wait_for("the restore", restored, timeout=90, describe=lambda: (
        cluster.get(RESTORES, "from-dir", NS) or {}).get("status"))
    assert rst["phase"] == "Succeeded", rst
    assert rst["run"] == oldest["id"] and rst["objectsVerified"] == 5
    assert rst["virtualMachines"] == ["app"]
    dv = cluster.get(DATAVOLUMES, "engine-dir-restored-disk", NS)
    assert dv is not None
    assert dv["spec"]["source"] == {"upload": {}} and dv["status"]["phase"] == "Succeeded"
    pvc = cluster.get(PVCS, "engine-dir-restored-disk", NS)
    assert pvc is not None
    notes = pvc["metadata"]["annotations"]
    assert notes["lab.hostedengine.io/content-sha256"] == engine_sha
    assert notes["lab.hostedengine.io/content-size"] == str(DISK_BYTES)
    new = cluster.get(HOSTEDENGINES, "engine-dir", NS)
    assert new is not None
    assert new["spec"]["vm"]["image"]["pvc"] == {"claimName": "engine-dir-restored-disk"}


@pytest.fixture
def tls_s3(tmp_path: Path) -> Iterator[tuple[S3, bytes]]:
    """moto's S3 behind HTTPS with a certificate of a private CA; yields (S3, CA PEM)."""
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    certs = generate_certificates()
    context = certs.server_context(tmp_path / "tls")
    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), True,
                         request_handler=MotoRequestHandler, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"https://127.0.0.1:{server.server_port}"
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(certs.ca_pem)
        store = S3(endpoint, verify=str(ca_file))
        requests.post(f"{endpoint}/moto-api/reset", timeout=10,
                      verify=str(ca_file)).raise_for_status()
        store.client.create_bucket(Bucket=BUCKET)
        yield store, certs.ca_pem
    finally:
        server.shutdown()
        thread.join(10)


def test_tls_is_verified_against_the_ca_bundle(
        cluster: Cluster, tls_s3: tuple[S3, bytes]) -> None:
    s3, ca_pem = tls_s3
    disk_sha = engine_ready(cluster)
    s3_secret(cluster)
    # without the CA bundle the endpoint's certificate is not trusted: the run fails
    cluster.create(BACKUPS, backup_body("untrusted", s3_target(s3, prefix="untrusted")))
    st = wait_runs(cluster, "untrusted", lambda runs: bool(runs), "the untrusted run")
    assert st["runs"][0]["phase"] == "Failed"
    assert "SSL" in st["runs"][0]["message"] or "certificate" in st["runs"][0]["message"]
    assert s3.keys("untrusted") == []
    # with it, the same endpoint works
    cluster.create(SECRETS, {"apiVersion": "v1", "kind": "Secret",
                             "metadata": {"name": "s3-ca", "namespace": NS},
                             "data": {"ca.crt": base64.b64encode(ca_pem).decode()}})
    target = s3_target(s3, prefix="trusted")
    target["s3"]["caBundleSecretRef"] = {"name": "s3-ca", "key": "ca.crt"}
    cluster.create(BACKUPS, backup_body("trusted", target))
    st = wait_runs(cluster, "trusted", lambda runs: bool(runs), "the trusted run")
    run = st["runs"][0]
    assert run["phase"] == "Succeeded", run
    verify_run(s3.get, f"trusted/{NS}/{ENGINE}/{run['id']}", disk_sha, run["manifestSha256"])
