"""Restore handlers: a new engine from a verified backup run (issue 9).

How it runs
    One kopf daemon per Restore, until it has Succeeded or Failed:

    1. Verifying: the run is found (a Backup's run, by default its last successful one, or a
       folder on a target); its manifest is read (and, for a Backup's run, compared with the
       manifest SHA-256 recorded in the Backup's status), then every object it lists is read
       back and its size and SHA-256 compared (the disk's raw bytes too). Any mismatch refuses
       the restore (``Verified=False/ChecksumMismatch``, the objects in ``status.mismatches``, a
       Warning Event) **before anything is created**. A HostedEngine of the requested name that
       this Restore did not create also refuses it.
    2. Restoring: a CDI DataVolume ``<name>-restored-disk`` imports the stored disk from S3
       (a Secret with CDI's key names and, for a CA bundle, a ConfigMap are created for it,
       owned by the Restore); once it has Succeeded, the new HostedEngine is created with the
       backed-up spec (same FQDN), its disk cloned from that claim (``spec.vm.image.pvc``).
       It is *not* owned by the Restore: deleting the Restore never deletes the engine.
    3. Other VirtualMachines in the run (``Backup.spec.source.vmSelector``) are verified with
       it and listed in ``status.virtualMachines``; the Restore recreates only the engine.
    4. Hosts recorded in the backup (the engine's host table and allowed names) that are absent
       or not operational are reported in ``status.missingHosts``; with ``cleanMissingHosts``
       the new engine's allowed host list leaves them out (``cleaned: true``).

    Every step is idempotent (deterministic names, create-or-get) and the phase is in status
    before the step acts, so a restarted operator resumes where it stopped.

    A run on a directory (filesystem target) cannot be read by CDI: its DataVolume has
    ``source.upload`` and, once UploadReady, the operator streams the stored disk (gzip) to
    CDI's upload proxy with a token from an UploadTokenRequest (ADR 0005). CDI retries a
    failing import for ever (``restartCount``); after ``IMPORT_RESTARTS`` restarts the restore
    fails with the importer's message.

    A run on a ``pvc`` target is only reachable from a pod: a data mover Job
    (:mod:`hosted_engine.adapters.pvcstore`) measures every object for the verification (the
    comparison with the manifest is done here), and another one streams the disk to the upload
    proxy (its token in a Secret owned by the Restore).

Limits
    Only the engine is recreated; other VMs of the run are verified and listed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import kopf
from pydantic import ValidationError

from hosted_engine import API_GROUP, API_VERSION
from hosted_engine.adapters.export import (
    BACKUPS,
    CONFIGMAPS,
    DATAVOLUMES,
    HOSTEDENGINES,
    HOSTS,
    RESTORE_LABEL,
    RESTORES,
    STORAGEDOMAINS,
    Cancelled,
    UploadRefused,
    Verification,
    import_disk_body,
    pvc_folder,
    run_prefix,
    upload_disk,
    upload_disk_body,
    upload_proxy,
    upload_token,
    verification_from_measures,
    verify_run,
)
from hosted_engine.adapters.kube import SECRETS, Kube, KubeError
from hosted_engine.adapters.objectstore import ObjectStore, StoreError, open_store
from hosted_engine.adapters.pvcstore import PvcJobs, secret_env
from hosted_engine.clock import get_clock
from hosted_engine.handlers.host import Triggers
from hosted_engine.handlers.startup import kube_client
from hosted_engine.logic import backup as lb
from hosted_engine.models import describe_validation_error
from hosted_engine.models.backup import BackupTarget, RunPhase
from hosted_engine.models.conditions import (
    Condition,
    ConditionType,
    Reason,
    get_condition,
    set_condition,
)
from hosted_engine.models.restore import (
    ChecksumMismatch,
    HostReport,
    RestorePhase,
    RestoreSpec,
    RestoreStatus,
)

log = logging.getLogger(__name__)

PLURAL: Final = "restores"
POLL: Final = 1.0
#: importer restarts (CDI retries a failing import for ever) after which a restore gives up
IMPORT_RESTARTS: Final = 3
ERROR_BACKOFF: Final = 5.0
_STATE: Final = "restore-state"
_CDI_ACCESS: Final = "accessKeyId"
_CDI_SECRET: Final = "secretKey"


class Refused(Exception):
    """The restore cannot go on (message for the status and the Events)."""


class RestoreReconciler:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.pvc = PvcJobs(kube)

    def _source(self, namespace: str, spec: RestoreSpec
                ) -> tuple[BackupTarget, str, str, str | None]:
        """(target, folder, run id, expected manifest SHA-256) of the run to restore."""
        if spec.source.backup is not None:
            ref = spec.source.backup
            backup = self.kube.find(BACKUPS, ref.name, namespace)
            if backup is None:
                raise Refused(f"Backup {ref.name} not found")
            bspec = backup.get("spec") or {}
            status = backup.get("status") or {}
            run_id = ref.run or status.get("lastSuccessfulRun")
            if not run_id:
                raise Refused(f"Backup {ref.name} has no successful run")
            run = next((r for r in status.get("runs") or [] if r.get("id") == run_id), None)
            if run is None or run.get("phase") != RunPhase.SUCCEEDED:
                raise Refused(f"run {run_id} of Backup {ref.name} is not a successful run")
            try:
                target = BackupTarget.model_validate(bspec.get("target") or {})
            except ValidationError as exc:
                raise Refused(f"Backup {ref.name}: {describe_validation_error(exc)}") from None
            he = str((bspec.get("source") or {}).get("hostedEngine"))
            return target, run_prefix(namespace, he, run_id), run_id, run.get("manifestSha256")
        assert spec.source.location is not None
        loc = spec.source.location
        folder = loc.run.strip("/")
        if folder.count("/") != 2:
            raise Refused("location.run must be the run's folder relative to the target: "
                          "<namespace>/<hostedengine>/<run-id>")
        return loc.target, folder, folder.rsplit("/", 1)[1], None

    def reconcile(self, namespace: str, name: str, stop: threading.Event) -> float | None:
        """One step; None when the restore is over."""
        body = self.kube.find(RESTORES, name, namespace)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        now = get_clock().now()
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        raw = body.get("status") or {}
        conds = _conditions(raw)
        try:
            spec = RestoreSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            message = describe_validation_error(exc, "spec")
            old = get_condition(conds, ConditionType.READY)
            if old is None or old.message != message:
                conds = set_condition(conds, ConditionType.READY, False, Reason.INVALID_SPEC,
                                      message, observed_generation=generation, now=now)
                self._patch(namespace, name, {"conditions": _dump(conds)})
                self._event(body, "Warning", Reason.INVALID_SPEC, message)
            return lb.IDLE_POLL
        try:
            status = RestoreStatus.model_validate(raw)
        except ValidationError:
            status = RestoreStatus()
        if status.phase in (RestorePhase.SUCCEEDED, RestorePhase.FAILED):
            return None
        try:
            return self._step(body, spec, status, conds, generation, now, stop)
        except Refused as exc:
            self._fail(body, status, conds, generation, now, str(exc))
            return None

    def _step(self, body: Mapping[str, Any], spec: RestoreSpec, status: RestoreStatus,
              conds: list[Condition], generation: int, now: datetime,
              stop: threading.Event) -> float | None:
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        target, folder, run_id, manifest_sha = self._source(namespace, spec)
        if status.phase == RestorePhase.PENDING:
            status.phase = RestorePhase.VERIFYING
            status.started_at = now
            status.run = run_id
            self._write(namespace, name, status, conds, generation, now)
        store: ObjectStore | None = None
        if target.pvc is None:
            try:
                store = open_store(self.kube, namespace, target)
            except StoreError as exc:
                raise Refused(str(exc)) from None
        try:
            try:
                if store is None:  # a pvc target: a data mover Job measures the run
                    pvc_check = self._pvc_verify(body, target, folder, manifest_sha)
                    if pvc_check is None:
                        return POLL
                    check = pvc_check
                else:
                    # the whole run once; after that (a resumed or waiting restore), the
                    # manifest and the engine's definition only
                    only = None if status.verified_at is None else [lb.HE_DEFINITION]
                    check = verify_run(store, folder, manifest_sha, stop, only)
            except (StoreError, lb.ManifestError) as exc:
                raise Refused(f"run {run_id} cannot be read: {exc}") from None
            if stop.is_set():
                raise Cancelled("operator stopping")
            if check.mismatches:
                status.mismatches = [ChecksumMismatch(object=m.object, expected=m.expected,
                                                      actual=m.actual)
                                     for m in check.mismatches[:100]]
                status.objects_verified = check.verified
                conds = set_condition(
                    conds, ConditionType.VERIFIED, False, Reason.CHECKSUM_MISMATCH,
                    f"{len(check.mismatches)} object(s) do not match the manifest: "
                    + ", ".join(m.object for m in check.mismatches[:5]),
                    observed_generation=generation, now=now)
                self._fail(body, status, conds, generation, now,
                           f"run {run_id} is corrupt: nothing was created",
                           reason=Reason.CHECKSUM_MISMATCH)
                return None
            he_def = check.he_definition
            if status.verified_at is None:
                status.verified_at = now
                status.objects_verified = check.verified
                conds = set_condition(conds, ConditionType.VERIFIED, True, "ChecksumsMatch",
                                      f"{check.verified} objects verified",
                                      observed_generation=generation, now=now)
                self._event(body, "Normal", "RestoreVerified",
                            f"run {run_id}: {check.verified} objects match the manifest")
            he_name = spec.hosted_engine_name
            existing = self.kube.find(HOSTEDENGINES, he_name, namespace)
            ours = existing is not None and (
                (existing.get("metadata") or {}).get("labels") or {}).get(RESTORE_LABEL) == name
            if existing is not None and not ours:
                raise Refused(f"HostedEngine {he_name} already exists")
            recorded = lb.recorded_hosts(he_def)
            present = {str(h["metadata"]["name"]): (h.get("status") or {}).get("state")
                       for h in self.kube.list(HOSTS)}
            missing = lb.missing_hosts(recorded, present)
            clean = spec.clean_missing_hosts and bool(missing)
            status.missing_hosts = [HostReport(name=h, reason=r, cleaned=clean)
                                    for h, r in missing]
            status.phase = RestorePhase.RESTORING
            status.hosted_engine = he_name
            status.virtual_machines = [
                str(v) for v in (check.manifest.get("source") or {}).get("virtualMachines")
                or []][:100]
            self._write(namespace, name, status, conds, generation, now)
            claim = lb.restored_disk_name(he_name)
            disk: Mapping[str, Any] = next(
                (o for o in check.manifest["objects"] if o.get("name") == lb.DISK), {})
            if not self._disk_ready(body, spec, target, folder, claim, he_def, store, disk,
                                    stop):
                return POLL
            if existing is None:
                engine_spec = lb.restored_engine_spec(
                    he_def, claim=claim, storage_domain=spec.storage_domain,
                    remove_hosts=[h for h, _ in missing] if clean else [], recorded=recorded)
                he_meta = he_def.get("metadata") or {}
                self.kube.create_or_get(HOSTEDENGINES, {
                    "apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "HostedEngine",
                    "metadata": {"name": he_name, "namespace": namespace,
                                 "labels": {**(he_meta.get("labels") or {}),
                                            RESTORE_LABEL: name},
                                 "annotations": dict(he_meta.get("annotations") or {})},
                    "spec": engine_spec,
                })
        finally:
            if store is not None:
                store.close()
        status.phase = RestorePhase.SUCCEEDED
        status.finished_at = get_clock().now()
        conds = set_condition(conds, ConditionType.SUCCEEDED, True, "EngineCreated",
                              f"HostedEngine {he_name} created from run {run_id}",
                              observed_generation=generation, now=now)
        self._write(namespace, name, status, conds, generation, now)
        gone = ", ".join(h.name for h in status.missing_hosts)
        self._event(body, "Normal", "RestoreSucceeded",
                    f"HostedEngine {he_name} created from run {run_id}"
                    + (f"; hosts missing or not operational: {gone}" if gone else ""))
        return None

    def _disk_ready(self, owner: Mapping[str, Any], spec: RestoreSpec, target: BackupTarget,
                    folder: str, claim: str, he_def: Mapping[str, Any],
                    store: ObjectStore | None, disk: Mapping[str, Any],
                    stop: threading.Event) -> bool:
        """Create (once) the DataVolume of the disk; True once it has Succeeded.

        S3: CDI imports the stored disk itself. A directory: CDI cannot read it, so the
        DataVolume waits for an upload (``source.upload``) and the operator streams the stored
        disk to CDI's upload proxy once it is UploadReady (ADR 0005)."""
        namespace = str((owner.get("metadata") or {}).get("namespace"))
        dv = self.kube.find(DATAVOLUMES, claim, namespace)
        if dv is not None:
            st = dv.get("status") or {}
            phase = st.get("phase")
            if phase == "Failed":
                raise Refused(f"import of the disk failed (DataVolume {claim})")
            restarts = int(st.get("restartCount") or 0)
            if restarts >= IMPORT_RESTARTS and phase != "Succeeded":
                running: Mapping[str, Any] = next((c for c in st.get("conditions") or []
                                if c.get("type") == "Running"), {})
                raise Refused(f"import of the disk failed {restarts} times (DataVolume "
                              f"{claim}): {running.get('message') or 'no message'}")
            if phase == "UploadReady":
                if store is None:
                    self._pvc_upload(owner, target, folder, claim, disk)
                else:
                    self._upload(namespace, claim, store, folder, disk, stop)
                return False
            return bool(phase == "Succeeded")
        labels = {RESTORE_LABEL: str((owner.get("metadata") or {}).get("name"))}
        he_vm = (he_def.get("spec") or {}).get("vm") or {}
        size = str((he_vm.get("disk") or {}).get("size") or "58Gi")
        domain = spec.storage_domain or (he_vm.get("disk") or {}).get("storageDomain")
        sd_status: Mapping[str, Any] = {}
        if domain:
            sd_status = (self.kube.find(STORAGEDOMAINS, str(domain)) or {}).get("status") or {}
        if target.s3 is None:
            self.kube.create_or_get(DATAVOLUMES, upload_disk_body(
                namespace, claim, size=size, storage_class=sd_status.get("storageClassName"),
                labels=labels, access_modes=sd_status.get("accessModes"),
                volume_mode=sd_status.get("volumeMode")), owner=owner)
            return False
        s3 = target.s3
        ref = s3.credentials_secret_ref
        try:
            access = self.kube.read_secret(ref.namespace or namespace, ref.name, "accessKeyId")
            secret = self.kube.read_secret(ref.namespace or namespace, ref.name,
                                           "secretAccessKey")
        except KubeError as exc:
            raise Refused(str(exc)) from None
        self.kube.create_or_get(SECRETS, {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": claim, "namespace": namespace, "labels": labels},
            "data": {_CDI_ACCESS: _b64(access.get_secret_value()),
                     _CDI_SECRET: _b64(secret.get_secret_value())},
        }, owner=owner)
        ca_map = None
        if s3.ca_bundle_secret_ref is not None:
            ca_ref = s3.ca_bundle_secret_ref
            ca = self.kube.read_secret(ca_ref.namespace or namespace, ca_ref.name, ca_ref.key)
            ca_map = claim
            self.kube.create_or_get(CONFIGMAPS, {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": claim, "namespace": namespace, "labels": labels},
                "data": {"ca.pem": ca.get_secret_value()},
            }, owner=owner)
        prefix = "/".join(p for p in (s3.prefix.strip("/"), folder, lb.DISK) if p)
        url = f"{str(s3.endpoint).rstrip('/')}/{s3.bucket}/{prefix}"
        self.kube.create_or_get(DATAVOLUMES, import_disk_body(
            namespace, claim, url=url, secret=claim, ca_config_map=ca_map, size=size,
            storage_class=sd_status.get("storageClassName"), labels=labels,
            access_modes=sd_status.get("accessModes"), volume_mode=sd_status.get("volumeMode"),
        ), owner=owner)
        return False

    def _upload(self, namespace: str, claim: str, store: ObjectStore, folder: str,
                disk: Mapping[str, Any], stop: threading.Event) -> None:
        """Stream the stored disk to CDI's upload proxy (a fresh token each attempt). What was
        sent is hashed on the way: bytes that no longer match the verified manifest refuse the
        restore and the DataVolume is deleted."""
        try:
            proxy = upload_proxy(self.kube)
            token = upload_token(self.kube, namespace, claim)
            sent = upload_disk(proxy, token, store.iter_object(f"{folder}/{lb.DISK}"), stop)
        except UploadRefused as exc:
            raise Refused(f"the upload of the disk was refused: {exc}") from None
        if disk and (sent.size != disk.get("size") or sent.sha256 != disk.get("sha256")):
            with contextlib.suppress(KubeError):
                self.kube.delete(DATAVOLUMES, claim, namespace)
            raise Refused(f"{lb.DISK} changed after it was verified (sent {sent.size} bytes, "
                          f"SHA-256 {sent.sha256}); the uploaded disk was deleted")
        log.info("restore: disk uploaded to DataVolume %s/%s (%d bytes)", namespace, claim,
                 sent.size)

    def _pvc_verify(self, owner: Mapping[str, Any], target: BackupTarget, folder: str,
                    manifest_sha: str | None) -> Verification | None:
        """A pvc target: a data mover Job measures the run (None while it runs)."""
        assert target.pvc is not None
        meta = owner.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        job = lb.child_name(name, "verify")
        path = pvc_folder(target.pvc.path, folder)
        done = self.pvc.result(namespace, job)
        if done is None:
            if not self.pvc.exists(namespace, job):
                self.pvc.start(dict(owner), job, target.pvc.claim_name,
                               ["verify", "/target", path], purpose="restore-verify",
                               read_only=True)
            return None
        if done.error is not None or done.result is None:
            raise Refused(f"the run cannot be read: {done.error}")
        return verification_from_measures(done.result, manifest_sha)

    def _pvc_upload(self, owner: Mapping[str, Any], target: BackupTarget, folder: str,
                    claim: str, disk: Mapping[str, Any]) -> None:
        """A pvc target: a data mover Job streams the disk to CDI's upload proxy."""
        assert target.pvc is not None
        meta = owner.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        job = lb.child_name(name, "upload")
        done = self.pvc.result(namespace, job)
        if done is None:
            if self.pvc.exists(namespace, job):
                return
            proxy = upload_proxy(self.kube)
            self.pvc.secret(dict(owner), job, "token", upload_token(self.kube, namespace, claim))
            self.pvc.start(dict(owner), job, target.pvc.claim_name,
                           ["upload", "/target", pvc_folder(target.pvc.path, folder),
                            "/mover/config.json"], purpose="restore-upload",
                           config={"url": proxy.url, "ca": proxy.ca_pem or ""},
                           env=[secret_env("UPLOAD_TOKEN", job, "token")], read_only=True)
            return
        if done.error is not None or done.result is None:
            raise Refused(f"the upload of the disk failed: {done.error}")
        sent = done.result
        if disk and (sent.get("size") != disk.get("size")
                     or sent.get("sha256") != disk.get("sha256")):
            self.kube.delete(DATAVOLUMES, claim, namespace)
            raise Refused(f"{lb.DISK} changed after it was verified; the uploaded disk was "
                          "deleted")

    # -- status -----------------------------------------------------------------------------
    def _fail(self, body: Mapping[str, Any], status: RestoreStatus, conds: list[Condition],
              generation: int, now: datetime, message: str,
              reason: str = "RestoreRefused") -> None:
        meta = body.get("metadata") or {}
        status.phase = RestorePhase.FAILED
        status.finished_at = now
        status.message = message[:1000]
        conds = set_condition(conds, ConditionType.SUCCEEDED, False, reason, message[:1000],
                              observed_generation=generation, now=now)
        self._write(str(meta.get("namespace")), str(meta.get("name")), status, conds,
                    generation, now)
        self._event(body, "Warning", reason, message)

    def _write(self, namespace: str, name: str, status: RestoreStatus,
               conds: list[Condition], generation: int, now: datetime) -> None:
        conds = set_condition(conds, ConditionType.READY, True, Reason.RECONCILED, "",
                              observed_generation=generation, now=now)
        status.conditions = conds
        status.observed_generation = generation
        self._patch(namespace, name,
                    status.model_dump(mode="json", by_alias=True, exclude_none=True))

    def _patch(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.kube.patch_status(RESTORES, name, status, namespace)

    def _event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        with contextlib.suppress(Exception):
            self.kube.post_event(body, reason=reason, message=message[:1000],
                                 type="Warning" if type_ == "Warning" else "Normal")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _conditions(status: Mapping[str, Any]) -> list[Condition]:
    out = []
    for raw in status.get("conditions") or []:
        with contextlib.suppress(ValidationError):
            out.append(Condition.model_validate(raw))
    return out


def _dump(conditions: list[Condition]) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]


