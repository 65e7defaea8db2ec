"""Backup (namespaced, short name ``hebackup``): scheduled, consistent, verified engine backups.

One-shot when ``schedule`` is unset, otherwise cron (with an optional time zone), retention,
``maxFailures`` (then suspended, as Harvester does) and ``suspend``. Each run writes its
manifest last, so a half-written backup is never mistaken for a good one.

A scheduled Backup also runs at once when annotated ``hostedengine.io/run-now: <id>`` (a new id
gives a new run; the last handled id is ``status.lastRunNowId``).

One run is deleted (its objects on the target, its history entry marked Deleted) when annotated
``hostedengine.io/delete-run: <run id>`` (or ``<run id>/<request id>``: a new request id repeats
a request): a failed or partial run always, a good one unless it is the only good run left
(refused with a Warning Event ``DeleteRunRefused``). The last handled value is
``status.lastDeleteRun``.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from croniter import croniter
from pydantic import ConfigDict, Field, field_validator, model_validator

from hosted_engine import API_GROUP
from hosted_engine.models.base import (
    AGE_COLUMN,
    CRON_PATTERN,
    TIME_ZONE_PATTERN,
    CelRule,
    DnsLabel,
    Duration,
    DurationRange,
    HttpUrl,
    LabelSelector,
    LongText,
    ObjectName,
    PrinterColumn,
    Resource,
    ResourceInfo,
    Scope,
    SecretKeyRef,
    SecretRef,
    ShortText,
    SpecModel,
    StatusModel,
    cel_rules,
    duration_field,
    exactly_one,
    exactly_one_cel,
)
from hosted_engine.models.conditions import ObjectStatus

RUN_NOW_ANNOTATION = f"{API_GROUP}/run-now"
DELETE_RUN_ANNOTATION = f"{API_GROUP}/delete-run"
MAX_HISTORY = 50

CronSchedule = Annotated[str, Field(pattern=CRON_PATTERN, min_length=1, max_length=256)]
TimeZone = Annotated[str, Field(pattern=TIME_ZONE_PATTERN, max_length=64)]
S3Bucket = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", max_length=63)]
ObjectPrefix = Annotated[str, Field(pattern=r"^[^\s]*$", max_length=512)]
RelativePath = Annotated[str, Field(pattern=r"^[^/\s][^\s]*$|^$", max_length=1024)]


class S3Target(SpecModel):
    """S3-compatible object storage. Credentials: keys accessKeyId and secretAccessKey."""

    endpoint: HttpUrl = Field(description="e.g. https://s3.example.com:9000")
    bucket: S3Bucket = Field(description="Bucket name.")
    prefix: ObjectPrefix = Field(default="", description="Key prefix inside the bucket.")
    region: Annotated[str, Field(pattern=r"^[a-z0-9-]*$", max_length=64)] = Field(
        default="us-east-1", description="Region."
    )
    credentials_secret_ref: SecretRef
    verify_tls: bool = Field(default=True, description="Verify the endpoint's certificate.")
    ca_bundle_secret_ref: SecretKeyRef | None = Field(
        default=None, description="CA bundle (PEM) that signs the endpoint's certificate."
    )
    force_path_style: bool = Field(default=True, description="Path-style bucket addressing.")


class PvcTarget(SpecModel):
    """A PersistentVolumeClaim mounted by the backup Job."""

    claim_name: DnsLabel = Field(description="A PVC in this namespace.")
    path: RelativePath = Field(default="", description="Directory inside the volume.")


class FilesystemTarget(SpecModel):
    """A directory of the operator's own filesystem."""

    path: Annotated[str, Field(pattern=r"^/[^\x00]*$", max_length=1024)] = Field(
        description="A directory mounted into the operator (e.g. an NFS volume)."
    )


_TARGETS = ["s3", "pvc", "filesystem"]


class BackupTarget(SpecModel):
    """Where backups go: exactly one of s3, pvc, filesystem."""

    s3: S3Target | None = None
    pvc: PvcTarget | None = None
    filesystem: FilesystemTarget | None = None

    model_config = ConfigDict(json_schema_extra=cel_rules(exactly_one_cel(_TARGETS, "target")))

    @model_validator(mode="after")
    def _one_target(self) -> BackupTarget:
        exactly_one(self, _TARGETS, "target")
        return self


class BackupSource(SpecModel):
    """What to back up."""

    hosted_engine: DnsLabel = Field(description="The HostedEngine in this namespace.")
    vm_selector: LabelSelector | None = Field(
        default=None, description="Other VirtualMachines in this namespace to back up too."
    )


class Retention(SpecModel):
    """Which successful runs to keep; the last good backup is never deleted."""

    keep_last: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None, description="Keep the last N successful runs."
    )
    keep_daily: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None, description="Keep the newest run of each of the last N days."
    )
    keep_weekly: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None, description="Keep the newest run of each of the last N weeks."
    )


