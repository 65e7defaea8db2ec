"""The drain's ``moved`` comes from facts: a VM that left the node through a Succeeded migration
of this Host's (labelled for it) is moved, even when no status recorded it as to move -- the
operator was killed between creating that migration and writing the drain's status, and the
restarted one starts the drain again from the VMs still on the node (kill-point seeds 0 and 10
of test_reliability_kill_maintenance.py under HE_LONG_TESTS=1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hosted_engine.adapters import kubevirt as kv
from hosted_engine.handlers import host_mapping as hm
from hosted_engine.logic import drain as dr
from hosted_engine.logic import host_lifecycle as lc
from hosted_engine.models import Host

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NODES = ("node-1", "node-2", "node-3")


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def node(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {}, "resourceVersion": "1"},
            "spec": {"unschedulable": name == "node-1"},
            "status": {"allocatable": {"memory": "64Gi", "cpu": "16"},
                       "conditions": [{"type": "Ready", "status": "True",
                                       "lastTransitionTime": stamp(T0),
                                       "lastHeartbeatTime": stamp(T0)}]}}


def vmi(name: str, node_name: str, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "vms", "uid": f"uid-{name}",
                         "labels": {}, "resourceVersion": "5"},
            "spec": {"domain": {"cpu": {"cores": 1}, "memory": {"guest": "512Mi"}}},
            "status": {"phase": phase, "nodeName": node_name,
                       "conditions": [{"type": "LiveMigratable", "status": "True"}]}}


def vmim(name: str, vmi_name: str, phase: str, host: str = "node-1") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "vms",
                         "labels": {kv.MIGRATION_HOST_LABEL: host},
                         "creationTimestamp": stamp(T0 - timedelta(seconds=5)),
                         "resourceVersion": "7"},
            "spec": {"vmiName": vmi_name},
            "status": {"phase": phase, "migrationState": {"sourceNode": "node-1"}}}


def host(mode: str | None) -> Host:
    spec: dict[str, Any] = {"nodeName": "node-1"}
    if mode is not None:
        spec["maintenance"] = {"mode": mode, "reason": "kill points"}
    return Host.model_validate({"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
                                "metadata": {"name": "node-1", "generation": 1},
                                "spec": spec, "status": {}})


def world(vmis: dict[str, str], vmims: list[dict[str, Any]]) -> hm.World:
    return hm.World(
        hosts={n: {"metadata": {"name": n}, "spec": {"nodeName": n}} for n in NODES},
        nodes={n: node(n) for n in NODES},
        vmis={("vms", name): vmi(name, where) for name, where in vmis.items()},
        vmims={("vms", m["metadata"]["name"]): m for m in vmims},
    )


def moved_names(progress: lc.MaintenanceProgress | None) -> list[str]:
    assert progress is not None
    return sorted(k.partition("/")[2] for k in progress.moved)


def test_a_vm_moved_by_a_migration_no_status_recorded_is_counted_as_moved() -> None:
    # the killed operator created vm-0's migration, which succeeded; nothing else was written
    w = world({"vm-0": "node-2", "vm-1": "node-1", "vm-2": "node-1",
               "other": "node-2", "failed": "node-3"},
              [vmim("node-1-vm-0-1", "vm-0", "Succeeded"),
               vmim("node-2-other-1", "other", "Succeeded", host="node-2"),  # not ours
               vmim("node-1-failed-1", "failed", "Failed")])  # moved some other way
    h = host("local")
    obs = hm.observe(h, w, T0, hm.HostSettings(), None)
    assert obs.migrated_away == (dr.VMRef("vms", "vm-0"),)
    up = lc.HostStatus(state=lc.HostState.UP, since=T0 - timedelta(minutes=5))
    started = lc.step(up, obs).status
    assert started.state is lc.HostState.PREPARING_FOR_MAINTENANCE
    assert started.maintenance is not None
    assert sorted(started.maintenance.to_move) == ["vms/vm-0", "vms/vm-1", "vms/vm-2"]
    assert moved_names(started.maintenance) == ["vm-0"]
    drain = hm.drain_status(started.maintenance, w, "node-1", None)
    assert drain is not None and drain.total == 3
    assert [r.name for r in drain.moved] == ["vm-0"]

    # the restarted operator's own migrations move the rest: every VM is moved, once
    later = T0 + timedelta(seconds=20)
    w2 = world({"vm-0": "node-2", "vm-1": "node-3", "vm-2": "node-2",
                "other": "node-2", "failed": "node-3"},
               [vmim("node-1-vm-0-1", "vm-0", "Succeeded"),
                vmim("node-1-vm-1-1", "vm-1", "Succeeded"),
                vmim("node-1-vm-2-1", "vm-2", "Succeeded")])
    obs2 = hm.observe(h, w2, later, hm.HostSettings(), started.maintenance)
    done = lc.step(started, obs2)
    assert done.status.state is lc.HostState.MAINTENANCE
    assert moved_names(done.status.maintenance) == ["vm-0", "vm-1", "vm-2"]
    assert any(isinstance(a, lc.EmitEvent) and a.reason == "MaintenanceReached"
               and "3 VMs moved" in a.message for a in done.actions)


def test_migrated_away_is_read_only_while_a_drain_is_asked_for() -> None:
    w = world({"vm-0": "node-2"}, [vmim("node-1-vm-0-1", "vm-0", "Succeeded")])
    assert hm.observe(host(None), w, T0, hm.HostSettings(), None).migrated_away == ()
    assert hm.migrated_away(w, "node-1", "node-1") == (dr.VMRef("vms", "vm-0"),)
    # a migration still running, or a VMI back on this node, is no move
    running = world({"vm-0": "node-1"}, [vmim("node-1-vm-0-1", "vm-0", "Running")])
    assert hm.migrated_away(running, "node-1", "node-1") == ()
    back = world({"vm-0": "node-1"}, [vmim("node-1-vm-0-1", "vm-0", "Succeeded")])
    assert hm.migrated_away(back, "node-1", "node-1") == ()
