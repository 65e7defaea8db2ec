"""The PersistentVolume controller: static binding, Released, Lost, lab provisioner.

Reference: kubernetes.io/docs/concepts/storage/persistent-volumes/ (Binding: "the smallest
volume that matches"; Reclaiming: Retain -> Released, Delete; Phase: Available, Bound,
Released; claim phase Lost).
"""

from __future__ import annotations

from typing import Any

from hosted_engine.lab.sim.api import PVCS, PVS, STORAGECLASSES, Obj
from hosted_engine.lab.sim.lab import Lab
from simhelpers import events_for


def pv(
    name: str,
    size: str,
    cls: str = "nfs",
    modes: list[str] | None = None,
    policy: str = "Retain",
    **spec: Any,
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": spec.pop("labels", {})},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": modes or ["ReadWriteMany"],
            "storageClassName": cls,
            "persistentVolumeReclaimPolicy": policy,
            "nfs": {"server": "192.0.2.10", "path": f"/exports/{name}"},
            **spec,
        },
    }


def pvc(name: str, size: str, cls: str = "nfs", modes: list[str] | None = None, **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "accessModes": modes or ["ReadWriteMany"],
            "storageClassName": cls,
            "resources": {"requests": {"storage": size}},
            **spec,
        },
    }


def pv_phase(lab: Lab, name: str) -> str | None:
    obj = lab.informer(PVS).get(name)
    return None if obj is None else (obj.get("status") or {}).get("phase")


def claim(lab: Lab, name: str) -> Obj:
    obj = lab.informer(PVCS).get(name, "default")
    assert obj is not None
    return obj


def claim_phase(lab: Lab, name: str) -> str | None:
    obj = lab.informer(PVCS).get(name, "default")
    return None if obj is None else (obj.get("status") or {}).get("phase")


