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
from collections.abc import Callable
from typing import Any

import pytest
from harness import (
    HOSTS,
    ROOT,
    Cluster,
    LabCluster,
    conditions,
    field,
    wait_for,
    yaml_documents,
)
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
        # a slower pass than the fastest: the simulators' watch caches keep up on a busy machine
        tick=0.05,
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


def wait_event(cluster: Cluster, name: str, *reasons: str) -> list[str]:
    """Wait until the Host has Events with every reason (posted just after the status)."""
    return wait_for(f"Events {reasons} on {name}",
                    lambda: (seen := cluster.event_reasons(name))
                    and set(reasons) <= set(seen) and seen,
                    describe=lambda: cluster.event_reasons(name))


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

    uids = {v["metadata"]["name"]: v["metadata"]["uid"] for v in cluster.list(VMIS, NS)}
    with MigrationWatch(cluster) as watch:
        set_mode(cluster, "node-1", "local", reason="firmware")
        h = wait_state(cluster, "node-1", "Maintenance", timeout=60)

    assert watch.max_by_source.get("node-1", 0) <= 3, watch.max_by_source
    assert watch.max_total <= 5
    assert watch.max_by_source.get("node-1", 0) >= 2, "the drain never ran migrations in parallel"
    wait_for("every VM running off node-1", lambda: set(vmi_nodes(cluster)) == set(names)
             and "node-1" not in vmi_nodes(cluster).values(), describe=lambda: vmi_nodes(cluster))

    def succeeded() -> set[str]:
        return {m["spec"]["vmiName"] for m in our_migrations(cluster, "node-1")
                if (m.get("status") or {}).get("phase") == "Succeeded"}

    def kept_their_instance() -> set[str]:
        """VMs live-migrated, not restarted (the lab's KubeVirt may restart a VMI whose
        migration target pod vanished: that VM leaves the host by a restart, also fine)."""
        return {v["metadata"]["name"] for v in cluster.list(VMIS, NS)
                if uids.get(v["metadata"]["name"]) == v["metadata"]["uid"]}

    # KubeVirt moves the VMI before it marks its migration Succeeded
    wait_for("every VM not restarted moved by a migration of ours",
             lambda: kept_their_instance() <= succeeded(),
             describe=lambda: (kept_their_instance() - succeeded()))
    assert len(kept_their_instance()) >= 10
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
    wait_event(cluster, "node-1", "MaintenanceStarted", "MaintenanceReached")

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
    wait_event(cluster, "node-1", "MaintenanceCancelled")


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
    wait_event(cluster, "node-1", "MaintenanceTimedOut")
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
    wait_event(cluster, "node-1", "DrainBlocked")

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
    wait_event(cluster, "node-1", "MaintenanceRefused")

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


# --------------------------------------------------------------------------------------------
# power management and fencing


def bmc_endpoints(cluster: Cluster) -> dict[str, str]:
    cm = cluster.get(CONFIGMAPS, "bmc-endpoints", LAB_NS)
    assert cm is not None, "the lab publishes its BMC endpoints"
    return dict(cm["data"])


def redfish(cluster: Cluster, node_name: str, **extra: Any) -> dict[str, Any]:
    url = bmc_endpoints(cluster)[f"{node_name}.redfish"]  # https://127.0.0.1:PORT/redfish/...
    port = int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    return {"type": "redfish", "address": "127.0.0.1", "port": port, "systemID": node_name,
            "credentialsSecretRef": {"name": f"bmc-{node_name}", "namespace": LAB_NS},
            "caBundleSecretRef": {"name": f"bmc-{node_name}", "namespace": LAB_NS,
                                  "key": "ca.crt"},
            "actionTimeout": "20s", **extra}


def ipmi(cluster: Cluster, node_name: str, **extra: Any) -> dict[str, Any]:
    address, port = bmc_endpoints(cluster)[f"{node_name}.ipmi"].rsplit(":", 1)
    return {"type": "ipmi", "address": address, "port": int(port),
            "credentialsSecretRef": {"name": f"bmc-{node_name}", "namespace": LAB_NS},
            "actionTimeout": "20s", **extra}


def request_power(cluster: Cluster, name: str, action: str, request_id: str) -> dict[str, Any]:
    cluster.patch(HOSTS, name, {"metadata": {"annotations": {
        "hostedengine.io/power-action": action, "hostedengine.io/power-action-id": request_id}}})

    def done() -> dict[str, Any] | None:
        last = field(cluster.get(HOSTS, name), "status.powerManagement.lastAction") or {}
        if last.get("id") == request_id and last.get("result") != "InProgress":
            return dict(last)
        return None

    return wait_for(f"power action {action} ({request_id}) on {name}", done, timeout=30)


