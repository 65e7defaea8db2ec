"""RollingMaintenance with VMs: maxUnavailable under capacity. Four 16 GiB hosts in one group,
real drains by live migration (the Host handler's), hooks as real scripts.

- Small VMs: two hosts are in maintenance at once (maxUnavailable 2), never a third.
- Large VMs (two hosts down would leave too little room): the same spec takes one host at a
  time, the next one waiting until the previous one is Up again.
In both, every VM still runs at the end.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from harness import HOSTS, Cluster, LabCluster, wait_for
from hosted_engine.adapters.kube import Resource
from hosted_engine.lab.sim.nodes import HostHardware
from hosted_engine.lab.sim.timings import LabTimings
from test_rolling import (
    RUNS,
    hold,
    host_status,
    make_hosts,
    run,
    run_body,
    setup_hooks,
    stages,
    wait_run,
    wait_stage,
)

pytestmark = pytest.mark.lab

NS = "vms"
VMS = ("kubevirt.io", "v1")
NODES4 = ("node-1", "node-2", "node-3", "node-4")


@pytest.fixture
def lab_cluster(make_lab_cluster: Callable[..., LabCluster]) -> LabCluster:
    timings = LabTimings.fast(migration_bandwidth=16 * 1024**3)
    return make_lab_cluster(4, timings=timings, hardware=HostHardware(memory_gi=16))


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def vm(name: str, memory: str) -> dict[str, Any]:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"runStrategy": "Always", "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"domain": {"cpu": {"cores": 1}, "memory": {"guest": memory},
                                    "devices": {"interfaces": [
                                        {"name": "default", "masquerade": {}}]}},
                         "networks": [{"name": "default", "pod": {}}], "volumes": []}}}}


def running_vmis(cluster: Cluster) -> dict[str, str]:
    vmis = Resource(*VMS, "virtualmachineinstances", namespaced=True)
    return {v["metadata"]["name"]: str((v.get("status") or {}).get("nodeName"))
            for v in cluster.list(vmis, NS) if (v.get("status") or {}).get("phase") == "Running"}


def start_vms(cluster: Cluster, count: int, memory: str) -> set[str]:
    cluster.ensure_namespace(NS)
    names = {f"vm-{i}" for i in range(count)}
    for name in sorted(names):
        cluster.create(Resource(*VMS, "virtualmachines", namespaced=True), vm(name, memory))
    wait_for(f"{count} VMs running", lambda: set(running_vmis(cluster)) >= names, timeout=30,
             describe=lambda: running_vmis(cluster))
    return names


def intervals(obj: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    out = []
    for h in obj["status"]["hosts"]:
        out.append((datetime.fromisoformat(h["maintenanceStartedAt"]),
                    datetime.fromisoformat(h["maintenanceFinishedAt"])))
    return out


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    points = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    level = best = 0
    for _, delta in points:
        level += delta
        best = max(best, level)
    return best


def test_two_hosts_at_once_when_capacity_allows(cluster: Cluster, hooks_dir: Path) -> None:
    make_hosts(cluster, dict.fromkeys(NODES4, "g1"))
    setup_hooks(cluster)
    vms = start_vms(cluster, 4, "2Gi")
    gates = [hold(hooks_dir, n, "Maintenance") for n in ("node-1", "node-2")]
    cluster.create(RUNS, run_body("two", hooks_dir, {"groups": {}}, maxUnavailable=2,
                                  stages=stages(hooks_dir, only=("PreMaintenance",
                                                                 "Maintenance"))))
    wait_stage(cluster, "two", "node-1", "Maintenance", "Running")
    wait_stage(cluster, "two", "node-2", "Maintenance", "Running")
    # both drained (their VMs moved) and in maintenance; the third waits for a slot
    for node in ("node-1", "node-2"):
        assert cluster.get(HOSTS, node)["status"]["state"] == "Maintenance"
        assert node not in running_vmis(cluster).values()
    assert host_status(run(cluster, "two"), "node-3")["state"] == "Ready"
    assert cluster.get(HOSTS, "node-3")["status"]["state"] == "Up"
    for gate in gates:
        gate.touch()
    obj = wait_run(cluster, "two", "Succeeded", timeout=90)
    assert most_at_once(intervals(obj)) == 2
    assert set(running_vmis(cluster)) == vms


def test_one_host_at_a_time_when_two_would_not_fit(cluster: Cluster, hooks_dir: Path) -> None:
    make_hosts(cluster, dict.fromkeys(NODES4, "g1"))
    setup_hooks(cluster)
    vms = start_vms(cluster, 8, "5Gi")  # ~10 GiB on each 16 GiB host
    gate = hold(hooks_dir, "node-1", "Maintenance")
    cluster.create(RUNS, run_body("tight", hooks_dir, {"groups": {}}, maxUnavailable=2,
                                  stages=stages(hooks_dir, only=("PreMaintenance",
                                                                 "Maintenance"))))
    wait_stage(cluster, "tight", "node-1", "Maintenance", "Running")
    # with node-1 down, node-2's VMs would not fit on the other two: node-2 waits
    obj = run(cluster, "tight")
    assert host_status(obj, "node-2")["state"] == "Ready"
    assert cluster.get(HOSTS, "node-2")["status"]["state"] == "Up"
    gate.touch()
    obj = wait_run(cluster, "tight", "Succeeded", timeout=120)
    spans = intervals(obj)
    assert most_at_once(spans) == 1
    ordered = sorted(spans)
    assert all(nxt[0] >= prev[1] for prev, nxt in itertools.pairwise(ordered))
    assert set(running_vmis(cluster)) == vms
