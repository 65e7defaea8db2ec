"""Backup decisions (pure): schedule, run state machine, retention, manifests.

Nothing here does I/O: the handler observes the world (the Backup, its failover Host, the
VirtualMachineSnapshot and VirtualMachineExport of the current run, the upload's outcome), asks
:func:`advance` what to do, carries out the actions and writes the returned status.

The run's progress lives in ``status.currentRun`` (its ``step``) and is written *before* the step's
action runs; every action is idempotent (deterministic names: :func:`child_name`), so a restarted
operator resumes the run it finds in status, never starts a second one for the same slot, and
leaves no orphan snapshot or export.

Steps: PrepareFailoverHost (maintenance requested, until the Host is in Maintenance) -> Snapshot
(until readyToUse) -> Export (until Ready) -> Upload (disk, definitions, then the manifest last)
-> Cleanup (export, snapshot, token; a failed run's partial objects) -> ActivateFailoverHost
(request withdrawn) -> Done. A failure at any step records the reason and goes to Cleanup.
"""

from __future__ import annotations

import copy
import hashlib
import json
import zlib
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from croniter import croniter

from hosted_engine.models.backup import (
    MAX_HISTORY,
    BackupPhase,
    BackupRun,
    BackupSpec,
    BackupStatus,
    Retention,
    RunPhase,
    RunStep,
    RunTrigger,
)
from hosted_engine.models.base import parse_duration

FORMAT_VERSION: Final = 1
MANIFEST: Final = "manifest.json"
DISK: Final = "disk.img.gz"
VM_DEFINITION: Final = "virtualmachine.yaml"
HE_DEFINITION: Final = "hostedengine.yaml"
#: Seconds between checks while a run waits for something (snapshot, export, host).
RUN_POLL: Final = 1.0
#: Longest idle wait (a change of the object wakes the loop earlier).
IDLE_POLL: Final = 60.0
_NAME_LIMIT: Final = 63


# --------------------------------------------------------------------------------------------
# Schedule


def zone(time_zone: str | None) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(time_zone or "UTC")


def next_fire(schedule: str, time_zone: str | None, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``schedule`` (in ``time_zone``) fires, UTC.

    A sixth cron field is seconds (croniter's convention)."""
    local = after.astimezone(zone(time_zone))
    fire: datetime = croniter(schedule, local).get_next(datetime)
    return fire.astimezone(UTC)


def run_id_for(at: datetime, trigger: RunTrigger) -> str:
    """The run's id (also its folder): UTC time of its slot, ``-m`` for a manual run."""
    stamp = at.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-m" if trigger == RunTrigger.MANUAL else stamp


def child_name(backup: str, run_id: str) -> str:
    """Deterministic name of a run's snapshot/export/token (a DNS label)."""
    name = f"{backup}-{run_id}".lower()
    if len(name) <= _NAME_LIMIT:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: _NAME_LIMIT - 9].rstrip('-')}-{digest}"


def vm_child_name(backup: str, run_id: str, vm: str) -> str:
    """Deterministic name of the snapshot/export/token of another selected VM of a run."""
    return child_name(backup, f"{run_id}-{vm}")


def vm_object_names(vm: str) -> tuple[str, str]:
    """(disk prefix, definition) of another selected VM in a run's folder."""
    return f"vm-{vm}-", f"vm-{vm}.yaml"


def maintenance_request(namespace: str, backup: str) -> str:
    """The Host annotation value ``hostedengine.io/maintenance-request`` a Backup puts."""
    return f"backup/{namespace}.{backup}"


# --------------------------------------------------------------------------------------------
# Observations and actions


@dataclass(frozen=True)
class SnapshotView:
    ready: bool = False
    failed: str | None = None
    indications: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportView:
    ready: bool = False
    failed: str | None = None


