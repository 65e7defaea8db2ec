"""Snapshots, restores, exports and CDI DataVolumes (k8s-anchors §1.6, §1.8, §1.9).

- VirtualMachineSnapshot: InProgress (the VM's ``status.snapshotInProgress`` names it), then after
  ``snapshot_delay`` a VirtualMachineSnapshotContent holding the VM spec and each claim's backup
  (its content seed and size) and ``readyToUse: true``, phase Succeeded; indications ``Online``
  plus ``GuestAgent``/``NoGuestAgent`` when the VM runs. A missing source fails at
  ``failureDeadline`` (default 5 min). ``deletionPolicy: Delete`` removes the content with it.
- VirtualMachineRestore: waits for the snapshot, applies ``targetReadinessPolicy`` to a running
  target (WaitGracePeriod: 5 min, StopTarget, FailImmediate, WaitEventually), creates the claims
  (``volumeRestorePolicy`` RandomizeNames, PrefixTargetName or InPlace) with the snapshot's
  content, then writes the VM spec from the snapshot (runStrategy Halted) and completes.
- VirtualMachineExport: a token Secret (``tokenSecretRef`` or a generated ``export-token-NAME``),
  Pending while the source VM runs or a source claim is in use, Ready after
  ``export_ready_delay`` with links to the HTTPS export proxy, removed at ``ttlDuration``.
- DataVolume: a claim of the same name, Pending until it is Bound, then: an http or s3 source
  is really downloaded by :mod:`.cdi`'s importer (failed attempts restart like CDI's importer
  pod); an upload source waits for the upload proxy (:mod:`.cdi`); other sources (pvc clone,
  registry, imageio) go ImportScheduled, ImportInProgress with ``progress`` over
  ``datavolume_import_time``, then Succeeded.

The content of every disk is the deterministic stream of :mod:`.diskstream`, keyed by the
claim's ``lab.hostedengine.io/disk-seed`` annotation (default ``NS/NAME``), which snapshots,
restores and imports carry along, so exported bytes can be checked.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import TYPE_CHECKING, Any

from hosted_engine.lab.kubevirt import DISK_SEED_ANNOTATION
from hosted_engine.lab.kubevirt import decisions as d
from hosted_engine.lab.kubevirt.export import ExportedVolume, ExportEntry
from hosted_engine.lab.kubevirt.resources import (
    DATAVOLUMES,
    EXPORTS,
    RESTORES,
    SNAPSHOT_CONTENTS,
    SNAPSHOTS,
    VMS,
    deleting,
    owner_ref,
    phase,
    same_conditions,
    set_condition,
    status,
    uid_of,
)
from hosted_engine.lab.sim.api import PVCS, SECRETS, Obj, meta, name_of, ns_of, parse_time
from hosted_engine.lab.sim.quantity import to_units

if TYPE_CHECKING:
    from hosted_engine.lab.kubevirt.sim import KubeVirtSim

SNAPSHOT_FINALIZER = "snapshot.kubevirt.io/vmsnapshot-protection"
DEFAULT_FAILURE_DEADLINE = 300.0
RESTORE_GRACE = 300.0
DEFAULT_EXPORT_TTL = 7200.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str | None, default: float) -> float:
    """A Go/Kubernetes duration ("2h", "1h30m", "90s") in seconds."""
    if not text:
        return default
    parts = _DURATION.findall(str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text).strip():
        return default
    factor = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * factor[u] for n, u in parts)


def claim_seed(pvc: Obj) -> str:
    seed = (meta(pvc).get("annotations") or {}).get(DISK_SEED_ANNOTATION)
    return str(seed) if seed else f"{ns_of(pvc)}/{name_of(pvc)}"


def claim_size(pvc: Obj) -> int:
    capacity = (status(pvc).get("capacity") or {}).get("storage")
    if capacity is None:
        capacity = (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get(
            "storage", "1Gi"
        )
    return to_units("storage", capacity)


class StorageControllers:
    def __init__(self, sim: KubeVirtSim) -> None:
        self.sim = sim
        self.api = sim.api
        self.first_seen: dict[str, float] = {}
        from hosted_engine.lab.kubevirt.cdi import CdiSim

        self.cdi = CdiSim(sim)

    def _since(self, obj: Obj) -> float:
        """Loop time at which this simulator first saw the object."""
        return self.first_seen.setdefault(uid_of(obj), self.sim.now())

    async def sync(self) -> None:
        snapshots = await self.sim.objects(SNAPSHOTS)
        for snap in snapshots:
            await self.sim._guard(self._sync_snapshot, snap)
        for restore in await self.sim.objects(RESTORES):
            await self.sim._guard(self._sync_restore, restore)
        exports = await self.sim.objects(EXPORTS)
        for export in exports:
            await self.sim._guard(self._sync_export, export)
        live = {(ns_of(e), name_of(e)) for e in exports if not deleting(e)}
        for key in [k for k in self.sim.exports.entries if k not in live]:
            self.sim.exports.entries.pop(key, None)
        for dv in await self.sim.objects(DATAVOLUMES):
            await self.sim._guard(self._sync_datavolume, dv)

    def _vmi_running(self, namespace: str, name: str) -> bool:
        vmi = self.sim.world.vmis.get((namespace, name))
        return vmi is not None and d.phase_of(vmi) not in d.FINAL_PHASES

    def _claims_of_vm(self, vm: Obj) -> list[tuple[str, Obj | None]]:
        spec = (((vm.get("spec") or {}).get("template") or {}).get("spec")) or {}
        out = []
        for volume, claim in d.claim_names(spec):
            out.append((volume, self.sim.world.pvcs.get((ns_of(vm), claim))))
        return out

    # -- snapshots --------------------------------------------------------------------------

    async def _sync_snapshot(self, snap: Obj) -> None:
        namespace = ns_of(snap)
        finalizers = list(meta(snap).get("finalizers") or [])
        content_name = f"vmsnapshot-content-{uid_of(snap)}"
        source = (snap.get("spec") or {}).get("source") or {}
        if deleting(snap):
            if (snap.get("spec") or {}).get("deletionPolicy", "Delete") == "Delete":
                await self.api.delete(SNAPSHOT_CONTENTS, content_name, namespace)
            await self._unlock_vm(namespace, str(source.get("name", "")), name_of(snap))
            if SNAPSHOT_FINALIZER in finalizers:
                finalizers.remove(SNAPSHOT_FINALIZER)
                await self.api.patch(SNAPSHOTS, name_of(snap),
                                     {"metadata": {"finalizers": finalizers}}, namespace)
            return
        if phase(snap) in ("Succeeded", "Failed"):
            return
        if SNAPSHOT_FINALIZER not in finalizers:
            await self.api.patch(SNAPSHOTS, name_of(snap),
                                 {"metadata": {"finalizers": [*finalizers, SNAPSHOT_FINALIZER]}},
                                 namespace)
        now = self.sim.stamp()
        since = self._since(snap)
        vm = self.sim.world.vms.get((namespace, str(source.get("name", ""))))
        conds = list(status(snap).get("conditions") or [])
        if vm is None or source.get("kind", "VirtualMachine") != "VirtualMachine":
            deadline = parse_duration((snap.get("spec") or {}).get("failureDeadline"),
                                      DEFAULT_FAILURE_DEADLINE)
            if deadline and self.sim.now() - since > deadline * self.sim.api_seconds:
                conds = set_condition(conds, "Failure", "True", "FailureDeadlineExceeded",
                                      "snapshot deadline exceeded", now)
                conds = set_condition(conds, "Progressing", "False", "Failed",
                                      "snapshot failed", now)
                await self._snap_status(snap, {
                    "phase": "Failed", "readyToUse": False, "conditions": conds,
                    "error": {"time": now, "message": "snapshot deadline exceeded"}})
                return
            conds = set_condition(conds, "Progressing", "False", "SourceDoesNotExist",
                                  f"Source {source.get('name')} does not exist", now)
            if not same_conditions(conds, status(snap).get("conditions")) or not phase(snap):
                await self._snap_status(snap, {"phase": "InProgress", "readyToUse": False,
                                               "conditions": conds})
            return
        if not phase(snap):
            indications = self._indications(vm)
            conds = set_condition(conds, "Progressing", "True", "InProgress",
                                  "Source locked and operation in progress", now)
            conds = set_condition(conds, "Ready", "False", "NotReady", "Not ready", now)
            await self._snap_status(snap, {
                "phase": "InProgress",
                "readyToUse": False,
                "sourceUID": uid_of(vm),
                "indications": [i for i, _ in indications],
                "sourceIndications": [{"indication": i, "message": m} for i, m in indications],
                "conditions": conds,
            })
            await self.api.patch(VMS, name_of(vm), {"status": {"snapshotInProgress":
                                                               name_of(snap)}},
                                 namespace, subresource="status")
            return
        if self.sim.now() - since < self.sim.timings.snapshot_delay:
            return
        backups = []
        included = []
        for volume, pvc in self._claims_of_vm(vm):
            if pvc is None:
                continue
            included.append(volume)
            backups.append({
                "volumeName": volume,
                "volumeSnapshotName": f"vmsnapshot-{uid_of(snap)}-volume-{volume}",
                "persistentVolumeClaim": {
                    "metadata": {
                        "name": name_of(pvc),
                        "annotations": {DISK_SEED_ANNOTATION: claim_seed(pvc)},
                        "labels": dict(meta(pvc).get("labels") or {}),
                    },
                    "spec": {
                        "accessModes": list((pvc.get("spec") or {}).get("accessModes") or []),
                        "resources": {"requests": {"storage": str(claim_size(pvc))}},
                        "storageClassName": (pvc.get("spec") or {}).get("storageClassName"),
                        "volumeMode": (pvc.get("spec") or {}).get("volumeMode", "Filesystem"),
                    },
                },
            })
        content: Obj = {
            "apiVersion": SNAPSHOT_CONTENTS.api_version,
            "kind": SNAPSHOT_CONTENTS.kind,
            "metadata": {"name": content_name, "namespace": namespace,
                         "ownerReferences": [owner_ref(snap, SNAPSHOTS)]},
            "spec": {
                "virtualMachineSnapshotName": name_of(snap),
                "source": {"virtualMachine": {
                    "metadata": {"name": name_of(vm), "namespace": namespace,
                                 "labels": dict(meta(vm).get("labels") or {}),
                                 "annotations": dict(meta(vm).get("annotations") or {})},
                    "spec": vm.get("spec") or {},
                }},
                "volumeBackups": backups,
            },
        }
        await self.api.create(SNAPSHOT_CONTENTS, content, namespace)
        await self.api.patch(SNAPSHOT_CONTENTS, content_name,
                             {"status": {"readyToUse": True, "creationTime": now}},
                             namespace, subresource="status")
        conds = set_condition(conds, "Progressing", "False", "Operation complete",
                              "Operation complete", now)
        conds = set_condition(conds, "Ready", "True", "Operation complete",
                              "Operation complete", now)
        await self._snap_status(snap, {
            "phase": "Succeeded",
            "readyToUse": True,
            "creationTime": now,
            "virtualMachineSnapshotContentName": content_name,
            "snapshotVolumes": {"includedVolumes": included, "excludedVolumes": []},
            "conditions": conds,
        })
        await self._unlock_vm(namespace, name_of(vm), name_of(snap))

    def _indications(self, vm: Obj) -> list[tuple[str, str]]:
        vmi = self.sim.world.vmis.get((ns_of(vm), name_of(vm)))
        if vmi is None or d.phase_of(vmi) != "Running":
            return []
        out = [("Online", "Snapshot was taken while the VM was running")]
        agent = any(c.get("type") == "AgentConnected" and c.get("status") == "True"
                    for c in status(vmi).get("conditions") or [])
        if agent:
            out.append(("GuestAgent", "The guest agent was connected: filesystems were frozen"))
        else:
            out.append(("NoGuestAgent", "No guest agent: the snapshot is crash-consistent"))
        return out

    async def _unlock_vm(self, namespace: str, vm_name: str, snap_name: str) -> None:
        vm = self.sim.world.vms.get((namespace, vm_name))
        if vm is not None and status(vm).get("snapshotInProgress") == snap_name:
            await self.api.patch(VMS, vm_name, {"status": {"snapshotInProgress": None}},
                                 namespace, subresource="status")

    async def _snap_status(self, snap: Obj, body: Obj) -> None:
        await self.api.patch(SNAPSHOTS, name_of(snap), {"status": body}, ns_of(snap), "status")

    # -- restores ---------------------------------------------------------------------------

    async def _sync_restore(self, restore: Obj) -> None:
        if status(restore).get("complete") or deleting(restore):
            return
        namespace = ns_of(restore)
        spec = restore.get("spec") or {}
        now = self.sim.stamp()
        conds = list(status(restore).get("conditions") or [])

        async def progress(reason: str, message: str) -> None:
            new = set_condition(conds, "Progressing", "True", reason, message, now)
            new = set_condition(new, "Ready", "False", reason, message, now)
            if not same_conditions(new, status(restore).get("conditions")):
                await self._restore_status(restore, {"complete": False, "conditions": new})

        async def fail(message: str) -> None:
            new = set_condition(conds, "Failure", "True", "RestoreFailed", message, now)
            new = set_condition(new, "Progressing", "False", "RestoreFailed", message, now)
            new = set_condition(new, "Ready", "False", "RestoreFailed", message, now)
            if not same_conditions(new, status(restore).get("conditions")):
                await self._restore_status(restore, {"complete": False, "conditions": new})

        snap = await self.api.get(SNAPSHOTS, str(spec.get("virtualMachineSnapshotName")),
                                  namespace)
        if snap is None or not status(snap).get("readyToUse"):
            await progress("VMSnapshotNotReady", "VirtualMachineSnapshot is not ready to use")
            return
        content = await self.api.get(
            SNAPSHOT_CONTENTS, str(status(snap).get("virtualMachineSnapshotContentName")),
            namespace)
        if content is None:
            await progress("VMSnapshotNotReady", "VirtualMachineSnapshotContent is missing")
            return
        target = str((spec.get("target") or {}).get("name"))
        vm = self.sim.world.vms.get((namespace, target))
        if vm is not None and self._vmi_running(namespace, target):
            policy = spec.get("targetReadinessPolicy") or "WaitGracePeriod"
            waited = self.sim.now() - self._since(restore)
            if policy == "FailImmediate":
                await fail("target VM is running")
            elif policy == "StopTarget":
                if d.run_strategy(vm) != "Halted":
                    await self.api.patch(VMS, target, {"spec": {"runStrategy": "Halted"}},
                                         namespace)
                await progress("TargetNotReady", "waiting for the target VM to stop")
            elif policy == "WaitGracePeriod" and waited > RESTORE_GRACE * self.sim.api_seconds:
                await fail("target VM did not stop within the grace period")
            else:
                await progress("TargetNotReady", "waiting for the target VM to be stopped")
            return
        if vm is not None and status(vm).get("restoreInProgress") != name_of(restore):
            await self.api.patch(VMS, target, {"status": {"restoreInProgress": name_of(restore)}},
                                 namespace, subresource="status")
        source_vm = ((content.get("spec") or {}).get("source") or {}).get("virtualMachine") or {}
        renames: dict[str, str] = {}
        restores = []
        pending = False
        for backup in (content.get("spec") or {}).get("volumeBackups") or []:
            claim_tpl = backup.get("persistentVolumeClaim") or {}
            original = str((claim_tpl.get("metadata") or {}).get("name"))
            policy = spec.get("volumeRestorePolicy") or "RandomizeNames"
            if policy == "InPlace":
                new_name = original
            elif policy == "PrefixTargetName":
                new_name = f"{target}-{backup.get('volumeName')}"
            else:
                new_name = f"restore-{uid_of(restore)}-{backup.get('volumeName')}"
            renames[original] = new_name
            restores.append({"volumeName": backup.get("volumeName"),
                             "persistentVolumeClaim": new_name,
                             "volumeSnapshotName": backup.get("volumeSnapshotName")})
            if not await self._restore_claim(restore, claim_tpl, new_name):
                pending = True
        if pending:
            await progress("RestoringVolumes", "creating the restored claims")
            return
        new_spec = _rename_claims(source_vm.get("spec") or {}, renames)
        new_spec["runStrategy"] = "Halted"
        new_spec.pop("running", None)
        if vm is None:
            body: Obj = {
                "apiVersion": VMS.api_version,
                "kind": VMS.kind,
                "metadata": {"name": target, "namespace": namespace,
                             "labels": dict((source_vm.get("metadata") or {}).get("labels") or {}),
                             "annotations": dict(
                                 (source_vm.get("metadata") or {}).get("annotations") or {})},
                "spec": new_spec,
            }
            await self.api.create(VMS, body, namespace)
        else:
            await self.api.patch(VMS, target, {"spec": new_spec}, namespace)
            await self.api.patch(VMS, target, {"status": {"restoreInProgress": None}},
                                 namespace, subresource="status")
        conds = set_condition(conds, "Progressing", "False", "Operation complete",
                              "Operation complete", now)
        conds = set_condition(conds, "Ready", "True", "Operation complete",
                              "Operation complete", now)
        await self._restore_status(restore, {"complete": True, "restoreTime": now,
                                             "restores": restores, "conditions": conds})

    async def _restore_claim(self, restore: Obj, template: Obj, name: str) -> bool:
        """Create (or replace, InPlace) the claim; True once it holds the snapshot's data."""
        namespace = ns_of(restore)
        tmeta = template.get("metadata") or {}
        seed = (tmeta.get("annotations") or {}).get(DISK_SEED_ANNOTATION, "")
        marker = "restore.kubevirt.io/name"
        existing = await self.api.get(PVCS, name, namespace)
        if existing is not None:
            annotations = meta(existing).get("annotations") or {}
            if annotations.get(marker) == name_of(restore):
                return True
            if not deleting(existing):
                await self.api.delete(PVCS, name, namespace)
            return False
        tspec = template.get("spec") or {}
        body: Obj = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": {DISK_SEED_ANNOTATION: seed, marker: name_of(restore)},
            },
            "spec": {k: v for k, v in tspec.items() if v is not None},
        }
        await self.api.create(PVCS, body, namespace)
        return True

    async def _restore_status(self, restore: Obj, body: Obj) -> None:
        await self.api.patch(RESTORES, name_of(restore), {"status": body}, ns_of(restore),
                             "status")

    # -- exports ----------------------------------------------------------------------------

    async def _export_token(self, export: Obj) -> tuple[str, str] | None:
        namespace = ns_of(export)
        ref = (export.get("spec") or {}).get("tokenSecretRef")
        name = str(ref or f"export-token-{name_of(export)}")
        secret = await self.api.get(SECRETS, name, namespace)
        if secret is None:
            if ref:
                return None
            token = secrets.token_urlsafe(24)
            await self.api.create(SECRETS, {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace,
                             "ownerReferences": [owner_ref(export, EXPORTS)]},
                "type": "Opaque",
                "data": {"token": base64.b64encode(token.encode()).decode()},
            }, namespace)
            return name, token
        data = (secret.get("data") or {}).get("token")  # the API server folds stringData in
        return (name, base64.b64decode(data).decode()) if data else None

    async def _export_volumes(self, export: Obj) -> tuple[list[ExportedVolume], str, str]:
        """(volumes, VM name, reason to wait) of an export's source."""
        namespace = ns_of(export)
        source = (export.get("spec") or {}).get("source") or {}
        kind, name = str(source.get("kind", "")), str(source.get("name", ""))
        if kind == "VirtualMachine":
            vm = self.sim.world.vms.get((namespace, name))
            if vm is None:
                return [], "", f"VirtualMachine {name} not found"
            if self._vmi_running(namespace, name):
                return [], name, f"Virtual Machine {namespace}/{name} is running"
            volumes = []
            for volume, pvc in self._claims_of_vm(vm):
                if pvc is None:
                    return [], name, f"claim of volume {volume} not found"
                volumes.append(ExportedVolume(volume, claim_seed(pvc), claim_size(pvc)))
            return volumes, name, ""
        if kind == "PersistentVolumeClaim":
            pvc = self.sim.world.pvcs.get((namespace, name))
            if pvc is None:
                return [], "", f"PersistentVolumeClaim {name} not found"
            for vmi in self.sim.world.vmis.values():
                if ns_of(vmi) == namespace and d.phase_of(vmi) not in d.FINAL_PHASES and any(
                    claim == name for _, claim in d.claim_names(vmi.get("spec") or {})
                ):
                    return [], "", f"pvc {namespace}/{name} is in use"
            return [ExportedVolume(name, claim_seed(pvc), claim_size(pvc))], "", ""
        if kind == "VirtualMachineSnapshot":
            snap = await self.api.get(SNAPSHOTS, name, namespace)
            if snap is None or not status(snap).get("readyToUse"):
                return [], "", f"VirtualMachineSnapshot {name} is not ready"
            content = await self.api.get(
                SNAPSHOT_CONTENTS, str(status(snap).get("virtualMachineSnapshotContentName")),
                namespace)
            volumes = []
            for backup in ((content or {}).get("spec") or {}).get("volumeBackups") or []:
                tpl = backup.get("persistentVolumeClaim") or {}
                seed = ((tpl.get("metadata") or {}).get("annotations") or {}).get(
                    DISK_SEED_ANNOTATION, "")
                size = to_units("storage", (((tpl.get("spec") or {}).get("resources") or {})
                                            .get("requests") or {}).get("storage", "1Gi"))
                volumes.append(ExportedVolume(str(backup.get("volumeName")), str(seed), size))
            vm_name = str((((content or {}).get("spec") or {}).get("source") or {}).get(
                "virtualMachine", {}).get("metadata", {}).get("name", ""))
            return volumes, vm_name, ""
        return [], "", f"unsupported source kind {kind}"

    async def _sync_export(self, export: Obj) -> None:
        if deleting(export):
            return
        namespace, name = ns_of(export), name_of(export)
        since = self._since(export)
        ttl = parse_duration((export.get("spec") or {}).get("ttlDuration"), DEFAULT_EXPORT_TTL)
        if self.sim.now() - since > ttl * self.sim.api_seconds:
            self.sim.exports.entries.pop((namespace, name), None)
            await self.api.delete(EXPORTS, name, namespace)
            return
        now = self.sim.stamp()
        conds = list(status(export).get("conditions") or [])
        token = await self._export_token(export)
        volumes, vm_name, wait = await self._export_volumes(export)
        if token is None:
            wait = "token secret not found"
        if not wait and self.sim.now() - since < self.sim.timings.export_ready_delay:
            wait = "export server is starting"
        if wait:
            self.sim.exports.entries.pop((namespace, name), None)
            new = set_condition(conds, "Ready", "False", "PodPending", wait, now)
            new = set_condition(new, "PVCReady", "False", "InUse", wait, now)
            if phase(export) != "Pending" or not same_conditions(new, conds):
                await self._export_status(export, {"phase": "Pending", "conditions": new,
                                                   "links": None})
            return
        assert token is not None
        secret_name, token_value = token
        self.sim.exports.entries[(namespace, name)] = ExportEntry(
            token=token_value, volumes={v.name: v for v in volumes})
        if phase(export) == "Ready":
            return
        base = self.sim.exports.export_url(namespace, name)
        link = {
            "cert": self.sim.exports.ca_pem,
            "volumes": [
                {"name": v.name, "formats": [
                    {"format": "raw", "url": f"{base}/volumes/{v.name}/disk.img"},
                    {"format": "gzip", "url": f"{base}/volumes/{v.name}/disk.img.gz"},
                ]}
                for v in volumes
            ],
        }
        new = set_condition(conds, "Ready", "True", "PodReady", "", now)
        new = set_condition(new, "PVCReady", "True", "Bound", "", now)
        expires = parse_time(meta(export).get("creationTimestamp"))
        body: Obj = {
            "phase": "Ready",
            "conditions": new,
            "links": {"internal": link, "external": link},
            "serviceName": f"virt-export-{name}",
            "tokenSecretRef": secret_name,
        }
        if vm_name:
            body["virtualMachineName"] = vm_name
        if expires is not None:
            from datetime import timedelta

            body["ttlExpirationTime"] = (expires + timedelta(seconds=ttl)).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
        await self._export_status(export, body)

    async def _export_status(self, export: Obj, body: Obj) -> None:
        await self.api.patch(EXPORTS, name_of(export), {"status": body}, ns_of(export), "status")

    # -- CDI --------------------------------------------------------------------------------

    async def ensure_data_volumes(self, vm: Obj) -> bool:
        """Create the VM's dataVolumeTemplates; True when all of them have Succeeded."""
        ready = True
        for template in (vm.get("spec") or {}).get("dataVolumeTemplates") or []:
            tmeta = template.get("metadata") or {}
            name = str(tmeta.get("name", ""))
            dv = await self.api.get(DATAVOLUMES, name, ns_of(vm))
            if dv is None:
                ready = False
                await self.api.create(DATAVOLUMES, {
                    "apiVersion": DATAVOLUMES.api_version,
                    "kind": DATAVOLUMES.kind,
                    "metadata": {**tmeta, "namespace": ns_of(vm),
                                 "ownerReferences": [owner_ref(vm, VMS)]},
                    "spec": template.get("spec") or {},
                }, ns_of(vm))
            elif phase(dv) != "Succeeded":
                ready = False
        return ready

    async def _sync_datavolume(self, dv: Obj) -> None:
        if deleting(dv) or phase(dv) in ("Succeeded", "Failed"):
            return
        namespace, name = ns_of(dv), name_of(dv)
        spec = dv.get("spec") or {}
        now = self.sim.stamp()
        conds = list(status(dv).get("conditions") or [])
        pvc = self.sim.world.pvcs.get((namespace, name)) or await self.api.get(PVCS, name,
                                                                                namespace)
        if pvc is None:
            storage = spec.get("storage") or spec.get("pvc") or {}
            source = spec.get("source") or {}
            if "http" in source:
                seed = f"http:{(source['http'] or {}).get('url', '')}"
            elif "pvc" in source:
                src = source["pvc"] or {}
                src_pvc = await self.api.get(PVCS, str(src.get("name")),
                                             str(src.get("namespace") or namespace))
                seed = claim_seed(src_pvc) if src_pvc else f"{namespace}/{name}"
            else:
                seed = f"{namespace}/{name}"
            claim_spec: Obj = {
                "accessModes": list(storage.get("accessModes") or ["ReadWriteOnce"]),
                "resources": storage.get("resources") or {"requests": {"storage": "1Gi"}},
                "volumeMode": storage.get("volumeMode") or "Filesystem",
            }
            if storage.get("storageClassName"):
                claim_spec["storageClassName"] = storage["storageClassName"]
            await self.api.create(PVCS, {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": namespace,
                             "annotations": {DISK_SEED_ANNOTATION: seed,
                                             "cdi.kubevirt.io/storage.import.endpoint":
                                             str(((spec.get("source") or {}).get("http") or {})
                                                 .get("url", ""))},
                             "ownerReferences": [owner_ref(dv, DATAVOLUMES)]},
                "spec": claim_spec,
            }, namespace)
            conds = set_condition(conds, "Bound", "False", "Pending", "PVC Pending", now)
            conds = set_condition(conds, "Ready", "False", "", "", now)
            conds = set_condition(conds, "Running", "False", "", "", now)
            await self._dv_status(dv, {"phase": "Pending", "progress": "N/A", "claimName": name,
                                       "restartCount": 0, "conditions": conds})
            return
        if status(pvc).get("phase") != "Bound":
            return
        current = phase(dv)
        source = spec.get("source") or {}
        blank = "blank" in source
        upload = "upload" in source
        if current in ("", "Pending"):
            conds = set_condition(conds, "Bound", "True", "Bound", "PVC Bound", now)
            next_phase = "Succeeded" if blank else (
                "UploadScheduled" if upload else "ImportScheduled")
            if blank:
                conds = set_condition(conds, "Ready", "True", "", "", now)
            await self._dv_status(dv, {"phase": next_phase,
                                       "progress": "100.0%" if blank else "N/A",
                                       "conditions": conds})
            return
        if upload:
            await self.cdi.sync_upload(dv, conds, now)
            return
        if "http" in source or "s3" in source:
            await self.cdi.sync_import(dv, pvc, conds, now)
            return
        started = self.first_seen.setdefault(f"import-{uid_of(dv)}", self.sim.now())
        total = self.sim.timings.datavolume_import_time
        done = 1.0 if total <= 0 else min(1.0, (self.sim.now() - started) / total)
        if done >= 1.0:
            conds = set_condition(conds, "Running", "False", "Completed", "Import Complete", now)
            conds = set_condition(conds, "Ready", "True", "", "", now)
            await self._dv_status(dv, {"phase": "Succeeded", "progress": "100.0%",
                                       "conditions": conds})
            return
        conds = set_condition(conds, "Running", "True", "Pod is running", "", now)
        await self._dv_status(dv, {"phase": "ImportInProgress", "progress": f"{done * 100:.2f}%",
                                   "conditions": conds})

    async def _dv_status(self, dv: Obj, body: Obj) -> None:
        await self.api.patch(DATAVOLUMES, name_of(dv), {"status": body}, ns_of(dv), "status")


def _rename_claims(spec: Obj, renames: dict[str, str]) -> dict[str, Any]:
    out = dict(spec)
    template = dict(out.get("template") or {})
    tspec = dict(template.get("spec") or {})
    volumes = []
    for volume in tspec.get("volumes") or []:
        vol = dict(volume)
        if "persistentVolumeClaim" in vol:
            claim = str(vol["persistentVolumeClaim"].get("claimName"))
            vol["persistentVolumeClaim"] = {**vol["persistentVolumeClaim"],
                                            "claimName": renames.get(claim, claim)}
        elif "dataVolume" in vol:
            claim = str(vol["dataVolume"].get("name"))
            vol = {"name": vol["name"],
                   "persistentVolumeClaim": {"claimName": renames.get(claim, claim)}}
        volumes.append(vol)
    tspec["volumes"] = volumes
    template["spec"] = tspec
    out["template"] = template
    out.pop("dataVolumeTemplates", None)
    return out
