"""A crashed guest of a runStrategy Always VM is replaced at once (failover benchmark, crash).

Real KubeVirt: qemu dies -> virt-launcher exits, the launcher pod's compute container terminates
(the pod turns Succeeded/Failed) -> virt-handler marks the VMI Failed -> virt-controller's VM loop
deletes the VMI (a VMI that reached Running gets no start-failure backoff) -> the VMI controller
deletes the pod, which the kubelet removes at once: nothing is left running, so there is no
SIGTERM and no terminationGracePeriodSeconds wait -> the finalizers go, a new VMI is created.
The lab used to keep the crashed launcher's container "running" and gave its deletion the guest's
graceful shutdown time (``vm_shutdown_time``, 10 s with real timings).
"""

from __future__ import annotations

from typing import Any

from hosted_engine.lab.kubevirt.resources import VMIS, VMS
from hosted_engine.lab.sim.api import PODS, Obj
from kvlab import NS, KubeVirtLab, LabFactory, vm_body

#: a guest's graceful shutdown long enough that waiting for it would miss every timeout below
SLOW_SHUTDOWN: dict[str, Any] = {"vm_shutdown_time": 30.0, "max_termination_grace": None,
                                 "container_stop_time": 30.0}


async def _launcher(kvlab: KubeVirtLab, vmi_uid: str) -> Obj:
    pods = await kvlab.api.list(PODS, NS, label_selector=f"kubevirt.io/created-by={vmi_uid}")
    assert len(pods) == 1
    return pods[0]


async def test_crashed_always_vmi_is_replaced_without_the_shutdown_grace(
    make_kvlab: LabFactory,
) -> None:
    kvlab = await make_kvlab(**SLOW_SHUTDOWN)
    await kvlab.api.create(VMS, vm_body("engine", "Always"), NS)
    first = await kvlab.wait_phase("engine", "Running")
    old_uid = first["metadata"]["uid"]
    old_pod = await _launcher(kvlab, old_uid)

    await kvlab.kv.crash_vm(NS, "engine")

    async def replaced() -> bool:
        vmi = await kvlab.vmi("engine")
        return bool(vmi and vmi["metadata"]["uid"] != old_uid
                    and (vmi.get("status") or {}).get("phase") == "Running")

    # fast timings: a pod start, a launcher start and a guest boot (~0.3 s); the old path waited
    # for the 30 s shutdown of a guest that was already dead
    await kvlab.wait(replaced, timeout=3.0)
    assert await kvlab.api.get(PODS, old_pod["metadata"]["name"], NS) is None
    new = await kvlab.vmi("engine")
    assert new is not None
    assert (await _launcher(kvlab, new["metadata"]["uid"]))["status"]["phase"] == "Running"
    vm = await kvlab.vm("engine")
    assert not vm["status"].get("startFailure")  # it had reached Running: no backoff


async def test_a_pod_that_ended_on_its_own_is_removed_without_grace(
    make_kvlab: LabFactory,
) -> None:
    """The kubelet side: the compute container of a crashed launcher terminates (pod Failed,
    exit code reported); deleting such a pod needs no grace, while a pod whose guest still runs
    is given its shutdown time."""
    kvlab = await make_kvlab(**SLOW_SHUTDOWN)
    await kvlab.api.create(VMS, vm_body("dead", "Once"), NS)
    await kvlab.api.create(VMS, vm_body("alive", "Always"), NS)
    dead = await kvlab.wait_phase("dead", "Running")
    alive = await kvlab.wait_phase("alive", "Running")
    dead_pod = await _launcher(kvlab, dead["metadata"]["uid"])
    alive_pod = await _launcher(kvlab, alive["metadata"]["uid"])
    kubelet = kvlab.lab.kubelets[dead_pod["spec"]["nodeName"]]
    assert kubelet.exit_containers(NS, dead_pod["metadata"]["name"], 1)
    assert not kubelet.exit_containers(NS, "no-such-pod", 1)

    async def failed() -> bool:
        pod = await kvlab.api.get(PODS, dead_pod["metadata"]["name"], NS)
        return bool(pod and pod["status"]["phase"] == "Failed")

    await kvlab.wait(failed, timeout=3.0)
    pod = await kvlab.api.get(PODS, dead_pod["metadata"]["name"], NS)
    assert pod is not None
    compute = pod["status"]["containerStatuses"][0]
    assert compute["state"]["terminated"]["exitCode"] == 1
    assert compute["ready"] is False

    await kvlab.api.delete(PODS, alive_pod["metadata"]["name"], NS)
    await kvlab.api.delete(PODS, dead_pod["metadata"]["name"], NS)

    async def dead_gone() -> bool:
        return await kvlab.api.get(PODS, dead_pod["metadata"]["name"], NS) is None

    await kvlab.wait(dead_gone, timeout=3.0)
    # deleted first, the pod with a running guest is still in its 30 s graceful shutdown
    still = await kvlab.api.get(PODS, alive_pod["metadata"]["name"], NS)
    assert still is not None and still["metadata"].get("deletionTimestamp")
    assert await kvlab.api.get(VMIS, "alive", NS) is not None
