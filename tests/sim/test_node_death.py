"""A node that dies: what Kubernetes does without fencing, and what unblocks it.

References: kubernetes.io/docs/concepts/architecture/nodes/#node-controller (Ready=Unknown after
node-monitor-grace-period), /docs/concepts/scheduling-eviction/taint-and-toleration/
#taint-based-evictions (unreachable taints, DefaultTolerationSeconds 300 s),
/docs/concepts/cluster-administration/node-shutdown/#non-graceful-node-shutdown
(out-of-service taint force-deletes), /docs/concepts/workloads/pods/pod-lifecycle/
#pod-garbage-collection (orphans of a deleted Node); shared/reference/k8s-anchors.md §1.10.
"""

from __future__ import annotations

import asyncio

from hosted_engine.lab.sim.api import EVENTS, NODES, PODS
from hosted_engine.lab.sim.lab import Lab
from simhelpers import cond, events_for, get_node, get_pod, is_terminating, phase, pod, taints

UNREACHABLE = "node.kubernetes.io/unreachable"


async def _running_on(lab: Lab, name: str, node: str, **spec: object) -> None:
    await lab.api.create(PODS, pod(name, nodeName=node, **spec), "default")
    await lab.wait_for(lambda: phase(lab, name) == "Running", timeout=5)


async def test_pods_get_default_tolerations_at_admission(sim_lab: Lab) -> None:
    created = await sim_lab.api.create(PODS, pod("tol"), "default")
    assert created is not None
    tolerations = created["spec"]["tolerations"]
    keys = {(t["key"], t["effect"], t["tolerationSeconds"]) for t in tolerations}
    seconds = int(sim_lab.timings.default_toleration_seconds)
    assert (UNREACHABLE, "NoExecute", seconds) in keys
    assert ("node.kubernetes.io/not-ready", "NoExecute", seconds) in keys


