"""A partitioned node: alive, its workloads running, but cut from the API server.

References: kubernetes.io/docs/concepts/architecture/nodes/#node-controller (the controller
cannot tell a dead node from an unreachable one: both turn Ready=Unknown),
shared/reference/k8s-anchors.md §1.10 (KubeVirt issue #2443: a kubelet gone while the VM keeps
running is why nothing is restarted elsewhere without fencing).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hosted_engine.lab.sim.api import JOBS, LEASES, PODS
from hosted_engine.lab.sim.lab import Lab
from simhelpers import cond, get_node, get_pod, is_terminating, job, phase, pod

FOREVER = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]


async def test_workloads_keep_running_and_report_after_the_partition_heals(
    sim_lab: Lab, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    gate = tmp_path / "go"
    script = f"while [ ! -f {gate} ]; do sleep 0.02; done; touch {marker}; exit 0"
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeName": "node-2",
        "tolerations": FOREVER,
        "containers": [{"name": "c", "image": "x", "command": ["/bin/sh", "-c", script]}],
    }
    await sim_lab.api.create(JOBS, job("long", "", template_spec=spec), "default")

    def job_pod() -> dict[str, Any] | None:
        return next(
            (
                p
                for p in sim_lab.informer(PODS).items()
                if p["metadata"]["name"].startswith("long-")
            ),
            None,
        )

    await sim_lab.wait_for(
        lambda: (job_pod() or {}).get("status", {}).get("phase") == "Running", timeout=5
    )
    await sim_lab.faults.partition_node("node-2")
    assert sim_lab.nodes["node-2"].state == "Partitioned"
    await sim_lab.wait_for(
        lambda: cond(get_node(sim_lab, "node-2"), "Ready")["status"] == "Unknown", timeout=5
    )
    gate.touch()
    await sim_lab.wait_for(marker.exists, timeout=5)  # the process ran on, unseen
    await sim_lab.settle(5)
    assert (job_pod() or {})["status"]["phase"] == "Running"  # the API cannot know
    await sim_lab.faults.heal_partition("node-2")
    await sim_lab.wait_for(
        lambda: (job_pod() or {}).get("status", {}).get("phase") == "Succeeded", timeout=5
    )
    await sim_lab.wait_for(
        lambda: (
            cond(sim_lab.informer(JOBS).get("long", "default"), "Complete").get("status") == "True"
        ),
        timeout=5,
    )
    await sim_lab.wait_for(
        lambda: cond(get_node(sim_lab, "node-2"), "Ready")["status"] == "True", timeout=5
    )


async def test_no_heartbeats_while_partitioned(sim_lab: Lab) -> None:
    await sim_lab.faults.partition_node("node-1")
    await sim_lab.settle(2)
    before = await sim_lab.api.get(LEASES, "node-1", "kube-node-lease")
    await asyncio.sleep(sim_lab.timings.lease_interval * 4)
    during = await sim_lab.api.get(LEASES, "node-1", "kube-node-lease")
    assert before is not None and during is not None
    assert during["spec"]["renewTime"] == before["spec"]["renewTime"]
    await sim_lab.faults.heal_partition("node-1")
    await sim_lab.wait_for(
        lambda: (
            (sim_lab.informer(LEASES).get("node-1", "kube-node-lease") or {})
            .get("spec", {})
            .get("renewTime")
            != before["spec"]["renewTime"]
        ),
        timeout=5,
    )


async def test_pods_evicted_during_the_partition_are_deleted_once_it_heals(
    sim_lab: Lab,
) -> None:
    await sim_lab.api.create(PODS, pod("svc", nodeName="node-3"), "default")
    await sim_lab.wait_for(lambda: phase(sim_lab, "svc") == "Running", timeout=5)
    await sim_lab.faults.partition_node("node-3")
    await sim_lab.wait_for(lambda: is_terminating(sim_lab, "svc"), timeout=5)
    await sim_lab.settle(5)
    assert get_pod(sim_lab, "svc") is not None  # stuck while the kubelet is cut off
    await sim_lab.faults.heal_partition("node-3")
    await sim_lab.wait_for(lambda: get_pod(sim_lab, "svc") is None, timeout=5)
