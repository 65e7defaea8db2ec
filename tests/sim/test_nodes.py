"""Nodes and their kubelets: registration, capacity, labels, Ready, Leases.

References: kubernetes.io/docs/concepts/architecture/nodes/ (heartbeats: "Lease objects ... the
kubelet updates every 10 seconds"), /docs/reference/node/node-status/.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hosted_engine.lab.sim.api import LEASES, NODES
from hosted_engine.lab.sim.lab import Lab
from hosted_engine.lab.sim.nodes import HostHardware
from hosted_engine.lab.sim.quantity import to_units
from simhelpers import cond, get_node


async def test_hosts_register_as_ready_nodes_with_capacity_and_labels(sim_lab: Lab) -> None:
    nodes = await sim_lab.api.list(NODES)
    assert sorted(n["metadata"]["name"] for n in nodes) == ["node-1", "node-2", "node-3"]
    node = next(n for n in nodes if n["metadata"]["name"] == "node-2")
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == "node-2"
    assert labels["kubernetes.io/os"] == "linux"
    status = node["status"]
    assert to_units("cpu", status["capacity"]["cpu"]) == 16000
    assert to_units("memory", status["allocatable"]["memory"]) < to_units(
        "memory", status["capacity"]["memory"]
    )
    assert status["capacity"]["devices.kubevirt.io/kvm"] == "1k"
    ready = cond(node, "Ready")
    assert ready["status"] == "True" and ready["reason"] == "KubeletReady"
    assert {c["type"] for c in status["conditions"]} >= {
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "Ready",
    }
    assert status["nodeInfo"]["systemUUID"] == sim_lab.nodes["node-2"].system_uuid
    assert any(a["type"] == "InternalIP" for a in status["addresses"])


async def test_hardware_and_extra_labels_are_configurable(
    sim_lab_factory: Callable[..., Awaitable[Lab]],
) -> None:
    lab: Lab = await sim_lab_factory(
        hosts=1, hardware=HostHardware(cpu=8, memory_gi=32, labels={"rack": "r1"})
    )
    node = get_node(lab, "node-1")
    assert node["status"]["capacity"]["cpu"] == "8"
    assert node["status"]["capacity"]["memory"] == "32Gi"
    assert node["metadata"]["labels"]["rack"] == "r1"


async def test_kubelet_renews_its_lease_in_kube_node_lease(sim_lab: Lab) -> None:
    first = await sim_lab.api.get(LEASES, "node-1", "kube-node-lease")
    assert first is not None
    assert first["spec"]["holderIdentity"] == "node-1"
    assert first["metadata"]["ownerReferences"][0]["kind"] == "Node"
    await asyncio.sleep(sim_lab.timings.lease_interval * 3)
    later = await sim_lab.api.get(LEASES, "node-1", "kube-node-lease")
    assert later is not None
    assert later["spec"]["renewTime"] > first["spec"]["renewTime"]


async def test_ready_heartbeat_is_reposted(sim_lab: Lab) -> None:
    before = cond(get_node(sim_lab, "node-3"), "Ready")["lastHeartbeatTime"]
    await sim_lab.wait_for(
        lambda: cond(get_node(sim_lab, "node-3"), "Ready")["lastHeartbeatTime"] != before,
        timeout=sim_lab.timings.node_status_report_interval * 10 + 2,
    )
    ready = cond(get_node(sim_lab, "node-3"), "Ready")
    assert ready["status"] == "True"


async def test_a_deleted_node_of_a_running_machine_registers_again(sim_lab: Lab) -> None:
    uid = get_node(sim_lab, "node-1")["metadata"]["uid"]
    await sim_lab.client.delete("", "v1", "nodes", "node-1")
    await sim_lab.wait_for(
        lambda: (
            (sim_lab.informer(NODES).get("node-1") or {}).get("metadata", {}).get("uid")
            not in (None, uid)
        ),
        timeout=5,
    )
    assert cond(get_node(sim_lab, "node-1"), "Ready")["status"] == "True"


async def test_kubectl_style_status_of_the_machines(sim_lab: Lab) -> None:
    await sim_lab.faults.fail_node("node-3")
    status = await sim_lab.faults.status()
    by_name = {n["name"]: n for n in status["nodes"]}
    assert by_name["node-3"]["power"] == "Off"
    assert by_name["node-3"]["machine"] == "Off"
    assert by_name["node-1"]["machine"] == "Running"
    assert status["vms"] == [] and status["migrations"] == []
