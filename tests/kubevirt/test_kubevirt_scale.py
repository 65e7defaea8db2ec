"""The simulator's scale machinery, on a small lab: bulk creation through the real path, the
per-pass budget (oldest first, at least one reconcile per pass) and the dirty-set reconcile
(a settled VM costs no write, a change to it is acted on)."""

from __future__ import annotations

from hosted_engine.lab.kubevirt import scale
from hosted_engine.lab.kubevirt.resources import VMIS, VMS
from hosted_engine.lab.sim.api import PODS, name_of
from kvlab import NS, LabFactory, fast_timings


async def test_bulk_vms_all_run_under_a_tiny_pass_budget(make_kvlab: LabFactory) -> None:
    """With a budget that allows one reconcile per pass, every VM still gets to Running (the
    longest-waiting object goes first, so none starves)."""
    kv = await make_kvlab(hosts=3, kubevirt_pass_budget=1e-9)
    lab = kv.lab
    await scale.create_vms(lab, 12, NS)
    await scale.wait_vms_running(lab, 12, NS, timeout=60)
    assert scale.vms_running(lab, NS) == 12
    vmis = [v for v in lab.informer(VMIS).items() if v["metadata"]["namespace"] == NS]
    nodes = {v["status"]["nodeName"] for v in vmis}
    assert len(vmis) == 12 and nodes <= {"node-1", "node-2", "node-3"}
    launchers = [p for p in lab.informer(PODS).items()
                 if name_of(p).startswith("virt-launcher-vm-")]
    assert len(launchers) == 12


async def test_settled_vms_cost_no_writes_and_changes_are_seen(make_kvlab: LabFactory) -> None:
    kv = await make_kvlab(hosts=2)
    lab = kv.lab
    await scale.create_vms(lab, 5, NS)
    await scale.wait_vms_running(lab, 5, NS, timeout=30)
    await lab.settle(5)

    def versions() -> dict[str, str]:
        return {f"{res.plural}/{name_of(o)}": o["metadata"]["resourceVersion"]
                for res in (VMS, VMIS) for o in lab.informer(res).items()}

    before = versions()
    await lab.settle(10)
    # nothing changed: the VMs and VMIs are not written again
    assert versions() == before and len(before) == 10
    # a change on one VM (a stop through runStrategy) is acted on at once
    await lab.api.patch(VMS, "vm-3", {"spec": {"runStrategy": "Halted"}}, NS)
    await kv.wait(lambda: scale.vms_running(lab, NS) == 4, timeout=10)
    await kv.wait_printable("vm-3", "Stopped", timeout=10)
    assert await kv.vmi("vm-3") is None
    assert scale.vms_running(lab, NS) == 4


async def test_start_scale_lab_returns_a_lab_with_every_vm_running() -> None:
    lab = await scale.start_scale_lab(
        hosts=2, vms=4, namespace="scale", timings=fast_timings(), gc_tuning=False, timeout=30)
    try:
        assert lab.started and scale.vms_running(lab, "scale") == 4
        assert sorted(name_of(v) for v in lab.informer(VMS).items()) == [
            "vm-0", "vm-1", "vm-2", "vm-3"]
    finally:
        await lab.stop()
    assert not lab.started