@dataclass(frozen=True)
class UploadResult:
    """What the Upload step wrote (the manifest last)."""

    ok: bool
    size_bytes: int = 0
    manifest_sha256: str | None = None
    location: str | None = None
    engine_version: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Observed:
    """What the handler saw for one reconcile."""

    namespace: str
    name: str
    generation: int
    run_now_id: str | None = None
    created_at: datetime | None = None
    source_present: bool = True  # the HostedEngine's VM exists
    host_state: str | None = None  # the failover Host's status.state (None: no such Host)
    host_requested: bool = False  # our maintenance request is on the Host
    snapshot: SnapshotView | None = None
    export: ExportView | None = None
    upload: UploadResult | None = None
    deleted_runs: tuple[str, ...] = ()  # runs whose objects the handler removed
    selected_vms: tuple[str, ...] = ()  # VMs spec.source.vmSelector selects now (run start)
    other_snapshots: Mapping[str, SnapshotView] = field(default_factory=dict)  # by VM
    other_exports: Mapping[str, ExportView] = field(default_factory=dict)  # by VM
    delete_run: str | None = None  # the hostedengine.io/delete-run annotation


@dataclass(frozen=True)
class RequestMaintenance:
    host: str
    on: bool


@dataclass(frozen=True)
class CreateSnapshot:
    name: str
    vm: str | None = None  # None: the engine's VM


@dataclass(frozen=True)
class CreateExport:
    name: str
    snapshot: str


@dataclass(frozen=True)
class Upload:
    run_id: str
    export: str


@dataclass(frozen=True)
class DeleteChildren:
    """Remove the run's export, token Secret and snapshot."""

    name: str


@dataclass(frozen=True)
class DeleteRunObjects:
    """Remove a run's folder on the target (retention, or a failed run's partial objects)."""

    run_id: str


@dataclass(frozen=True)
class Emit:
    type: str
    reason: str
    message: str


Action = (
    RequestMaintenance | CreateSnapshot | CreateExport | Upload | DeleteChildren
    | DeleteRunObjects | Emit
)


@dataclass
class Plan:
    status: BackupStatus
    actions: list[Action] = field(default_factory=list)
    wait: float = IDLE_POLL


# --------------------------------------------------------------------------------------------
# Retention


def retained(runs: Sequence[BackupRun], retention: Retention | None,
             time_zone: str | None) -> set[str]:
    """Ids of the successful runs to keep. With no rule, all; the newest success always."""
    good = sorted(
        (r for r in runs if r.phase == RunPhase.SUCCEEDED and r.finished_at is not None),
        key=lambda r: (r.finished_at, r.id),
        reverse=True,
    )
    if not good:
        return set()
    if retention is None or (
        retention.keep_last is None and retention.keep_daily is None
        and retention.keep_weekly is None
    ):
        return {r.id for r in good}
    keep: set[str] = {good[0].id}
    if retention.keep_last is not None:
        keep.update(r.id for r in good[: retention.keep_last])
    tz = zone(time_zone)

    def bucketed(limit: int | None, key: Any) -> None:
        if limit is None:
            return
        seen: list[Any] = []
        for r in good:  # newest first: the first run of a bucket is its newest
            assert r.finished_at is not None
            bucket = key(r.finished_at.astimezone(tz))
            if bucket in seen:
                continue
            if len(seen) >= limit:
                break
            seen.append(bucket)
            keep.add(r.id)

    bucketed(retention.keep_daily, lambda t: t.date())
    bucketed(retention.keep_weekly, lambda t: t.isocalendar()[:2])
    return keep


def to_delete(runs: Sequence[BackupRun], retention: Retention | None,
              time_zone: str | None) -> list[str]:
    """Runs whose objects retention removes: successes outside the kept set, and every failed
    or partial run (their folders have no manifest). Never the last good backup."""
    keep = retained(runs, retention, time_zone)
    out = []
    for run in runs:
        if run.phase == RunPhase.SUCCEEDED and run.id not in keep:
            out.append(run.id)
    return out