async def test_dead_node_turns_unknown_and_tainted_its_pods_stay_terminating(
    sim_lab: Lab,
) -> None:
    await _running_on(sim_lab, "web", "node-2")
    await sim_lab.faults.fail_node("node-2")
    # still Ready right after the failure: nobody knows yet
    assert cond(get_node(sim_lab, "node-2"), "Ready")["status"] == "True"
    await sim_lab.wait_for(
        lambda: cond(get_node(sim_lab, "node-2"), "Ready")["status"] == "Unknown", timeout=5
    )
    node = get_node(sim_lab, "node-2")
    ready = cond(node, "Ready")
    assert ready["reason"] == "NodeStatusUnknown"
    assert ready["message"] == "Kubelet stopped posting node status."
    await sim_lab.wait_for(
        lambda: (
            taints(get_node(sim_lab, "node-2"))
            >= {(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")}
        ),
        timeout=5,
    )
    assert any(
        t.get("timeAdded")
        for t in get_node(sim_lab, "node-2")["spec"]["taints"]
        if t["effect"] == "NoExecute"
    )
    await sim_lab.wait_for(
        lambda: cond(get_pod(sim_lab, "web"), "Ready").get("status") == "False", timeout=5
    )
    # after tolerationSeconds the taint manager deletes the pod; nobody completes it
    await sim_lab.wait_for(lambda: is_terminating(sim_lab, "web"), timeout=5)
    assert cond(get_pod(sim_lab, "web"), "DisruptionTarget")["reason"] == "DeletionByTaintManager"
    assert await events_for(sim_lab, "web", "TaintManagerEviction")
    await asyncio.sleep(sim_lab.timings.node_monitor_grace_period * 3)
    stuck = get_pod(sim_lab, "web")
    assert stuck is not None, "a pod on an unreachable node must stay Terminating"
    assert stuck["status"]["phase"] == "Running"  # the API keeps the last status it saw


async def test_out_of_service_taint_force_deletes_terminating_pods(sim_lab: Lab) -> None:
    await _running_on(sim_lab, "db", "node-1")
    await sim_lab.faults.fail_node("node-1")
    await sim_lab.wait_for(lambda: is_terminating(sim_lab, "db"), timeout=5)
    node = get_node(sim_lab, "node-1")
    new_taints = [
        *node["spec"].get("taints", []),
        {
            "key": "node.kubernetes.io/out-of-service",
            "value": "nodeshutdown",
            "effect": "NoExecute",
        },
    ]
    await sim_lab.api.patch(NODES, "node-1", {"spec": {"taints": new_taints}})
    await sim_lab.wait_for(lambda: get_pod(sim_lab, "db") is None, timeout=5)
    # the lifecycle controller keeps the operator's taint while the node is down
    await sim_lab.settle(3)
    assert ("node.kubernetes.io/out-of-service", "NoExecute") in taints(get_node(sim_lab, "node-1"))


async def test_out_of_service_evicts_even_pods_that_tolerate_unreachable_forever(
    sim_lab: Lab,
) -> None:
    forever = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]
    await _running_on(sim_lab, "sticky", "node-3", tolerations=forever)
    await sim_lab.faults.fail_node("node-3")
    await sim_lab.wait_for(
        lambda: (UNREACHABLE, "NoExecute") in taints(get_node(sim_lab, "node-3")), timeout=5
    )
    await asyncio.sleep(sim_lab.timings.default_toleration_seconds * 2)
    assert not is_terminating(sim_lab, "sticky")
    node = get_node(sim_lab, "node-3")
    await sim_lab.api.patch(
        NODES,
        "node-3",
        {
            "spec": {
                "taints": [
                    *node["spec"]["taints"],
                    {
                        "key": "node.kubernetes.io/out-of-service",
                        "value": "nodeshutdown",
                        "effect": "NoExecute",
                    },
                ]
            }
        },
    )
    await sim_lab.wait_for(lambda: get_pod(sim_lab, "sticky") is None, timeout=5)


async def test_deleting_the_node_object_frees_its_pods(sim_lab: Lab) -> None:
    await _running_on(sim_lab, "orphan", "node-2")
    await sim_lab.faults.fail_node("node-2")
    await sim_lab.client.delete("", "v1", "nodes", "node-2")
    await sim_lab.wait_for(lambda: get_pod(sim_lab, "orphan") is None, timeout=5)


async def test_recovered_node_rejoins_and_finishes_terminating_pods(sim_lab: Lab) -> None:
    await _running_on(sim_lab, "app", "node-1")
    boot_id = get_node(sim_lab, "node-1")["status"]["nodeInfo"]["bootID"]
    await sim_lab.faults.fail_node("node-1")
    await sim_lab.wait_for(lambda: is_terminating(sim_lab, "app"), timeout=5)
    await sim_lab.faults.recover_node("node-1")
    await sim_lab.wait_for(
        lambda: cond(get_node(sim_lab, "node-1"), "Ready")["status"] == "True", timeout=5
    )
    await sim_lab.wait_for(lambda: get_pod(sim_lab, "app") is None, timeout=5)
    await sim_lab.wait_for(
        lambda: not any(k == UNREACHABLE for k, _ in taints(get_node(sim_lab, "node-1"))), timeout=5
    )
    node = get_node(sim_lab, "node-1")
    assert node["status"]["nodeInfo"]["bootID"] != boot_id
    rebooted = [
        e
        for e in await sim_lab.api.list(EVENTS, "default")
        if e["reason"] == "Rebooted" and e["involvedObject"]["name"] == "node-1"
    ]
    assert rebooted and rebooted[0]["type"] == "Warning"


async def test_after_a_reboot_lost_containers_fail_or_restart_by_policy(sim_lab: Lab) -> None:
    forever = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]
    await _running_on(sim_lab, "once", "node-3", tolerations=forever, restartPolicy="Never")
    await _running_on(sim_lab, "always", "node-3", tolerations=forever)
    await sim_lab.faults.fail_node("node-3")
    await sim_lab.wait_for(
        lambda: cond(get_node(sim_lab, "node-3"), "Ready")["status"] == "Unknown", timeout=5
    )
    assert phase(sim_lab, "once") == "Running"
    await sim_lab.faults.recover_node("node-3")
    await sim_lab.wait_for(lambda: phase(sim_lab, "once") == "Failed", timeout=5)
    state = get_pod(sim_lab, "once")["status"]["containerStatuses"][0]["state"]  # type: ignore[index]
    assert state["terminated"]["reason"] == "ContainerStatusUnknown"
    assert state["terminated"]["exitCode"] == 137
    await sim_lab.wait_for(
        lambda: (
            phase(sim_lab, "always") == "Running"
            and get_pod(sim_lab, "always")["status"]["containerStatuses"][0]["restartCount"] == 1
        ),  # type: ignore[index]
        timeout=5,
    )


async def test_a_new_pod_never_lands_on_the_dead_node(sim_lab: Lab) -> None:
    await sim_lab.faults.fail_node("node-1")
    await sim_lab.faults.fail_node("node-2")
    await sim_lab.wait_for(
        lambda: all(
            (UNREACHABLE, "NoSchedule") in taints(get_node(sim_lab, n))
            for n in ("node-1", "node-2")
        ),
        timeout=5,
    )
    await sim_lab.api.create(PODS, pod("fresh"), "default")
    await sim_lab.wait_for(lambda: phase(sim_lab, "fresh") == "Running", timeout=5)
    assert get_pod(sim_lab, "fresh")["spec"]["nodeName"] == "node-3"  # type: ignore[index]
