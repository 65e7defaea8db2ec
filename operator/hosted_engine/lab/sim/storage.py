"""The PersistentVolume controller: static binding of claims to volumes, Released and Lost.

- A Pending claim binds to the smallest Available volume with the same ``storageClassName``, at
  least the requested capacity, every requested access mode, the same ``volumeMode`` (default
  Filesystem) and matching ``selector`` labels; a claim naming ``volumeName`` binds to that one.
  Binding writes the PV's ``claimRef`` and the claim's ``volumeName`` with the controller's
  annotations, then both phases become Bound (the claim's status carries the PV's capacity and
  access modes).
- A volume whose claim is gone becomes Released (``persistentVolumeReclaimPolicy: Retain``) or is
  deleted (``Delete``); a volume without a claim is Available. A claim whose volume is gone is
  Lost.
- Claims of a StorageClass whose provisioner starts with ``lab.hostedengine.io/`` are provisioned
  dynamically (a PV named ``pvc-<claim uid>``), as an external provisioner would.

Source: kubernetes.io/docs/concepts/storage/persistent-volumes/#binding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from hosted_engine.lab.sim.api import (
    PVCS,
    PVS,
    Api,
    Obj,
    meta,
    name_of,
    ns_of,
    record_event,
)
from hosted_engine.lab.sim.placement import expression_matches
from hosted_engine.lab.sim.quantity import to_units

log = logging.getLogger(__name__)

COMPONENT = "persistentvolume-controller"
LAB_PROVISIONER_PREFIX = "lab.hostedengine.io/"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"


def claim_class(pvc: Obj) -> str:
    return str((pvc.get("spec") or {}).get("storageClassName") or "")


def volume_class(pv: Obj) -> str:
    return str((pv.get("spec") or {}).get("storageClassName") or "")


def _storage(obj: Obj, *path: str) -> int:
    node: Any = obj
    for part in path:
        node = (node or {}).get(part)
    return to_units("storage", node) if node is not None else 0


def volume_fits(pvc: Obj, pv: Obj) -> bool:
    """Whether ``pv`` satisfies ``pvc`` (class, size, access modes, volume mode, selector)."""
    cspec, vspec = pvc.get("spec") or {}, pv.get("spec") or {}
    if claim_class(pvc) != volume_class(pv):
        return False
    if _storage(pv, "spec", "capacity", "storage") < _storage(
        pvc, "spec", "resources", "requests", "storage"
    ):
        return False
    if not set(cspec.get("accessModes") or []) <= set(vspec.get("accessModes") or []):
        return False
    if (cspec.get("volumeMode") or "Filesystem") != (vspec.get("volumeMode") or "Filesystem"):
        return False
    selector = cspec.get("selector") or {}
    labels = meta(pv).get("labels") or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    return all(expression_matches(e, labels) for e in selector.get("matchExpressions") or [])


def best_volume(pvc: Obj, volumes: Sequence[Obj]) -> Obj | None:
    """The smallest fitting Available volume (ties by name), or None."""
    free = [
        pv
        for pv in volumes
        if not (pv.get("spec") or {}).get("claimRef")
        and not meta(pv).get("deletionTimestamp")
        and volume_fits(pvc, pv)
    ]
    if not free:
        return None
    return min(free, key=lambda pv: (_storage(pv, "spec", "capacity", "storage"), name_of(pv)))


class VolumeController:
    def __init__(self, api: Api, timings: Any, wall: Callable[[], datetime]) -> None:
        self.api = api
        self.timings = timings
        self.wall = wall
        self.warned: set[str] = set()

    async def reconcile(
        self, pvs: Sequence[Obj], pvcs: Sequence[Obj], classes: Sequence[Obj], now: float
    ) -> None:
        claims = {(ns_of(c), name_of(c)): c for c in pvcs}
        volumes = {name_of(v): v for v in pvs}
        taken: set[str] = set()
        for pvc in sorted(pvcs, key=lambda c: str(meta(c).get("creationTimestamp", ""))):
            try:
                await self._sync_claim(pvc, volumes, classes, taken)
            except Exception:
                log.exception("pv controller: claim %s/%s", ns_of(pvc), name_of(pvc))
        for pv in pvs:
            if name_of(pv) in taken:
                continue
            try:
                await self._sync_volume(pv, claims)
            except Exception:
                log.exception("pv controller: volume %s", name_of(pv))

    async def _sync_claim(
        self, pvc: Obj, volumes: dict[str, Obj], classes: Sequence[Obj], taken: set[str]
    ) -> None:
        if meta(pvc).get("deletionTimestamp"):
            return
        spec = pvc.get("spec") or {}
        phase = (pvc.get("status") or {}).get("phase")
        wanted = spec.get("volumeName")
        if wanted:
            pv = volumes.get(str(wanted))
            if pv is None:
                if phase == "Bound":
                    await self._claim_phase(pvc, "Lost")
                return
            ref = (pv.get("spec") or {}).get("claimRef") or {}
            if ref.get("uid") == meta(pvc).get("uid"):
                if phase != "Bound":
                    await self._finish(pvc, pv)
                return
            if not ref and volume_fits(pvc, pv):
                await self._bind(pvc, pv)
                taken.add(name_of(pv))
            return
        pv = best_volume(pvc, [v for n, v in volumes.items() if n not in taken])
        if pv is None:
            pv = await self._provision(pvc, classes)
        if pv is None:
            key = str(meta(pvc).get("uid"))
            if key not in self.warned:
                self.warned.add(key)
                cls = claim_class(pvc)
                message = (
                    f'storageclass.storage.k8s.io "{cls}" not found'
                    if cls and not any(name_of(c) == cls for c in classes)
                    else "no persistent volumes available for this claim and no storage class "
                    "is set"
                    if not cls
                    else "waiting for a volume to be created or a matching volume to appear"
                )
                await record_event(
                    self.api,
                    pvc,
                    PVCS,
                    "Normal",
                    "FailedBinding",
                    message,
                    COMPONENT,
                    self.wall(),
                )
            if phase != "Pending":
                await self._claim_phase(pvc, "Pending")
            return
        taken.add(name_of(pv))
        await self._bind(pvc, pv)

    async def _provision(self, pvc: Obj, classes: Sequence[Obj]) -> Obj | None:
        cls = next((c for c in classes if name_of(c) == claim_class(pvc)), None)
        if cls is None or not str(cls.get("provisioner", "")).startswith(LAB_PROVISIONER_PREFIX):
            return None
        spec = pvc.get("spec") or {}
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        body: Obj = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": f"pvc-{meta(pvc).get('uid')}",
                "annotations": {PROVISIONED_BY: str(cls.get("provisioner"))},
            },
            "spec": {
                "capacity": {"storage": size},
                "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "storageClassName": name_of(cls),
                "persistentVolumeReclaimPolicy": cls.get("reclaimPolicy") or "Delete",
                "csi": {
                    "driver": str(cls.get("provisioner")),
                    "volumeHandle": f"pvc-{meta(pvc).get('uid')}",
                },
            },
        }
        created = await self.api.create(PVS, body)
        if created is not None:
            await record_event(
                self.api,
                pvc,
                PVCS,
                "Normal",
                "ProvisioningSucceeded",
                f"Successfully provisioned volume {name_of(created)}",
                COMPONENT,
                self.wall(),
            )
        return created

    async def _bind(self, pvc: Obj, pv: Obj) -> None:
        m = meta(pvc)
        claim_ref = {
            "kind": "PersistentVolumeClaim",
            "apiVersion": "v1",
            "namespace": ns_of(pvc),
            "name": name_of(pvc),
            "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"),
        }
        bound_pv = await self.api.patch(
            PVS,
            name_of(pv),
            {
                "metadata": {
                    "resourceVersion": meta(pv).get("resourceVersion"),
                    "annotations": {BOUND_BY_CONTROLLER: "yes"},
                },
                "spec": {"claimRef": claim_ref},
            },
        )
        if bound_pv is None:
            return
        await self.api.patch(PVS, name_of(pv), {"status": {"phase": "Bound"}}, subresource="status")
        annotations = {BIND_COMPLETED: "yes", BOUND_BY_CONTROLLER: "yes"}
        claim = await self.api.patch(
            PVCS,
            name_of(pvc),
            {"metadata": {"annotations": annotations}, "spec": {"volumeName": name_of(pv)}},
            ns_of(pvc),
        )
        if claim is not None:
            await self._finish(claim, bound_pv)

    async def _finish(self, pvc: Obj, pv: Obj) -> None:
        vspec = pv.get("spec") or {}
        await self.api.patch(
            PVCS,
            name_of(pvc),
            {
                "status": {
                    "phase": "Bound",
                    "capacity": dict(vspec.get("capacity") or {}),
                    "accessModes": list(vspec.get("accessModes") or []),
                }
            },
            ns_of(pvc),
            "status",
        )
        if (pv.get("status") or {}).get("phase") != "Bound":
            await self.api.patch(
                PVS, name_of(pv), {"status": {"phase": "Bound"}}, subresource="status"
            )

    async def _claim_phase(self, pvc: Obj, phase: str) -> None:
        await self.api.patch(PVCS, name_of(pvc), {"status": {"phase": phase}}, ns_of(pvc), "status")

    async def _sync_volume(self, pv: Obj, claims: dict[tuple[str, str], Obj]) -> None:
        if meta(pv).get("deletionTimestamp"):
            return
        ref = (pv.get("spec") or {}).get("claimRef")
        phase = (pv.get("status") or {}).get("phase")
        if not ref:
            if phase != "Available":
                await self.api.patch(
                    PVS, name_of(pv), {"status": {"phase": "Available"}}, subresource="status"
                )
            return
        claim = claims.get((str(ref.get("namespace")), str(ref.get("name"))))
        if claim is not None and (not ref.get("uid") or meta(claim).get("uid") == ref.get("uid")):
            return  # bound (or pre-bound and waiting for its claim's pass)
        if phase in ("Released", "Failed"):
            return
        policy = (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") or "Retain"
        if policy == "Delete":
            await self.api.delete(PVS, name_of(pv))
            return
        await self.api.patch(
            PVS, name_of(pv), {"status": {"phase": "Released"}}, subresource="status"
        )