def bounded_history(runs: list[BackupRun]) -> list[BackupRun]:
    """At most MAX_HISTORY entries, newest first; deleted and failed entries go first."""
    if len(runs) <= MAX_HISTORY:
        return runs
    out = list(runs)
    for phases in ((RunPhase.DELETED,), (RunPhase.FAILED, RunPhase.PARTIAL)):
        while len(out) > MAX_HISTORY:
            victims = [i for i, r in enumerate(out) if r.phase in phases]
            if not victims:
                break
            out.pop(victims[-1])
    return out[:MAX_HISTORY]


# --------------------------------------------------------------------------------------------
# The state machine


def _seconds(text: str) -> float:
    return parse_duration(text).total_seconds()


def failure_suspended(status: BackupStatus, spec: BackupSpec) -> bool:
    return status.consecutive_failures >= spec.max_failures and spec.schedule is not None


def _due(spec: BackupSpec, status: BackupStatus, obs: Observed,
         now: datetime) -> tuple[RunTrigger, datetime] | None:
    if obs.run_now_id and obs.run_now_id != status.last_run_now_id:
        return RunTrigger.MANUAL, now
    if spec.schedule is None:
        if not status.runs and status.last_run_now_id is None:
            return RunTrigger.ONE_SHOT, obs.created_at or now
        return None
    if spec.suspend or failure_suspended(status, spec):
        return None
    if status.next_run_time is not None and now >= status.next_run_time:
        return RunTrigger.SCHEDULE, status.next_run_time
    return None


def _first_step(spec: BackupSpec) -> RunStep:
    return RunStep.PREPARE_FAILOVER_HOST if spec.failover_host else RunStep.SNAPSHOT


def start_run(spec: BackupSpec, status: BackupStatus, obs: Observed, now: datetime,
              trigger: RunTrigger, slot: datetime) -> BackupStatus:
    run_id = run_id_for(slot if trigger != RunTrigger.MANUAL else now, trigger)
    taken = {r.id for r in status.runs}
    if trigger == RunTrigger.MANUAL:  # a new run-now id is a new run, even in the same second
        base, n = run_id, 1
        while run_id in taken:
            n += 1
            run_id = f"{base}{n}"
    elif run_id in taken:  # a slot already run: never twice
        return status
    name = child_name(obs.name, run_id)
    run = BackupRun(
        id=run_id, phase=RunPhase.RUNNING, trigger=trigger, step=_first_step(spec),
        scheduled_at=slot, started_at=now, snapshot_name=name, export_name=name,
        virtual_machines=sorted(obs.selected_vms)[:100] if spec.source.vm_selector else None,
    )
    out = status.model_copy(update={"current_run": run, "phase": BackupPhase.RUNNING})
    if trigger == RunTrigger.MANUAL:
        out.last_run_now_id = obs.run_now_id
    return out


def _fail(run: BackupRun, message: str) -> BackupRun:
    return run.model_copy(update={"phase": RunPhase.FAILED, "step": RunStep.CLEANUP,
                                  "message": message[:1000]})


