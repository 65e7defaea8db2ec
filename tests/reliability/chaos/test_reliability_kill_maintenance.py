"""Kill points of host maintenance: the operator is SIGKILLed at its Nth API write of a drain
(N drawn from a seed), restarted, and the drain must finish with every VM moved exactly once
(one migration object per VM, all Succeeded), the host in Maintenance, nothing lost.

CI runs 2 seeds; HE_LONG_TESTS=1 runs 20 (each seed prints its kill point on failure).
Fixed bug (seen with seeds 0 and 10 of the long run, not every time): killed at a migration
create (503) after an earlier one had landed, before the drain's first status write, the
restarted operator started the drain from the VMs still on the node and its ``moved`` list
missed the VM the earlier migration had moved; moved is now derived from the Host's Succeeded
migrations too (regression test: tests/unit/handlers/test_host_drain_moved.py).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import HOSTS, Cluster, LabCluster, conditions, field, wait_for
from hosted_engine.adapters.kube import Resource
from hosted_engine.lab.sim.timings import LabTimings
from killpoints import KillAtWrite, OperatorProcess

pytestmark = pytest.mark.lab

LONG = os.environ.get("HE_LONG_TESTS") == "1"
SEEDS = list(range(20)) if LONG else [7, 9]
NS = "vms"
VMS = Resource("kubevirt.io", "v1", "virtualmachines", namespaced=True)
VMIS = Resource("kubevirt.io", "v1", "virtualmachineinstances", namespaced=True)
VMIMS = Resource("kubevirt.io", "v1", "virtualmachineinstancemigrations", namespaced=True)
NODES = Resource("", "v1", "nodes", namespaced=False)
ENV = {"HE_HOST_SILENT_AFTER": "30", "HE_HOST_MIGRATION_RETRY_AFTER": "0.2"}
VM_COUNT = 5


def timings() -> LabTimings:
    return LabTimings.fast(tick=0.05, migration_bandwidth=4 * 1024**3,
                           extra={"kubevirt_api_seconds": 0.05,
                                  "migration_unschedulable_timeout": 2.0})


def vm_body(name: str) -> dict[str, Any]:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"runStrategy": "Always", "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"domain": {"cpu": {"cores": 1}, "memory": {"guest": "512Mi"},
                                    "devices": {"interfaces": [
                                        {"name": "default", "masquerade": {}}]}},
                         "networks": [{"name": "default", "pod": {}}], "volumes": []}}}}


def running_on(cluster: Cluster) -> dict[str, str]:
    return {v["metadata"]["name"]: str((v.get("status") or {}).get("nodeName") or "")
            for v in cluster.list(VMIS, NS) if (v.get("status") or {}).get("phase") == "Running"}


@pytest.fixture
def operators(lab_cluster: LabCluster, tmp_path: Path) -> Iterator[Callable[[], OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start() -> OperatorProcess:
        op = OperatorProcess(lab_cluster.kubeconfig, tmp_path / "operator.log", ENV).start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


@pytest.fixture
def lab_cluster() -> Iterator[LabCluster]:
    with LabCluster(3, timings=timings()) as lab:
        yield lab


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_mid_drain_the_restarted_operator_finishes_it_once(
        seed: int, lab_cluster: LabCluster, operators: Callable[[], OperatorProcess],
        tmp_path: Path) -> None:
    rng = random.Random(seed)
    nth, before = rng.randint(1, 14), rng.random() < 0.5
    point = f"seed {seed}: kill at operator write #{nth} ({'before' if before else 'after'} it)"
    cluster = Cluster(lab_cluster, None)
    cluster.ensure_namespace(NS)
    names = [f"vm-{i}" for i in range(VM_COUNT)]
    for other in ("node-2", "node-3"):
        cluster.patch(NODES, other, {"spec": {"unschedulable": True}})
    for name in names:
        cluster.create(VMS, vm_body(name))
    wait_for("VMs on node-1", lambda: set(running_on(cluster)) == set(names), timeout=30)
    for other in ("node-2", "node-3"):
        cluster.patch(NODES, other, {"spec": {"unschedulable": None}})
    for n in ("node-1", "node-2", "node-3"):
        cluster.create(HOSTS, {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
                               "metadata": {"name": n}, "spec": {"nodeName": n}})
    first = operators()
    cluster.wait_field(HOSTS, "node-1", "status.state", "Up", timeout=60)
    uids = {v["metadata"]["name"]: v["metadata"]["uid"] for v in cluster.list(VMIS, NS)}

    rule = KillAtWrite(nth=nth, before=before, pid=first.pid)
    server = lab_cluster.lab.server
    cluster.patch(HOSTS, "node-1", {"spec": {"maintenance": {"mode": "local",
                                                             "reason": "kill points"}}})
    server.add_fault(rule)  # armed after the test's own write: it counts the operator's
    wait_for(f"{point}: the kill", lambda: first.exited() is not None, timeout=60,
             describe=lambda: rule.writes)
    server.faults.rules.remove(rule)
    operators()

    h = cluster.wait_field(HOSTS, "node-1", "status.state", "Maintenance", timeout=90)
    h = cluster.get(HOSTS, "node-1")
    wait_for(f"{point}: every VM off node-1",
             lambda: set(running_on(cluster)) == set(names)
             and "node-1" not in running_on(cluster).values(), timeout=30,
             describe=lambda: running_on(cluster))
    ours = [m for m in cluster.list(VMIMS, NS)
            if (m["metadata"].get("labels") or {}).get("hostedengine.io/host") == "node-1"]
    per_vm = Counter(m["spec"]["vmiName"] for m in ours)
    kept = {n for n, uid in uids.items()
            if any(v["metadata"]["uid"] == uid for v in cluster.list(VMIS, NS))}
    detail = f"{point} (killed on {rule.killed_on!r}); migrations {dict(per_vm)}"
    assert rule.killed_on, point
    assert all(count == 1 for count in per_vm.values()), f"a VM migrated twice: {detail}"
    assert kept <= set(per_vm), f"a VM left without a migration of ours: {detail}"
    assert all((m.get("status") or {}).get("phase") == "Succeeded" for m in ours), detail
    assert h is not None
    drain = h["status"]["drain"]
    assert sorted(r["name"] for r in drain["moved"]) == sorted(names), detail
    assert not drain.get("inFlight") and not drain.get("blocked"), detail
    assert conditions(h)["InMaintenance"]["status"] == "True", detail
    assert field(cluster.get(NODES, "node-1"), "spec.unschedulable") is True, detail
