"""Kill points of a restore: the operator is SIGKILLed at its Nth API write of a Restore (N and
before/after the write from a seed: the Restore's status writes, the DataVolume, the upload
token, the new HostedEngine), restarted, and the restore must finish once: Succeeded, every
object of the run verified, one new HostedEngine (the lost one's FQDN, its disk from the
restored claim), one DataVolume holding exactly the backed-up bytes, no orphan (no second
DataVolume, claim or engine).

The run is on a directory (filesystem target): the disk goes through CDI's upload proxy, the
path with the most steps. CI runs 1 seed; HE_LONG_TESTS=1 runs 8.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import HOSTEDENGINES, STORAGEDOMAINS, Cluster, LabCluster, conditions, wait_for
from hostedengine_lab import HOST_ENV, NS, PVCS, ROOT
from killpoints import KillAtWrite, OperatorProcess
from test_backup import ENGINE
from test_restore import (
    DATAVOLUMES,
    RESTORES,
    backed_up,
    finished,
    restore_body,
    restore_status,
    restored_content,
)

pytestmark = pytest.mark.lab

LONG = os.environ.get("HE_LONG_TESTS") == "1"
SEEDS = list(range(8)) if LONG else [3]
RESTORED = "engine-two"
CLAIM = f"{RESTORED}-restored-disk"
#: what a Restore writes (the first engine's own heartbeat writes, the Hosts' and the Events
#: are not counted: the kill lands inside the restore)
RESTORE_RESOURCES = frozenset({"restores", "datavolumes", "uploadtokenrequests", "secrets",
                               "configmaps"})


@dataclass
class KillAtRestoreWrite(KillAtWrite):
    def matches(self, verb: str, group: str, resource: str, subresource: str, namespace: str,
                name: str, local: bool, user_agent: str = "") -> bool:
        ours = resource in RESTORE_RESOURCES or (resource == "hostedengines" and name != ENGINE)
        if not ours:
            return False
        return super().matches(verb, group, resource, subresource, namespace, name, local,
                               user_agent)


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_mid_restore_the_restarted_operator_finishes_it_once(
        seed: int, lab_cluster: LabCluster, tmp_path: Path) -> None:
    rng = random.Random(3000 + seed)
    nth, before = rng.randint(1, 7), rng.random() < 0.5
    point = f"seed {seed}: kill at restore write #{nth} ({'before' if before else 'after'} it)"
    target = tmp_path / "backups"
    target.mkdir()
    log = tmp_path / "operator.log"
    ops = [OperatorProcess(lab_cluster.kubeconfig, log, HOST_ENV).start()]
    try:
        cluster = Cluster(lab_cluster, None)
        run = backed_up(cluster, None, directory=str(target))
        cluster.apply_yaml(ROOT / "examples" / "lab" / "storagedomain-data.yaml")
        cluster.wait_field(STORAGEDOMAINS, "data", "status.state", "Active", timeout=30)

        server = lab_cluster.lab.server
        rule = KillAtRestoreWrite(nth=nth, before=before, pid=ops[0].pid)
        server.add_fault(rule)  # armed before the Restore exists: its first write counts
        cluster.create(RESTORES, restore_body("killed", RESTORED, storageDomain="data"))
        wait_for(f"{point}: the kill", lambda: ops[0].exited() is not None, timeout=90,
                 describe=lambda: (rule.writes, restore_status(cluster, "killed")))
        server.faults.rules.remove(rule)
        ops.append(OperatorProcess(lab_cluster.kubeconfig, log, HOST_ENV).start())

        st = finished(cluster, "killed", timeout=120)
        detail = f"{point} (killed on {rule.killed_on!r}, writes {rule.writes})"
        assert rule.killed_on, point
        assert st["phase"] == "Succeeded", (detail, st)
        assert st["run"] == run["id"] and st["hostedEngine"] == RESTORED, (detail, st)
        assert st["objectsVerified"] == 3 and not st.get("mismatches"), (detail, st)
        conds = conditions(cluster.get(RESTORES, "killed", NS))
        assert conds["Verified"]["status"] == "True", (detail, conds)
        # one new engine, from the restored claim
        assert sorted(h["metadata"]["name"] for h in cluster.list(HOSTEDENGINES, NS)) == \
            sorted([ENGINE, RESTORED]), detail
        new = cluster.get(HOSTEDENGINES, RESTORED, NS)
        assert new is not None
        assert new["spec"]["vm"]["image"]["pvc"] == {"claimName": CLAIM}, detail
        assert new["spec"]["vm"]["network"]["fqdn"] == "engine.lab.example", detail
        # one DataVolume, holding exactly the backed-up bytes; no orphan claim
        dvs = cluster.list(DATAVOLUMES, NS, label_selector="hostedengine.io/restore")
        assert [d["metadata"]["name"] for d in dvs] == [CLAIM], detail
        restored = [p["metadata"]["name"] for p in cluster.list(PVCS, NS)
                    if "restored" in p["metadata"]["name"]]
        assert restored == [CLAIM], detail
        sha, _size, _seed = restored_content(cluster, CLAIM)
        assert sha == run["diskSha256"], detail
    finally:
        for op in ops:
            op.stop()