def _step_run(spec: BackupSpec, run: BackupRun, obs: Observed,
              now: datetime) -> tuple[BackupRun, list[Action], float]:
    """One step of a running (or failing) run: (run, actions, wait)."""
    name = run.snapshot_name or child_name(obs.name, run.id)
    step = run.step or RunStep.SNAPSHOT
    timeout = _seconds(spec.run_timeout)
    running = run.phase == RunPhase.RUNNING
    if running and run.started_at and (now - run.started_at).total_seconds() > timeout:
        return _fail(run, f"run timed out after {spec.run_timeout} in step {step}"), [], 0.0
    host = spec.failover_host
    if running and step == RunStep.PREPARE_FAILOVER_HOST:
        if host is None:
            return run.model_copy(update={"step": RunStep.SNAPSHOT}), [], 0.0
        if obs.host_state is None:
            return _fail(run, f"failover Host {host} not found"), [], 0.0
        if not obs.host_requested:
            return run, [RequestMaintenance(host, True)], RUN_POLL
        if obs.host_state == "Maintenance":
            return run.model_copy(update={"step": RunStep.SNAPSHOT}), [
                Emit("Normal", "FailoverHostInMaintenance",
                     f"run {run.id}: Host {host} is in maintenance")], 0.0
        return run, [], RUN_POLL
    others = list(run.virtual_machines or [])
    if running and step == RunStep.SNAPSHOT:
        if not obs.source_present:
            return _fail(run, "the HostedEngine's VirtualMachine does not exist"), [], 0.0
        creates: list[Action] = [] if obs.snapshot is not None else [CreateSnapshot(name)]
        creates += [CreateSnapshot(vm_child_name(obs.name, run.id, vm), vm)
                    for vm in others if vm not in obs.other_snapshots]
        if creates:
            return run, creates, RUN_POLL
        assert obs.snapshot is not None
        if obs.snapshot.failed:
            return _fail(run, f"snapshot failed: {obs.snapshot.failed}"), [], 0.0
        for vm in others:
            if obs.other_snapshots[vm].failed:
                return _fail(run, f"snapshot of VirtualMachine {vm} failed: "
                                  f"{obs.other_snapshots[vm].failed}"), [], 0.0
        if not obs.snapshot.ready or not all(obs.other_snapshots[vm].ready for vm in others):
            return run, [], RUN_POLL
        message = None
        if spec.quiesce and "GuestAgent" not in obs.snapshot.indications and (
            "Online" in obs.snapshot.indications
        ):
            message = "no guest agent: the snapshot is crash-consistent"
        return run.model_copy(update={"step": RunStep.EXPORT, "message": message}), [], 0.0
    if running and step == RunStep.EXPORT:
        exports: list[Action] = [] if obs.export is not None else [CreateExport(name, name)]
        exports += [CreateExport(vm_child_name(obs.name, run.id, vm),
                                 vm_child_name(obs.name, run.id, vm))
                    for vm in others if vm not in obs.other_exports]
        if exports:
            return run, exports, RUN_POLL
        assert obs.export is not None
        if obs.export.failed:
            return _fail(run, f"export failed: {obs.export.failed}"), [], 0.0
        for vm in others:
            if obs.other_exports[vm].failed:
                return _fail(run, f"export of VirtualMachine {vm} failed: "
                                  f"{obs.other_exports[vm].failed}"), [], 0.0
        if not obs.export.ready or not all(obs.other_exports[vm].ready for vm in others):
            return run, [], RUN_POLL
        return run.model_copy(update={"step": RunStep.UPLOAD}), [], 0.0
    if running and step in (RunStep.UPLOAD, RunStep.MANIFEST):
        if obs.upload is None:  # under way (a pvc target's data mover Job)
            return run, [Upload(run.id, name)], RUN_POLL
        if not obs.upload.ok:
            return _fail(run, f"upload failed: {obs.upload.error}"), [], 0.0
        up = obs.upload
        return run.model_copy(update={
            "step": RunStep.CLEANUP, "size_bytes": up.size_bytes,
            "manifest_sha256": up.manifest_sha256, "location": up.location,
            "engine_version": up.engine_version, "phase": RunPhase.SUCCEEDED,
        }), [], 0.0
    if step == RunStep.CLEANUP:
        actions: list[Action] = [DeleteChildren(name)]
        actions += [DeleteChildren(vm_child_name(obs.name, run.id, vm)) for vm in others]
        if run.phase != RunPhase.SUCCEEDED:
            actions.append(DeleteRunObjects(run.id))
        nxt = RunStep.ACTIVATE_FAILOVER_HOST if host else RunStep.DONE
        return run.model_copy(update={"step": nxt}), actions, 0.0
    if step == RunStep.ACTIVATE_FAILOVER_HOST:
        actions = [RequestMaintenance(host, False)] if host else []
        return run.model_copy(update={"step": RunStep.DONE}), actions, 0.0
    return run.model_copy(update={"step": RunStep.DONE}), [], 0.0


