"""The lab scheduler against the API: binding, cordon, selectors, affinity, taints, capacity.

References: kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/,
/docs/concepts/scheduling-eviction/taint-and-toleration/,
/docs/concepts/architecture/nodes/#manual-node-administration (cordon),
/docs/concepts/scheduling-eviction/kube-scheduler/ (FailedScheduling, PodScheduled=False).
"""

from __future__ import annotations

from typing import Any

from hosted_engine.lab.sim.api import NODES, PODS
from hosted_engine.lab.sim.lab import Lab
from simhelpers import cond, events_for, get_node, get_pod, phase, pod, taints


def node_of(lab: Lab, name: str) -> str | None:
    p = get_pod(lab, name)
    return None if p is None else p["spec"].get("nodeName")


async def bound(lab: Lab, name: str) -> str:
    await lab.wait_for(lambda: node_of(lab, name) is not None, timeout=5)
    node = node_of(lab, name)
    assert node is not None
    return node


async def test_pending_pod_is_bound_started_and_reported(sim_lab: Lab) -> None:
    await sim_lab.api.create(PODS, pod("a"), "default")
    node = await bound(sim_lab, "a")
    await sim_lab.wait_for(lambda: phase(sim_lab, "a") == "Running", timeout=5)
    p = get_pod(sim_lab, "a")
    assert cond(p, "PodScheduled")["status"] == "True"
    assert cond(p, "Ready")["status"] == "True"
    status = p["status"]  # type: ignore[index]
    assert status["containerStatuses"][0]["state"]["running"]["startedAt"]
    assert status["hostIP"] == sim_lab.nodes[node].internal_ip
    assert status["podIP"].startswith("10.244.")
    assert status["qosClass"] == "Burstable"
    scheduled = await events_for(sim_lab, "a", "Scheduled")
    assert scheduled and f"to {node}" in scheduled[0]["message"]


async def test_cordoned_nodes_get_no_new_pods_and_the_taint(sim_lab: Lab) -> None:
    for name in ("node-1", "node-2"):
        await sim_lab.api.patch(NODES, name, {"spec": {"unschedulable": True}})
    await sim_lab.wait_for(
        lambda: (
            ("node.kubernetes.io/unschedulable", "NoSchedule")
            in taints(get_node(sim_lab, "node-1"))
        ),
        timeout=5,
    )
    for i in range(3):
        await sim_lab.api.create(PODS, pod(f"c{i}"), "default")
    assert {await bound(sim_lab, f"c{i}") for i in range(3)} == {"node-3"}
    await sim_lab.api.patch(NODES, "node-1", {"spec": {"unschedulable": False}})
    await sim_lab.wait_for(lambda: not taints(get_node(sim_lab, "node-1")), timeout=5)


async def test_unschedulable_pod_is_reported_then_bound_when_room_appears(sim_lab: Lab) -> None:
    for name in ("node-1", "node-2", "node-3"):
        await sim_lab.api.patch(NODES, name, {"spec": {"unschedulable": True}})
    await sim_lab.api.create(PODS, pod("waiting"), "default")
    await sim_lab.wait_for(
        lambda: cond(get_pod(sim_lab, "waiting"), "PodScheduled").get("status") == "False",
        timeout=5,
    )
    scheduled = cond(get_pod(sim_lab, "waiting"), "PodScheduled")
    assert scheduled["reason"] == "Unschedulable"
    assert scheduled["message"].startswith("0/3 nodes are available: 3 node(s)")
    failed = await events_for(sim_lab, "waiting", "FailedScheduling")
    assert failed and failed[0]["type"] == "Warning"
    assert phase(sim_lab, "waiting") == "Pending"
    await sim_lab.api.patch(NODES, "node-2", {"spec": {"unschedulable": False}})
    assert await bound(sim_lab, "waiting") == "node-2"


