"""API faults at 5 %: the lab answers 5 % of the operator's requests with 409 (writes), 429
(Retry-After), 500 or a slow response, and ends its watch streams before 5 % of their events
(a dropped connection; the client resumes from its last resourceVersion). Seeded, aimed at the
operator's User-Agent only (the test's own client and the simulators are never disturbed).

Each representative workload must converge to the state a fault-free run reaches, with nothing
done twice where it matters: one engine VM (one VirtualMachine, one DataVolume), exactly the
drained VMs moved once each, every rolling hook run once per host and stage, one backup run
stored once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from reliability_hardening_support import USER_AGENT, operator_requests

from harness import HOSTEDENGINES, HOSTS, Cluster, conditions, wait_for  # isort: skip
from hosted_engine.adapters.kube import Resource  # isort: skip
from hosted_engine.lab.apiserver.admission import FaultRule, Faults  # isort: skip
from hosted_engine.lab.sim.timings import LabTimings  # isort: skip
from hostedengine_lab import (  # isort: skip
    DATAVOLUMES,
    HOST_ENV,
    NAME,
    NS,
    PVCS,
    VMS,
    engine_vmi,
    event_reasons,
    he_body,
    lab_call,
    prepare,
    wait_up,
)

pytestmark = pytest.mark.lab

RATE = 0.05
#: One seeded run per workload in CI; HE_LONG_TESTS=1 adds more seeds (other fault sequences).
#: (Seeds 2-4 found lost status writes: a Host's BMC check whose status patch failed counted as
#: done, so no PowerManagementReady condition; fixed 2026-11-22, regression tests in
#: tests/integration/test_host.py and test_reliability_lab_faults.py.)
SEEDS = [1, 2, 3, 4] if os.environ.get("HE_LONG_TESTS") == "1" else [1]
NODES = Resource("", "v1", "nodes", namespaced=False)
VMIS = Resource("kubevirt.io", "v1", "virtualmachineinstances", namespaced=True)
BACKUPS = Resource("hostedengine.io", "v1alpha1", "backups", namespaced=True)
RUNS = Resource("hostedengine.io", "v1alpha1", "rollingmaintenances", namespaced=False)
DRAIN_NS = "vms"


@pytest.fixture(autouse=True)
def _operator_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in HOST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HE_HOST_MIGRATION_RETRY_AFTER", "0.2")


def faults_of(cluster: Cluster) -> Faults:
    faults: Faults = cluster.lab.lab.server.faults
    return faults


def assert_faults_fired(cluster: Cluster, before: int) -> None:
    """The run was really disturbed: error answers and dropped watch streams happened."""
    faults = faults_of(cluster)
    fired = {"status": sum(r.fired for r in faults.rules if r.status),
             "latency": sum(r.fired for r in faults.rules if r.latency),
             "dropped": faults.dropped_streams}
    requests = operator_requests() - before
    assert requests > 100, f"too few requests to say anything ({requests})"
    # errors (3.75 % of requests) and dropped streams surely happened; delays most likely
    assert fired["status"] and fired["dropped"], f"{fired} over {requests} operator requests"


def add_sure_faults(cluster: Cluster, *rules: FaultRule) -> None:
    """Faults that surely fire, besides the random ones: a short workload (the drain makes
    ~110 requests) may draw no error at 5 % (seen with seed 2: 0 errors, 25 dropped streams)."""
    async def add() -> None:
        for rule in rules:
            cluster.lab.lab.server.add_fault(rule)

    cluster.lab.runner.call(add)


def vm_body(name: str) -> dict[str, Any]:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": DRAIN_NS},
            "spec": {"runStrategy": "Always", "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"domain": {"cpu": {"cores": 1}, "memory": {"guest": "512Mi"},
                                    "devices": {"interfaces": [
                                        {"name": "default", "masquerade": {}}]}},
                         "networks": [{"name": "default", "pod": {}}], "volumes": []}}}}


def running_on(cluster: Cluster) -> dict[str, str]:
    return {v["metadata"]["name"]: str((v.get("status") or {}).get("nodeName") or "")
            for v in cluster.list(VMIS, DRAIN_NS)
            if (v.get("status") or {}).get("phase") == "Running"}


@pytest.mark.parametrize("seed", SEEDS)
def test_engine_deploy_crash_and_one_shot_backup_converge(
        make_cluster: Callable[..., Cluster], tmp_path: Path, seed: int) -> None:
    cluster = make_cluster(3, fault_rate=RATE, seed=seed * 5, timings=LabTimings.fast(),
                           bmc=True)
    before = operator_requests()
    prepare(cluster)  # StorageDomain Active, Hosts deployed with Redfish power management
    cluster.create(HOSTEDENGINES, he_body())
    wait_up(cluster, timeout=60)
    vm = cluster.get(VMS, NAME, NS)
    first = engine_vmi(cluster)
    assert vm is not None and first is not None

    lab_call(cluster, lambda lab: lab.faults.crash_vm(NS, NAME))
    wait_for("a new engine VMI", lambda: (vmi := engine_vmi(cluster)) is not None
             and vmi["metadata"]["uid"] != first["metadata"]["uid"], timeout=30)
    obj = wait_up(cluster, timeout=60)
    assert wait_for("EngineUnexpectedlyDown", lambda: "EngineUnexpectedlyDown"
                    in event_reasons(cluster), timeout=30)

    # the fault-free end state: one engine, on one VM, created once; no host fenced
    assert [v["metadata"]["uid"] for v in cluster.list(VMS, NS)] == [vm["metadata"]["uid"]]
    assert [d["metadata"]["name"] for d in cluster.list(DATAVOLUMES, NS)] == [f"{NAME}-disk"]
    assert len(cluster.list(VMIS, NS)) == 1
    assert obj["status"]["engine"]["health"] == "good"
    assert conditions(obj)["Available"]["status"] == "True"
    assert obj["metadata"]["generation"] == 1  # the operator never wrote the spec
    for node in ("node-1", "node-2", "node-3"):
        host = cluster.get(HOSTS, node) or {}
        assert host["status"]["state"] == "Up", host["status"]
        assert not (host["status"].get("fencing") or {}).get("fencedAt"), host["status"]

    # a one-shot backup to a directory: one run, stored once, complete (a small disk)
    cluster.patch_status(PVCS, f"{NAME}-disk", {"capacity": {"storage": str(2 * 1024**2)}}, NS)
    cluster.create(BACKUPS, {
        "apiVersion": "hostedengine.io/v1alpha1", "kind": "Backup",
        "metadata": {"name": "once", "namespace": NS},
        "spec": {"source": {"hostedEngine": NAME},
                 "target": {"filesystem": {"path": str(tmp_path)}}}})
    status = cluster.wait_field(BACKUPS, "once", "status", predicate=lambda s: bool(
        s and s.get("phase") == "Succeeded" and s.get("runs")), namespace=NS, timeout=60)
    (run,) = status["runs"]
    assert run["phase"] == "Succeeded" and run["trigger"] == "OneShot"
    assert sorted(p.name for p in (tmp_path / NS / NAME).iterdir()) == [run["id"]]
    stored = sorted(p.name for p in (tmp_path / NS / NAME / run["id"]).iterdir())
    assert stored == ["disk.img.gz", "hostedengine.yaml", "manifest.json",
                      "virtualmachine.yaml"]
    assert_faults_fired(cluster, before)


@pytest.mark.parametrize("seed", SEEDS)
def test_host_maintenance_drain_converges(make_cluster: Callable[..., Cluster],
                                          seed: int) -> None:
    cluster = make_cluster(3, fault_rate=RATE, seed=seed * 7,
                           timings=LabTimings.fast(tick=0.05))
    before = operator_requests()
    # the drain's own writes fail once each, whatever the seed draws: the first status patch
    # of node-1 (more times than the adapter retries), the first migration created
    add_sure_faults(
        cluster,
        FaultRule(verb="patch", resource="hosts", subresource="status", name="node-1",
                  status=500, count=6, user_agent=USER_AGENT, reason="InternalError"),
        FaultRule(verb="create", resource="virtualmachineinstancemigrations", status=429,
                  count=1, user_agent=USER_AGENT, reason="TooManyRequests"))
    cluster.ensure_namespace(DRAIN_NS)
    for other in ("node-2", "node-3"):
        cluster.patch(NODES, other, {"spec": {"unschedulable": True}})
    names = [f"vm-{i}" for i in range(6)]
    for name in names:
        cluster.create(Resource("kubevirt.io", "v1", "virtualmachines", True), vm_body(name))
    wait_for("6 VMs on node-1", lambda: set(running_on(cluster)) == set(names)
             and set(running_on(cluster).values()) == {"node-1"}, timeout=30,
             describe=lambda: running_on(cluster))
    for other in ("node-2", "node-3"):
        cluster.patch(NODES, other, {"spec": {"unschedulable": None}})
    for node in ("node-1", "node-2", "node-3"):
        cluster.create(HOSTS, {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
                               "metadata": {"name": node}, "spec": {"nodeName": node}})
    cluster.wait_field(HOSTS, "node-1", "status.state", "Up", timeout=30)

    cluster.patch(HOSTS, "node-1", {"spec": {"maintenance": {"mode": "local"}}})
    cluster.wait_field(HOSTS, "node-1", "status.state", "Maintenance", timeout=60)
    wait_for("every VM off node-1", lambda: set(running_on(cluster)) == set(names)
             and "node-1" not in running_on(cluster).values(), timeout=30,
             describe=lambda: running_on(cluster))
    host = cluster.get(HOSTS, "node-1") or {}
    drain = host["status"]["drain"]
    assert drain["total"] == 6
    moved = [f"{r['namespace']}/{r['name']}" for r in drain["moved"]]
    assert sorted(moved) == sorted(f"{DRAIN_NS}/{n}" for n in names)  # each once
    assert drain.get("inFlight", []) == [] and drain.get("blocked", []) == []
    assert (cluster.get(NODES, "node-1") or {})["spec"]["unschedulable"] is True

    cluster.patch(HOSTS, "node-1", {"spec": {"maintenance": {"mode": "none"}}})
    cluster.wait_field(HOSTS, "node-1", "status.state", "Up", timeout=30)
    wait_for("node-1 uncordoned", lambda: not (
        (cluster.get(NODES, "node-1") or {}).get("spec") or {}).get("unschedulable"))
    assert_faults_fired(cluster, before)


@pytest.mark.parametrize("seed", SEEDS)
def test_small_rolling_maintenance_converges(make_cluster: Callable[..., Cluster],
                                             tmp_path: Path, seed: int) -> None:
    from test_rolling import STAGES, make_hosts, record, run_body, setup_hooks, stage_results

    cluster = make_cluster(3, fault_rate=RATE, seed=seed * 11, timings=LabTimings.fast())
    before = operator_requests()
    make_hosts(cluster, {"node-1": "g1", "node-2": "g2", "node-3": "g2"})
    setup_hooks(cluster)
    cluster.create(RUNS, run_body("small", tmp_path, {"groups": {}}))
    cluster.wait_field(RUNS, "small", "status.state", "Succeeded", timeout=90)
    obj = cluster.get(RUNS, "small") or {}
    assert obj["status"]["progress"] == "3/3"
    for host in ("node-1", "node-2", "node-3"):
        results = stage_results(obj, host)
        assert list(results) == list(STAGES)
        assert all(r["result"] == "Succeeded" for r in results.values())
        assert (cluster.get(HOSTS, host) or {})["status"]["state"] == "Up"
    # every hook ran exactly once per host and stage, whatever the API answered
    ran = record(tmp_path)
    assert sorted(ran) == sorted((h, s) for h in ("node-1", "node-2", "node-3") for s in STAGES)
    assert_faults_fired(cluster, before)
