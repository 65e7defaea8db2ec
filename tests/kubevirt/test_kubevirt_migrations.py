"""Live migration on the lab: phases, target placement, the KubeVirt CR's limits, timeouts,
cancel by delete, LiveMigratable and the eviction webhook (k8s-anchors §1.2-§1.5)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from hosted_engine.lab.apiserver import ApiError
from hosted_engine.lab.kubevirt import GUEST_HTTP_ANNOTATION
from hosted_engine.lab.kubevirt.guest import ENGINE_HEALTH_PATH
from hosted_engine.lab.kubevirt.resources import VMIMS, VMS
from hosted_engine.lab.sim.api import NODES, PODS, PVCS, Obj
from kvlab import NS, KubeVirtLab, LabFactory, vm_body

ORDER = ["Pending", "Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running",
         "Succeeded"]


async def _vmim(kvlab: KubeVirtLab, name: str) -> Obj | None:
    return await kvlab.api.get(VMIMS, name, NS)


async def _vmims(kvlab: KubeVirtLab) -> list[Obj]:
    return await kvlab.api.list(VMIMS, NS)


async def _wait_vmim(kvlab: KubeVirtLab, name: str, phase: str, timeout: float = 10.0) -> Obj:
    async def ok() -> bool:
        obj = await _vmim(kvlab, name)
        return bool(obj and (obj.get("status") or {}).get("phase") == phase)

    await kvlab.wait(ok, timeout)
    obj = await _vmim(kvlab, name)
    assert obj is not None
    return obj


def _migration(name: str, vmi: str, selector: dict[str, str] | None = None) -> Obj:
    spec: dict[str, Any] = {"vmiName": vmi}
    if selector:
        spec["addedNodeSelector"] = selector
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


async def _cordon(kvlab: KubeVirtLab, node: str, on: bool) -> None:
    await kvlab.api.patch(NODES, node, {"spec": {"unschedulable": on}})


async def test_migrate_subresource_moves_the_vm_to_the_selected_node(kvlab: KubeVirtLab) -> None:
    body = vm_body("engine", "Always", annotations={GUEST_HTTP_ANNOTATION: "engine"})
    await kvlab.api.create(VMS, body, NS)
    vmi = await kvlab.wait_phase("engine", "Running")
    source = vmi["status"]["nodeName"]
    target = next(n for n in ("node-1", "node-2", "node-3") if n != source)
    ip = vmi["status"]["interfaces"][0]["ipAddress"]
    await kvlab.subresource("engine", "migrate",
                            {"addedNodeSelector": {"kubernetes.io/hostname": target}})
    [vmim] = await _vmims(kvlab)
    assert vmim["metadata"]["name"].startswith("kubevirt-migrate-vm-")
    done = await _wait_vmim(kvlab, vmim["metadata"]["name"], "Succeeded")
    phases = [p["phase"] for p in done["status"]["phaseTransitionTimestamps"]]
    assert phases == ORDER
    state = done["status"]["migrationState"]
    assert (state["sourceNode"], state["targetNode"]) == (source, target)
    assert state["completed"] is True and state["failed"] is False
    moved = await kvlab.vmi("engine")
    assert moved is not None and moved["status"]["nodeName"] == target
    assert moved["metadata"]["uid"] == vmi["metadata"]["uid"]
    assert moved["status"]["interfaces"][0]["ipAddress"] == ip

    async def source_pod_gone() -> bool:
        pods = await kvlab.api.list(PODS, NS, label_selector="kubevirt.io=virt-launcher")
        return [p["spec"]["nodeName"] for p in pods] == [target]

    await kvlab.wait(source_pod_gone)
    async with aiohttp.ClientSession() as session, session.get(
            f"http://{ip}:8080{ENGINE_HEALTH_PATH}") as resp:
        assert resp.status == 200
    await kvlab.wait_printable("engine", "Running")


async def test_ten_migrations_queue_under_five_per_cluster_and_two_per_node(
    make_kvlab: LabFactory,
) -> None:
    # Real-size API timeouts (150 s) so that nothing times out while the network is stalled.
    kvlab = await make_kvlab(hosts=4, extra={"kubevirt_api_seconds": 1.0,
                                             "migration_unschedulable_timeout": 60.0})
    layout = {"node-1": 4, "node-2": 4, "node-3": 2}
    for node in ("node-1", "node-2", "node-3", "node-4"):
        await _cordon(kvlab, node, True)
    index = 0
    for node, count in layout.items():
        await _cordon(kvlab, node, False)
        for _ in range(count):
            await kvlab.api.create(VMS, vm_body(f"vm{index}", "Always", memory="256Mi"), NS)
            index += 1
        for i in range(index - count, index):
            vmi = await kvlab.wait_phase(f"vm{i}", "Running")
            assert vmi["status"]["nodeName"] == node
        await _cordon(kvlab, node, True)
    for node in ("node-1", "node-2", "node-3", "node-4"):
        await _cordon(kvlab, node, False)
    kvlab.kv.set_migration_bandwidth(0)  # stalled: admitted migrations stay in flight
    for i in range(10):
        await kvlab.api.create(VMIMS, _migration(f"mig{i}", f"vm{i}"), NS)

    active = {"Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running"}

    async def admitted() -> bool:
        phases = [(m.get("status") or {}).get("phase") for m in await _vmims(kvlab)]
        return phases.count("Running") == 5 and phases.count("Pending") == 5

    await kvlab.wait(admitted)
    await kvlab.lab.settle(5)
    migrations = await _vmims(kvlab)
    running = [m for m in migrations if m["status"]["phase"] in active]
    pending = [m for m in migrations if m["status"]["phase"] == "Pending"]
    assert len(running) == 5 and len(pending) == 5
    per_node: dict[str, int] = {}
    for m in running:
        source = m["status"]["migrationState"]["sourceNode"]
        per_node[source] = per_node.get(source, 0) + 1
    assert per_node == {"node-1": 2, "node-2": 2, "node-3": 1}
    kvlab.kv.set_migration_bandwidth(None)

    async def all_done() -> bool:
        phases = [(m.get("status") or {}).get("phase") for m in await _vmims(kvlab)]
        return phases == ["Succeeded"] * 10

    await kvlab.wait(all_done, timeout=20)


async def test_stalled_migration_fails_on_progress_timeout(kvlab: KubeVirtLab) -> None:
    await kvlab.api.create(VMS, vm_body("vm", "Always"), NS)
    vmi = await kvlab.wait_phase("vm", "Running")
    kvlab.kv.set_migration_bandwidth(0)
    await kvlab.api.create(VMIMS, _migration("stuck", "vm"), NS)
    failed = await _wait_vmim(kvlab, "stuck", "Failed")
    assert failed["status"]["migrationState"]["failureReason"] == "migration progress timeout"
    after = await kvlab.vmi("vm")
    assert after is not None and after["status"]["nodeName"] == vmi["status"]["nodeName"]
    assert after["status"]["phase"] == "Running"
    await kvlab.wait_printable("vm", "Running")


async def test_slow_migration_fails_on_completion_timeout(kvlab: KubeVirtLab) -> None:
    await kvlab.api.create(VMS, vm_body("vm", "Always", memory="1Gi"), NS)
    await kvlab.wait_phase("vm", "Running")
    # 1 GiB at 64 MiB/s takes 16 s; completionTimeoutPerGiB (150 s x 0.01) allows 1.5 s.
    kvlab.kv.set_migration_bandwidth(64 * 1024**2)
    await kvlab.api.create(VMIMS, _migration("slow", "vm"), NS)
    failed = await _wait_vmim(kvlab, "slow", "Failed")
    assert failed["status"]["migrationState"]["failureReason"] == "migration completion timeout"


async def test_deleting_a_migration_cancels_it(make_kvlab: LabFactory) -> None:
    kvlab = await make_kvlab(extra={"kubevirt_api_seconds": 1.0})
    await kvlab.api.create(VMS, vm_body("vm", "Always"), NS)
    vmi = await kvlab.wait_phase("vm", "Running")
    kvlab.kv.set_migration_bandwidth(0)
    await kvlab.api.create(VMIMS, _migration("cancel-me", "vm"), NS)
    running = await _wait_vmim(kvlab, "cancel-me", "Running")
    target_pod = running["status"]["migrationState"]["targetPod"]
    await kvlab.wait_printable("vm", "Migrating")
    await kvlab.api.delete(VMIMS, "cancel-me", NS)

    async def gone() -> bool:
        return await _vmim(kvlab, "cancel-me") is None

    await kvlab.wait(gone)
    after = await kvlab.vmi("vm")
    assert after is not None
    state = after["status"]["migrationState"]
    assert state["abortRequested"] is True and state["abortStatus"] == "Succeeded"
    assert after["status"]["nodeName"] == vmi["status"]["nodeName"]

    async def target_pod_gone() -> bool:
        return await kvlab.api.get(PODS, target_pod, NS) is None

    await kvlab.wait(target_pod_gone)
    await kvlab.wait_printable("vm", "Running")


async def test_unschedulable_target_fails_the_migration(kvlab: KubeVirtLab) -> None:
    await kvlab.api.create(VMS, vm_body("vm", "Always"), NS)
    await kvlab.wait_phase("vm", "Running")
    await kvlab.api.create(VMIMS, _migration("nowhere", "vm", {"zone": "mars"}), NS)
    failed = await _wait_vmim(kvlab, "nowhere", "Failed")
    assert "could not be scheduled" in failed["status"]["migrationState"]["failureReason"]


def _pvc(name: str, storage_class: str, modes: list[str]) -> Obj:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"accessModes": modes, "storageClassName": storage_class,
                     "resources": {"requests": {"storage": "2Gi"}}}}


async def test_rwo_disk_and_host_device_make_a_vm_not_live_migratable(kvlab: KubeVirtLab) -> None:
    await kvlab.api.create(PVCS, _pvc("rwo", "local", ["ReadWriteOnce"]), NS)
    await kvlab.api.create(PVCS, _pvc("rwx", "shared", ["ReadWriteMany"]), NS)
    volumes = [{"name": "root", "persistentVolumeClaim": {"claimName": "rwo"}}]
    await kvlab.api.create(VMS, vm_body("local", "Always", volumes=volumes), NS)
    shared = [{"name": "root", "persistentVolumeClaim": {"claimName": "rwx"}}]
    await kvlab.api.create(VMS, vm_body("shared", "Always", volumes=shared), NS)
    gpu = vm_body("gpu", "Always")
    gpu["spec"]["template"]["spec"]["domain"]["devices"]["hostDevices"] = [
        {"name": "gpu0", "deviceName": "nvidia.com/A100"}]
    await kvlab.api.create(VMS, gpu, NS)
    expected = {"local": ("False", "DisksNotLiveMigratable"), "shared": ("True", ""),
                "gpu": ("False", "HostDeviceNotLiveMigratable")}
    for name, (status, reason) in expected.items():
        vmi = await kvlab.wait_phase(name, "Running")
        cond = next(c for c in vmi["status"]["conditions"] if c["type"] == "LiveMigratable")
        assert (cond["status"], cond.get("reason") or "") == (status, reason)
    with pytest.raises(ApiError) as info:
        await kvlab.subresource("local", "migrate")
    assert info.value.code == 422 and "DisksNotLiveMigratable" in info.value.message
    async def vm_condition() -> bool:
        vm = await kvlab.vm("gpu")
        conds = {c["type"]: c["status"] for c in vm["status"].get("conditions") or []}
        return conds.get("LiveMigratable") == "False"

    await kvlab.wait(vm_condition)


async def _evict(kvlab: KubeVirtLab, pod: str) -> Any:
    body = {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod, "namespace": NS}}
    return await kvlab.lab.client.request(
        "POST", f"/api/v1/namespaces/{NS}/pods/{pod}/eviction", body=body)


async def _launcher(kvlab: KubeVirtLab, vm: str) -> Obj:
    pods = await kvlab.api.list(PODS, NS, label_selector=f"vm.kubevirt.io/name={vm}")
    [pod] = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return pod


async def test_eviction_with_live_migrate_becomes_an_evacuation(kvlab: KubeVirtLab) -> None:
    await kvlab.api.create(VMS, vm_body("vm", "Always", evictionStrategy="LiveMigrate"), NS)
    vmi = await kvlab.wait_phase("vm", "Running")
    source = vmi["status"]["nodeName"]
    pod = await _launcher(kvlab, "vm")
    with pytest.raises(ApiError) as info:
        await _evict(kvlab, pod["metadata"]["name"])
    assert info.value.code == 429
    assert info.value.message == f'Eviction triggered evacuation of VMI "{NS}/vm"'

    async def moved() -> bool:
        obj = await kvlab.vmi("vm")
        return bool(obj and (obj.get("status") or {}).get("nodeName") not in (None, source)
                    and (obj.get("status") or {}).get("phase") == "Running")

    await kvlab.wait(moved)
    [vmim] = await _vmims(kvlab)
    assert vmim["metadata"]["name"].startswith("kubevirt-evacuation-")
    assert vmim["metadata"]["annotations"]["kubevirt.io/evacuationMigration"] == source
    after = await kvlab.vmi("vm")
    assert after is not None and after["metadata"]["uid"] == vmi["metadata"]["uid"]
    assert not after["status"].get("evacuationNodeName")


async def test_eviction_of_a_non_migratable_live_migrate_vm_is_denied(kvlab: KubeVirtLab) -> None:
    await kvlab.api.create(PVCS, _pvc("rwo", "local", ["ReadWriteOnce"]), NS)
    volumes = [{"name": "root", "persistentVolumeClaim": {"claimName": "rwo"}}]
    body = vm_body("pinned", "Always", volumes=volumes, evictionStrategy="LiveMigrate")
    await kvlab.api.create(VMS, body, NS)
    await kvlab.wait_phase("pinned", "Running")
    pod = await _launcher(kvlab, "pinned")
    with pytest.raises(ApiError) as info:
        await _evict(kvlab, pod["metadata"]["name"])
    assert info.value.code == 429 and "not live-migratable" in info.value.message
    await kvlab.lab.settle(3)
    assert await _vmims(kvlab) == []
    assert await kvlab.api.get(PODS, pod["metadata"]["name"], NS) is not None


async def test_eviction_without_strategy_kills_the_vm_and_always_restarts_it(
    kvlab: KubeVirtLab,
) -> None:
    await kvlab.api.create(VMS, vm_body("vm", "Always"), NS)
    vmi = await kvlab.wait_phase("vm", "Running")
    pod = await _launcher(kvlab, "vm")
    result = await _evict(kvlab, pod["metadata"]["name"])
    assert result.get("status") == "Success", result

    async def restarted() -> bool:
        obj = await kvlab.vmi("vm")
        return bool(obj and obj["metadata"]["uid"] != vmi["metadata"]["uid"]
                    and (obj.get("status") or {}).get("phase") == "Running")

    await kvlab.wait(restarted)
    assert await _vmims(kvlab) == []


async def test_an_evacuation_with_nowhere_to_go_is_retried(make_kvlab: LabFactory) -> None:
    kvlab = await make_kvlab(hosts=1)
    await kvlab.api.create(VMS, vm_body("vm", "Always", evictionStrategy="LiveMigrate"), NS)
    vmi = await kvlab.wait_phase("vm", "Running")
    pod = await _launcher(kvlab, "vm")
    with pytest.raises(ApiError) as info:
        await _evict(kvlab, pod["metadata"]["name"])
    assert info.value.code == 429

    async def retried() -> bool:
        migrations = await _vmims(kvlab)
        failed = [m for m in migrations if (m.get("status") or {}).get("phase") == "Failed"]
        return len(migrations) >= 2 and len(failed) >= 1

    await kvlab.wait(retried, timeout=15)
    names = {m["metadata"]["name"] for m in await _vmims(kvlab)}
    assert all(n.startswith("kubevirt-evacuation-") for n in names)
    after = await kvlab.vmi("vm")
    assert after is not None and after["metadata"]["uid"] == vmi["metadata"]["uid"]
    assert after["status"]["evacuationNodeName"] == "node-1"
    assert after["status"]["phase"] == "Running"