def _finish(spec: BackupSpec, status: BackupStatus, run: BackupRun,
            now: datetime) -> tuple[BackupStatus, list[Action]]:
    started = run.started_at or now
    ok = run.phase == RunPhase.SUCCEEDED
    run = run.model_copy(update={
        "finished_at": now, "duration_seconds": max(0.0, (now - started).total_seconds()),
        "step": RunStep.DONE,
    })
    runs = [run, *[r for r in status.runs if r.id != run.id]]
    update: dict[str, Any] = {"current_run": None}
    actions: list[Action] = []
    if ok:
        update.update(last_success_time=now, last_successful_run=run.id, consecutive_failures=0)
        size = f", {run.size_bytes} bytes" if run.size_bytes is not None else ""
        actions.append(Emit("Normal", "BackupSucceeded",
                            f"run {run.id} succeeded in {run.duration_seconds:.1f}s{size}"))
        for victim in to_delete(runs, spec.retention, spec.time_zone):
            actions.append(DeleteRunObjects(victim))
    else:
        failures = status.consecutive_failures + 1
        update.update(last_failure_time=now, last_failed_run=run.id,
                      consecutive_failures=failures)
        actions.append(Emit("Warning", "BackupFailed", f"run {run.id} failed: {run.message}"))
        if spec.schedule is not None and failures >= spec.max_failures:
            actions.append(Emit("Warning", "BackupSuspended",
                                f"{failures} consecutive failed runs (maxFailures "
                                f"{spec.max_failures}): schedule suspended until the spec "
                                "changes"))
    update["runs"] = bounded_history(runs)
    return status.model_copy(update=update), actions


def apply_deletions(status: BackupStatus, deleted: Iterable[str]) -> BackupStatus:
    """Mark runs whose objects were removed as Deleted (the last successful run moves to the
    newest good run left)."""
    gone = set(deleted)
    if not gone:
        return status
    runs = [r.model_copy(update={"phase": RunPhase.DELETED}) if r.id in gone else r
            for r in status.runs]
    update: dict[str, Any] = {"runs": runs}
    if status.last_successful_run in gone:
        good = [r for r in runs if r.phase == RunPhase.SUCCEEDED and r.finished_at is not None]
        newest = max(good, key=lambda r: (r.finished_at, r.id), default=None)
        update["last_successful_run"] = newest.id if newest else None
        update["last_success_time"] = newest.finished_at if newest else None
    return status.model_copy(update=update)


def delete_run_request(status: BackupStatus, run_id: str) -> list[Action]:
    """What a ``delete-run`` request for ``run_id`` does: remove its objects, or say why not.

    A failed or partial run can always be deleted; a good one unless it is the only good run
    left; never the run in progress."""
    run = next((r for r in status.runs if r.id == run_id), None)
    if status.current_run is not None and status.current_run.id == run_id:
        return [Emit("Warning", "DeleteRunRefused", f"run {run_id} is in progress")]
    if run is None:
        return [Emit("Warning", "DeleteRunRefused", f"no run {run_id} in the history")]
    if run.phase == RunPhase.DELETED:
        return []
    if run.phase == RunPhase.SUCCEEDED and not any(
        r.phase == RunPhase.SUCCEEDED and r.id != run_id for r in status.runs
    ):
        return [Emit("Warning", "DeleteRunRefused",
                     f"run {run_id} is the only good backup left: it is never deleted")]
    return [DeleteRunObjects(run_id),
            Emit("Normal", "RunDeleted", f"run {run_id} ({run.phase}) deleted on request")]


def summary_phase(spec: BackupSpec, status: BackupStatus) -> BackupPhase:
    if status.current_run is not None:
        return BackupPhase.RUNNING
    if spec.schedule is not None:
        if spec.suspend or failure_suspended(status, spec):
            return BackupPhase.SUSPENDED
        return BackupPhase.SCHEDULED
    if status.runs:
        ok = status.runs[0].phase in (RunPhase.SUCCEEDED, RunPhase.DELETED)
        return BackupPhase.SUCCEEDED if ok else BackupPhase.FAILED
    return BackupPhase.PENDING


