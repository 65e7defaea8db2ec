"""Kill points of a rolling maintenance: the operator is SIGKILLed at its Nth API write after a
RollingMaintenance is created (N from a seed: a hook Job's creation, a host's maintenance
request, a stage's status), restarted, and the run must finish once: Succeeded, every host's
four stages run exactly once and in order (the hooks' own record, written by the real hook
processes), one hook Job per host and stage.

CI runs 1 seed; HE_LONG_TESTS=1 runs 6.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest
from harness import Cluster, LabCluster, wait_for
from killpoints import KillAtWrite, OperatorProcess
from test_rolling import (
    RUNS,
    STAGES,
    hook_jobs,
    host_status,
    make_hosts,
    record,
    run_body,
    setup_hooks,
    wait_run,
)

pytestmark = pytest.mark.lab

LONG = os.environ.get("HE_LONG_TESTS") == "1"
SEEDS = [0, 1, 2, 3, 4, 5] if LONG else [1]
HOSTS_ = ("node-1", "node-2", "node-3")


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_mid_rolling_maintenance_the_restarted_operator_finishes_it_once(
        seed: int, lab_cluster: LabCluster, tmp_path: Path) -> None:
    rng = random.Random(3000 + seed)
    nth, before = rng.randint(1, 25), rng.random() < 0.5
    point = f"seed {seed}: kill at operator write #{nth} ({'before' if before else 'after'} it)"
    hooks_dir = tmp_path / "work"
    hooks_dir.mkdir()
    log = tmp_path / "operator.log"
    ops = [OperatorProcess(lab_cluster.kubeconfig, log, {}).start()]
    try:
        cluster = Cluster(lab_cluster, None)
        make_hosts(cluster, {"node-1": "g1", "node-2": "g1", "node-3": "g2"})
        setup_hooks(cluster)
        cluster.create(RUNS, run_body("killed", hooks_dir, {"groups": {}}))
        rule = KillAtWrite(nth=nth, before=before, pid=ops[0].pid)
        lab_cluster.lab.server.add_fault(rule)
        wait_for(f"{point}: the kill", lambda: ops[0].exited() is not None, timeout=90,
                 describe=lambda: rule.writes)
        lab_cluster.lab.server.faults.rules.remove(rule)
        ops.append(OperatorProcess(lab_cluster.kubeconfig, log, {}).start())

        obj = wait_run(cluster, "killed", "Succeeded", timeout=180)
        ran = record(hooks_dir)
        jobs = Counter((j["metadata"]["labels"]["hostedengine.io/rolling-host"],
                        j["metadata"]["labels"]["hostedengine.io/rolling-stage"])
                       for j in hook_jobs(cluster, "killed"))
        detail = f"{point} (killed on {rule.killed_on!r}); ran {ran}; jobs {dict(jobs)}"
        assert rule.killed_on, point
        for host in HOSTS_:
            assert [s for h, s in ran if h == host] == list(STAGES), detail
            assert host_status(obj, host)["state"] == "Succeeded", detail
        assert len(ran) == len(HOSTS_) * len(STAGES), detail
        assert all(count == 1 for count in jobs.values()), detail
    finally:
        for op in ops:
            op.stop()
