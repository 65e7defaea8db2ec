"""Kill points of a backup run: the operator is SIGKILLed at its Nth API write after a Backup
is created (N from a seed: the snapshot, the export, the status writes of the run), restarted,
and the run must finish once: one run Succeeded, one run directory whose objects verify against
the engine disk's checksum, no orphan snapshot or export, one VirtualMachineSnapshot name ever
created, the run's bookkeeping cleared.

CI runs 1 seed; HE_LONG_TESTS=1 runs 6.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from harness import Cluster, LabCluster, wait_for
from hosted_engine.lab.apiserver.admission import AdmissionRequest
from hostedengine_lab import HOST_ENV, NS
from killpoints import KillAtWrite, OperatorProcess
from test_backup import (
    BACKUPS,
    ENGINE,
    backup_body,
    engine_ready,
    no_children,
    status,
    verify_run,
    wait_runs,
)

pytestmark = pytest.mark.lab

LONG = os.environ.get("HE_LONG_TESTS") == "1"
SEEDS = [0, 1, 2, 3, 4, 5] if LONG else [2]


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_mid_backup_the_restarted_operator_finishes_the_run_once(
        seed: int, lab_cluster: LabCluster, tmp_path: Path) -> None:
    rng = random.Random(2000 + seed)
    nth, before = rng.randint(1, 8), rng.random() < 0.5
    point = f"seed {seed}: kill at operator write #{nth} ({'before' if before else 'after'} it)"
    target = tmp_path / "backups"
    target.mkdir()
    log = tmp_path / "operator.log"
    ops = [OperatorProcess(lab_cluster.kubeconfig, log, HOST_ENV).start()]
    try:
        cluster = Cluster(lab_cluster, None)
        disk_sha = engine_ready(cluster)
        lab = lab_cluster.lab
        snapshots: set[str] = set()

        def on_snapshot(req: AdmissionRequest) -> None:
            snapshots.add(req.name or str(((req.object or {}).get("metadata") or {})
                                          .get("name")))

        unregister = lab.server.register_admission(
            "validating", "snapshot.kubevirt.io", "virtualmachinesnapshots", "", "CREATE",
            on_snapshot)
        cluster.create(BACKUPS, backup_body("killed", {"filesystem": {"path": str(target)}}))
        rule = KillAtWrite(nth=nth, before=before, pid=ops[0].pid)
        lab.server.add_fault(rule)
        wait_for(f"{point}: the kill", lambda: ops[0].exited() is not None, timeout=90,
                 describe=lambda: rule.writes)
        lab.server.faults.rules.remove(rule)
        ops.append(OperatorProcess(lab_cluster.kubeconfig, log, HOST_ENV).start())

        st = wait_runs(cluster, "killed", lambda runs: bool(runs), f"{point}: the run",
                       timeout=120)
        detail = f"{point} (killed on {rule.killed_on!r}); snapshots {sorted(snapshots)}"
        assert rule.killed_on, point
        (run,) = st["runs"]
        assert run["phase"] == "Succeeded", (detail, run)
        verify_run(lambda key: (target / key).read_bytes(), f"{NS}/{ENGINE}/{run['id']}",
                   disk_sha)
        assert [p.name for p in (target / NS / ENGINE).iterdir()] == [run["id"]], detail
        wait_for("no orphan snapshot or export", lambda: no_children(cluster))
        unregister()
        assert len(snapshots) == 1, detail
        assert not status(cluster, "killed").get("currentRun"), detail
        # (Events are best effort: one queued by the killed process may be lost, and the
        # restarted one may announce the resumed run again; the work above is what counts)
    finally:
        for op in ops:
            op.stop()