def bmc_password(cluster: Cluster) -> str:
    import base64

    secret = cluster.get(Resource("", "v1", "secrets", namespaced=True), "bmc-node-1", LAB_NS)
    assert secret is not None
    return base64.b64decode(secret["data"]["password"]).decode()


def node_ready(cluster: Cluster, name: str) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node(cluster, name).get("status") or {}).get("conditions") or [])


def test_power_actions_through_redfish_and_ipmi(cluster: Cluster) -> None:
    cluster.create(HOSTS, host_body("node-3", powerManagement=redfish(cluster, "node-3")))
    cluster.create(HOSTS, host_body("node-2", powerManagement=ipmi(cluster, "node-2")))
    for name in ("node-2", "node-3"):
        cond = cluster.wait_condition(HOSTS, name, "PowerManagementReady", status="True")
        assert cond["reason"] == "BmcAnswered"
        assert field(host(cluster, name), "status.powerManagement.powerState") == "On"

    # Redfish (sushy, TLS verified with the lab's CA): off, then on again
    last = request_power(cluster, "node-3", "off", "1")
    assert (last["action"], last["result"]) == ("off", "Succeeded"), last
    assert last["startedAt"] and last["finishedAt"]
    assert field(host(cluster, "node-3"), "status.powerManagement.powerState") == "Off"
    wait_for("node-3 not Ready", lambda: not node_ready(cluster, "node-3"))
    wait_state(cluster, "node-3", "NonResponsive")
    last = request_power(cluster, "node-3", "on", "2")
    assert (last["action"], last["result"]) == ("on", "Succeeded"), last
    wait_for("node-3 Ready again", lambda: node_ready(cluster, "node-3"))
    wait_state(cluster, "node-3", "Up")
    assert OUT_OF_SERVICE not in taint_keys(cluster, "node-3")  # nothing ran: no fence

    # IPMI (pyghmi, RMCP+): status, and a reset of a running host
    last = request_power(cluster, "node-2", "status", "a")
    assert (last["result"], field(host(cluster, "node-2"), "status.powerManagement.powerState")
            ) == ("Succeeded", "On")
    last = request_power(cluster, "node-2", "reset", "b")
    assert (last["action"], last["result"]) == ("reset", "Succeeded"), last
    # a repeated id is not a new request; a bad action is refused with a condition
    cluster.patch(HOSTS, "node-2", {"metadata": {"annotations": {
        "hostedengine.io/power-action": "explode"}}})
    cond = cluster.wait_condition(HOSTS, "node-2", "PowerActionValid", status="False")
    assert cond["reason"] == "InvalidPowerAction"

    # a fence request for a Ready node is refused and waits
    cluster.patch(HOSTS, "node-2", {"metadata": {"annotations": {
        "hostedengine.io/power-action": None,
        "hostedengine.io/fence-request": "engine/he-1"}}})
    cond = cluster.wait_condition(HOSTS, "node-2", "FencingBlocked", status="True")
    assert cond["reason"] == "NodeReady"
    fencing = host(cluster, "node-2")["status"]["fencing"]
    assert (fencing["requestID"], fencing["requestedBy"], fencing["phase"]) == \
        ("he-1", "engine", "Refused")
    assert field(host(cluster, "node-2"), "status.powerManagement.powerState") == "On"

    # the BMC password never shows in a status or an Event
    password = bmc_password(cluster)
    text = repr([host(cluster, n) for n in ("node-2", "node-3")]) + repr(
        [cluster.events_for(n) for n in ("node-2", "node-3")])
    assert password not in text
    wait_for("two power actions reported on node-3",
             lambda: cluster.event_reasons("node-3").count("PowerActionSucceeded") >= 2)


