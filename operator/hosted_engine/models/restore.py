"""Restore (namespaced, short name ``herestore``): a new engine from a verified backup.

The source is a run of a Backup, or a manifest location. Every checksum is verified before
anything is created; a mismatch refuses the restore. The new HostedEngine keeps the backed-up
FQDN (as the seed requires); hosts recorded in the backup but absent or not operational are
reported, and removed from the engine's host table when ``cleanMissingHosts`` is true.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from hosted_engine.models.backup import BackupTarget
from hosted_engine.models.base import (
    AGE_COLUMN,
    DnsLabel,
    LongText,
    ObjectName,
    PrinterColumn,
    Resource,
    ResourceInfo,
    Scope,
    ShortText,
    SpecModel,
    StatusModel,
    cel_rules,
    exactly_one,
    exactly_one_cel,
)
from hosted_engine.models.conditions import ObjectStatus


class BackupRunRef(SpecModel):
    """A run of a Backup in this namespace."""

    name: DnsLabel = Field(description="A Backup in this namespace.")
    run: ShortText | None = Field(
        default=None, description="Run id; default: the Backup's last successful run."
    )


class ManifestLocation(SpecModel):
    """A backup found directly on a target (e.g. after losing the cluster)."""

    target: BackupTarget = Field(description="Where the backup is.")
    run: ShortText = Field(description="Run id (the directory/prefix holding the manifest).")


_SOURCES = ["backup", "location"]


class RestoreSource(SpecModel):
    """Exactly one of backup, location."""

    backup: BackupRunRef | None = None
    location: ManifestLocation | None = None

    model_config = ConfigDict(json_schema_extra=cel_rules(exactly_one_cel(_SOURCES, "source")))

    @model_validator(mode="after")
    def _one_source(self) -> RestoreSource:
        exactly_one(self, _SOURCES, "source")
        return self


class RestoreSpec(SpecModel):
    source: RestoreSource
    hosted_engine_name: DnsLabel = Field(description="Name of the HostedEngine to create.")
    storage_domain: ObjectName | None = Field(
        default=None,
        description="StorageDomain for the restored disk (default: the backed-up one).",
    )
    clean_missing_hosts: bool = Field(
        default=False,
        description="Remove hosts recorded in the backup but absent or not operational from "
        "the engine's host table.",
    )


class RestorePhase(StrEnum):
    PENDING = "Pending"
    VERIFYING = "Verifying"
    RESTORING = "Restoring"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ChecksumMismatch(StatusModel):
    object: Annotated[str, Field(max_length=1024)]
    expected: Annotated[str, Field(max_length=128)] | None = None
    actual: Annotated[str, Field(max_length=128)] | None = None


class HostReport(StatusModel):
    name: str = Field(max_length=253)
    reason: LongText
    cleaned: bool = False


class RestoreStatus(ObjectStatus):
    phase: RestorePhase = RestorePhase.PENDING
    run: ShortText | None = Field(default=None, description="The backup run restored.")
    started_at: datetime | None = None
    verified_at: datetime | None = None
    finished_at: datetime | None = None
    objects_verified: Annotated[int, Field(ge=0)] = 0
    mismatches: list[ChecksumMismatch] = Field(default_factory=list, max_length=100)
    hosted_engine: str | None = Field(default=None, max_length=253)
    virtual_machines: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list, max_length=100,
        description="Other VirtualMachines in the backup (vmSelector): their disks and "
        "definitions are verified with the run; this Restore recreates only the engine.")
    missing_hosts: list[HostReport] = Field(default_factory=list, max_length=128)
    message: LongText | None = None


class Restore(Resource):
    resource = ResourceInfo(
        kind="Restore",
        plural="restores",
        short_names=("herestore",),
        scope=Scope.NAMESPACED,
        description="Restore of a HostedEngine from a verified Backup run.",
        printer_columns=(
            PrinterColumn("Engine", ".spec.hostedEngineName"),
            PrinterColumn("Run", ".status.run"),
            PrinterColumn("Phase", ".status.phase"),
            AGE_COLUMN,
        ),
    )

    spec: RestoreSpec
    status: RestoreStatus = Field(default_factory=RestoreStatus)
