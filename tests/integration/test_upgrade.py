"""Engine upgrades on the lab (issue 10): a change of spec.vm.image carried out step by step.

* a successful upgrade (with the pre-upgrade Backup to a directory);
* a new image whose guest never becomes healthy (the lab's "broken" image) -> rolled back and
  healthy on the old image, Failed condition, not tried again;
* the operator stopped in the middle of the upgrade and started again -> it resumes;
* the user's global maintenance is left untouched.

Images are URL imports from a small HTTP server of the test (the lab's CDI really downloads
them); the lab's guest reads "broken" in a disk's import URL.
"""

from __future__ import annotations

import copy
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
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
from hosted_engine.adapters.kube import hostedengine_resource
from hosted_engine.lab.sim.timings import LabTimings
from hostedengine_lab import (
    ALL_NODES,
    DATAVOLUMES,
    HOST_ENV,
    NAME,
    NS,
    PVCS,
    VMS,
    engine_vmi,
    event_reasons,
    fast_spec,
    he,
    he_body,
    host_body,
    wait_up,
)

pytestmark = pytest.mark.lab

BACKUPS = hostedengine_resource("backups", namespaced=True)
IMAGE_BYTES = 64 * 1024
DISK_BYTES = 1024 * 1024
OLD = "/engine-4.5.qcow2"
NEW = "/engine-4.6.qcow2"
BROKEN = "/engine-4.6-broken.qcow2"