def test_fencing_after_power_loss_frees_the_vms_and_they_restart_elsewhere(
        cluster: Cluster) -> None:
    start_vms_on(cluster, "node-2", [vm_body("app-1"), vm_body("app-2", strategy="RerunOnFailure")])
    for name in ("node-1", "node-2", "node-3"):
        cluster.create(HOSTS, host_body(name, powerManagement=redfish(cluster, name)))
    wait_state(cluster, "node-2", "Up")
    cluster.wait_condition(HOSTS, "node-2", "PowerManagementReady", status="True")

    lab_call(cluster, lambda lab: lab.faults.fail_node("node-2"))
    h = wait_state(cluster, "node-2", "Fenced", timeout=30)
    fencing = h["status"]["fencing"]
    assert fencing["phase"] == "Confirmed" and fencing["confirmedAt"]
    assert fencing["previousState"] == "Up"
    assert field(h, "status.powerManagement.powerState") == "Off"
    assert OUT_OF_SERVICE in taint_keys(cluster, "node-2")
    reasons = wait_event(cluster, "node-2", "HostNonResponsive", "FenceRequested", "HostFenced")
    wait_for("VMs restarted elsewhere", lambda: set(vmi_nodes(cluster)) == {"app-1", "app-2"}
             and "node-2" not in vmi_nodes(cluster).values(), timeout=30,
             describe=lambda: vmi_nodes(cluster))
    assert reasons.count("FenceRequested") == 1  # one fence, not one per observer

    # back: power on through the BMC; Ready again -> taint removed, Up
    request_power(cluster, "node-2", "on", "back")
    h = wait_state(cluster, "node-2", "Up", timeout=30)
    assert OUT_OF_SERVICE not in taint_keys(cluster, "node-2")
    assert h["status"]["fencing"]["phase"] == "Released"
    assert conditions(h)["Fenced"]["status"] == "False"


def test_no_fencing_without_power_management(cluster: Cluster) -> None:
    start_vms_on(cluster, "node-3", [vm_body("app")])
    for name in ("node-1", "node-2", "node-3"):
        cluster.create(HOSTS, host_body(name))
    wait_state(cluster, "node-3", "Up")
    cond = conditions(host(cluster, "node-3"))["PowerManagementReady"]
    assert (cond["status"], cond["reason"]) == ("False", "NoPowerManagement")

    lab_call(cluster, lambda lab: lab.faults.fail_node("node-3"))
    wait_state(cluster, "node-3", "NonResponsive")
    cond = cluster.wait_condition(HOSTS, "node-3", "FencingBlocked", status="True")
    assert cond["reason"] == "NoPowerManagement"
    time.sleep(1.0)  # a fence would have happened by now (thresholds are 0.3 s)
    h = host(cluster, "node-3")
    assert h["status"]["state"] == "NonResponsive"
    assert OUT_OF_SERVICE not in taint_keys(cluster, "node-3")
    assert "FenceRequested" not in cluster.event_reasons("node-3")
    assert "app" not in vmi_nodes(cluster) or vmi_nodes(cluster)["app"] == "node-3"


# --------------------------------------------------------------------------------------------
# removal


def test_removal_is_held_until_maintenance(cluster: Cluster) -> None:
    cluster.create(HOSTS, host_body("node-3", hostedEngine="deploy"))
    wait_state(cluster, "node-3", "Up")
    cluster.wait_field(HOSTS, "node-3", "status.hostedEngine.deployed", True)
    assert "hostedengine.io/finalizer" in host(cluster, "node-3")["metadata"]["finalizers"]

    cluster.delete(HOSTS, "node-3")
    cond = cluster.wait_condition(HOSTS, "node-3", "DeletionBlocked", status="True")
    assert cond["reason"] == "NotInMaintenance"
    wait_event(cluster, "node-3", "DeletionBlocked")
    time.sleep(0.3)
    assert cluster.get(HOSTS, "node-3") is not None

    set_mode(cluster, "node-3", "local")
    cluster.wait_gone(HOSTS, "node-3")
    labels = node(cluster, "node-3")["metadata"].get("labels") or {}
    assert ENGINE_LABEL not in labels
    assert not node(cluster, "node-3")["spec"].get("unschedulable")


# --------------------------------------------------------------------------------------------
# the lab's example Hosts


def test_the_lab_example_hosts_reach_their_bmcs(cluster: Cluster) -> None:
    """examples/lab/hosts.yaml with the ports the lab picked (as `hosted-engine demo` does)."""
    path = ROOT / "examples" / "lab" / "hosts.yaml"
    docs = [d for d in yaml_documents([path]) if d.get("kind") == "Host"]
    assert [d["metadata"]["name"] for d in docs] == ["node-1", "node-2", "node-3"]
    for doc in docs:
        name = doc["metadata"]["name"]
        pm = doc["spec"]["powerManagement"]
        live = (redfish if pm["type"] == "redfish" else ipmi)(cluster, name)
        pm["address"], pm["port"] = live["address"], live["port"]
        cluster.create(HOSTS, doc)
    for doc in docs:
        name = doc["metadata"]["name"]
        cond = cluster.wait_condition(HOSTS, name, "PowerManagementReady", status="True")
        assert cond["reason"] == "BmcAnswered"
        cluster.wait_field(HOSTS, name, "status.hostedEngine.deployed", True)
        assert node(cluster, name)["metadata"]["labels"][ENGINE_LABEL] == "true"
    assert {host(cluster, d["metadata"]["name"])["spec"]["powerManagement"]["type"]
            for d in docs} == {"redfish", "ipmi"}
    assert sorted(host(cluster, d["metadata"]["name"])["status"]["hostedEngine"]["hostID"]
                  for d in docs) == [1, 2, 3]


