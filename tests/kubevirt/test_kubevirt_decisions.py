"""The simulated KubeVirt's pure decisions against KubeVirt's documented behaviour.

Sources: shared/reference/k8s-anchors.md §1.1 (runStrategy and the subresources' table),
§1.2 (LiveMigratable reasons, eviction), §1.4 (migration limits).
"""

from __future__ import annotations

from typing import Any

import pytest
from hosted_engine.lab.kubevirt import crds
from hosted_engine.lab.kubevirt.decisions import (
    MigrationCandidate,
    MigrationLimits,
    admit_migrations,
    eviction_decision,
    live_migratable,
    printable_status,
    remaining_requests,
    restart_request,
    run_strategy,
    start_request,
    stop_request,
    sync_run_strategy,
    vmi_memory_bytes,
)


def vm(strategy: str | None = "Always", requests: list[dict[str, Any]] | None = None,
       status_strategy: str | None = None, running: bool | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {"spec": {"domain": {}}}}
    if strategy is not None:
        spec["runStrategy"] = strategy
    if running is not None:
        spec["running"] = running
    status: dict[str, Any] = {}
    if requests:
        status["stateChangeRequests"] = requests
    if status_strategy:
        status["runStrategy"] = status_strategy
    return {"metadata": {"name": "vm"}, "spec": spec, "status": status}


def vmi(phase: str = "Running", uid: str = "u1", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "vm", "uid": uid}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"domain": {}}, "status": {"phase": phase}}


class TestRunStrategy:
    def test_running_field_maps_to_always_and_halted(self) -> None:
        assert run_strategy(vm(None, running=True)) == "Always"
        assert run_strategy(vm(None, running=False)) == "Halted"
        assert run_strategy(vm(None)) == "Halted"

    @pytest.mark.parametrize(
        ("strategy", "phase", "delete", "create"),
        [
            ("Always", None, False, True),
            ("Always", "Running", False, False),
            ("Always", "Failed", True, False),
            ("Always", "Succeeded", True, False),
            ("RerunOnFailure", "Failed", True, False),
            ("RerunOnFailure", "Succeeded", True, False),
            ("RerunOnFailure", "Running", False, False),
            ("Manual", None, False, False),
            ("Manual", "Failed", False, False),
            ("Halted", "Running", True, False),
            ("Halted", None, False, False),
            ("Once", None, False, True),
            ("Once", "Failed", False, False),
            ("Once", "Succeeded", False, False),
        ],
    )
    def test_virt_controller_table(
        self, strategy: str, phase: str | None, delete: bool, create: bool
    ) -> None:
        decision = sync_run_strategy(strategy, vm(strategy), vmi(phase) if phase else None)
        assert (decision.delete_vmi, decision.create_vmi) == (delete, create)

    def test_rerun_on_failure_restarts_only_after_a_failure(self) -> None:
        failed = sync_run_strategy("RerunOnFailure", vm("RerunOnFailure"), vmi("Failed"))
        assert failed.add_start_request
        done = sync_run_strategy("RerunOnFailure", vm("RerunOnFailure"), vmi("Succeeded"))
        assert not done.add_start_request
        # Once the Succeeded VMI is gone, nothing starts a new one.
        after = sync_run_strategy(
            "RerunOnFailure", vm("RerunOnFailure", status_strategy="RerunOnFailure"), None
        )
        assert not after.create_vmi
        # A start request (added after a failure) does.
        restart = sync_run_strategy(
            "RerunOnFailure",
            vm("RerunOnFailure", [{"action": "Start"}], status_strategy="RerunOnFailure"),
            None,
        )
        assert restart.create_vmi

    def test_manual_follows_requests_only(self) -> None:
        started = sync_run_strategy("Manual", vm("Manual", [{"action": "Start"}]), None)
        assert started.create_vmi
        stopped = sync_run_strategy(
            "Manual", vm("Manual", [{"action": "Stop", "uid": "u1"}]), vmi("Running")
        )
        assert stopped.delete_vmi
        other = sync_run_strategy(
            "Manual", vm("Manual", [{"action": "Stop", "uid": "zz"}]), vmi("Running")
        )
        assert not other.delete_vmi

    def test_a_vmi_being_deleted_is_not_deleted_twice(self) -> None:
        decision = sync_run_strategy("Halted", vm("Halted"), vmi("Running", deleting=True))
        assert not decision.delete_vmi and not decision.create_vmi

    def test_requests_are_consumed_in_order(self) -> None:
        restart = vm("Always", [{"action": "Stop", "uid": "u1"}, {"action": "Start"}])
        assert remaining_requests(restart, vmi(uid="u1")) == restart["status"][
            "stateChangeRequests"
        ]
        assert remaining_requests(restart, None) == [{"action": "Start"}]
        assert remaining_requests(restart, vmi(uid="u2")) == []