async def test_claim_binds_the_smallest_matching_volume(sim_lab: Lab) -> None:
    await sim_lab.api.create(PVS, pv("big", "100Gi"))
    await sim_lab.api.create(PVS, pv("small", "10Gi"))
    await sim_lab.api.create(PVS, pv("tiny", "1Gi"))
    await sim_lab.api.create(PVS, pv("other-class", "10Gi", cls="iscsi"))
    await sim_lab.api.create(PVCS, pvc("data", "5Gi"), "default")
    await sim_lab.wait_for(lambda: claim_phase(sim_lab, "data") == "Bound", timeout=5)
    bound = claim(sim_lab, "data")
    assert bound["spec"]["volumeName"] == "small"
    assert bound["status"]["capacity"]["storage"] == "10Gi"
    assert bound["status"]["accessModes"] == ["ReadWriteMany"]
    assert bound["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    await sim_lab.wait_for(lambda: pv_phase(sim_lab, "small") == "Bound", timeout=5)
    volume = sim_lab.informer(PVS).get("small")
    assert volume is not None
    ref = volume["spec"]["claimRef"]
    assert (ref["namespace"], ref["name"], ref["uid"]) == (
        "default",
        "data",
        bound["metadata"]["uid"],
    )
    for name in ("big", "tiny", "other-class"):
        await sim_lab.wait_for(lambda n=name: pv_phase(sim_lab, n) == "Available", timeout=5)


async def test_access_modes_and_volume_mode_must_match(sim_lab: Lab) -> None:
    await sim_lab.api.create(PVS, pv("rwo", "10Gi", modes=["ReadWriteOnce"]))
    await sim_lab.api.create(PVS, pv("block", "10Gi", volumeMode="Block"))
    await sim_lab.api.create(PVCS, pvc("shared", "1Gi", modes=["ReadWriteMany"]), "default")
    await sim_lab.api.create(PVCS, pvc("raw", "1Gi", volumeMode="Block"), "default")
    await sim_lab.wait_for(lambda: claim_phase(sim_lab, "raw") == "Bound", timeout=5)
    assert claim(sim_lab, "raw")["spec"]["volumeName"] == "block"
    await sim_lab.settle(3)
    assert claim_phase(sim_lab, "shared") == "Pending"
    assert await events_for(sim_lab, "shared", "FailedBinding")


async def test_selector_and_prebound_volume_name(sim_lab: Lab) -> None:
    await sim_lab.api.create(PVS, pv("fast", "10Gi", labels={"tier": "gold"}))
    await sim_lab.api.create(PVS, pv("slow", "10Gi", labels={"tier": "bronze"}))
    await sim_lab.api.create(PVS, pv("named", "50Gi"))
    await sim_lab.api.create(
        PVCS, pvc("gold", "1Gi", selector={"matchLabels": {"tier": "gold"}}), "default"
    )
    await sim_lab.api.create(PVCS, pvc("pinned", "1Gi", volumeName="named"), "default")
    await sim_lab.wait_for(
        lambda: (
            claim_phase(sim_lab, "gold") == "Bound" and claim_phase(sim_lab, "pinned") == "Bound"
        ),
        timeout=5,
    )
    assert claim(sim_lab, "gold")["spec"]["volumeName"] == "fast"
    assert claim(sim_lab, "pinned")["spec"]["volumeName"] == "named"


async def test_deleting_the_claim_releases_or_deletes_the_volume(sim_lab: Lab) -> None:
    await sim_lab.api.create(PVS, pv("keep", "10Gi", cls="keep"))
    await sim_lab.api.create(PVS, pv("drop", "10Gi", cls="drop", policy="Delete"))
    await sim_lab.api.create(PVCS, pvc("k", "1Gi", cls="keep"), "default")
    await sim_lab.api.create(PVCS, pvc("d", "1Gi", cls="drop"), "default")
    await sim_lab.wait_for(
        lambda: claim_phase(sim_lab, "k") == "Bound" and claim_phase(sim_lab, "d") == "Bound",
        timeout=5,
    )
    await sim_lab.client.delete("", "v1", "persistentvolumeclaims", "k", "default")
    await sim_lab.client.delete("", "v1", "persistentvolumeclaims", "d", "default")
    await sim_lab.wait_for(lambda: pv_phase(sim_lab, "keep") == "Released", timeout=5)
    await sim_lab.wait_for(lambda: sim_lab.informer(PVS).get("drop") is None, timeout=5)
    # a Released volume is not bound again by a new claim
    await sim_lab.api.create(PVCS, pvc("k2", "1Gi", cls="keep"), "default")
    await sim_lab.settle(3)
    assert claim_phase(sim_lab, "k2") == "Pending"


async def test_a_claim_whose_volume_disappears_is_lost(sim_lab: Lab) -> None:
    await sim_lab.api.create(PVS, pv("gone", "10Gi"))
    await sim_lab.api.create(PVCS, pvc("orphan", "1Gi"), "default")
    await sim_lab.wait_for(lambda: claim_phase(sim_lab, "orphan") == "Bound", timeout=5)
    await sim_lab.client.delete("", "v1", "persistentvolumes", "gone")
    await sim_lab.wait_for(lambda: claim_phase(sim_lab, "orphan") == "Lost", timeout=5)


async def test_lab_provisioner_creates_a_volume_for_its_class(sim_lab: Lab) -> None:
    await sim_lab.api.create(
        STORAGECLASSES,
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "lab-csi"},
            "provisioner": "lab.hostedengine.io/csi",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        },
    )
    await sim_lab.api.create(
        PVCS, pvc("dyn", "3Gi", cls="lab-csi", modes=["ReadWriteOnce"]), "default"
    )
    await sim_lab.wait_for(lambda: claim_phase(sim_lab, "dyn") == "Bound", timeout=5)
    uid = claim(sim_lab, "dyn")["metadata"]["uid"]
    volume = sim_lab.informer(PVS).get(f"pvc-{uid}")
    assert volume is not None
    assert volume["spec"]["capacity"]["storage"] == "3Gi"
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert await events_for(sim_lab, "dyn", "ProvisioningSucceeded")