def test_clock_skew_from_the_node_lease(cluster: Cluster) -> None:
    """A node whose clock runs 5 s ahead renews its Lease with a renewTime 5 s in the future."""
    from datetime import UTC, datetime, timedelta

    leases = Resource("coordination.k8s.io", "v1", "leases", namespaced=True)
    cluster.create(HOSTS, host_body("node-3"))
    cond = cluster.wait_condition(HOSTS, "node-3", "ClockSkewed", status="False")
    assert cond["reason"] == "ClockInSync"
    # the lab's kubelet writes the true time: cut it off, then renew as a skewed node would
    lab_call(cluster, lambda lab: lab.faults.partition_node("node-3"))
    ahead = datetime.now(UTC) + timedelta(seconds=5)
    cluster.patch(leases, "node-3", {"spec": {
        "renewTime": ahead.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}, "kube-node-lease")
    cond = cluster.wait_condition(HOSTS, "node-3", "ClockSkewed", status="True")
    assert cond["reason"] == "ClockSkewDetected"
    seconds = field(host(cluster, "node-3"), "status.clockSkew.seconds")
    assert 4.0 < seconds <= 5.0


def test_fence_on_request_of_the_hosted_engine_through_ipmi(cluster: Cluster) -> None:
    for name in ("node-1", "node-2", "node-3"):
        cluster.create(HOSTS, host_body(name, powerManagement=ipmi(cluster, name)))
    cluster.wait_condition(HOSTS, "node-3", "PowerManagementReady", status="True")
    lab_call(cluster, lambda lab: lab.faults.fail_node("node-3"))
    wait_state(cluster, "node-3", "NonResponsive")
    time.sleep(0.5)
    assert host(cluster, "node-3")["status"]["state"] == "NonResponsive"  # no VMs: no fence

    cluster.patch(HOSTS, "node-3", {"metadata": {"annotations": {
        "hostedengine.io/fence-request": "hostedengine.engine.he/he-42"}}})
    h = wait_state(cluster, "node-3", "Fenced")
    fencing = h["status"]["fencing"]
    assert (fencing["requestID"], fencing["requestedBy"], fencing["phase"]) == \
        ("he-42", "hostedengine.engine.he", "Confirmed")
    assert OUT_OF_SERVICE in taint_keys(cluster, "node-3")
    assert field(h, "status.powerManagement.lastAction.action") == "off"
    reasons = wait_event(cluster, "node-3", "FenceRequested", "HostFenced")
    assert reasons.count("FenceRequested") == 1


def test_a_failed_status_write_of_the_bmc_check_is_written_again(cluster: Cluster) -> None:
    """Regression (5 % API faults suite): the first BMC check's status patch failed (more
    times than the adapter retries a transient error), and the check counted as done: the Host
    never got a PowerManagementReady condition. Nothing of a failed write is taken as written."""
    from hosted_engine.adapters.kube import EVENT_ATTEMPTS, USER_AGENT
    from hosted_engine.lab.apiserver.admission import FaultRule

    rule = FaultRule(verb="patch", resource="hosts", subresource="status", name="node-3",
                     status=500, count=EVENT_ATTEMPTS, user_agent=USER_AGENT)

    async def add() -> None:
        cluster.lab.lab.server.add_fault(rule)

    cluster.lab.runner.call(add)
    cluster.create(HOSTS, host_body("node-3", powerManagement=redfish(cluster, "node-3")))
    cond = cluster.wait_condition(HOSTS, "node-3", "PowerManagementReady", status="True")
    assert cond["reason"] == "BmcAnswered"
    assert rule.fired == EVENT_ATTEMPTS  # the whole first write failed
    assert field(host(cluster, "node-3"), "status.powerManagement.powerState") == "On"
    assert field(host(cluster, "node-3"), "status.state") == "Up"