class TestSubresources:
    """The table of k8s-anchors §1.1 (virt-api lifecycle.go)."""

    def test_start(self) -> None:
        assert start_request(vm("Always"), None).code == 409
        assert "Always does not support manual start" in start_request(vm("Always"), None).message
        assert start_request(vm("Once"), None).code == 409
        halted = start_request(vm("Halted"), None)
        assert halted.code == 202 and halted.run_strategy == "Always"
        manual = start_request(vm("Manual"), None)
        assert manual.code == 202 and manual.requests == [{"action": "Start"}]
        assert manual.run_strategy is None
        failed = start_request(vm("RerunOnFailure"), vmi("Failed"))
        assert failed.code == 409 and "failed state" in failed.message
        succeeded = start_request(vm("RerunOnFailure"), vmi("Succeeded"))
        assert succeeded.requests == [{"action": "Stop", "uid": "u1"}, {"action": "Start"}]
        running = start_request(vm("Manual"), vmi("Running"))
        assert running.code == 409 and running.message == "VM is already running"

    def test_stop(self) -> None:
        always = stop_request(vm("Always"), vmi())
        assert always.code == 202 and always.run_strategy == "Halted"
        once = stop_request(vm("Once"), vmi())
        assert once.run_strategy == "Halted"
        manual = stop_request(vm("Manual"), vmi())
        assert manual.code == 202 and manual.run_strategy is None
        assert manual.requests == [{"action": "Stop", "uid": "u1"}]
        rerun = stop_request(vm("RerunOnFailure"), vmi())
        assert rerun.run_strategy is None and rerun.requests
        assert stop_request(vm("Halted"), None).code == 409
        assert stop_request(vm("Halted"), vmi()).code == 409
        forced = stop_request(vm("Halted"), vmi(), grace_period=0)
        assert forced.code == 202 and forced.grace_period == 0
        assert stop_request(vm("Manual"), vmi("Succeeded")).message == "VM is not running"

    def test_restart(self) -> None:
        assert restart_request(vm("Halted"), None).code == 409
        assert restart_request(vm("Once"), vmi()).code == 409
        always = restart_request(vm("Always"), vmi())
        assert always.code == 202
        assert always.requests == [{"action": "Stop", "uid": "u1"}, {"action": "Start"}]
        assert restart_request(vm("Manual"), None).code == 409
        assert restart_request(vm("Always"), vmi(), grace_period_seconds=5).code == 400
        assert restart_request(vm("Always"), vmi(), grace_period_seconds=0).force_delete_pod

    def test_concurrent_start_stop_is_refused(self) -> None:
        busy = vm("Manual", [{"action": "Start"}])
        assert start_request(busy, None).code == 500
        # A stop replaces pending requests.
        assert stop_request(busy, vmi()).requests == [{"action": "Stop", "uid": "u1"}]


class TestPrintableStatus:
    def test_states(self) -> None:
        assert printable_status(vm("Halted"), None) == "Stopped"
        assert printable_status(vm("Always"), None) == "Stopped"
        assert printable_status(vm("Always"), vmi("Scheduling")) == "Starting"
        assert printable_status(vm("Always"), vmi("Scheduling"), unschedulable=True) == (
            "ErrorUnschedulable"
        )
        assert printable_status(vm("Always"), vmi("Running")) == "Running"
        assert printable_status(vm("Halted"), vmi("Running")) == "Stopping"
        assert printable_status(vm("Always"), vmi("Running", deleting=True)) == "Stopping"
        migrating = vmi("Running")
        migrating["status"]["migrationState"] = {"sourceNode": "node-1"}
        assert printable_status(vm("Always"), migrating) == "Migrating"
        terminating = vm("Always")
        terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        assert printable_status(terminating, vmi()) == "Terminating"
        assert printable_status(vm("Once"), vmi("Succeeded")) == "Stopped"