class BackupSpec(SpecModel):
    source: BackupSource
    target: BackupTarget
    schedule: CronSchedule | None = Field(
        default=None, description="Cron schedule; unset: one run, now."
    )
    time_zone: TimeZone | None = Field(
        default=None, description="IANA time zone of the schedule (default UTC)."
    )
    retention: Retention | None = None
    max_failures: Annotated[int, Field(ge=1, le=100)] = Field(
        default=3, description="Consecutive failed runs before the schedule is suspended."
    )
    suspend: bool = Field(default=False, description="Pause the schedule.")
    failover_host: ObjectName | None = Field(
        default=None,
        description="A Host put into maintenance before each run and activated after it.",
    )
    quiesce: bool = Field(
        default=True, description="Freeze the guest's filesystems (guest agent) for the snapshot."
    )
    run_timeout: Annotated[Duration, DurationRange(minimum="10s", maximum="48h")] = duration_field(
        "2h", "Time one run may take"
    )

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="!has(self.timeZone) || has(self.schedule)",
                message="timeZone is only used with schedule",
                field_path=".timeZone",
            ),
            CelRule(
                rule="!has(self.retention) || has(self.schedule)",
                message="retention is only used with schedule",
                field_path=".retention",
            ),
        )
    )

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"schedule {value!r} is not a valid cron expression")
        return value

    @field_validator("time_zone")
    @classmethod
    def _valid_zone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timeZone {value!r} is not a known IANA time zone") from exc
        return value

    @model_validator(mode="after")
    def _schedule_fields(self) -> BackupSpec:
        if self.schedule is None:
            if self.time_zone is not None:
                raise ValueError("timeZone is only used with schedule")
            if self.retention is not None:
                raise ValueError("retention is only used with schedule")
        return self


# --- status -----------------------------------------------------------------------------------


class BackupPhase(StrEnum):
    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class RunPhase(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    PARTIAL = "Partial"
    DELETED = "Deleted"


class RunTrigger(StrEnum):
    SCHEDULE = "Schedule"
    ONE_SHOT = "OneShot"
    MANUAL = "Manual"
    UPGRADE = "Upgrade"


class RunStep(StrEnum):
    PREPARE_FAILOVER_HOST = "PrepareFailoverHost"
    SNAPSHOT = "Snapshot"
    EXPORT = "Export"
    UPLOAD = "Upload"
    MANIFEST = "Manifest"
    CLEANUP = "Cleanup"
    ACTIVATE_FAILOVER_HOST = "ActivateFailoverHost"
    DONE = "Done"


class BackupRun(StatusModel):
    id: ShortText = Field(description="Unique id of the run (also its directory/prefix).")
    phase: RunPhase
    trigger: RunTrigger = RunTrigger.SCHEDULE
    step: RunStep | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: Annotated[float, Field(ge=0)] | None = None
    size_bytes: Annotated[int, Field(ge=0)] | None = None
    location: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None, description="Where the run's objects are (URL or path)."
    )
    manifest_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", max_length=64)] | None = None
    snapshot_name: ShortText | None = None
    export_name: ShortText | None = None
    virtual_machines: list[DnsLabel] | None = Field(
        default=None, max_length=100,
        description="Other VirtualMachines of the run (spec.source.vmSelector), chosen at its "
        "start.")
    engine_version: ShortText | None = None
    message: LongText | None = None


class BackupStatus(ObjectStatus):
    phase: BackupPhase = BackupPhase.PENDING
    last_success_time: datetime | None = None
    last_successful_run: ShortText | None = None
    last_failure_time: datetime | None = None
    last_failed_run: ShortText | None = None
    next_run_time: datetime | None = None
    consecutive_failures: Annotated[int, Field(ge=0)] = 0
    current_run: BackupRun | None = None
    runs: list[BackupRun] = Field(
        default_factory=list,
        max_length=MAX_HISTORY,
        description="Bounded history, newest first.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]},
    )
    last_run_now_id: ShortText | None = None
    last_delete_run: ShortText | None = Field(
        default=None, description="The last hostedengine.io/delete-run value handled.")
    message: LongText | None = None


class Backup(Resource):
    resource = ResourceInfo(
        kind="Backup",
        plural="backups",
        short_names=("hebackup",),
        scope=Scope.NAMESPACED,
        description="Scheduled or one-shot, verified backups of a HostedEngine.",
        printer_columns=(
            PrinterColumn("Schedule", ".spec.schedule"),
            PrinterColumn("Last Success", ".status.lastSuccessTime", "date"),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Next Run", ".status.nextRunTime", "date", priority=1),
            PrinterColumn("Engine", ".spec.source.hostedEngine", priority=1),
            AGE_COLUMN,
        ),
    )

    spec: BackupSpec
    status: BackupStatus = Field(default_factory=BackupStatus)