# -- kopf wiring ------------------------------------------------------------------------------


def _state(memo: kopf.Memo) -> tuple[RestoreReconciler, Triggers]:
    state = memo.get(_STATE)
    if state is None:
        state = (RestoreReconciler(kube_client(memo)), Triggers())
        memo[_STATE] = state
    assert isinstance(state, tuple)
    return state


async def _relay(stopped: kopf.DaemonStopped, stop: threading.Event, triggers: Triggers,
                 key: str) -> None:
    await stopped.wait()
    stop.set()
    triggers.fire(key)


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, id="restore", cancellation_timeout=10.0)
async def run_restore(name: str, namespace: str | None, memo: kopf.Memo,
                      stopped: kopf.DaemonStopped, **_: Any) -> None:
    reconciler, triggers = _state(memo)
    key = f"{namespace}/{name}"
    stop = threading.Event()
    relay = asyncio.create_task(_relay(stopped, stop, triggers, key))
    try:
        while not stopped:
            try:
                wait = await asyncio.to_thread(reconciler.reconcile, str(namespace), name, stop)
            except Cancelled:
                return
            except (KubeError, StoreError) as exc:
                log.warning("restore %s: %s", key, exc)
                wait = ERROR_BACKOFF
            except Exception:
                log.exception("restore %s: reconcile failed", key)
                wait = ERROR_BACKOFF
            if wait is None:
                return
            await triggers.wait(key, wait)
    finally:
        stop.set()
        relay.cancel()


@kopf.on.event(API_GROUP, API_VERSION, PLURAL, id="restore-watch")
async def restore_event(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    _state(memo)[1].fire(f"{namespace}/{name}")


@kopf.on.event("cdi.kubevirt.io", "v1beta1", "datavolumes", labels={RESTORE_LABEL: kopf.PRESENT},
               id="restore-datavolumes-watch")
async def datavolume_event(labels: kopf.Labels, namespace: str | None, memo: kopf.Memo,
                           **_: Any) -> None:
    _state(memo)[1].fire(f"{namespace}/{labels.get(RESTORE_LABEL)}")


__all__ = ["RestoreReconciler"]
