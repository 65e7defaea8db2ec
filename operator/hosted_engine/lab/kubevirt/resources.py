"""The KubeVirt, CDI, snapshot and export resources, and small object helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from hosted_engine.lab.kubevirt import (
    CDI_GROUP,
    EXPORT_GROUP,
    KUBEVIRT_GROUP,
    SNAPSHOT_GROUP,
)
from hosted_engine.lab.sim.api import Obj, Res, meta

VMS = Res(KUBEVIRT_GROUP, "v1", "virtualmachines", "VirtualMachine")
VMIS = Res(KUBEVIRT_GROUP, "v1", "virtualmachineinstances", "VirtualMachineInstance")
VMIMS = Res(
    KUBEVIRT_GROUP, "v1", "virtualmachineinstancemigrations", "VirtualMachineInstanceMigration"
)
KUBEVIRTS = Res(KUBEVIRT_GROUP, "v1", "kubevirts", "KubeVirt")
SNAPSHOTS = Res(SNAPSHOT_GROUP, "v1beta1", "virtualmachinesnapshots", "VirtualMachineSnapshot")
SNAPSHOT_CONTENTS = Res(
    SNAPSHOT_GROUP,
    "v1beta1",
    "virtualmachinesnapshotcontents",
    "VirtualMachineSnapshotContent",
)
RESTORES = Res(SNAPSHOT_GROUP, "v1beta1", "virtualmachinerestores", "VirtualMachineRestore")
EXPORTS = Res(EXPORT_GROUP, "v1beta1", "virtualmachineexports", "VirtualMachineExport")
DATAVOLUMES = Res(CDI_GROUP, "v1beta1", "datavolumes", "DataVolume")
CRDS = Res(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    namespaced=False,
)


def uid_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("uid", ""))


def owner_ref(obj: Mapping[str, Any], res: Res, controller: bool = True) -> Obj:
    return {
        "apiVersion": res.api_version,
        "kind": res.kind,
        "name": meta(obj).get("name", ""),
        "uid": uid_of(obj),
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def deleting(obj: Mapping[str, Any] | None) -> bool:
    return bool(obj and meta(obj).get("deletionTimestamp"))


def status(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("status") or {}


def phase(obj: Mapping[str, Any] | None) -> str:
    return str(status(obj).get("phase") or "")


def short_hash(text: str, length: int = 5) -> str:
    """A stable DNS-safe suffix (names must not depend on randomness: creates are idempotent)."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    digest = hashlib.sha256(text.encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


def set_condition(
    conditions: list[Obj] | None,
    ctype: str,
    value: str,
    reason: str = "",
    message: str = "",
    now: str = "",
) -> list[Obj]:
    """A copy of ``conditions`` with ``ctype`` set; lastTransitionTime moves only on change."""
    out = [dict(c) for c in conditions or []]
    for cond in out:
        if cond.get("type") == ctype:
            if cond.get("status") != value:
                cond["lastTransitionTime"] = now
            cond["status"] = value
            cond["reason"] = reason
            cond["message"] = message
            return out
    out.append(
        {
            "type": ctype,
            "status": value,
            "reason": reason,
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": now,
        }
    )
    return out


def without_condition(conditions: list[Obj] | None, ctype: str) -> list[Obj]:
    return [dict(c) for c in conditions or [] if c.get("type") != ctype]


def same_conditions(a: list[Obj] | None, b: list[Obj] | None) -> bool:
    """Equal ignoring timestamps."""

    def strip(conds: list[Obj] | None) -> list[tuple[Any, ...]]:
        return sorted(
            (c.get("type"), c.get("status"), c.get("reason") or "", c.get("message") or "")
            for c in conds or []
        )

    return strip(a) == strip(b)