class _Images(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (self.path.encode() * (IMAGE_BYTES // len(self.path) + 1))[:IMAGE_BYTES]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def images() -> Iterator[str]:
    """An HTTP server of engine images on 127.0.0.1 (any path is an image)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    global BASE
    BASE = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield BASE
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


BASE = ""


def url(path: str) -> str:
    return BASE + path


@pytest.fixture(autouse=True)
def _operator_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in HOST_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def lab_cluster(make_lab_cluster: Callable[..., LabCluster]) -> LabCluster:
    return make_lab_cluster(3, timings=LabTimings.fast(), bmc=True)


def spec_with(path: str, version: str, *, backup: bool = False,
              health_timeout: str = "20s", gm: bool = False) -> dict[str, Any]:
    spec = copy.deepcopy(fast_spec())
    spec["vm"]["image"] = {"url": {"url": url(path)}, "version": version}
    spec["upgradePolicy"] = {"preUpgradeBackup": backup, "healthTimeout": health_timeout}
    if gm:
        spec["maintenance"] = {"mode": "global", "reason": "the user's own"}
    return spec


def deploy(cluster: Cluster, spec: dict[str, Any]) -> None:
    """Hosts and a hosted-engine StorageDomain of two LUNs (the new image's disk is created
    beside the old one), then the engine, Up."""
    cluster.create(STORAGEDOMAINS, {
        "apiVersion": "hostedengine.io/v1alpha1", "kind": "StorageDomain",
        "metadata": {"name": "hosted-engine"},
        "spec": {"type": "fc", "role": "hostedEngine", "capacity": "100Gi",
                 "fc": {"wwids": ["3600a0980383030534f3f4a4f4d4c4501",
                                  "3600a0980383030534f3f4a4f4d4c4502"]}}})
    for node in ALL_NODES:
        cluster.create(HOSTS, host_body(cluster, node, power=False))
    cluster.ensure_namespace(NS)
    cluster.wait_field(STORAGEDOMAINS, "hosted-engine", "status.state", "Active", timeout=30)
    for node in ALL_NODES:
        cluster.wait_field(HOSTS, node, "status.hostedEngine.deployed", True, timeout=30)
    cluster.create(HOSTEDENGINES, he_body(spec))
    wait_up(cluster, timeout=60)


def set_image(cluster: Cluster, path: str, version: str) -> None:
    cluster.patch(HOSTEDENGINES, NAME,
                  {"spec": {"vm": {"image": {"url": {"url": url(path)}, "version": version}}}},
                  NS)


def upgrade(cluster: Cluster) -> dict[str, Any]:
    return dict(field(he(cluster), "status.upgrade") or {})


def wait_upgrade(cluster: Cluster, phase: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(f"upgrade {phase}", lambda: upgrade(cluster).get("phase") == phase and
                    upgrade(cluster), timeout=timeout, describe=lambda: upgrade(cluster))


def steps(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in status["steps"]}


def vmi_disk(cluster: Cluster) -> str | None:
    vmi = engine_vmi(cluster)
    for volume in field(vmi, "spec.volumes") or []:
        if volume["name"] == "root":
            return str((volume.get("dataVolume") or volume.get("persistentVolumeClaim") or {})
                       .get("name") or volume.get("persistentVolumeClaim", {}).get("claimName"))
    return None


def wait_event(cluster: Cluster, reason: str) -> None:
    wait_for(f"Event {reason}", lambda: reason in event_reasons(cluster), timeout=20,
             describe=lambda: event_reasons(cluster))


def test_upgrade_with_backup_switches_the_image_and_leaves_maintenance(
        cluster: Cluster, tmp_path: Path) -> None:
    deploy(cluster, spec_with(OLD, "4.5", backup=True))
    # the engine's disk is small so that the pre-upgrade backup moves little
    cluster.patch_status(PVCS, f"{NAME}-disk", {"capacity": {"storage": str(DISK_BYTES)}}, NS)
    cluster.create(BACKUPS, {
        "apiVersion": "hostedengine.io/v1alpha1", "kind": "Backup",
        "metadata": {"name": "nightly", "namespace": NS},
        "spec": {"source": {"hostedEngine": NAME},
                 "target": {"filesystem": {"path": str(tmp_path)}},
                 "schedule": "0 3 * * *"}})
    set_image(cluster, NEW, "4.6")

    done = wait_upgrade(cluster, "Succeeded")
    assert [x["name"] for x in done["steps"]] == [
        "PreFlight", "Backup", "EnterGlobalMaintenance", "SwitchImage", "WaitHealthy",
        "LeaveGlobalMaintenance"]
    assert all(x["state"] == "Succeeded" for x in done["steps"]), done["steps"]
    assert all(x["startedAt"] <= x["finishedAt"] for x in done["steps"])
    assert (done["fromImage"], done["toImage"]) == (url(OLD), url(NEW))
    assert (done["fromVersion"], done["toVersion"]) == ("4.5", "4.6")
    assert done["ownsGlobalMaintenance"] is False
    # the pre-upgrade backup is a one-shot Backup of this engine, owned by it, done
    backup = cluster.get(BACKUPS, done["backupRun"], NS)
    assert backup is not None and field(backup, "status.phase") == "Succeeded"
    assert backup["metadata"]["ownerReferences"][0]["name"] == NAME
    assert backup["spec"]["target"] == {"filesystem": {"path": str(tmp_path)}}
    # the engine runs the new image's disk, the old disk is gone, HA has it back
    obj = wait_up(cluster, timeout=30)
    assert vmi_disk(cluster) == done["toDisk"]
    vm = cluster.get(VMS, NAME, NS)
    assert vm is not None and vm["spec"]["runStrategy"] == "Always"
    assert [t["metadata"]["name"] for t in vm["spec"]["dataVolumeTemplates"]] == [done["toDisk"]]
    assert vm["spec"]["dataVolumeTemplates"][0]["spec"]["source"] == {"http": {"url": url(NEW)}}
    wait_for("old disk deleted", lambda: cluster.get(DATAVOLUMES, done["fromDisk"], NS) is None,
             timeout=20)
    assert obj["status"]["vm"]["image"] == url(NEW) and obj["status"]["vm"]["version"] == "4.6"
    assert obj["status"]["maintenance"]["mode"] == "none"
    conds = conditions(obj)
    assert conds["Upgrading"]["status"] == "False"
    assert conds["UpgradeFailed"]["status"] == "False"
    for reason in ("UpgradeStarted", "UpgradeGlobalMaintenance", "UpgradeSucceeded"):
        wait_event(cluster, reason)
    assert "UpgradeRollingBack" not in event_reasons(cluster)


def test_broken_image_is_rolled_back_and_not_retried(cluster: Cluster) -> None:
    deploy(cluster, spec_with(OLD, "4.5", health_timeout="6s"))
    set_image(cluster, BROKEN, "4.6")

    done = wait_upgrade(cluster, "RolledBack")
    s = steps(done)
    assert [x["name"] for x in done["steps"]] == [
        "PreFlight", "Backup", "EnterGlobalMaintenance", "SwitchImage", "WaitHealthy",
        "Rollback", "LeaveGlobalMaintenance"]
    assert s["Backup"]["state"] == "Skipped"
    assert s["WaitHealthy"]["state"] == "Failed"
    assert s["Rollback"]["state"] == "Succeeded"
    assert s["LeaveGlobalMaintenance"]["state"] == "Succeeded"
    assert done["reason"] == "HealthTimeout"
    obj = wait_up(cluster, timeout=30)
    assert vmi_disk(cluster) == done["fromDisk"]
    assert obj["status"]["vm"]["image"] == url(OLD) and obj["status"]["vm"]["version"] == "4.5"
    assert obj["status"]["maintenance"]["mode"] == "none"
    conds = conditions(obj)
    assert conds["UpgradeFailed"]["status"] == "True"
    assert conds["UpgradeFailed"]["reason"] == "HealthTimeout"
    wait_for("broken disk deleted",
             lambda: cluster.get(DATAVOLUMES, done["toDisk"], NS) is None, timeout=20)
    wait_event(cluster, "UpgradeRolledBack")
    # never a loop: the failed target stays remembered while the spec does not change
    vmi_uid = engine_vmi(cluster)["metadata"]["uid"]  # type: ignore[index]
    obj = wait_up(cluster, timeout=10)
    assert field(obj, "status.upgrade.startedAt") == done["startedAt"]
    assert engine_vmi(cluster)["metadata"]["uid"] == vmi_uid  # type: ignore[index]
    assert event_reasons(cluster).count("UpgradeStarted") == 1


def test_operator_restart_in_the_middle_resumes_the_upgrade(
        lab_cluster: LabCluster, make_operator: Callable[..., OperatorThread]) -> None:
    operator = make_operator()
    cluster = Cluster(lab_cluster, operator)
    deploy(cluster, spec_with(OLD, "4.5"))
    set_image(cluster, NEW, "4.6")
    # stop the operator as soon as the engine is switched (restarting on the new disk)
    wait_for("switch started",
             lambda: steps(upgrade(cluster)).get("SwitchImage", {}).get("state") == "Running"
             if upgrade(cluster) else False, timeout=30, describe=lambda: upgrade(cluster))
    operator.stop()
    paused = upgrade(cluster)
    assert paused["phase"] == "Running" and paused["ownsGlobalMaintenance"] is True
    # the operator's own global maintenance, noted as such; the user's spec is not written
    maintenance = he(cluster)["status"]["maintenance"]
    assert he(cluster)["status"]["state"] == "Upgrading"
    assert (maintenance["mode"], maintenance["source"]) == ("global", "Upgrade")
    assert he(cluster)["spec"].get("maintenance") is None
    cluster = Cluster(lab_cluster, make_operator())

    done = wait_upgrade(cluster, "Succeeded")
    assert done["startedAt"] == paused["startedAt"]  # the same upgrade, resumed
    assert steps(done)["SwitchImage"]["startedAt"] == steps(paused)["SwitchImage"]["startedAt"]
    obj = wait_up(cluster, timeout=30)
    assert vmi_disk(cluster) == done["toDisk"]
    assert obj["status"]["maintenance"]["mode"] == "none"
    assert obj["status"]["vm"]["version"] == "4.6"


def test_users_global_maintenance_is_left_untouched(cluster: Cluster) -> None:
    deploy(cluster, spec_with(OLD, "4.5"))
    cluster.patch(HOSTEDENGINES, NAME, {"spec": {"maintenance": {"mode": "global"}}}, NS)
    wait_for("global maintenance", lambda: field(he(cluster), "status.state") ==
             "GlobalMaintenance", timeout=20)
    set_image(cluster, NEW, "4.6")

    done = wait_upgrade(cluster, "Succeeded")
    s = steps(done)
    assert s["EnterGlobalMaintenance"]["state"] == "Skipped"
    assert s["LeaveGlobalMaintenance"]["state"] == "Skipped"
    assert s["SwitchImage"]["state"] == s["WaitHealthy"]["state"] == "Succeeded"
    assert done["ownsGlobalMaintenance"] is False
    assert vmi_disk(cluster) == done["toDisk"]
    # status.upgrade and the HA status are two patches of one step: wait for the second
    wait_for("the HA state after the upgrade", lambda: field(he(cluster), "status.state") ==
             "GlobalMaintenance", timeout=10, describe=lambda: field(he(cluster), "status.state"))
    obj = he(cluster)
    assert obj["status"]["maintenance"]["mode"] == "global"
    assert obj["status"]["maintenance"]["source"] == "User"
    vm = cluster.get(VMS, NAME, NS)
    assert vm is not None and vm["spec"]["runStrategy"] == "Manual"
    assert obj["spec"]["maintenance"]["mode"] == "global"


def test_manual_policy_only_reports_the_pending_upgrade(cluster: Cluster) -> None:
    spec = spec_with(OLD, "4.5")
    spec["upgradePolicy"]["mode"] = "Manual"
    deploy(cluster, spec)
    vmi_uid = engine_vmi(cluster)["metadata"]["uid"]  # type: ignore[index]
    set_image(cluster, NEW, "4.6")

    obj = wait_for("UpgradePending", lambda: (
        conditions(he(cluster)).get("UpgradePending", {}).get("status") == "True"
        and he(cluster)), timeout=20, describe=lambda: conditions(he(cluster)))
    pending = conditions(obj)["UpgradePending"]
    assert pending["reason"] == "ManualPolicy" and url(NEW) in pending["message"]
    assert "upgrade" not in obj["status"]
    assert obj["status"]["vm"]["image"] == url(OLD) and obj["status"]["vm"]["version"] == "4.5"
    vm = cluster.get(VMS, NAME, NS)
    assert vm is not None
    assert [t["metadata"]["name"] for t in vm["spec"]["dataVolumeTemplates"]] == [f"{NAME}-disk"]
    assert engine_vmi(cluster)["metadata"]["uid"] == vmi_uid  # type: ignore[index]
    assert "UpgradeStarted" not in event_reasons(cluster)
