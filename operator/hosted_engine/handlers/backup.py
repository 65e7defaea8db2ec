"""Backup handlers: scheduled, consistent, verified backups of the engine (issue 9).

How it runs
    One kopf daemon per Backup reconciles on every wake-up (a change of the Backup, of a Host,
    of one of its snapshots or exports), at the next scheduled time, and every second while a
    run waits for something. Each reconcile reads the Backup fresh, asks
    :func:`hosted_engine.logic.backup.advance` what to do, writes the status, then acts. The
    run's step is in ``status.currentRun`` before its action runs, and every action is
    idempotent (deterministic names), so a restarted operator resumes the run it finds there:
    no second run for the same slot, no orphan snapshot or export. An upload interrupted by a
    restart is written again from the start (same keys; the manifest comes last, so the folder
    never looks complete before it is).

Contracts with the rest of the operator
    * Failover host: the annotation ``hostedengine.io/maintenance-request:
      backup/<namespace>.<name>`` on the Host (honoured by the Host handler like
      ``spec.maintenance.mode: local``); the run waits for ``status.state: Maintenance`` and
      takes the request back after the run, whatever its outcome.
    * Snapshots, exports and the export token Secret are owned by the Backup and labelled
      ``hostedengine.io/backup`` and ``hostedengine.io/backup-run``.

Bad input
    A spec the model rejects: ``Ready=False/InvalidSpec`` + a Warning Event; nothing runs and
    the last good status stays. A target that cannot be opened (missing Secret) fails
    the run with the reason (never a secret) in ``currentRun.message`` and the Events.

Other VMs
    ``source.vmSelector``: the VirtualMachines of the namespace it selects (not the engine's)
    are chosen when a run starts (``currentRun.virtualMachines``); each gets its own snapshot
    and export (:func:`hosted_engine.logic.backup.vm_child_name`) and its disks
    (``vm-<name>-disk.img.gz``) and definition (``vm-<name>.yaml``) go into the same run, listed
    in the manifest (``source.virtualMachines``).

A pvc target
    The operator cannot mount a claim: a data mover Job (:mod:`hosted_engine.adapters.pvcstore`)
    mounts it and writes the run (the Upload step waits for it; its name is deterministic, so a
    restarted operator waits for the same Job); removing a run's folder is a Job too.

Suspension
    ``spec.suspend`` pauses the schedule (``Suspended=True/SuspendedByUser``). ``maxFailures``
    consecutive failed runs suspend it too (``Suspended=True/MaxFailuresReached``) until the
    spec changes (a new generation). A ``hostedengine.io/run-now`` annotation with a new id runs
    once even while suspended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import kopf
from pydantic import ValidationError

from hosted_engine import API_GROUP, API_VERSION, __version__
from hosted_engine.adapters import metrics
from hosted_engine.adapters.export import (
    BACKUP_LABEL,
    BACKUPS,
    BackupKube,
    Cancelled,
    RunGone,
    pvc_folder,
    run_parts,
    run_prefix,
    upload_run,
)
from hosted_engine.adapters.kube import Body, Kube, KubeError
from hosted_engine.adapters.objectstore import StoreError, open_store
from hosted_engine.adapters.pvcstore import WRITE_DEADLINE, PvcJobs, secret_env
from hosted_engine.clock import get_clock
from hosted_engine.handlers.host import Triggers
from hosted_engine.handlers.startup import kube_client
from hosted_engine.logic import backup as lb
from hosted_engine.models import describe_validation_error
from hosted_engine.models.backup import (
    DELETE_RUN_ANNOTATION,
    RUN_NOW_ANNOTATION,
    BackupSpec,
    BackupStatus,
    RunPhase,
    RunStep,
)
from hosted_engine.models.conditions import (
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    get_condition,
    set_condition,
)

log = logging.getLogger(__name__)

PLURAL: Final = "backups"
ERROR_BACKOFF: Final = 5.0
_STATE: Final = "backup-state"


def _key(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}"


class BackupReconciler:
    """One reconcile of one Backup (synchronous: runs in a thread)."""

    def __init__(self, kube: Kube) -> None:
        self.api = BackupKube(kube)
        self.kube = kube
        self.pvc = PvcJobs(kube)

    # -- observation ----------------------------------------------------------------------
    def _observe(self, body: Mapping[str, Any], spec: BackupSpec, status: BackupStatus,
                 stop: threading.Event) -> lb.Observed:
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        run = status.current_run
        obs: dict[str, Any] = {
            "namespace": namespace, "name": name, "generation": int(meta.get("generation") or 0),
            "run_now_id": (meta.get("annotations") or {}).get(RUN_NOW_ANNOTATION) or None,
            "delete_run": (meta.get("annotations") or {}).get(DELETE_RUN_ANNOTATION) or None,
            "created_at": _parse_time(meta.get("creationTimestamp")),
        }
        if run is None and spec.source.vm_selector is not None:
            selector = spec.source.vm_selector
            obs["selected_vms"] = tuple(sorted(
                str(vm["metadata"]["name"]) for vm in self.api.vms(namespace)
                if vm["metadata"]["name"] != spec.source.hosted_engine
                and selector.matches(vm["metadata"].get("labels") or {})))
        if run is None or run.phase != RunPhase.RUNNING:
            return lb.Observed(**obs)
        child = run.snapshot_name or lb.child_name(name, run.id)
        if spec.failover_host:
            host = self.api.host(spec.failover_host)
            if host is not None:
                obs["host_state"] = str((host.get("status") or {}).get("state") or "Pending")
                request = ((host.get("metadata") or {}).get("annotations") or {}).get(
                    "hostedengine.io/maintenance-request")
                obs["host_requested"] = bool(request)
        if run.step == RunStep.SNAPSHOT:
            obs["source_present"] = self.api.vm(namespace, spec.source.hosted_engine) is not None
            snap = self.api.snapshot(namespace, child)
            if snap is not None:
                obs["snapshot"] = _snapshot_view(snap)
        if run.step == RunStep.EXPORT:
            export = self.api.export(namespace, child)
            if export is not None:
                st = export.get("status") or {}
                obs["export"] = lb.ExportView(ready=st.get("phase") == "Ready")
        others = run.virtual_machines or []
        if run.step == RunStep.SNAPSHOT and others:
            snaps = {}
            for vm in others:
                snap = self.api.snapshot(namespace, lb.vm_child_name(name, run.id, vm))
                if snap is not None:
                    snaps[vm] = _snapshot_view(snap)
            obs["other_snapshots"] = snaps
        if run.step == RunStep.EXPORT and others:
            exports = {}
            for vm in others:
                export = self.api.export(namespace, lb.vm_child_name(name, run.id, vm))
                if export is not None:
                    exports[vm] = lb.ExportView(
                        ready=(export.get("status") or {}).get("phase") == "Ready")
            obs["other_exports"] = exports
        if run.step in (RunStep.UPLOAD, RunStep.MANIFEST):
            obs["upload"] = self._upload(body, spec, run.id, child, stop, list(others))
        return lb.Observed(**obs)

    def _upload(self, body: Mapping[str, Any], spec: BackupSpec, run_id: str, export: str,
                stop: threading.Event, vms: list[str]) -> lb.UploadResult | None:
        namespace = str((body.get("metadata") or {}).get("namespace"))
        if spec.target.pvc is not None:
            return self._pvc_upload(body, spec, run_id, export, vms)
        try:
            store = open_store(self.kube, namespace, spec.target)
        except StoreError as exc:
            return lb.UploadResult(ok=False, error=str(exc))
        try:
            others = {vm: lb.vm_child_name(str((body.get("metadata") or {}).get("name")),
                                           run_id, vm) for vm in vms}
            return upload_run(self.api, store, body, hosted_engine=spec.source.hosted_engine,
                              run_id=run_id, export=export, stop=stop, others=others)
        finally:
            store.close()

    def _pvc_upload(self, body: Mapping[str, Any], spec: BackupSpec, run_id: str, export: str,
                    vms: list[str]) -> lb.UploadResult | None:
        """A pvc target: a data mover Job writes the run into the claim (None while it runs)."""
        pvc = spec.target.pvc
        assert pvc is not None
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        he = spec.source.hosted_engine
        job = lb.child_name(name, f"{run_id}-w")
        folder = pvc_folder(pvc.path, run_prefix(namespace, he, run_id))
        done = self.pvc.result(namespace, job)
        if done is None:
            if self.pvc.exists(namespace, job):
                return None
            others = {vm: lb.vm_child_name(name, run_id, vm) for vm in vms}
            try:
                parts = run_parts(self.api, namespace, he, export, others)
            except RunGone as exc:
                return lb.UploadResult(ok=False, error=str(exc))
            secrets = sorted({secret for _, _, secret in parts.disks})
            config = {
                "dir": folder,
                "disks": [{"name": disk, "url": link.url, "ca": link.ca_pem,
                           "tokenEnv": f"EXPORT_TOKEN_{secrets.index(secret)}"}
                          for disk, link, secret in parts.disks],
                "files": [[file, data.decode()] for file, data in parts.files],
                "manifest": lb.manifest_body(
                    namespace=namespace, backup=name, run_id=run_id,
                    created_at=get_clock().now(), operator_version=__version__,
                    source=parts.source, indications=parts.indications),
            }
            self.pvc.start(dict(body), job, pvc.claim_name,
                           ["write", "/mover/config.json", "/target"], purpose="backup-write",
                           config=config, deadline=WRITE_DEADLINE,
                           env=[secret_env(f"EXPORT_TOKEN_{i}", secret, "token")
                                for i, secret in enumerate(secrets)])
            return None
        if done.error is not None or done.result is None:
            return lb.UploadResult(ok=False, error=done.error)
        he_body = self.api.hosted_engine(namespace, he) or {}
        version = (((he_body.get("spec") or {}).get("vm") or {}).get("image") or {}).get(
            "version")
        return lb.UploadResult(
            ok=True, size_bytes=int(done.result.get("sizeBytes") or 0),
            manifest_sha256=str(done.result.get("manifestSha256")),
            location=f"pvc://{namespace}/{pvc.claim_name}/{folder}",
            engine_version=str(version) if version else None)

    # -- actions --------------------------------------------------------------------------
    def _act(self, body: Mapping[str, Any], spec: BackupSpec, run_id: str | None,
             action: lb.Action) -> str | None:
        """Carry out one action; returns the id of a run whose objects were removed."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        if isinstance(action, lb.RequestMaintenance):
            self.api.request_maintenance(action.host, lb.maintenance_request(namespace, name),
                                         action.on)
        elif isinstance(action, lb.CreateSnapshot):
            self.api.create_snapshot(body, action.name, action.vm or spec.source.hosted_engine,
                                     run_id or "")
        elif isinstance(action, lb.CreateExport):
            self.api.create_export(body, action.name, action.snapshot, run_id or "")
        elif isinstance(action, lb.DeleteChildren):
            self.api.delete_children(namespace, action.name)
            if spec.target.pvc is not None and run_id:
                self.pvc.remove(namespace, lb.child_name(name, f"{run_id}-w"))
        elif isinstance(action, lb.DeleteRunObjects) and spec.target.pvc is not None:
            # the claim is only reachable from a pod: a data mover Job removes the folder
            pvc = spec.target.pvc
            self.pvc.start(dict(body), lb.child_name(name, f"{action.run_id}-rm"),
                           pvc.claim_name,
                           ["delete", "/target", pvc_folder(pvc.path, run_prefix(
                               namespace, spec.source.hosted_engine, action.run_id))],
                           purpose="backup-delete", ttl=300)
            return action.run_id
        elif isinstance(action, lb.DeleteRunObjects):
            try:
                store = open_store(self.kube, namespace, spec.target)
            except StoreError as exc:
                log.warning("backup %s/%s: cannot remove run %s: %s", namespace, name,
                            action.run_id, exc)
                return None
            try:
                store.delete_prefix(run_prefix(namespace, spec.source.hosted_engine,
                                               action.run_id))
            except StoreError as exc:
                log.warning("backup %s/%s: cannot remove run %s: %s", namespace, name,
                            action.run_id, exc)
                return None
            finally:
                store.close()
            return action.run_id
        elif isinstance(action, lb.Emit):
            self.api.event(body, action.type, action.reason, action.message)
        return None

    # -- one reconcile --------------------------------------------------------------------
    def reconcile(self, namespace: str, name: str, stop: threading.Event) -> float:
        body = self.kube.find(BACKUPS, name, namespace)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return lb.IDLE_POLL
        now = get_clock().now()
        meta = body.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        raw_status = body.get("status") or {}
        conditions = _conditions(raw_status)
        try:
            spec = BackupSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            message = describe_validation_error(exc, "spec")
            old = get_condition(conditions, ConditionType.READY)
            new = set_condition(conditions, ConditionType.READY, ConditionStatus.FALSE,
                                Reason.INVALID_SPEC, message, observed_generation=generation,
                                now=now)
            if old is None or old.reason != Reason.INVALID_SPEC or old.message != message:
                self.api.patch_status(namespace, name, {"conditions": _dump_conditions(new)})
                self.api.event(body, "Warning", Reason.INVALID_SPEC, message)
            return lb.IDLE_POLL
        try:
            status = BackupStatus.model_validate(raw_status)
        except ValidationError:
            log.warning("backup %s/%s: unreadable status, starting afresh", namespace, name)
            status = BackupStatus()
        suspended = get_condition(conditions, ConditionType.SUSPENDED)
        if (suspended is not None and suspended.reason == Reason.MAX_FAILURES_REACHED
                and suspended.status == ConditionStatus.TRUE
                and (suspended.observed_generation or 0) < generation):
            status.consecutive_failures = 0  # the spec changed since: the schedule resumes
        obs = self._observe(body, spec, status, stop)
        if stop.is_set():
            raise Cancelled("operator stopping")
        plan = lb.advance(spec, status, obs, now)
        self._write(namespace, name, spec, plan.status, conditions, generation, now)
        run_id = plan.status.current_run.id if plan.status.current_run else None
        deleted = []
        for action in plan.actions:
            gone = self._act(body, spec, run_id, action)
            if gone:
                deleted.append(gone)
        if deleted:
            final = lb.apply_deletions(plan.status, deleted)
            self._write(namespace, name, spec, final, conditions, generation, now)
        return plan.wait

    def _write(self, namespace: str, name: str, spec: BackupSpec, status: BackupStatus,
               conditions: list[Condition], generation: int, now: datetime) -> None:
        conds = set_condition(conditions, ConditionType.READY, ConditionStatus.TRUE,
                              Reason.RECONCILED, "", observed_generation=generation, now=now)
        if spec.suspend:
            conds = set_condition(conds, ConditionType.SUSPENDED, ConditionStatus.TRUE,
                                  Reason.SUSPENDED_BY_USER, "spec.suspend is true",
                                  observed_generation=generation, now=now)
        elif lb.failure_suspended(status, spec):
            old = get_condition(conditions, ConditionType.SUSPENDED)
            gen = generation
            if old is not None and old.reason == Reason.MAX_FAILURES_REACHED and (
                old.status == ConditionStatus.TRUE
            ):
                gen = old.observed_generation or generation
            conds = set_condition(
                conds, ConditionType.SUSPENDED, ConditionStatus.TRUE,
                Reason.MAX_FAILURES_REACHED,
                f"{status.consecutive_failures} consecutive failed runs; change the spec to "
                "resume the schedule", observed_generation=gen, now=now)
        else:
            conds = set_condition(conds, ConditionType.SUSPENDED, ConditionStatus.FALSE,
                                  Reason.RECONCILED, "", observed_generation=generation, now=now)
        finished = [r for r in status.runs if r.phase != RunPhase.DELETED]
        if finished:
            last = finished[0]
            ok = last.phase == RunPhase.SUCCEEDED
            conds = set_condition(conds, ConditionType.LAST_RUN_SUCCEEDED, ok,
                                  Reason.RUN_SUCCEEDED if ok else Reason.RUN_FAILED,
                                  f"run {last.id}" + ("" if ok else f": {last.message or ''}"),
                                  observed_generation=generation, now=now)
        run = status.current_run
        conds = set_condition(conds, ConditionType.PROGRESSING, run is not None,
                              Reason.RECONCILING if run else Reason.RECONCILED,
                              f"run {run.id}: {run.step}" if run else "",
                              observed_generation=generation, now=now)
        status.conditions = conds
        status.observed_generation = generation
        body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        for key in ("currentRun", "nextRunTime", "message"):
            body.setdefault(key, None)
        self.api.patch_status(namespace, name, body)
        metrics.record_backup_runs(namespace, name, body.get("runs") or [])

    def release(self, body: Mapping[str, Any]) -> None:
        """Deletion: take back a maintenance request of this Backup."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        host = (body.get("spec") or {}).get("failoverHost")
        if host:
            self.api.request_maintenance(str(host), lb.maintenance_request(namespace, name),
                                         False)


def _snapshot_view(snap: Mapping[str, Any]) -> lb.SnapshotView:
    st = snap.get("status") or {}
    failed = None
    if st.get("phase") == "Failed":
        failed = str((st.get("error") or {}).get("message") or "Failed")
    return lb.SnapshotView(ready=bool(st.get("readyToUse")), failed=failed,
                           indications=tuple(str(i) for i in st.get("indications") or []))


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return None


def _conditions(status: Mapping[str, Any]) -> list[Condition]:
    out = []
    for raw in status.get("conditions") or []:
        with contextlib.suppress(ValidationError):
            out.append(Condition.model_validate(raw))
    return out


def _dump_conditions(conditions: list[Condition]) -> list[Body]:
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]


# -- kopf wiring ------------------------------------------------------------------------------


def _state(memo: kopf.Memo) -> tuple[BackupReconciler, Triggers]:
    state = memo.get(_STATE)
    if state is None:
        state = (BackupReconciler(kube_client(memo)), Triggers())
        memo[_STATE] = state
    assert isinstance(state, tuple)
    return state


@kopf.on.startup(id="backup-startup")
def startup(memo: kopf.Memo, **_: Any) -> None:
    _state(memo)


async def _relay(stopped: kopf.DaemonStopped, stop: threading.Event, triggers: Triggers,
                 key: str) -> None:
    """The daemon is told to stop: stop the thread's work (an upload) and wake the loop."""
    await stopped.wait()
    stop.set()
    triggers.fire(key)


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, id="backup", cancellation_timeout=10.0)
async def run_backup(name: str, namespace: str | None, memo: kopf.Memo,
                     stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Reconcile on every wake-up, at the next scheduled time, or every second during a run."""
    reconciler, triggers = _state(memo)
    key = _key(namespace, name)
    stop = threading.Event()
    relay = asyncio.create_task(_relay(stopped, stop, triggers, key))
    try:
        while not stopped:
            try:
                wait = await asyncio.to_thread(reconciler.reconcile, str(namespace), name, stop)
            except Cancelled:
                return
            except (KubeError, StoreError) as exc:
                log.warning("backup %s: %s", key, exc)
                metrics.record_reconcile_error("Backup")
                wait = ERROR_BACKOFF
            except Exception:  # a bug: log, back off, try again
                log.exception("backup %s: reconcile failed", key)
                metrics.record_reconcile_error("Backup")
                wait = ERROR_BACKOFF
            if wait > 0:
                await triggers.wait(key, wait)
    finally:
        stop.set()
        relay.cancel()


@kopf.on.event(API_GROUP, API_VERSION, PLURAL, id="backup-watch")
async def backup_event(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    _state(memo)[1].fire(_key(namespace, name))


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, id="backup-delete")
async def delete_backup(name: str, namespace: str | None, body: kopf.Body, memo: kopf.Memo,
                        **_: Any) -> None:
    reconciler, triggers = _state(memo)
    await asyncio.to_thread(reconciler.release, dict(body))
    triggers.forget(_key(namespace, name))


@kopf.on.event(API_GROUP, API_VERSION, "hosts", id="backup-hosts-watch")
async def host_event(memo: kopf.Memo, **_: Any) -> None:
    _state(memo)[1].fire_all()


@kopf.on.event("snapshot.kubevirt.io", "v1beta1", "virtualmachinesnapshots",
               labels={BACKUP_LABEL: kopf.PRESENT}, id="backup-snapshots-watch")
async def snapshot_event(labels: kopf.Labels, namespace: str | None, memo: kopf.Memo,
                         **_: Any) -> None:
    _state(memo)[1].fire(_key(namespace, str(labels.get(BACKUP_LABEL))))


@kopf.on.event("export.kubevirt.io", "v1beta1", "virtualmachineexports",
               labels={BACKUP_LABEL: kopf.PRESENT}, id="backup-exports-watch")
async def export_event(labels: kopf.Labels, namespace: str | None, memo: kopf.Memo,
                       **_: Any) -> None:
    _state(memo)[1].fire(_key(namespace, str(labels.get(BACKUP_LABEL))))


__all__ = ["BACKUPS", "BackupReconciler"]
