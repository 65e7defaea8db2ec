"""The engine upgrade's I/O (issue 10, hosted_engine.logic.upgrade): the pre-upgrade Backup, the
engine VM's disks. Synchronous (the kubernetes client): call it from a thread.

Only what the operator owns is written: the engine VM (its root volume and DataVolume
templates), the DataVolumes it created for the engine, and the pre-upgrade Backup objects it
creates (owned by the HostedEngine). A user's Backup is only read, for its target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from hosted_engine.adapters.kube import Body, Kube, Resource, hostedengine_resource
from hosted_engine.logic import upgrade as up

VMS: Final = Resource("kubevirt.io", "v1", "virtualmachines", namespaced=True)
DATAVOLUMES: Final = Resource("cdi.kubevirt.io", "v1beta1", "datavolumes", namespaced=True)
BACKUPS: Final = hostedengine_resource("backups", namespaced=True)


class UpgradeKube:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def backups(self, namespace: str) -> list[Body]:
        return self.kube.list(BACKUPS, namespace)

    def backup_state(self, namespace: str, name: str) -> tuple[str | None, str]:
        """(phase, message) of a Backup; (None, "") when it does not exist."""
        obj = self.kube.find(BACKUPS, name, namespace)
        if obj is None:
            return None, ""
        status = obj.get("status") or {}
        runs = status.get("runs") or []
        message = str((runs[-1] if runs else {}).get("message") or status.get("message") or "")
        return (str(status.get("phase")) if status.get("phase") else "Pending"), message[:512]

    def create_backup(
        self, namespace: str, name: str, source: str, he: str, owner: Mapping[str, Any]
    ) -> bool:
        """A one-shot Backup of ``he`` with the target of Backup ``source``; True when created
        (an existing one of that name is kept)."""
        src = self.kube.get(BACKUPS, source, namespace)
        body = up.pre_upgrade_backup(src, name=name, namespace=namespace, he=he)
        _, created = self.kube.create_or_get(BACKUPS, body, owner=owner)
        return created

    def patch_vm(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.kube.patch(VMS, name, patch, namespace)

    def delete_disk(self, namespace: str, name: str) -> bool:
        return self.kube.delete(DATAVOLUMES, name, namespace)
