"""Kill points of a failover: the engine's node loses power, and the operator is SIGKILLed at
its Nth API write after that (N from a seed: in the middle of the detection, the fence request,
the Host's fence, the start elsewhere or the status writes), then restarted.

Asserted: the engine ends up healthy on another host, one failover is counted (status), the
lost host's fence is confirmed and its BMC was told to power off at most once per operator
life, the engine VMI was created exactly once after the loss (no double start), the HA attempts
stay 0 (a lost host is not an engine failure).

CI runs 1 seed; HE_LONG_TESTS=1 runs 6.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import HOSTEDENGINES, HOSTS, Cluster, LabCluster, field, wait_for
from hosted_engine.lab.apiserver.admission import AdmissionRequest
from hosted_engine.lab.bmc.power import PowerCause
from hosted_engine.lab.sim.timings import LabTimings
from hostedengine_lab import HOST_ENV, NAME, NS, VMIS, he_body, lab_call, prepare, vmi_node, wait_up
from killpoints import KillAtWrite, OperatorProcess

pytestmark = pytest.mark.lab

LONG = os.environ.get("HE_LONG_TESTS") == "1"
SEEDS = [0, 1, 2, 3, 4, 5] if LONG else [3]


@pytest.fixture
def lab_cluster() -> Iterator[LabCluster]:
    with LabCluster(3, timings=LabTimings.fast(), bmc=True) as lab:
        yield lab


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_mid_failover_the_restarted_operator_finishes_it_once(
        seed: int, lab_cluster: LabCluster, tmp_path: Path) -> None:
    rng = random.Random(1000 + seed)
    nth, before = rng.randint(1, 10), rng.random() < 0.5
    point = f"seed {seed}: kill at operator write #{nth} ({'before' if before else 'after'} it)"
    cluster = Cluster(lab_cluster, None)
    log = tmp_path / "operator.log"
    ops = [OperatorProcess(lab_cluster.kubeconfig, log, HOST_ENV).start()]
    try:
        run_scenario(cluster, lab_cluster, ops, nth, before, point, log)
    finally:
        for op in ops:
            op.stop()


def run_scenario(cluster: Cluster, lab_cluster: LabCluster, ops: list[OperatorProcess],
                 nth: int, before: bool, point: str, log: Path) -> None:
    prepare(cluster)
    cluster.create(HOSTEDENGINES, he_body())
    first = wait_up(cluster, timeout=90)["status"]["host"]

    lab = lab_cluster.lab
    target = lab.power[first]

    def power_offs() -> int:
        """BMC power-off commands the lost node received (the lab's power log)."""
        return sum(1 for cause in target.commands if cause is PowerCause.OFF)

    offs_at_start = power_offs()
    creates: list[str] = []

    def on_create(req: AdmissionRequest) -> None:
        if req.name == NAME and req.namespace == NS:
            creates.append(req.name)

    unregister = lab.server.register_admission(
        "validating", "kubevirt.io", "virtualmachineinstances", "", "CREATE", on_create)
    rule = KillAtWrite(nth=nth, before=before, pid=ops[0].pid)
    lab.server.add_fault(rule)
    lab_call(cluster, lambda lab: lab.faults.fail_node(first))
    wait_for(f"{point}: the kill", lambda: ops[0].exited() is not None, timeout=90,
             describe=lambda: rule.writes)
    lab.server.faults.rules.remove(rule)
    offs_before_restart = power_offs() - offs_at_start
    ops.append(OperatorProcess(lab_cluster.kubeconfig, log, HOST_ENV).start())

    try:
        obj = wait_up(cluster, avoid=first, timeout=120)
    except AssertionError:
        print("DEBUG", point, rule.killed_on, rule.writes, target.commands, target.state,
              field(cluster.get(HOSTS, first), "status"), cluster.get(VMIS, NAME, NS))
        print(log.read_text()[-6000:])
        raise
    unregister()
    status: dict[str, Any] = obj["status"]
    offs = power_offs() - offs_at_start
    detail = (f"{point} (killed on {rule.killed_on!r}); power-offs {offs} "
              f"({offs_before_restart} before the restart); engine VMI creates {len(creates)}")
    assert rule.killed_on, point
    assert status["host"] != first and vmi_node(cluster) == status["host"], detail
    assert status["failovers"] == 1, (detail, status.get("lastFailover"), rule.writes)
    assert status["ha"]["attempts"] == 0, detail
    lost = cluster.get(HOSTS, first)
    assert field(lost, "status.state") == "Fenced" or \
        field(lost, "status.fencing.phase") == "Confirmed", (detail, field(lost, "status"))
    assert offs_before_restart <= 1 and offs - offs_before_restart <= 1, detail
    assert len(creates) == 1, detail
