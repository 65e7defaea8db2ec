"""RollingMaintenance on the lab: hook scripts whose ConfigMap is missing (before the run and
before a stage), per-hook ``hostAccess`` run by the lab's kubelet, and ``preMaintenanceAhead``.

Hooks are real shell scripts (see test_rolling.py for the recording hook and its gates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import HOSTS, Cluster, LabCluster, OperatorThread, conditions, wait_for
from test_rolling import (
    CONFIGMAPS,
    HOOK,
    IMAGE,
    NS,
    REQUEST,
    RUNS,
    annotations,
    has_event,
    hold,
    hook_jobs,
    hooks_dir,
    host_status,
    lab_cluster,
    make_hosts,
    record,
    run,
    run_body,
    setup_hooks,
    stage_results,
    wait_run,
    wait_stage,
)

pytestmark = pytest.mark.lab
__all__ = ["hooks_dir", "lab_cluster"]  # fixtures shared with test_rolling.py (fast lab timings)


@pytest.fixture
def two_hosts(cluster: Cluster) -> Iterator[Cluster]:
    make_hosts(cluster, {"node-1": "g1", "node-2": "g1"})
    setup_hooks(cluster)
    yield cluster


def events(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return cluster.events_for(name)


# --------------------------------------------------------------------------------------------
# hook scripts from a ConfigMap that does not exist


def test_missing_configmap_keeps_the_run_pending_until_it_exists(two_hosts: Cluster,
                                                                 hooks_dir: Path) -> None:
    cluster = two_hosts
    body = run_body("waits", hooks_dir, {"hosts": ["node-1"]})
    body["spec"]["stages"]["maintenance"]["script"] = {"name": "later-hooks", "key": "hook.sh"}
    cluster.create(RUNS, body)
    cond = cluster.wait_condition(RUNS, "waits", "Ready", status="False",
                                  reason="HookScriptMissing")
    assert "spec.stages.maintenance.script" in cond["message"]
    assert f"ConfigMap {NS}/later-hooks not found" in cond["message"]
    assert has_event(cluster, "waits", "Warning", "HookScriptMissing")
    warning = [e for e in events(cluster, "waits") if e.get("reason") == "HookScriptMissing"]
    assert "spec.stages.maintenance.script" in warning[0]["message"]
    obj = run(cluster, "waits")
    assert obj["status"].get("state", "Pending") == "Pending"
    assert hook_jobs(cluster, "waits") == [] and record(hooks_dir) == []

    # the script appears (a key that is missing is named too), then the run goes
    cluster.kube.create_or_get(CONFIGMAPS, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "later-hooks", "namespace": NS}, "data": {"other.sh": HOOK}})
    cluster.wait_condition(RUNS, "waits", "Ready", status="False", reason="HookScriptMissing")
    wait_for("the missing key named", lambda: "has no key 'hook.sh'" in conditions(
        run(cluster, "waits"))["Ready"]["message"])
    cluster.kube.patch(CONFIGMAPS, "later-hooks", {"data": {"hook.sh": HOOK}}, NS)
    obj = wait_run(cluster, "waits", "Succeeded")
    assert conditions(obj)["Ready"]["status"] == "True"
    # each message said once, not on every poll of the waiting run
    said = [e["message"] for e in events(cluster, "waits")
            if e.get("reason") == "HookScriptMissing"]
    assert len([m for m in said if "not found" in m]) == 1
    assert len([m for m in said if "has no key" in m]) == 1
    assert [s for h, s in record(hooks_dir) if h == "node-1"] == [
        "PreFlight", "PreMaintenance", "Maintenance", "PostMaintenance"]


def test_configmap_deleted_mid_run_fails_the_stage_naming_the_field(two_hosts: Cluster,
                                                                    hooks_dir: Path) -> None:
    cluster = two_hosts
    cluster.kube.create_or_get(CONFIGMAPS, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "maintenance-hooks", "namespace": NS}, "data": {"hook.sh": HOOK}})
    body = run_body("gone-script", hooks_dir, {"hosts": ["node-1"]})
    body["spec"]["stages"]["maintenance"]["script"] = {"name": "maintenance-hooks",
                                                       "key": "hook.sh"}
    gate = hold(hooks_dir, "node-1", "PreMaintenance")
    cluster.create(RUNS, body)
    wait_stage(cluster, "gone-script", "node-1", "PreMaintenance", "Running")
    cluster.delete(CONFIGMAPS, "maintenance-hooks", NS)
    gate.touch()

    obj = wait_run(cluster, "gone-script", "Failed")
    res = stage_results(obj, "node-1")["Maintenance"]
    assert res["result"] == "Failed" and res.get("exitCode") is None
    assert "spec.stages.maintenance.script" in res["message"]
    assert f"ConfigMap {NS}/maintenance-hooks not found" in res["message"]
    assert host_status(obj, "node-1")["state"] == "Failed"
    assert "spec.stages.maintenance.script" in conditions(obj)["Failed"]["message"]
    assert has_event(cluster, "gone-script", "Warning", "HookScriptMissing")
    # no Job for the stage; the host's maintenance is cancelled
    assert not [j for j in hook_jobs(cluster, "gone-script")
                if j["metadata"]["labels"]["hostedengine.io/rolling-stage"] == "Maintenance"]
    assert ("node-1", "Maintenance") not in record(hooks_dir)
    cluster.wait_field(HOSTS, "node-1", "status.state", "Up", timeout=30)
    assert REQUEST not in annotations(cluster, "node-1")


# --------------------------------------------------------------------------------------------
# hostAccess


def host_root_hook(marker: Path, access: dict[str, Any] | None) -> dict[str, Any]:
    """PreFlight reads a file of the host through /host; exit 70 (no maintenance needed)."""
    hook: dict[str, Any] = {"image": IMAGE, "command": [
        "/bin/sh", "-c", f'cat /host{marker} && echo "pid 1: $(cat /proc/1/comm)" && exit 70']}
    if access is not None:
        hook["hostAccess"] = access
    return {"preFlight": hook}


def test_host_access_mounts_the_host_root_and_is_off_by_default(two_hosts: Cluster,
                                                                hooks_dir: Path) -> None:
    cluster = two_hosts
    marker = hooks_dir / "host-file"
    marker.write_text("written on the host\n")

    access = {"hostPID": True, "hostRoot": "ReadOnly"}
    cluster.create(RUNS, run_body("with-access", hooks_dir, {"hosts": ["node-1"]},
                                  stages=host_root_hook(marker, access)))
    obj = wait_run(cluster, "with-access", "Succeeded")
    res = stage_results(obj, "node-1")["PreFlight"]
    assert res["result"] == "Skipped" and res["exitCode"] == 70
    assert "written on the host" in res["logTail"]
    (job,) = hook_jobs(cluster, "with-access")
    pod = job["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and "hostNetwork" not in pod
    assert {"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}} in pod["volumes"]
    (mount,) = pod["containers"][0]["volumeMounts"]
    assert mount["mountPath"] == "/host" and mount["readOnly"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True  # not privileged

    # the same hook without hostAccess sees no /host: it fails, the run stops
    cluster.create(RUNS, run_body("without", hooks_dir, {"hosts": ["node-1"]},
                                  stages=host_root_hook(marker, None)))
    obj = wait_run(cluster, "without", "Failed")
    res = stage_results(obj, "node-1")["PreFlight"]
    assert res["result"] == "Failed" and res["exitCode"] not in (0, 70)
    assert "written on the host" not in (res.get("logTail") or "")
    (job,) = hook_jobs(cluster, "without")
    pod = job["spec"]["template"]["spec"]
    assert "hostPID" not in pod and "volumes" not in pod


# --------------------------------------------------------------------------------------------
# preMaintenanceAhead


def test_pre_maintenance_ahead_runs_while_the_previous_host_is_in_maintenance(
        two_hosts: Cluster, hooks_dir: Path) -> None:
    cluster = two_hosts
    gate = hold(hooks_dir, "node-1", "Maintenance")
    cluster.create(RUNS, run_body("ahead", hooks_dir, {"groups": {}}, preMaintenanceAhead=True))
    wait_stage(cluster, "ahead", "node-1", "Maintenance", "Running")
    # node-2's PreMaintenance runs and finishes while node-1 is in maintenance; node-2 keeps
    # waiting for the slot: Up, not asked into maintenance
    obj = wait_stage(cluster, "ahead", "node-2", "PreMaintenance", "Succeeded")
    obj = run(cluster, "ahead")
    assert host_status(obj, "node-2")["state"] == "Ready"
    assert REQUEST not in annotations(cluster, "node-2")
    assert cluster.get(HOSTS, "node-2")["status"]["state"] == "Up"
    assert cluster.get(HOSTS, "node-1")["status"]["state"] == "Maintenance"
    gate.touch()
    obj = wait_run(cluster, "ahead", "Succeeded")
    ran = record(hooks_dir)
    assert [s for h, s in ran if h == "node-2"] == [
        "PreFlight", "PreMaintenance", "Maintenance", "PostMaintenance"]  # never twice
    for host in ("node-1", "node-2"):
        assert host_status(obj, host)["state"] == "Succeeded"
    assert has_event(cluster, "ahead", "Normal", "RollingMaintenanceSucceeded")


# --------------------------------------------------------------------------------------------
# operator restart while paused during PreFlight


@pytest.fixture
def restartable(lab_cluster: LabCluster) -> Iterator[Callable[[], OperatorThread]]:
    started: list[OperatorThread] = []

    def start() -> OperatorThread:
        op = OperatorThread(lab_cluster.kubeconfig).start()
        started.append(op)
        return op

    yield start
    for op in started:
        if op.running:
            op.stop()


def test_restart_while_paused_in_preflight_records_the_hook_and_stays_paused(
        lab_cluster: LabCluster, restartable: Callable[[], OperatorThread],
        hooks_dir: Path) -> None:
    first = restartable()
    cluster = Cluster(lab_cluster, first)
    make_hosts(cluster, {"node-1": "g1", "node-2": "g1"})
    setup_hooks(cluster)
    gate = hold(hooks_dir, "node-1", "PreFlight")
    cluster.create(RUNS, run_body("paused-restart", hooks_dir, {"groups": {}}))
    wait_stage(cluster, "paused-restart", "node-1", "PreFlight", "Running")
    cluster.patch(RUNS, "paused-restart", {"spec": {"paused": True}})
    wait_run(cluster, "paused-restart", "Paused")
    first.stop()

    # the held hook ends while no operator runs; the new one records it and stays paused
    gate.touch()
    cluster.operator = restartable()
    obj = wait_stage(cluster, "paused-restart", "node-1", "PreFlight", "Succeeded")
    obj = run(cluster, "paused-restart")
    assert obj["status"]["state"] == "Paused"
    assert conditions(obj)["Paused"]["status"] == "True"
    assert all(list(stage_results(obj, h)) == ["PreFlight"] for h in ("node-1", "node-2"))
    assert REQUEST not in annotations(cluster, "node-1")

    cluster.patch(RUNS, "paused-restart", {"spec": {"paused": False}})
    obj = wait_run(cluster, "paused-restart", "Succeeded")
    ran = record(hooks_dir)
    for host in ("node-1", "node-2"):  # every stage exactly once across the restart
        assert [s for h, s in ran if h == host] == [
            "PreFlight", "PreMaintenance", "Maintenance", "PostMaintenance"], ran
