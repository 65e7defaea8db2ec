"""RollingMaintenance end to end: the operator on the lab walks Hosts through maintenance one
group after another, running real shell scripts as hooks (Jobs pinned to the host's Node; the
lab's kubelet runs them as local processes with real exit codes and logs).

Every hook appends "<host> <stage> <args>" to a record file, so the tests see what really ran,
in which order and how often (a stage whose result is recorded never runs again, also across an
operator restart). Gates (files the test creates) hold a hook until the test lets it finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import HOSTS, Cluster, LabCluster, OperatorThread, conditions, wait_for
from hosted_engine.adapters.kube import Invalid, Resource
from hosted_engine.lab.sim.timings import LabTimings

pytestmark = pytest.mark.lab

NS = "hooks"
NODES = Resource("", "v1", "nodes", namespaced=False)
JOBS = Resource("batch", "v1", "jobs", namespaced=True)
CONFIGMAPS = Resource("", "v1", "configmaps", namespaced=True)
RUNS = Resource("hostedengine.io", "v1alpha1", "rollingmaintenances", namespaced=False)
REQUEST = "hostedengine.io/maintenance-request"
STEER = "hostedengine.io/rolling-maintenance"
STAGES = ("PreFlight", "PreMaintenance", "Maintenance", "PostMaintenance")
KEYS = {"PreFlight": "preFlight", "PreMaintenance": "preMaintenance",
        "Maintenance": "maintenance", "PostMaintenance": "postMaintenance"}
IMAGE = "registry.example.com/rolling-hooks:1"

# The hook: record the call, wait for a gate when one is named, exit with the code configured
# for this host and stage (0 when none).
HOOK = """#!/bin/sh
dir="$1"; shift
echo "$ROLLING_MAINTENANCE_HOST $ROLLING_MAINTENANCE_STAGE $*" >> "$dir/record"
echo "hook $ROLLING_MAINTENANCE_STAGE on $ROLLING_MAINTENANCE_HOST args: $*"
gate="$dir/gate-$ROLLING_MAINTENANCE_HOST-$ROLLING_MAINTENANCE_STAGE"
if [ -e "$gate.wait" ]; then
  while [ ! -e "$gate" ]; do sleep 0.05; done
fi
code_file="$dir/exit-$ROLLING_MAINTENANCE_HOST-$ROLLING_MAINTENANCE_STAGE"
if [ -e "$code_file" ]; then
  code=$(cat "$code_file")
  echo "exiting with $code" >&2
  exit "$code"
fi
echo "done"
"""


@pytest.fixture
def lab_cluster(make_lab_cluster: Callable[..., LabCluster]) -> LabCluster:
    return make_lab_cluster(3, timings=LabTimings.fast())


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


# --------------------------------------------------------------------------------------------
# helpers


def make_hosts(cluster: Cluster, groups: dict[str, str]) -> None:
    """Hosts for the lab's nodes (node -> group), and wait until they are Up."""
    for node, group in groups.items():
        cluster.create(HOSTS, {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
                               "metadata": {"name": node},
                               "spec": {"nodeName": node, "group": group}})
    for node in groups:
        cluster.wait_field(HOSTS, node, "status.state", "Up", timeout=30)


def setup_hooks(cluster: Cluster) -> None:
    cluster.ensure_namespace(NS)
    cluster.kube.create_or_get(CONFIGMAPS, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "rolling-hooks", "namespace": NS},
        "data": {"hook.sh": HOOK},
    })


def stages(hooks_dir: Path, *, script: bool = True, only: tuple[str, ...] = STAGES,
           **timeouts: str) -> dict[str, Any]:
    """Every stage runs the hook: from the ConfigMap (script) or as image + command."""
    out: dict[str, Any] = {}
    for stage in only:
        if script:
            hook: dict[str, Any] = {"image": IMAGE,
                                    "script": {"name": "rolling-hooks", "key": "hook.sh"}}
        else:
            hook = {"image": IMAGE, "command": ["/bin/sh", "-c", HOOK, "hook"]}
        if stage in timeouts:
            hook["timeout"] = timeouts[stage]
        out[KEYS[stage]] = hook
    return out


