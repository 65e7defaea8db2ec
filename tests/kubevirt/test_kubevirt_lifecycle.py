"""VM and VMI lifecycle on the lab: runStrategy, virt-launcher pods, printableStatus, guests.

Behaviour from shared/reference/k8s-anchors.md §1.1-§1.2 and §1.10.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from hosted_engine.lab.apiserver import ApiError
from hosted_engine.lab.kubevirt import GUEST_HTTP_ANNOTATION
from hosted_engine.lab.kubevirt.guest import ENGINE_HEALTH_PATH, HEALTHY_BODY
from hosted_engine.lab.kubevirt.resources import VMS
from hosted_engine.lab.sim.api import NODES, PODS
from kvlab import NS, KubeVirtLab, LabFactory, vm_body


async def test_always_vm_runs_with_a_launcher_pod_and_an_ip(kvlab: KubeVirtLab) -> None:
    await kvlab.api.create(VMS, vm_body("web", "Always"), NS)
    vmi = await kvlab.wait_phase("web", "Running")
    status = vmi["status"]
    assert status["nodeName"].startswith("node-")
    ip = status["interfaces"][0]["ipAddress"]
    assert ip.startswith("127.77.")
    phases = [p["phase"] for p in status["phaseTransitionTimestamps"]]
    assert phases == ["Pending", "Scheduling", "Scheduled", "Running"]
    pods = await kvlab.api.list(PODS, NS, label_selector="kubevirt.io=virt-launcher")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["nodeName"] == status["nodeName"]
    assert pod["metadata"]["labels"]["kubevirt.io/created-by"] == vmi["metadata"]["uid"]
    requests = pod["spec"]["containers"][0]["resources"]["requests"]
    assert int(requests["memory"]) > 1024**3  # the guest's memory plus the launcher overhead
    await kvlab.wait_printable("web", "Running")
    vm = await kvlab.vm("web")
    assert vm["status"]["ready"] is True
    assert vm["status"]["runStrategy"] == "Always"
    ready = {c["type"]: c["status"] for c in vm["status"]["conditions"]}
    assert ready["Ready"] == "True" and ready["LiveMigratable"] == "True"


async def _request_error(kvlab: KubeVirtLab, name: str, verb: str) -> ApiError:
    with pytest.raises(ApiError) as info:
        await kvlab.subresource(name, verb)
    return info.value


async def test_stop_rewrites_always_to_halted_and_start_back(kvlab: KubeVirtLab) -> None:
    """k8s-anchors §1.1: stop on Always patches runStrategy to Halted; start on Halted patches
    it to Always; start on a running Always VM is a 409."""
    await kvlab.api.create(VMS, vm_body("db", "Always"), NS)
    first = await kvlab.wait_phase("db", "Running")
    error = await _request_error(kvlab, "db", "start")
    assert error.code == 409 and "VM is already running" in error.message
    await kvlab.subresource("db", "stop")
    assert (await kvlab.vm("db"))["spec"]["runStrategy"] == "Halted"

    async def gone() -> bool:
        return await kvlab.vmi("db") is None

    await kvlab.wait(gone)
    await kvlab.wait_printable("db", "Stopped")
    error = await _request_error(kvlab, "db", "stop")
    assert error.code == 409 and "VM is not running" in error.message
    error = await _request_error(kvlab, "db", "restart")
    assert error.code == 409
    await kvlab.subresource("db", "start")
    assert (await kvlab.vm("db"))["spec"]["runStrategy"] == "Always"
    second = await kvlab.wait_phase("db", "Running")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]


async def test_manual_vm_follows_start_and_stop_requests(kvlab: KubeVirtLab) -> None:
    await kvlab.api.create(VMS, vm_body("m", "Manual"), NS)
    await kvlab.lab.settle(4)
    assert await kvlab.vmi("m") is None
    await kvlab.wait_printable("m", "Stopped")
    await kvlab.subresource("m", "start")
    vm = await kvlab.vm("m")
    assert vm["spec"]["runStrategy"] == "Manual"
    assert vm["status"]["stateChangeRequests"] == [{"action": "Start"}]
    first = await kvlab.wait_phase("m", "Running")

    async def requests_cleared() -> bool:
        return not (await kvlab.vm("m"))["status"].get("stateChangeRequests")

    await kvlab.wait(requests_cleared)
    await kvlab.subresource("m", "restart")
    await kvlab.wait(
        lambda: _uid_changed(kvlab, "m", first["metadata"]["uid"], "Running")
    )
    await kvlab.subresource("m", "stop")

    async def gone() -> bool:
        return await kvlab.vmi("m") is None

    await kvlab.wait(gone)
    assert (await kvlab.vm("m"))["spec"]["runStrategy"] == "Manual"
    await kvlab.lab.settle(4)
    assert await kvlab.vmi("m") is None  # nothing restarts a Manual VM


async def _uid_changed(kvlab: KubeVirtLab, name: str, old_uid: str, phase: str) -> bool:
    vmi = await kvlab.vmi(name)
    return bool(vmi and vmi["metadata"]["uid"] != old_uid
                and (vmi.get("status") or {}).get("phase") == phase)


async def test_crash_restarts_always_and_rerun_on_failure_but_not_once(
    kvlab: KubeVirtLab,
) -> None:
    uids = {}
    for name, strategy in (("a", "Always"), ("r", "RerunOnFailure"), ("o", "Once")):
        await kvlab.api.create(VMS, vm_body(name, strategy), NS)
    for name in ("a", "r", "o"):
        uids[name] = (await kvlab.wait_phase(name, "Running"))["metadata"]["uid"]
    for name in ("a", "r", "o"):
        await kvlab.lab.faults.crash_vm(NS, name)
    for name in ("a", "r"):
        await kvlab.wait(lambda n=name: _uid_changed(kvlab, n, uids[n], "Running"))
    await kvlab.lab.settle(5)
    once = await kvlab.vmi("o")
    assert once is not None and once["metadata"]["uid"] == uids["o"]
    assert once["status"]["phase"] == "Failed"
    await kvlab.wait_printable("o", "Stopped")
    error = await _request_error(kvlab, "o", "start")
    assert error.code == 409 and "Once does not support manual start requests" in error.message


async def test_unschedulable_vm_shows_error_unschedulable(kvlab: KubeVirtLab) -> None:
    body = vm_body("nowhere", "Always", nodeSelector={"zone": "mars"})
    await kvlab.api.create(VMS, body, NS)
    await kvlab.wait_printable("nowhere", "ErrorUnschedulable")
    vmi = await kvlab.vmi("nowhere")
    assert vmi is not None and vmi["status"]["phase"] == "Scheduling"
    conditions = {c["type"]: c for c in vmi["status"]["conditions"]}
    assert conditions["PodScheduled"]["reason"] == "Unschedulable"


async def _health(url: str, timeout: float = 1.0) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(
        url + ENGINE_HEALTH_PATH, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as resp:
        return resp.status, await resp.text()


async def test_engine_guest_health_up_hung_healed_and_gone_on_crash(kvlab: KubeVirtLab) -> None:
    body = vm_body("engine", "Always", annotations={GUEST_HTTP_ANNOTATION: "engine"})
    await kvlab.api.create(VMS, body, NS)
    vmi = await kvlab.wait_phase("engine", "Running")
    ip = vmi["status"]["interfaces"][0]["ipAddress"]
    url = f"http://{ip}:8080"
    assert kvlab.kv.guest_url(NS, "engine") == url
    assert await _health(url) == (200, HEALTHY_BODY)
    conditions = {c["type"]: c["status"] for c in vmi["status"]["conditions"]}
    assert conditions["AgentConnected"] == "True"
    await kvlab.lab.faults.hang_guest(NS, "engine")
    with pytest.raises(asyncio.TimeoutError):
        await _health(url, timeout=0.3)
    await kvlab.lab.faults.heal_guest(NS, "engine")
    assert (await _health(url))[0] == 200
    await kvlab.lab.faults.crash_vm(NS, "engine")
    with pytest.raises(aiohttp.ClientConnectionError):
        await _health(url)
    await kvlab.wait(lambda: _uid_changed(kvlab, "engine", vmi["metadata"]["uid"], "Running"))
    new_ip = (await kvlab.vmi("engine") or {})["status"]["interfaces"][0]["ipAddress"]
    assert (await _health(f"http://{new_ip}:8080"))[1] == HEALTHY_BODY


async def test_broken_engine_image_never_becomes_healthy(kvlab: KubeVirtLab) -> None:
    body = vm_body(
        "engine",
        "Always",
        annotations={GUEST_HTTP_ANNOTATION: "engine",
                     "lab.hostedengine.io/guest-image": "ovirt-engine:4.5-broken"},
    )
    await kvlab.api.create(VMS, body, NS)
    vmi = await kvlab.wait_phase("engine", "Running")
    ip = vmi["status"]["interfaces"][0]["ipAddress"]
    status, text = await _health(f"http://{ip}:8080")
    assert status == 503 and "DB Up" not in text


async def test_node_death_keeps_vmi_running_until_out_of_service_taint(
    kvlab: KubeVirtLab,
) -> None:
    """§1.10: the VMI stays Running bound to the dead node; the guest is gone; only the
    out-of-service taint frees the pod, then the VMI fails and runStrategy restarts it."""
    body = vm_body("engine", "Always", annotations={GUEST_HTTP_ANNOTATION: "engine"})
    await kvlab.api.create(VMS, body, NS)
    vmi = await kvlab.wait_phase("engine", "Running")
    node = vmi["status"]["nodeName"]
    url = f"http://{vmi['status']['interfaces'][0]['ipAddress']}:8080"
    await kvlab.lab.faults.fail_node(node)
    with pytest.raises(aiohttp.ClientConnectionError):
        await _health(url)

    async def node_unready() -> bool:
        obj = await kvlab.api.get(NODES, node)
        conds = {c["type"]: c["status"] for c in (obj or {})["status"]["conditions"]}
        return conds.get("Ready") == "Unknown"

    await kvlab.wait(node_unready)
    await kvlab.lab.settle(10)
    still = await kvlab.vmi("engine")
    assert still is not None and still["metadata"]["uid"] == vmi["metadata"]["uid"]
    assert still["status"]["phase"] == "Running" and still["status"]["nodeName"] == node
    taints = (await kvlab.api.get(NODES, node) or {})["spec"].get("taints") or []
    taints.append({"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown",
                   "effect": "NoExecute"})
    await kvlab.api.patch(NODES, node, {"spec": {"taints": taints}})
    await kvlab.wait(lambda: _uid_changed(kvlab, "engine", vmi["metadata"]["uid"], "Running"),
                     timeout=15)
    moved = await kvlab.vmi("engine")
    assert moved is not None and moved["status"]["nodeName"] != node
    assert (await _health(f"http://{moved['status']['interfaces'][0]['ipAddress']}:8080"))[0] \
        == 200


async def test_partitioned_node_keeps_the_guest_reachable(kvlab: KubeVirtLab) -> None:
    body = vm_body("engine", "Always", annotations={GUEST_HTTP_ANNOTATION: "engine"})
    await kvlab.api.create(VMS, body, NS)
    vmi = await kvlab.wait_phase("engine", "Running")
    await kvlab.lab.faults.partition_node(vmi["status"]["nodeName"])
    await kvlab.lab.settle(5)
    url = f"http://{vmi['status']['interfaces'][0]['ipAddress']}:8080"
    assert await _health(url) == (200, HEALTHY_BODY)


async def test_engine_becomes_healthy_only_after_its_start_up_time(kvlab: KubeVirtLab) -> None:
    annotations = {GUEST_HTTP_ANNOTATION: "engine",
                   "lab.hostedengine.io/guest-startup-seconds": "60"}  # 0.6 s in tests
    await kvlab.api.create(VMS, vm_body("engine", "Always", annotations=annotations), NS)
    vmi = await kvlab.wait_phase("engine", "Running")
    url = f"http://{vmi['status']['interfaces'][0]['ipAddress']}:8080"
    status, text = await _health(url)
    assert status == 503 and "DB Up" not in text

    async def healthy() -> bool:
        return (await _health(url))[0] == 200

    await kvlab.wait(healthy)


async def test_power_loss_then_recovery_restarts_the_vm(kvlab: KubeVirtLab) -> None:
    """A rebooted node finds no domain: the VMI fails and runStrategy Always restarts it."""
    await kvlab.api.create(VMS, vm_body("vm", "Always"), NS)
    vmi = await kvlab.wait_phase("vm", "Running")
    node = vmi["status"]["nodeName"]
    await kvlab.lab.faults.fail_node(node)
    await kvlab.lab.settle(5)
    assert await kvlab.vmi_phase("vm") == "Running"  # the API cannot know yet
    await kvlab.lab.faults.recover_node(node)
    await kvlab.wait(lambda: _uid_changed(kvlab, "vm", vmi["metadata"]["uid"], "Running"),
                     timeout=15)


async def test_deleting_a_vm_stops_its_vmi_first(kvlab: KubeVirtLab) -> None:
    await kvlab.api.create(VMS, vm_body("vm", "Always"), NS)
    await kvlab.wait_phase("vm", "Running")
    assert "kubevirt.io/virtualMachineControllerFinalizer" in \
        (await kvlab.vm("vm"))["metadata"]["finalizers"]
    await kvlab.api.delete(VMS, "vm", NS)

    async def all_gone() -> bool:
        pods = await kvlab.api.list(PODS, NS, label_selector="kubevirt.io=virt-launcher")
        return (await kvlab.api.get(VMS, "vm", NS) is None and await kvlab.vmi("vm") is None
                and not pods)

    await kvlab.wait(all_gone)


async def test_kubectl_columns_and_lab_status(kvlab: KubeVirtLab) -> None:
    await kvlab.api.create(VMS, vm_body("vm", "Always"), NS)
    await kvlab.wait_phase("vm", "Running")
    await kvlab.wait_printable("vm", "Running")
    table = await kvlab.lab.client.request(
        "GET", f"/apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines",
        accept="application/json;as=Table;v=v1;g=meta.k8s.io")
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[:4] == ["Name", "Age", "Status", "Ready"]
    row = table["rows"][0]["cells"]
    assert row[0] == "vm" and row[2] == "Running" and row[3] == "True"
    async def reported() -> bool:
        vms = (await kvlab.lab.faults.status())["vms"]
        return bool(vms) and vms[0]["status"] == "Running"

    await kvlab.wait(reported)
    status = await kvlab.lab.faults.status()
    [vm] = status["vms"]
    assert (vm["name"], vm["status"], vm["phase"]) == ("vm", "Running", "Running")
    assert vm["ip"].startswith("127.77.")
    assert status["migrations"] == []


async def test_guest_shutdown_restarts_always_but_not_rerun_on_failure(
    kvlab: KubeVirtLab,
) -> None:
    """§1.1: Always respawns after a controlled stop; RerunOnFailure does not (Succeeded)."""
    uids = {}
    for name, strategy in (("a", "Always"), ("r", "RerunOnFailure")):
        await kvlab.api.create(VMS, vm_body(name, strategy), NS)
    for name in ("a", "r"):
        uids[name] = (await kvlab.wait_phase(name, "Running"))["metadata"]["uid"]
        await kvlab.kv.shutdown_guest(NS, name)
    await kvlab.wait(lambda: _uid_changed(kvlab, "a", uids["a"], "Running"))
    await kvlab.wait_printable("r", "Stopped")
    await kvlab.lab.settle(5)
    assert await kvlab.vmi("r") is None
    # Starting a RerunOnFailure VM whose guest shut down is allowed.
    await kvlab.subresource("r", "start")
    await kvlab.wait(lambda: _uid_changed(kvlab, "r", uids["r"], "Running"))


async def test_running_and_run_strategy_are_mutually_exclusive(kvlab: KubeVirtLab) -> None:
    body = vm_body("both", "Always")
    body["spec"]["running"] = True
    with pytest.raises(ApiError) as info:
        await kvlab.lab.client.create("kubevirt.io", "v1", "virtualmachines", body, NS)
    assert info.value.code == 422 and "mutually exclusive" in info.value.message


async def test_virt_handler_heartbeat_labels_nodes_schedulable(kvlab: KubeVirtLab) -> None:
    """§1.10 step 3: a node whose virt-handler is silent past the threshold is marked
    kubevirt.io/schedulable=false, and true again once it reports."""

    async def label(node: str) -> str | None:
        obj = await kvlab.api.get(NODES, node)
        return ((obj or {}).get("metadata") or {}).get("labels", {}).get(
            "kubevirt.io/schedulable")

    async def all_true() -> bool:
        return all([await label(f"node-{i}") == "true" for i in (1, 2, 3)])

    await kvlab.wait(all_true)
    obj = await kvlab.api.get(NODES, "node-2")
    assert obj is not None and "kubevirt.io/heartbeat" in obj["metadata"]["annotations"]
    await kvlab.lab.faults.partition_node("node-2")

    async def unschedulable() -> bool:
        return await label("node-2") == "false"

    await kvlab.wait(unschedulable)
    await kvlab.lab.faults.heal_partition("node-2")
    await kvlab.wait(all_true)


async def test_a_vm_failing_before_it_runs_backs_off(make_kvlab: LabFactory) -> None:
    """§1.1 crash-loop backoff: only VMIs that fail before reaching Running count; the VM shows
    CrashLoopBackOff with status.startFailure until the retry, which clears it once running."""
    kvlab = await make_kvlab(vm_boot_time=1.0, extra={"kubevirt_api_seconds": 0.1})
    await kvlab.api.create(VMS, vm_body("flaky", "Always"), NS)
    first = await kvlab.wait_phase("flaky", "Scheduled")
    await kvlab.kv.crash_vm(NS, "flaky")
    await kvlab.wait_printable("flaky", "CrashLoopBackOff")
    failure = (await kvlab.vm("flaky"))["status"]["startFailure"]
    assert failure["consecutiveFailCount"] == 1
    assert failure["lastFailedVMIUID"] == first["metadata"]["uid"]
    assert failure["retryAfterTimestamp"]
    await kvlab.wait(lambda: _uid_changed(kvlab, "flaky", first["metadata"]["uid"], "Running"))

    async def cleared() -> bool:
        return not (await kvlab.vm("flaky"))["status"].get("startFailure")

    await kvlab.wait(cleared)
    # A VMI that had been running restarts at once after a crash: no backoff.
    await kvlab.kv.crash_vm(NS, "flaky")
    await kvlab.lab.settle(3)
    assert not (await kvlab.vm("flaky"))["status"].get("startFailure")


async def test_fencing_without_power_off_leaves_two_engines_running(kvlab: KubeVirtLab) -> None:
    """Why fencing matters: the out-of-service taint on a node that is only partitioned frees
    the VM to restart elsewhere while the old guest keeps answering until the node rejoins."""
    body = vm_body("engine", "Always", annotations={GUEST_HTTP_ANNOTATION: "engine"})
    await kvlab.api.create(VMS, body, NS)
    vmi = await kvlab.wait_phase("engine", "Running")
    node = vmi["status"]["nodeName"]
    old_url = f"http://{vmi['status']['interfaces'][0]['ipAddress']}:8080"
    await kvlab.lab.faults.partition_node(node)
    taints = (await kvlab.api.get(NODES, node) or {})["spec"].get("taints") or []
    taints.append({"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown",
                   "effect": "NoExecute"})
    await kvlab.api.patch(NODES, node, {"spec": {"taints": taints}})
    await kvlab.wait(lambda: _uid_changed(kvlab, "engine", vmi["metadata"]["uid"], "Running"),
                     timeout=15)
    new = await kvlab.vmi("engine")
    assert new is not None and new["status"]["nodeName"] != node
    new_url = f"http://{new['status']['interfaces'][0]['ipAddress']}:8080"
    assert await _health(new_url) == (200, HEALTHY_BODY)
    assert await _health(old_url) == (200, HEALTHY_BODY)  # split brain
    await kvlab.lab.faults.heal_partition(node)

    async def old_gone() -> bool:
        try:
            await _health(old_url)
        except aiohttp.ClientConnectionError:
            return True
        return False

    await kvlab.wait(old_gone)
