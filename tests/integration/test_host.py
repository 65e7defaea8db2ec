"""Host end to end: the operator on the lab drains a host by live migration under KubeVirt's
limits, cancels, times out, blocks or shuts down what cannot migrate, refuses to strand the
engine, drives the lab's Redfish and IPMI BMCs with the real clients (sushy, pyghmi), fences a
host that lost power so its VMs restart elsewhere, never fences without power management, and
holds a Host's removal until it is in maintenance.

Timings are the lab's fast ones (a node is declared not Ready within a second) and the
operator's Host thresholds are shortened through its environment variables.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import HOSTS, Cluster, LabCluster, conditions, field, wait_for
from hosted_engine.adapters.kube import Resource
from hosted_engine.lab.sim.timings import LabTimings

pytestmark = pytest.mark.lab

NS = "vms"
NODES = Resource("", "v1", "nodes", namespaced=False)
VMS = Resource("kubevirt.io", "v1", "virtualmachines", namespaced=True)
VMIS = Resource("kubevirt.io", "v1", "virtualmachineinstances", namespaced=True)
VMIMS = Resource("kubevirt.io", "v1", "virtualmachineinstancemigrations", namespaced=True)
KUBEVIRTS = Resource("kubevirt.io", "v1", "kubevirts", namespaced=True)
CONFIGMAPS = Resource("", "v1", "configmaps", namespaced=True)
ENGINE_LABEL = "hostedengine.io/engine-host"
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
LAB_NS = "lab-system"


def timings(**extra: float) -> LabTimings:
    return LabTimings.fast(
        # 1 GiB takes ~0.25 s to copy: migrations overlap long enough to see the limits
        migration_bandwidth=4 * 1024**3,
        extra={"kubevirt_api_seconds": 0.05, "migration_unschedulable_timeout": 2.0, **extra},
    )


@pytest.fixture(autouse=True)
def _operator_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HE_HOST_SILENT_AFTER", "0.3")
    monkeypatch.setenv("HE_HOST_FENCE_TIMEOUT", "10")
    monkeypatch.setenv("HE_HOST_MIGRATION_RETRY_AFTER", "0.2")


@pytest.fixture
def lab_cluster(make_lab_cluster: Callable[..., LabCluster]) -> LabCluster:
    """3 nodes with BMCs (Redfish and IPMI) and the KubeVirt simulators."""
    return make_lab_cluster(3, timings=timings(), bmc=True)


# --------------------------------------------------------------------------------------------
# helpers


def host_body(node: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
            "metadata": {"name": node}, "spec": {"nodeName": node, **spec}}


def vm_body(name: str, *, memory: str = "1Gi", strategy: str = "Always",
            labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    vmi_spec: dict[str, Any] = {
        "domain": {"cpu": {"cores": 1}, "memory": {"guest": memory},
                   "devices": {"interfaces": [{"name": "default", "masquerade": {}}]}},
        "networks": [{"name": "default", "pod": {}}],
        "volumes": [],
        **spec,
    }
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
            "spec": {"runStrategy": strategy,
                     "template": {"metadata": {"labels": {"app": name, **(labels or {})}},
                                  "spec": vmi_spec}}}


def not_migratable(name: str) -> dict[str, Any]:
    """A VM with a bridge interface on the pod network: KubeVirt cannot live-migrate it."""
    body = vm_body(name)
    devices = body["spec"]["template"]["spec"]["domain"]["devices"]
    devices["interfaces"] = [{"name": "default", "bridge": {}}]
    return body


def cordon(cluster: Cluster, node: str, on: bool) -> None:
    cluster.patch(NODES, node, {"spec": {"unschedulable": True if on else None}})


def vmi_nodes(cluster: Cluster) -> dict[str, str]:
    return {v["metadata"]["name"]: str((v.get("status") or {}).get("nodeName") or "")
            for v in cluster.list(VMIS, NS)
            if (v.get("status") or {}).get("phase") == "Running"}


def start_vms_on(cluster: Cluster, node: str, bodies: list[dict[str, Any]],
                 nodes: tuple[str, ...] = ("node-1", "node-2", "node-3")) -> None:
    """Create the VMs and wait until they all run on ``node`` (the others cordoned meanwhile)."""
    cluster.ensure_namespace(NS)
    others = [n for n in nodes if n != node]
    for other in others:
        cordon(cluster, other, True)
    for body in bodies:
        cluster.create(VMS, body)
    names = {b["metadata"]["name"] for b in bodies}
    wait_for(f"{len(names)} VMs running on {node}",
             lambda: {n for n, where in vmi_nodes(cluster).items() if where == node} >= names,
             timeout=30, describe=lambda: vmi_nodes(cluster))
    for other in others:
        cordon(cluster, other, False)


def host(cluster: Cluster, name: str) -> dict[str, Any]:
    obj = cluster.get(HOSTS, name)
    assert obj is not None
    return obj


def wait_state(cluster: Cluster, name: str, state: str, timeout: float = 30) -> dict[str, Any]:
    cluster.wait_field(HOSTS, name, "status.state", state, timeout=timeout)
    return host(cluster, name)


def set_mode(cluster: Cluster, name: str, mode: str, **extra: Any) -> None:
    cluster.patch(HOSTS, name, {"spec": {"maintenance": {"mode": mode, **extra}}})


def node(cluster: Cluster, name: str) -> dict[str, Any]:
    obj = cluster.get(NODES, name)
    assert obj is not None
    return obj


def taint_keys(cluster: Cluster, name: str) -> set[str]:
    return {t.get("key") for t in (node(cluster, name).get("spec") or {}).get("taints") or []}


class MigrationWatch:
    """Samples the unfinished migrations per source node while a drain runs."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.max_by_source: dict[str, int] = {}
        self.max_total = 0
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            by_source: dict[str, int] = {}
            total = 0
            for m in self.cluster.list(VMIMS, NS):
                self.seen.add(m["metadata"]["name"])
                if (m.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                total += 1
                source = ((m.get("status") or {}).get("migrationState") or {}).get(
                    "sourceNode") or "?"
                by_source[source] = by_source.get(source, 0) + 1
            self.max_total = max(self.max_total, total)
            for source, n in by_source.items():
                self.max_by_source[source] = max(self.max_by_source.get(source, 0), n)
            time.sleep(0.01)

    def __enter__(self) -> MigrationWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------------------------
# maintenance


def test_maintenance_with_20_vms_moves_them_all_under_the_limits(cluster: Cluster) -> None:
    cluster.patch(KUBEVIRTS, "kubevirt", {"spec": {"configuration": {"migrations": {
        "parallelOutboundMigrationsPerNode": 3, "parallelMigrationsPerCluster": 5}}}},
        "kubevirt")
    names = [f"vm-{i:02d}" for i in range(20)]
    start_vms_on(cluster, "node-1", [vm_body(n, memory=f"{512 + 64 * (i % 5)}Mi")
                                     for i, n in enumerate(names)])
    for n in ("node-1", "node-2", "node-3"):
        cluster.create(HOSTS, host_body(n))
    wait_state(cluster, "node-1", "Up")

    with MigrationWatch(cluster) as watch:
        set_mode(cluster, "node-1", "local", reason="firmware")
        h = wait_state(cluster, "node-1", "Maintenance", timeout=60)

    assert watch.max_by_source.get("node-1", 0) <= 3, watch.max_by_source
    assert watch.max_total <= 5
    assert watch.max_by_source.get("node-1", 0) >= 2, "the drain never ran migrations in parallel"
    assert len(watch.seen) >= 20
    where = vmi_nodes(cluster)
    assert set(where) == set(names)
    assert "node-1" not in where.values()
    drain = h["status"]["drain"]
    assert drain["total"] == 20
    assert sorted(f"{r['namespace']}/{r['name']}" for r in drain["moved"]) == \
        sorted(f"{NS}/{n}" for n in names)
    assert drain.get("inFlight", []) == [] and drain.get("blocked", []) == []
    assert drain["startedAt"] and drain["finishedAt"]
    assert node(cluster, "node-1")["spec"]["unschedulable"] is True
    assert conditions(h)["InMaintenance"]["status"] == "True"
    reasons = cluster.event_reasons("node-1")
    assert "MaintenanceStarted" in reasons and "MaintenanceReached" in reasons

    # activation uncordons and returns to Up; our finished migrations are cleaned up
    set_mode(cluster, "node-1", "none")
    wait_state(cluster, "node-1", "Up")
    assert not node(cluster, "node-1")["spec"].get("unschedulable")
    wait_for("drain migrations deleted", lambda: not [
        m for m in cluster.list(VMIMS, NS)
        if (m["metadata"].get("labels") or {}).get("hostedengine.io/host") == "node-1"])


def lab_call(cluster: Cluster, fn: Callable[[Any], Any]) -> Any:
    """Run ``await fn(lab)`` in the lab's loop (faults, the KubeVirt simulator)."""
    lab = cluster.lab.lab

    async def run() -> Any:
        return await fn(lab)

    return cluster.lab.runner.call(run)


def migration_bandwidth(cluster: Cluster, bytes_per_second: float) -> None:
    lab_call(cluster, lambda lab: lab.faults.set_migration_bandwidth(bytes_per_second))


def our_migrations(cluster: Cluster, host_name: str) -> list[dict[str, Any]]:
    return [m for m in cluster.list(VMIMS, NS)
            if (m["metadata"].get("labels") or {}).get("hostedengine.io/host") == host_name]


def unfinished(migrations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in migrations
            if (m.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


def test_cancel_midway_deletes_pending_migrations_and_uncordons(cluster: Cluster) -> None:
    names = [f"vm-{i}" for i in range(6)]
    start_vms_on(cluster, "node-1", [vm_body(n) for n in names])
    migration_bandwidth(cluster, 0)  # migrations start but never finish
    cluster.create(HOSTS, host_body("node-1"))
    wait_state(cluster, "node-1", "Up")

    set_mode(cluster, "node-1", "local")
    wait_state(cluster, "node-1", "PreparingForMaintenance")
    wait_for("two migrations in flight", lambda: len(unfinished(our_migrations(
        cluster, "node-1"))) == 2, describe=lambda: our_migrations(cluster, "node-1"))
    assert node(cluster, "node-1")["spec"]["unschedulable"] is True
    in_flight = host(cluster, "node-1")["status"]["drain"]["inFlight"]
    assert len(in_flight) == 2 and all(vm["migration"] for vm in in_flight)

    set_mode(cluster, "node-1", "none")
    h = wait_state(cluster, "node-1", "Up")
    assert conditions(h)["Draining"]["reason"] == "Cancelled"
    assert "drain" not in h["status"]
    wait_for("our migrations gone", lambda: not unfinished(our_migrations(cluster, "node-1")))
    assert not node(cluster, "node-1")["spec"].get("unschedulable")
    assert set(vmi_nodes(cluster).values()) == {"node-1"}  # nothing moved, nothing lost
    assert "MaintenanceCancelled" in cluster.event_reasons("node-1")


def test_drain_timeout_stops_migrations_and_keeps_the_host_cordoned(cluster: Cluster) -> None:
    start_vms_on(cluster, "node-1", [vm_body(f"vm-{i}") for i in range(3)])
    migration_bandwidth(cluster, 0)
    cluster.create(HOSTS, host_body("node-1"))
    wait_state(cluster, "node-1", "Up")

    set_mode(cluster, "node-1", "local", timeout="1s")
    cond = cluster.wait_condition(HOSTS, "node-1", "Draining", status="False", reason="TimedOut")
    assert "not drained after 1s" in cond["message"]
    h = host(cluster, "node-1")
    assert h["status"]["state"] == "PreparingForMaintenance"
    assert h["status"]["drain"]["timedOut"] is True
    wait_for("migrations stopped", lambda: not unfinished(our_migrations(cluster, "node-1")))
    events = [e for e in cluster.events_for("node-1") if e["reason"] == "MaintenanceTimedOut"]
    assert events and events[0]["type"] == "Warning"
    assert node(cluster, "node-1")["spec"]["unschedulable"] is True
    migration_bandwidth(cluster, 4 * 1024**3)
    time.sleep(0.5)  # nothing restarts the drain after a timeout (checked below)
    assert not unfinished(our_migrations(cluster, "node-1"))
    assert host(cluster, "node-1")["status"]["state"] == "PreparingForMaintenance"

    set_mode(cluster, "node-1", "none")  # the user decides: cancel
    wait_state(cluster, "node-1", "Up")
    assert not node(cluster, "node-1")["spec"].get("unschedulable")


def test_non_migratable_vm_blocks_then_is_shut_down_by_policy(cluster: Cluster) -> None:
    start_vms_on(cluster, "node-1", [vm_body("web"), vm_body("db"), not_migratable("legacy")])
    cluster.create(HOSTS, host_body("node-1"))
    wait_state(cluster, "node-1", "Up")

    set_mode(cluster, "node-1", "local")
    cond = cluster.wait_condition(HOSTS, "node-1", "DrainBlocked", status="True")
    assert "vms/legacy" in cond["message"]
    cluster.wait_field(HOSTS, "node-1", "status.drain.moved", predicate=lambda v: v and len(v) == 2)
    h = host(cluster, "node-1")
    assert h["status"]["state"] == "PreparingForMaintenance"
    blocked = h["status"]["drain"]["blocked"]
    assert [(b["name"], b["reason"].split(":")[0]) for b in blocked] == \
        [("legacy", "InterfaceNotLiveMigratable")]
    assert vmi_nodes(cluster)["legacy"] == "node-1"
    assert "DrainBlocked" in cluster.event_reasons("node-1")

    cluster.patch(HOSTS, "node-1", {"spec": {"maintenance": {"nonMigratablePolicy": "shutdown"}}})
    h = wait_state(cluster, "node-1", "Maintenance")
    assert [r["name"] for r in h["status"]["drain"]["shutDown"]] == ["legacy"]
    vm = cluster.get(VMS, "legacy", NS)
    assert vm is not None and vm["spec"]["runStrategy"] == "Halted"
    assert "legacy" not in vmi_nodes(cluster)
    assert {n for k, n in vmi_nodes(cluster).items()} <= {"node-2", "node-3"}


def test_engine_host_refused_when_alone_then_the_engine_moves_first(cluster: Cluster) -> None:
    engine = vm_body("engine", memory="2Gi", labels={"hostedengine.io/hostedengine": "he"})
    start_vms_on(cluster, "node-1", [engine, vm_body("app-1"), vm_body("app-2")])
    cluster.create(HOSTS, host_body("node-1", hostedEngine="deploy"))
    cluster.create(HOSTS, host_body("node-2"))
    cluster.create(HOSTS, host_body("node-3"))
    wait_state(cluster, "node-1", "Up")
    cluster.wait_field(HOSTS, "node-1", "status.hostedEngine.deployed", True)
    assert node(cluster, "node-1")["metadata"]["labels"][ENGINE_LABEL] == "true"
    assert host(cluster, "node-1")["status"]["hostedEngine"]["engineRunning"] is True

    set_mode(cluster, "node-1", "local")
    cond = cluster.wait_condition(HOSTS, "node-1", "MaintenanceRefused", status="True")
    assert cond["reason"] == "EngineHasNoHost"
    h = host(cluster, "node-1")
    assert h["status"]["state"] == "Up"
    assert not node(cluster, "node-1")["spec"].get("unschedulable")
    assert not our_migrations(cluster, "node-1")
    assert "MaintenanceRefused" in cluster.event_reasons("node-1")

    # another host may run the engine: maintenance proceeds, the engine migrates first
    cluster.patch(HOSTS, "node-2", {"spec": {"hostedEngine": "deploy"}})
    wait_state(cluster, "node-1", "Maintenance")
    assert conditions(host(cluster, "node-1"))["MaintenanceRefused"]["status"] == "False"
    assert vmi_nodes(cluster)["engine"] == "node-2"
    migrations = our_migrations(cluster, "node-1")
    engine_migration = [m for m in migrations if m["spec"]["vmiName"] == "engine"]
    assert engine_migration[0]["spec"]["addedNodeSelector"] == {ENGINE_LABEL: "true"}
    first = engine_migration[0]["metadata"]["creationTimestamp"]
    assert all(first <= m["metadata"]["creationTimestamp"] for m in migrations)  # engine first
    host_ids = {host(cluster, n)["status"]["hostedEngine"].get("hostID") for n in ("node-1",
                                                                                   "node-2")}
    assert host_ids == {1, 2}

    # undeploy of the engine's host moves the engine first, then drops the label
    set_mode(cluster, "node-1", "none")
    wait_state(cluster, "node-1", "Up")
    cluster.patch(HOSTS, "node-2", {"spec": {"hostedEngine": "undeploy"}})
    wait_for("engine back on node-1", lambda: vmi_nodes(cluster).get("engine") == "node-1")
    wait_for("label removed from node-2", lambda: ENGINE_LABEL not in (
        node(cluster, "node-2")["metadata"].get("labels") or {}))
    cluster.wait_field(HOSTS, "node-2", "status.hostedEngine.deployed", False)
