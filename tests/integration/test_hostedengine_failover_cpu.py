"""The hosts' CPU pressure reaches the HostedEngine's scores on the lab: the CPU that pods
request on a node, over its allocatable CPU (oVirt's cpu-load penalty, 0 at 40 %, 1000 at 90 %),
and a failover avoids the pressed host (issue 6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from harness import HOSTEDENGINES, Cluster, LabCluster, wait_for
from hosted_engine.lab.sim.timings import LabTimings
from hostedengine_lab import HOST_ENV, NS, PODS, he, he_body, lab_call, prepare, wait_up

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def _operator_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in HOST_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def lab_cluster(make_lab_cluster: Callable[..., LabCluster]) -> LabCluster:
    return make_lab_cluster(3, timings=LabTimings.fast(), bmc=True)


def cpu_hog(node: str, cpu: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"cpu-{node}", "namespace": NS},
            "spec": {"nodeName": node, "containers": [{
                "name": "busy", "image": "registry.example/busy:1",
                "resources": {"requests": {"cpu": cpu}}}]}}


def rows(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {r["host"]: r for r in (he(cluster).get("status") or {}).get("hosts") or []}


def test_cpu_requests_lower_the_score_and_steer_the_failover(cluster: Cluster) -> None:
    prepare(cluster)
    cluster.create(HOSTEDENGINES, he_body())
    first = wait_up(cluster)["status"]["host"]
    pressed, free = sorted({"node-1", "node-2", "node-3"} - {first})
    # the lab's nodes have 16 CPUs: 14.4 requested is 90 % -> the full 1000-point penalty
    cluster.create(PODS, cpu_hog(pressed, "14400m"))

    wait_for(f"{pressed} scored down for its CPU",
             lambda: rows(cluster).get(pressed, {}).get("score") == 2400, timeout=30,
             describe=lambda: rows(cluster))
    row = rows(cluster)[pressed]
    assert any(p.startswith("CPU load 90%") for p in row["penalties"]), row
    assert rows(cluster)[free]["score"] == 3400
    # 1000 points below the others, still above zero: the engine stays where it runs
    assert he(cluster)["status"]["host"] == first

    lab_call(cluster, lambda lab: lab.faults.fail_node(first))
    obj = wait_up(cluster, avoid=first, timeout=60)
    assert obj["status"]["host"] == free, rows(cluster)
    assert obj["status"]["lastFailover"]["toHost"] == free
