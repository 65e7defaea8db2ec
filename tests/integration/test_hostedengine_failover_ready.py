"""HostedEngine failover while Kubernetes still reports the lost Node Ready (issue 6).

The lab's node-lifecycle grace is made long (10 min), as if the controller had not noticed yet
(a real cluster waits 40 s): the failover must not wait for NotReady. A power loss is seen
through the BMC power poll (Off -> lost at once); a partition (the machine runs, cut from the
API, BMC On) through the node Lease's silence. A Ready node with a fresh Lease is never fenced.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from harness import HOSTEDENGINES, HOSTS, Cluster, LabCluster, conditions, field, wait_for
from hosted_engine.adapters.kube import Resource
from hosted_engine.lab.sim.timings import LabTimings
from hostedengine_lab import (
    HOST_ENV,
    NODES,
    event_reasons,
    he_body,
    lab_call,
    prepare,
    vmi_node,
    wait_up,
)

pytestmark = pytest.mark.lab

LEASES = Resource("coordination.k8s.io", "v1", "leases", namespaced=True)
#: the Host's Lease rules for the lab (it renews every 0.1 s; judged as if every 0.5 s, so the
#: Host's threshold is 0.5 x (2 x 1.04 + 0.1) = 1.09 s, below the HostedEngine's 2 s)
LAB_HOST_ENV = {**HOST_ENV, "HE_HOST_LEASE_RENEW_INTERVAL": "0.5", "HE_HOST_POWER_POLL": "0.3"}
HOST_LEASE_THRESHOLD = 1.09


@pytest.fixture(autouse=True)
def _operator_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in LAB_HOST_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def lab_cluster(make_lab_cluster: Callable[..., LabCluster]) -> LabCluster:
    # the node-lifecycle controller would mark a silent node NotReady only after 10 minutes
    return make_lab_cluster(3, timings=LabTimings.fast(node_monitor_grace_period=600.0),
                            bmc=True)


def node_ready(cluster: Cluster, name: str) -> bool:
    for cond in field(cluster.get(NODES, name), "status.conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def check_failover(cluster: Cluster, first: str) -> dict[str, object]:
    obj = wait_up(cluster, avoid=first, timeout=60)
    status = obj["status"]
    assert vmi_node(cluster) == status["host"] != first
    assert status["lastFailover"]["fromHost"] == first and status["failovers"] == 1
    fenced = cluster.get(HOSTS, first)
    assert field(fenced, "status.fencing.phase") == "Confirmed"
    assert field(fenced, "status.state") == "Fenced"
    # the failover did not wait for Kubernetes: the Node is still reported Ready
    assert node_ready(cluster, first)
    assert "EngineUnexpectedlyDown" not in event_reasons(cluster)
    # no other host was ever asked to power off
    for other in {"node-1", "node-2", "node-3"} - {first}:
        assert "FenceRequested" not in cluster.event_reasons(other)
        assert field(cluster.get(HOSTS, other), "status.state") == "Up"
    return status


def test_power_loss_of_a_still_ready_node_is_seen_by_the_bmc_and_fails_over(
        cluster: Cluster) -> None:
    prepare(cluster)
    cluster.create(HOSTEDENGINES, he_body())
    first = wait_up(cluster)["status"]["host"]
    lab_call(cluster, lambda lab: lab.faults.fail_node(first))

    status = check_failover(cluster, first)
    responsive = conditions(cluster.get(HOSTS, first))["Responsive"]
    # BMC Off (the poll), or the Lease when the poll came second: never NotReady
    assert responsive["status"] == "False"
    assert responsive["reason"] in ("PoweredOff", "LeaseExpired"), responsive
    assert field(cluster.get(HOSTS, first), "status.powerManagement.powerState") == "Off"
    assert status["ha"]["attempts"] == 0


def test_partitioned_node_is_fenced_after_its_lease_silence(cluster: Cluster) -> None:
    prepare(cluster)
    cluster.create(HOSTEDENGINES, he_body())
    first = wait_up(cluster)["status"]["host"]
    lab_call(cluster, lambda lab: lab.faults.partition_node(first))

    check_failover(cluster, first)
    responsive = conditions(cluster.get(HOSTS, first))["Responsive"]
    # the machine was running (BMC On) until the fence: only the Lease's silence proved it lost
    assert (responsive["status"], responsive["reason"]) == ("False", "LeaseExpired"), responsive
    assert "the Node's Lease was last renewed" in responsive["message"]
    lab_call(cluster, lambda lab: lab.faults.recover_node(first))
    cluster.wait_field(HOSTS, first, "status.state", "Up", timeout=30)
    assert field(cluster.get(HOSTS, first), "status.fencing.phase") == "Released"


def test_a_ready_node_with_a_fresh_lease_is_never_fenced(cluster: Cluster) -> None:
    prepare(cluster)
    asked = datetime.now(UTC)
    cluster.patch(HOSTS, "node-2", {"metadata": {"annotations": {
        "hostedengine.io/fence-request": "hostedengine.engine.he/r-1"}}})
    cond = cluster.wait_condition(HOSTS, "node-2", "FencingBlocked", status="True")
    assert cond["reason"] == "NodeReady"
    assert "Lease was renewed" in cond["message"]

    # the Lease keeps being renewed well past the Host's threshold: still refused, never fenced
    def renewed_after_threshold() -> bool:
        renewed = field(cluster.get(LEASES, "node-2", "kube-node-lease"), "spec.renewTime")
        if not renewed:
            return False
        at = datetime.fromisoformat(str(renewed).replace("Z", "+00:00"))
        return at > asked + timedelta(seconds=3 * HOST_LEASE_THRESHOLD)

    wait_for("node-2's Lease renewed past 3 thresholds", renewed_after_threshold, timeout=30)
    host = cluster.get(HOSTS, "node-2")
    assert field(host, "status.state") == "Up"
    assert field(host, "status.fencing.phase") == "Refused"
    assert field(host, "status.powerManagement.powerState") == "On"
    assert "FenceRequested" not in cluster.event_reasons("node-2")
    assert conditions(host)["FencingBlocked"]["status"] == "True"