async def test_requests_beyond_free_capacity_wait(sim_lab: Lab) -> None:
    # 16 cpu per node: two 10-cpu pods per node never fit
    for i in range(3):
        await sim_lab.api.create(PODS, pod(f"big{i}", cpu="10"), "default")
    nodes = [await bound(sim_lab, f"big{i}") for i in range(3)]
    assert sorted(nodes) == ["node-1", "node-2", "node-3"]
    await sim_lab.api.create(PODS, pod("extra", cpu="10"), "default")
    await sim_lab.wait_for(
        lambda: (
            "Insufficient cpu" in cond(get_pod(sim_lab, "extra"), "PodScheduled").get("message", "")
        ),
        timeout=5,
    )
    await sim_lab.client.delete("", "v1", "pods", "big1", "default")
    assert await bound(sim_lab, "extra") == nodes[1]


async def test_node_selector_required_and_preferred_affinity(sim_lab: Lab) -> None:
    await sim_lab.api.patch(NODES, "node-1", {"metadata": {"labels": {"disk": "ssd"}}})
    await sim_lab.api.patch(NODES, "node-3", {"metadata": {"labels": {"disk": "ssd"}}})
    await sim_lab.settle()
    await sim_lab.api.create(PODS, pod("sel", nodeSelector={"disk": "ssd"}), "default")
    assert await bound(sim_lab, "sel") in ("node-1", "node-3")
    affinity: dict[str, Any] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "preference": {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/hostname",
                                "operator": "In",
                                "values": ["node-3"],
                            }
                        ]
                    },
                }
            ],
        }
    }
    await sim_lab.api.create(PODS, pod("aff", affinity=affinity), "default")
    assert await bound(sim_lab, "aff") == "node-3"
    await sim_lab.api.create(PODS, pod("none", nodeSelector={"disk": "nvme"}), "default")
    await sim_lab.wait_for(
        lambda: (
            "didn't match Pod's node affinity/selector"
            in cond(get_pod(sim_lab, "none"), "PodScheduled").get("message", "")
        ),
        timeout=5,
    )


async def test_taints_repel_pods_without_tolerations(sim_lab: Lab) -> None:
    dedicated = [{"key": "dedicated", "value": "engine", "effect": "NoSchedule"}]
    for name in ("node-1", "node-2"):
        await sim_lab.api.patch(NODES, name, {"spec": {"taints": dedicated}})
    await sim_lab.settle()
    await sim_lab.api.create(PODS, pod("plain"), "default")
    assert await bound(sim_lab, "plain") == "node-3"
    await sim_lab.api.patch(NODES, "node-3", {"spec": {"unschedulable": True}})
    await sim_lab.settle()
    tolerant = pod(
        "tolerant",
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "engine", "effect": "NoSchedule"}
        ],
    )
    await sim_lab.api.create(PODS, tolerant, "default")
    assert await bound(sim_lab, "tolerant") in ("node-1", "node-2")


async def test_a_pod_with_node_name_skips_the_scheduler_even_on_a_cordoned_node(
    sim_lab: Lab,
) -> None:
    await sim_lab.api.patch(NODES, "node-2", {"spec": {"unschedulable": True}})
    await sim_lab.api.create(PODS, pod("pinned", nodeName="node-2"), "default")
    await sim_lab.wait_for(lambda: phase(sim_lab, "pinned") == "Running", timeout=5)
    assert node_of(sim_lab, "pinned") == "node-2"


async def test_another_scheduler_name_is_left_alone(sim_lab: Lab) -> None:
    await sim_lab.api.create(PODS, pod("other", schedulerName="my-scheduler"), "default")
    await sim_lab.settle(5)
    assert node_of(sim_lab, "other") is None
    assert cond(get_pod(sim_lab, "other"), "PodScheduled") == {}


async def test_graceful_delete_completes_on_a_live_node(sim_lab: Lab) -> None:
    await sim_lab.api.create(PODS, pod("bye"), "default")
    await sim_lab.wait_for(lambda: phase(sim_lab, "bye") == "Running", timeout=5)
    deleted = await sim_lab.client.delete("", "v1", "pods", "bye", "default")
    # the API answers with the pod, now carrying its deletion timestamp and grace
    assert deleted["metadata"]["deletionTimestamp"]
    assert deleted["metadata"]["deletionGracePeriodSeconds"] == 30
    await sim_lab.wait_for(lambda: get_pod(sim_lab, "bye") is None, timeout=5)