def advance(spec: BackupSpec, status: BackupStatus, obs: Observed, now: datetime) -> Plan:
    """One decision: the next status (to write before the actions run), actions and wait."""
    status = status.model_copy(deep=True)
    actions: list[Action] = []
    wait = IDLE_POLL
    if obs.delete_run and obs.delete_run != status.last_delete_run:
        # "<run id>" or "<run id>/<request id>" (a new request id repeats a refused request)
        actions.extend(delete_run_request(status, obs.delete_run.split("/", 1)[0]))
        status.last_delete_run = obs.delete_run
    if status.current_run is None:
        due = _due(spec, status, obs, now)
        if due is not None:
            trigger, slot = due
            started = start_run(spec, status, obs, now, trigger, slot)
            if started.current_run is not None:
                status = started
                actions.append(Emit("Normal", "BackupStarted",
                                    f"run {started.current_run.id} started ({trigger})"))
                if trigger == RunTrigger.SCHEDULE and spec.schedule is not None:
                    status.next_run_time = next_fire(spec.schedule, spec.time_zone, now)
                wait = 0.0
            elif trigger == RunTrigger.SCHEDULE and spec.schedule is not None:
                status.next_run_time = next_fire(spec.schedule, spec.time_zone, now)
    elif status.current_run.step == RunStep.DONE:
        status, more = _finish(spec, status, status.current_run, now)
        actions.extend(more)
        wait = 0.0
    else:
        current = status.current_run
        assert current is not None
        run, more, wait = _step_run(spec, current, obs, now)
        status.current_run = run
        actions.extend(more)
    # the schedule
    if spec.schedule is None or spec.suspend or failure_suspended(status, spec):
        status.next_run_time = None
    elif status.next_run_time is None:
        status.next_run_time = next_fire(spec.schedule, spec.time_zone, now)
    if status.current_run is None and status.next_run_time is not None:
        wait = min(wait, max(0.0, (status.next_run_time - now).total_seconds()))
    status.phase = summary_phase(spec, status)
    return Plan(status=status, actions=actions, wait=wait)


def lift_failure_suspension(status: BackupStatus) -> BackupStatus:
    """A spec change (new generation) after a suspension by maxFailures resumes the schedule."""
    return status.model_copy(update={"consecutive_failures": 0})


# --------------------------------------------------------------------------------------------
# Streaming: gzip members, checksums


_GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_STORED_MAX: Final = 65535


def stored_member(data: bytes) -> bytes:
    """One gzip member holding ``data`` in deflate *stored* blocks (RFC 1951 §3.2.4): what
    level 0 writes, built directly (a few memory copies instead of zlib's block loop)."""
    parts: list[bytes | memoryview] = [_GZIP_HEADER]
    view = memoryview(data)
    total = len(data)
    pos = 0
    while True:
        piece = view[pos: pos + _STORED_MAX]
        size = len(piece)
        last = pos + size >= total
        parts.append(bytes((1 if last else 0,)) + size.to_bytes(2, "little")
                     + (size ^ 0xFFFF).to_bytes(2, "little"))
        parts.append(piece)
        pos += size
        if last:
            break
    parts.append(zlib.crc32(data).to_bytes(4, "little")
                 + (total & 0xFFFFFFFF).to_bytes(4, "little"))
    return b"".join(parts)


