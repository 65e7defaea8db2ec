"""The drain targets of a Host at scale: each node's requested resources from one pass over the
pods, not one pass per node (nodes x pods per reconcile)."""

from __future__ import annotations

from typing import Any

from hosted_engine.handlers import host_mapping as hm

GiB = 1024**3


def node(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {},
            "status": {"allocatable": {"memory": "64Gi", "cpu": "32"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


class CountingPods(dict[hm.Key, tuple[str, int, int, str]]):
    """The pod table, counting the passes over it."""

    passes = 0

    def values(self) -> Any:
        self.passes += 1
        return super().values()


def world(nodes: int, pods_per_node: int) -> tuple[hm.World, CountingPods]:
    pods = CountingPods()
    for n in range(nodes):
        for p in range(pods_per_node):
            phase = ("Running", "Pending", "Succeeded", "Failed")[p % 4]
            pods[("vms", f"pod-{n}-{p}")] = (f"node-{n}", (p + 1) * GiB, 100 * (p + 1), phase)
    pods[("vms", "unscheduled")] = ("", 8 * GiB, 1000, "Pending")
    w = hm.World(nodes={f"node-{n}": node(f"node-{n}") for n in range(nodes)},
                 pod_requests=pods)
    return w, pods


def test_targets_count_the_live_pods_of_each_node() -> None:
    w, _ = world(5, 8)
    targets = {t.name: t for t in hm.targets(w, "node-0")}
    assert set(targets) == {"node-1", "node-2", "node-3", "node-4"}
    # live pods: p % 4 in (0, 1) -> p = 0, 1, 4, 5 -> memory (1+2+5+6) GiB, CPU 100*(1+2+5+6)
    for t in targets.values():
        assert t.allocated_memory_bytes == 14 * GiB
        assert t.allocated_cpu_millis == 1400
        assert t.allocatable_memory_bytes == 64 * GiB
    assert hm.allocated_on(w, "node-3") == (14 * GiB, 1400)
    assert hm.allocated_on(w, "node-99") == (0, 0)


def test_targets_read_the_pods_once_whatever_the_number_of_nodes() -> None:
    w, pods = world(300, 3)
    targets = hm.targets(w, "node-7")
    assert len(targets) == 299
    assert pods.passes == 1