def run_body(name: str, hooks_dir: Path, scope: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body_spec: dict[str, Any] = {
        "scope": scope,
        "stages": stages(hooks_dir),
        "payload": [str(hooks_dir), "--reason", "kernel update"],
        "hooksNamespace": NS,
        "pollInterval": "1s",
        "stageTimeout": "30s",
    }
    body_spec.update(spec)
    return {"apiVersion": "hostedengine.io/v1alpha1", "kind": "RollingMaintenance",
            "metadata": {"name": name}, "spec": body_spec}


def record(hooks_dir: Path) -> list[tuple[str, str]]:
    path = hooks_dir / "record"
    if not path.exists():
        return []
    return [tuple(line.split()[:2]) for line in path.read_text().splitlines()]  # type: ignore[misc]


def hold(hooks_dir: Path, host: str, stage: str) -> Path:
    """Make the hook of (host, stage) wait; returns the gate to create to let it go on."""
    (hooks_dir / f"gate-{host}-{stage}.wait").touch()
    return hooks_dir / f"gate-{host}-{stage}"


def fail_with(hooks_dir: Path, host: str, stage: str, code: int) -> None:
    (hooks_dir / f"exit-{host}-{stage}").write_text(str(code))


def run(cluster: Cluster, name: str) -> dict[str, Any]:
    obj = cluster.get(RUNS, name)
    assert obj is not None
    return obj


def wait_run(cluster: Cluster, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
    cluster.wait_field(RUNS, name, "status.state", state, timeout=timeout)
    return run(cluster, name)


def host_status(obj: dict[str, Any], host: str) -> dict[str, Any]:
    for h in obj["status"]["hosts"]:
        if h["host"] == host:
            return dict(h)
    raise AssertionError(f"{host} not in the status")


def stage_results(obj: dict[str, Any], host: str) -> dict[str, dict[str, Any]]:
    return {s["stage"]: s for s in host_status(obj, host).get("stages") or []}


def wait_stage(cluster: Cluster, name: str, host: str, stage: str, result: str,
               timeout: float = 30) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = cluster.get(RUNS, name)
        try:
            found = stage_results(obj or {"status": {"hosts": []}}, host).get(stage)
        except (AssertionError, KeyError):
            return None
        return found if found is not None and found.get("result") == result else None

    return wait_for(f"{name}: {host} {stage} {result}", probe, timeout,
                    describe=lambda: ((cluster.get(RUNS, name) or {}).get("status"),
                                      [(j["metadata"]["name"], j.get("status"))
                                       for j in hook_jobs(cluster, name)]))


def annotations(cluster: Cluster, host: str) -> dict[str, str]:
    return dict(((cluster.get(HOSTS, host) or {}).get("metadata") or {}).get("annotations") or {})


def steer_taints(cluster: Cluster) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for node in cluster.list(NODES):
        taints = [t for t in (node.get("spec") or {}).get("taints") or []
                  if t.get("key") == STEER]
        if taints:
            out[node["metadata"]["name"]] = taints
    return out


def hook_jobs(cluster: Cluster, run_name: str) -> list[dict[str, Any]]:
    return cluster.list(JOBS, NS, label_selector=f"hostedengine.io/rolling-run={run_name}")


def run_events(cluster: Cluster, name: str) -> list[tuple[str, str]]:
    return [(str(e.get("type")), str(e.get("reason"))) for e in cluster.events_for(name)]


def has_event(cluster: Cluster, name: str, type_: str, reason: str) -> bool:
    """Wait for an Event (they are posted right after the status write)."""
    wait_for(f"{type_} Event {reason} on {name}",
             lambda: (type_, reason) in run_events(cluster, name),
             describe=lambda: run_events(cluster, name))
    return True


@pytest.fixture
def three_hosts(cluster: Cluster) -> Iterator[Cluster]:
    make_hosts(cluster, {"node-1": "g1", "node-2": "g1", "node-3": "g2"})
    setup_hooks(cluster)
    yield cluster


# --------------------------------------------------------------------------------------------
# the whole run


def test_all_four_stages_group_after_group(three_hosts: Cluster, hooks_dir: Path) -> None:
    cluster = three_hosts
    gate = hold(hooks_dir, "node-1", "Maintenance")
    cluster.create(RUNS, run_body("nightly", hooks_dir, {"groups": {}}))

    # node-1 is in maintenance (drained by the Host handler) while its Maintenance hook runs;
    # its group's Nodes are steered (PreferNoSchedule), never cordoned by the run
    wait_stage(cluster, "nightly", "node-1", "Maintenance", "Running")
    assert cluster.get(HOSTS, "node-1")["status"]["state"] == "Maintenance"
    assert annotations(cluster, "node-1")[REQUEST] == "rolling/nightly"
    steered = steer_taints(cluster)
    assert set(steered) == {"node-1", "node-2"}
    assert all(t[0]["effect"] == "PreferNoSchedule" for t in steered.values())
    assert not (cluster.get(NODES, "node-2")["spec"] or {}).get("unschedulable")
    obj = run(cluster, "nightly")
    assert obj["status"]["currentGroup"] == "g1"
    assert obj["status"]["currentHosts"] == ["node-1"]
    assert conditions(obj)["Progressing"]["status"] == "True"
    (job,) = [j for j in hook_jobs(cluster, "nightly")
              if j["metadata"]["labels"]["hostedengine.io/rolling-stage"] == "Maintenance"]
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["nodeName"] == "node-1"
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 30
    assert job["metadata"]["ownerReferences"][0]["kind"] == "RollingMaintenance"
    gate.touch()

    obj = wait_run(cluster, "nightly", "Succeeded")
    status = obj["status"]
    assert status["progress"] == "3/3" and status["hostsDone"] == 3
    assert [g["name"] for g in status["groups"]] == ["g1", "g2"]
    assert all(g["state"] == "Done" and not g["schedulingDisabled"] for g in status["groups"])
    for host in ("node-1", "node-2", "node-3"):
        assert host_status(obj, host)["state"] == "Succeeded"
        results = stage_results(obj, host)
        assert list(results) == list(STAGES)
        for stage, res in results.items():
            assert res["result"] == "Succeeded" and res["exitCode"] == 0
            assert res["startedAt"] <= res["finishedAt"]
            # the last lines of the hook's log, with the payload appended to the command
            assert f"hook {stage} on {host} args: --reason kernel update" in res["logTail"]
    # what really ran: PreFlight on every host first, then host by host, group by group
    ran = record(hooks_dir)
    assert ran[:3] == [(h, "PreFlight") for h in ("node-1", "node-2", "node-3")] or \
        sorted(ran[:3]) == [(h, "PreFlight") for h in ("node-1", "node-2", "node-3")]
    rest = ran[3:]
    assert rest == [(h, s) for h in ("node-1", "node-2", "node-3") for s in STAGES[1:]]
    conds = conditions(obj)
    assert conds["Succeeded"]["status"] == "True"
    assert conds["Progressing"]["status"] == "False"
    # everything the run asked for is taken back
    assert steer_taints(cluster) == {}
    for host in ("node-1", "node-2", "node-3"):
        assert REQUEST not in annotations(cluster, host)
        assert cluster.get(HOSTS, host)["status"]["state"] == "Up"
    assert has_event(cluster, "nightly", "Normal", "RollingMaintenanceSucceeded")


def test_image_and_command_hooks_with_host_names_in_order(three_hosts: Cluster,
                                                          hooks_dir: Path) -> None:
    cluster = three_hosts
    body = run_body("by-name", hooks_dir, {"hosts": ["node-3", "node-1"]},
                    stages=stages(hooks_dir, script=False, only=("PreFlight", "Maintenance")))
    cluster.create(RUNS, body)
    obj = wait_run(cluster, "by-name", "Succeeded")
    assert [h["host"] for h in obj["status"]["hosts"]] == ["node-1", "node-3"] or \
        {h["host"] for h in obj["status"]["hosts"]} == {"node-1", "node-3"}
    ran = record(hooks_dir)
    assert ("node-2", "PreFlight") not in ran
    maintenance = [h for h, s in ran if s == "Maintenance"]
    assert sorted(maintenance) == ["node-1", "node-3"]
    for host in ("node-1", "node-3"):
        assert list(stage_results(obj, host)) == ["PreFlight", "Maintenance"]


# --------------------------------------------------------------------------------------------
# exit 70, failures, forced, timeouts


def test_exit_70_at_preflight_and_premaintenance_skips_the_host(three_hosts: Cluster,
                                                                hooks_dir: Path) -> None:
    cluster = three_hosts
    fail_with(hooks_dir, "node-1", "PreFlight", 70)
    fail_with(hooks_dir, "node-2", "PreMaintenance", 70)
    cluster.create(RUNS, run_body("skips", hooks_dir, {"groups": {}}))
    obj = wait_run(cluster, "skips", "Succeeded")
    assert host_status(obj, "node-1")["state"] == "Skipped"
    assert stage_results(obj, "node-1")["PreFlight"]["result"] == "Skipped"
    assert stage_results(obj, "node-1")["PreFlight"]["exitCode"] == 70
    assert host_status(obj, "node-2")["state"] == "Skipped"
    assert stage_results(obj, "node-2")["PreMaintenance"]["exitCode"] == 70
    assert host_status(obj, "node-3")["state"] == "Succeeded"
    ran = record(hooks_dir)
    assert [s for h, s in ran if h == "node-1"] == ["PreFlight"]
    assert [s for h, s in ran if h == "node-2"] == ["PreFlight", "PreMaintenance"]
    # the skipped hosts were never put into maintenance
    assert host_status(obj, "node-1").get("maintenanceStartedAt") is None
    assert host_status(obj, "node-2").get("maintenanceStartedAt") is None
    assert conditions(obj)["Succeeded"]["reason"] == "Completed"


def test_failing_maintenance_hook_stops_the_run_and_cancels_its_maintenance(
        three_hosts: Cluster, hooks_dir: Path) -> None:
    cluster = three_hosts
    fail_with(hooks_dir, "node-1", "Maintenance", 3)
    cluster.create(RUNS, run_body("stops", hooks_dir, {"groups": {}}))
    obj = wait_run(cluster, "stops", "Failed")
    assert host_status(obj, "node-1")["state"] == "Failed"
    res = stage_results(obj, "node-1")["Maintenance"]
    assert res["result"] == "Failed" and res["exitCode"] == 3
    assert "exiting with 3" in res["logTail"]
    assert "PostMaintenance" not in stage_results(obj, "node-1")
    assert host_status(obj, "node-2")["state"] == "Cancelled"
    assert host_status(obj, "node-3")["state"] == "Cancelled"
    assert not [s for h, s in record(hooks_dir) if h != "node-1" and s != "PreFlight"]
    conds = conditions(obj)
    assert conds["Failed"]["status"] == "True" and conds["Failed"]["reason"] == "StageFailed"
    assert "node-1" in conds["Failed"]["message"]
    assert has_event(cluster, "stops", "Warning", "RollingMaintenanceFailed")
    # the host's maintenance is cancelled and the group's scheduling restored
    cluster.wait_field(HOSTS, "node-1", "status.state", "Up", timeout=30)
    assert REQUEST not in annotations(cluster, "node-1")
    assert steer_taints(cluster) == {}


def test_failing_maintenance_hook_with_forced_skips_the_host(three_hosts: Cluster,
                                                             hooks_dir: Path) -> None:
    cluster = three_hosts
    fail_with(hooks_dir, "node-2", "Maintenance", 1)
    cluster.create(RUNS, run_body("forced", hooks_dir, {"groups": {}}, forced=True))
    obj = wait_run(cluster, "forced", "Succeeded")
    assert host_status(obj, "node-2")["state"] == "Failed"
    assert stage_results(obj, "node-2")["Maintenance"]["exitCode"] == 1
    assert host_status(obj, "node-1")["state"] == "Succeeded"
    assert host_status(obj, "node-3")["state"] == "Succeeded"
    cond = conditions(obj)["Succeeded"]
    assert cond["reason"] == "CompletedWithFailures" and "node-2" in cond["message"]
    assert has_event(cluster, "forced", "Warning", "HostSkipped")
    assert REQUEST not in annotations(cluster, "node-2")
    cluster.wait_field(HOSTS, "node-2", "status.state", "Up", timeout=30)


def test_stage_timeout_stops_the_hook(three_hosts: Cluster, hooks_dir: Path) -> None:
    cluster = three_hosts
    hold(hooks_dir, "node-1", "PreMaintenance")  # never released
    body = run_body("slow", hooks_dir, {"hosts": ["node-1"]},
                    stages=stages(hooks_dir, PreMaintenance="2s"))
    cluster.create(RUNS, body)
    obj = wait_run(cluster, "slow", "Failed")
    res = stage_results(obj, "node-1")["PreMaintenance"]
    assert res["result"] == "TimedOut"
    assert "did not finish within 2s" in res["message"]
    # the hook's Job is deleted (its process stopped); the host never entered maintenance
    wait_for("the timed-out Job deleted", lambda: not [
        j for j in hook_jobs(cluster, "slow")
        if j["metadata"]["labels"]["hostedengine.io/rolling-stage"] == "PreMaintenance"
        and not j["metadata"].get("deletionTimestamp")])
    assert host_status(obj, "node-1").get("maintenanceStartedAt") is None
    assert ("node-1", "Maintenance") not in record(hooks_dir)


# --------------------------------------------------------------------------------------------
# pause, resume, abort


def test_pause_resume(three_hosts: Cluster, hooks_dir: Path) -> None:
    cluster = three_hosts
    cluster.create(RUNS, run_body("paused", hooks_dir, {"groups": {}}, paused=True))
    obj = wait_run(cluster, "paused", "Paused")
    assert conditions(obj)["Paused"]["status"] == "True"
    # nothing started: no stage recorded, no Job, no hook ran
    assert all(not h.get("stages") for h in obj["status"]["hosts"])
    assert hook_jobs(cluster, "paused") == [] and record(hooks_dir) == []

    cluster.patch(RUNS, "paused", {"spec": {"paused": False}})
    obj = wait_run(cluster, "paused", "Succeeded")
    assert conditions(obj)["Paused"]["status"] == "False"
    assert len(record(hooks_dir)) == 3 * 4


def test_pause_mid_run_finishes_the_running_hook_then_waits(three_hosts: Cluster,
                                                            hooks_dir: Path) -> None:
    cluster = three_hosts
    gate = hold(hooks_dir, "node-1", "PreMaintenance")
    cluster.create(RUNS, run_body("mid", hooks_dir, {"groups": {}}))
    wait_stage(cluster, "mid", "node-1", "PreMaintenance", "Running")
    cluster.patch(RUNS, "mid", {"spec": {"paused": True}})
    wait_run(cluster, "mid", "Paused")
    gate.touch()
    obj = wait_stage(cluster, "mid", "node-1", "PreMaintenance", "Succeeded")
    # the hook that ran finished and was recorded; the host was not put into maintenance
    obj = run(cluster, "mid")
    assert host_status(obj, "node-1")["state"] == "PreMaintenance"
    assert REQUEST not in annotations(cluster, "node-1")
    cluster.patch(RUNS, "mid", {"spec": {"paused": False}})
    wait_run(cluster, "mid", "Succeeded")


def test_abort_ends_the_maintenance_and_deletes_the_hook(three_hosts: Cluster,
                                                         hooks_dir: Path) -> None:
    cluster = three_hosts
    hold(hooks_dir, "node-1", "Maintenance")  # never released
    cluster.create(RUNS, run_body("stopme", hooks_dir, {"groups": {}}))
    wait_stage(cluster, "stopme", "node-1", "Maintenance", "Running")
    assert cluster.get(HOSTS, "node-1")["status"]["state"] == "Maintenance"
    cluster.patch(RUNS, "stopme", {"spec": {"abort": True}})
    obj = wait_run(cluster, "stopme", "Aborted")
    assert stage_results(obj, "node-1")["Maintenance"]["result"] == "Failed"
    assert {h["state"] for h in obj["status"]["hosts"]} == {"Cancelled"}
    assert conditions(obj)["Failed"]["reason"] == "Aborted"
    assert has_event(cluster, "stopme", "Warning", "RollingMaintenanceAborted")
    cluster.wait_field(HOSTS, "node-1", "status.state", "Up", timeout=30)
    assert REQUEST not in annotations(cluster, "node-1")
    assert steer_taints(cluster) == {}
    wait_for("the Maintenance Job deleted", lambda: not [
        j for j in hook_jobs(cluster, "stopme")
        if j["metadata"]["labels"]["hostedengine.io/rolling-stage"] == "Maintenance"
        and not j["metadata"].get("deletionTimestamp")])
    # abort cannot be undone (the schema says so)
    with pytest.raises(Invalid):
        cluster.patch(RUNS, "stopme", {"spec": {"abort": False}})


# --------------------------------------------------------------------------------------------
# bad input


def test_bad_spec_becomes_a_condition_and_a_warning(three_hosts: Cluster,
                                                    hooks_dir: Path) -> None:
    cluster = three_hosts
    # refused by the schema: stageTimeout below pollInterval (CloudStack refuses the call)
    with pytest.raises(Invalid, match="stageTimeout"):
        cluster.create(RUNS, run_body("refused", hooks_dir, {"groups": {}},
                                      stageTimeout="5s", pollInterval="10s"))
    # a hook timeout below the poll interval: the run refuses to start
    body = run_body("short", hooks_dir, {"groups": {}}, pollInterval="5s",
                    stages=stages(hooks_dir, Maintenance="2s"))
    cluster.create(RUNS, body)
    obj = wait_run(cluster, "short", "Failed")
    assert conditions(obj)["Failed"]["reason"] == "StageTimeoutBelowPollInterval"
    assert has_event(cluster, "short", "Warning", "RollingMaintenanceFailed")
    # a scope that matches no Host
    cluster.create(RUNS, run_body("nobody", hooks_dir,
                                  {"selector": {"matchLabels": {"rack": "nowhere"}}}))
    obj = wait_run(cluster, "nobody", "Failed")
    assert conditions(obj)["Failed"]["reason"] == "EmptyScope"
    assert record(hooks_dir) == [] and hook_jobs(cluster, "nobody") == []


# --------------------------------------------------------------------------------------------
# operator restart


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


def test_operator_restart_resumes_without_rerunning_a_finished_stage(
        lab_cluster: LabCluster, restartable: Callable[[], OperatorThread],
        hooks_dir: Path) -> None:
    first = restartable()
    cluster = Cluster(lab_cluster, first)
    make_hosts(cluster, {"node-1": "g1", "node-2": "g1", "node-3": "g2"})
    setup_hooks(cluster)
    gate = hold(hooks_dir, "node-2", "Maintenance")
    cluster.create(RUNS, run_body("restart", hooks_dir, {"groups": {}}))
    wait_stage(cluster, "restart", "node-2", "Maintenance", "Running", timeout=60)
    first.stop()

    # while the operator is down the hook finishes; the new operator records its result
    gate.touch()
    wait_for("the held hook finished", lambda: any(
        (j.get("status") or {}).get("succeeded") for j in hook_jobs(cluster, "restart")
        if j["metadata"]["labels"]["hostedengine.io/rolling-stage"] == "Maintenance"
        and j["metadata"]["labels"]["hostedengine.io/rolling-host"] == "node-2"))
    second = restartable()
    cluster.operator = second
    obj = wait_run(cluster, "restart", "Succeeded")
    ran = record(hooks_dir)
    for host in ("node-1", "node-2", "node-3"):
        assert [s for h, s in ran if h == host] == list(STAGES), ran
        assert host_status(obj, host)["state"] == "Succeeded"
    assert len(ran) == 12
    assert REQUEST not in annotations(cluster, "node-2")
    assert steer_taints(cluster) == {}


def test_deleting_a_run_takes_back_its_maintenance_and_steer(three_hosts: Cluster,
                                                             hooks_dir: Path) -> None:
    cluster = three_hosts
    hold(hooks_dir, "node-1", "Maintenance")  # never released
    cluster.create(RUNS, run_body("gone", hooks_dir, {"groups": {}}))
    wait_stage(cluster, "gone", "node-1", "Maintenance", "Running")
    assert annotations(cluster, "node-1")[REQUEST] == "rolling/gone"
    cluster.delete(RUNS, "gone")
    cluster.wait_gone(RUNS, "gone", timeout=30)
    assert REQUEST not in annotations(cluster, "node-1")
    assert steer_taints(cluster) == {}
    cluster.wait_field(HOSTS, "node-1", "status.state", "Up", timeout=30)