class GzipStream:
    """Compress a byte stream into gzip *members*, one per block, each at a level chosen from a
    sample of the block: incompressible data (encrypted or random disks) is stored (deflate
    stored blocks) instead of burning CPU for nothing. Multi-member gzip is standard
    (RFC 1952): ``gunzip``, Go's ``gzip.Reader`` (CDI's importer) and :func:`iter_gunzip`
    read it.

    Also hashes the raw input and the stored output."""

    SAMPLE: Final = 64 * 1024

    def __init__(self, level: int = 1, block: int = 8 * 1024 * 1024) -> None:
        self.level = level
        self.block = block
        self.raw_sha = hashlib.sha256()
        self.stored_sha = hashlib.sha256()
        self.raw_size = 0
        self.stored_size = 0
        self._pending: list[bytes] = []
        self._pending_size = 0

    def _member(self, data: bytes) -> bytes:
        level = self.level
        if level > 0:
            sample = data[: self.SAMPLE]
            if len(zlib.compress(sample, 1)) > 0.95 * len(sample):
                level = 0
        if level == 0:
            out = stored_member(data)
        else:
            comp = zlib.compressobj(level, zlib.DEFLATED, 31)
            out = comp.compress(data) + comp.flush()
        self.stored_sha.update(out)
        self.stored_size += len(out)
        return out

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        self.raw_sha.update(chunk)
        self.raw_size += len(chunk)
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= self.block:
            data = b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            pos = 0
            while len(data) - pos >= self.block:
                yield self._member(data[pos: pos + self.block])
                pos += self.block
            if pos < len(data):
                rest = data[pos:]
                self._pending, self._pending_size = [rest], len(rest)

    def finish(self) -> Iterator[bytes]:
        if self._pending_size or self.raw_size == 0:
            data = b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            yield self._member(data)