class TestMigratable:
    def spec(self, **devices: Any) -> dict[str, Any]:
        return {"domain": {"devices": devices}, "volumes": []}

    def test_host_devices_block_migration(self) -> None:
        result = live_migratable(self.spec(hostDevices=[{"name": "gpu"}]), {})
        assert not result.migratable and result.reason == "HostDeviceNotLiveMigratable"

    def test_rwo_disks_block_migration(self) -> None:
        spec = self.spec()
        spec["volumes"] = [{"name": "root", "persistentVolumeClaim": {"claimName": "disk"}}]
        rwo = live_migratable(spec, {"disk": ["ReadWriteOnce"]})
        assert rwo.reason == "DisksNotLiveMigratable"
        assert rwo.condition()["status"] == "False"
        rwx = live_migratable(spec, {"disk": ["ReadWriteMany"]})
        assert rwx.migratable and rwx.condition()["status"] == "True"

    def test_bridge_on_pod_network_blocks_migration(self) -> None:
        spec = self.spec(interfaces=[{"name": "default", "bridge": {}}])
        spec["networks"] = [{"name": "default", "pod": {}}]
        assert live_migratable(spec, {}).reason == "InterfaceNotLiveMigratable"
        masq = self.spec(interfaces=[{"name": "default", "masquerade": {}}])
        masq["networks"] = [{"name": "default", "pod": {}}]
        assert live_migratable(masq, {}).migratable

    def test_eviction_decisions(self) -> None:
        assert eviction_decision("LiveMigrate", True) == "evacuate"
        assert eviction_decision("LiveMigrate", False) == "deny"
        assert eviction_decision("LiveMigrateIfPossible", False) == "allow"
        assert eviction_decision("External", False) == "evacuate"
        assert eviction_decision("None", True) == "allow"


class TestMigrationLimits:
    def test_ten_migrations_queue_under_five_and_two(self) -> None:
        # 10 migrations out of 3 nodes: node-1 has 4, node-2 has 4, node-3 has 2.
        nodes = ["node-1"] * 4 + ["node-2"] * 4 + ["node-3"] * 2
        candidates = [MigrationCandidate(f"m{i}", n, False) for i, n in enumerate(nodes)]
        result = admit_migrations(candidates, MigrationLimits())
        assert result.admitted == ["m0", "m1", "m4", "m5", "m8"]
        assert len(result.queued) == 5

    def test_active_migrations_hold_their_slots(self) -> None:
        candidates = [
            MigrationCandidate("a", "node-1", True),
            MigrationCandidate("b", "node-1", True),
            MigrationCandidate("c", "node-1", False),
            MigrationCandidate("d", "node-2", False),
        ]
        result = admit_migrations(candidates, MigrationLimits(parallel_per_cluster=3))
        assert result.admitted == ["d"] and result.queued == ["c"]

    def test_limits_from_the_kubevirt_cr(self) -> None:
        limits = MigrationLimits.from_kubevirt(
            crds.kubevirt_cr({"bandwidthPerMigration": "64Mi", "progressTimeout": 10})
        )
        assert limits.parallel_per_cluster == 5
        assert limits.parallel_outbound_per_node == 2
        assert limits.bandwidth == 64 * 1024**2
        assert limits.progress_timeout == 10
        assert limits.completion_timeout(4 * 1024**3) == 600
        assert limits.completion_timeout(1024) == 150

    def test_memory_of_a_vmi(self) -> None:
        assert vmi_memory_bytes({"domain": {"memory": {"guest": "2Gi"}}}) == 2 * 1024**3
        assert vmi_memory_bytes(
            {"domain": {"resources": {"requests": {"memory": "512Mi"}}}}
        ) == 512 * 1024**2


def test_crds_cover_every_kind_with_printer_columns() -> None:
    kinds = {c["spec"]["names"]["kind"]: c for c in crds.kubevirt_crds()}
    assert set(kinds) == {
        "VirtualMachine",
        "VirtualMachineInstance",
        "VirtualMachineInstanceMigration",
        "KubeVirt",
        "VirtualMachineSnapshot",
        "VirtualMachineSnapshotContent",
        "VirtualMachineRestore",
        "VirtualMachineExport",
        "DataVolume",
    }
    vm_columns = kinds["VirtualMachine"]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in vm_columns] == ["Age", "Status", "Ready"]
    spec = kinds["VirtualMachine"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert spec["properties"]["spec"]["properties"]["runStrategy"]["enum"][0] == "Always"
    cr = crds.kubevirt_cr()
    assert cr["spec"]["configuration"]["migrations"]["parallelMigrationsPerCluster"] == 5


def test_crash_loop_backoff_grows_quadratically_and_is_capped() -> None:
    from hosted_engine.lab.kubevirt.decisions import crash_loop_delay, reached_running

    assert crash_loop_delay(1, 0.0) == 10
    assert crash_loop_delay(3, 0.0) == 90
    assert crash_loop_delay(10, 0.0) == 300
    assert crash_loop_delay(1, 0.5) == 15
    assert crash_loop_delay(10, 0.5) == 450  # the jitter comes on top of the cap
    ran = {"status": {"phaseTransitionTimestamps": [{"phase": "Running"}]}}
    assert reached_running(ran) and not reached_running(vmi("Scheduled"))
    assert printable_status(vm("Always"), None, crash_loop=True) == "CrashLoopBackOff"