def iter_gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress a (multi-member) gzip stream."""
    decomp = zlib.decompressobj(31)
    for chunk in chunks:
        data = chunk
        while data:
            out = decomp.decompress(data)
            if out:
                yield out
            if decomp.eof:
                data = decomp.unused_data
                decomp = zlib.decompressobj(31)
            else:
                data = b""


# --------------------------------------------------------------------------------------------
# Manifest


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class StoredObject:
    name: str
    size: int
    sha256: str
    raw_size: int | None = None
    raw_sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "size": self.size, "sha256": self.sha256}
        if self.raw_size is not None:
            out["rawSize"] = self.raw_size
        if self.raw_sha256 is not None:
            out["rawSha256"] = self.raw_sha256
        return out


def manifest_body(*, namespace: str, backup: str, run_id: str, created_at: datetime,
                  operator_version: str, source: Mapping[str, Any],
                  indications: Sequence[str] = ()) -> dict[str, Any]:
    """The manifest without its ``objects`` (a pvc target's data mover adds them)."""
    return {
        "formatVersion": FORMAT_VERSION,
        "operatorVersion": operator_version,
        "createdAt": created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "backup": {"namespace": namespace, "name": backup, "run": run_id},
        "source": dict(source),
        "snapshotIndications": list(indications),
    }


def build_manifest(*, namespace: str, backup: str, run_id: str, created_at: datetime,
                   operator_version: str, source: Mapping[str, Any],
                   objects: Sequence[StoredObject], indications: Sequence[str] = ()) -> bytes:
    """The manifest (JSON, stable key order), written last."""
    body = manifest_body(namespace=namespace, backup=backup, run_id=run_id,
                         created_at=created_at, operator_version=operator_version,
                         source=source, indications=indications)
    body["objects"] = [o.as_dict() for o in objects]
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()


class ManifestError(ValueError):
    """The manifest is missing, unreadable or of an unknown format."""


def parse_manifest(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise ManifestError(f"manifest is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("formatVersion") != FORMAT_VERSION:
        raise ManifestError("manifest has an unknown format version")
    objects = body.get("objects")
    if not isinstance(objects, list) or not objects:
        raise ManifestError("manifest lists no objects")
    for obj in objects:
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not isinstance(
            obj.get("sha256"), str
        ) or not isinstance(obj.get("size"), int):
            raise ManifestError("manifest has a malformed object entry")
        if "/" in obj["name"] or obj["name"].startswith("."):
            raise ManifestError(f"manifest names an object outside its run: {obj['name']!r}")
    return body


@dataclass(frozen=True)
class Mismatch:
    object: str
    expected: str | None
    actual: str | None


def verify_object(entry: Mapping[str, Any], size: int | None, sha256: str | None,
                  raw_sha256: str | None = None) -> list[Mismatch]:
    """Compare what was read back with the manifest's entry."""
    name = str(entry["name"])
    if size is None or sha256 is None:
        return [Mismatch(name, str(entry["sha256"]), None)]
    out = []
    if size != entry["size"]:
        out.append(Mismatch(f"{name} (size)", str(entry["size"]), str(size)))
    if sha256 != entry["sha256"]:
        out.append(Mismatch(name, str(entry["sha256"]), sha256))
    if raw_sha256 is not None and entry.get("rawSha256") and raw_sha256 != entry["rawSha256"]:
        out.append(Mismatch(f"{name} (raw)", str(entry["rawSha256"]), raw_sha256))
    return out


__all__ = [
    "DISK",
    "HE_DEFINITION",
    "MANIFEST",
    "VM_DEFINITION",
    "Action",
    "CreateExport",
    "CreateSnapshot",
    "DeleteChildren",
    "DeleteRunObjects",
    "Emit",
    "ExportView",
    "GzipStream",
    "ManifestError",
    "Mismatch",
    "Observed",
    "Plan",
    "RequestMaintenance",
    "SnapshotView",
    "StoredObject",
    "Upload",
    "UploadResult",
    "advance",
    "apply_deletions",
    "build_manifest",
    "child_name",
    "delete_run_request",
    "iter_gunzip",
    "manifest_body",
    "next_fire",
    "parse_manifest",
    "retained",
    "run_id_for",
    "to_delete",
    "verify_object",
    "vm_child_name",
    "vm_object_names",
]


# --------------------------------------------------------------------------------------------
# Restore

#: Host states in which a host recorded in a backup still counts as operational.
OPERATIONAL_HOST_STATES: Final = frozenset({"Up", "Maintenance", "PreparingForMaintenance",
                                            "Activating", "Pending"})


def restored_disk_name(hosted_engine: str) -> str:
    """The DataVolume/claim a restore imports the backed-up disk into."""
    return f"{hosted_engine}-restored-disk"[:_NAME_LIMIT].rstrip("-")


def recorded_hosts(he_definition: Mapping[str, Any]) -> list[str]:
    """Hosts the backed-up engine knew: its host table and its allowed names."""
    status = he_definition.get("status") or {}
    spec = he_definition.get("spec") or {}
    names = [str(r.get("host")) for r in status.get("hosts") or [] if r.get("host")]
    names += [str(n) for n in (spec.get("hosts") or {}).get("names") or []]
    return sorted(set(names))


def missing_hosts(recorded: Iterable[str], present: Mapping[str, str | None]
                  ) -> list[tuple[str, str]]:
    """(host, reason) for every recorded host that is absent or not operational now;
    ``present`` maps existing Hosts to their ``status.state``."""
    out = []
    for host in recorded:
        if host not in present:
            out.append((host, "no such Host in this cluster"))
        elif (present[host] or "Pending") not in OPERATIONAL_HOST_STATES:
            out.append((host, f"Host is {present[host]}"))
    return out


def restored_engine_spec(he_definition: Mapping[str, Any], *, claim: str,
                         storage_domain: str | None, remove_hosts: Iterable[str],
                         recorded: Iterable[str]) -> dict[str, Any]:
    """The new HostedEngine's spec: the backed-up one (same FQDN), its disk cloned from the
    restored claim, on ``storage_domain`` when given, without ``remove_hosts`` in its host
    table (when a host list must be written to drop them, it is the recorded hosts minus those).
    """
    spec = copy.deepcopy(dict(he_definition.get("spec") or {}))
    vm = spec.setdefault("vm", {})
    version = (vm.get("image") or {}).get("version")
    vm["image"] = {"pvc": {"claimName": claim}}
    if version:
        vm["image"]["version"] = version
    if storage_domain:
        vm.setdefault("disk", {})["storageDomain"] = storage_domain
    drop = set(remove_hosts)
    if drop:
        hosts = spec.setdefault("hosts", {})
        names = list(hosts.get("names") or []) or list(recorded)
        hosts["names"] = [n for n in names if n not in drop]
        if not hosts["names"]:
            hosts.pop("names")
    return spec
