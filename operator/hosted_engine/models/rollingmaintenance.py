"""RollingMaintenance (cluster-scoped, short name ``herolling``): CloudStack's KVM rolling
maintenance on Kubernetes.

Scope: exactly one of Host names, a label selector, or groups by a label key. Four optional
stages (PreFlight, PreMaintenance, Maintenance, PostMaintenance), each a hook run as a Job
pinned to the host's Node, with ``payload`` appended to every stage's command. Exit code 70 at
PreFlight or PreMaintenance means "no maintenance needed": the host is skipped.
``stageTimeout`` (default 1800s) must be at least ``pollInterval`` (CloudStack refuses the run
otherwise; here the schema does).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from hosted_engine.models.base import (
    AGE_COLUMN,
    CelRule,
    DnsLabel,
    Duration,
    DurationRange,
    Image,
    LabelKey,
    LabelSelector,
    LabelValue,
    LongText,
    ObjectName,
    PrinterColumn,
    Resource,
    ResourceInfo,
    Scope,
    ShortText,
    SpecModel,
    StatusModel,
    UniqueItems,
    cel_rules,
    duration_field,
    exactly_one,
    exactly_one_cel,
)
from hosted_engine.models.conditions import ObjectStatus
from hosted_engine.models.host import HOST_GROUP_LABEL

SKIP_EXIT_CODE = 70
"""A PreFlight/PreMaintenance hook exiting 70 says the host needs no maintenance."""
LOG_TAIL_MAX = 4096

Arg = Annotated[str, Field(max_length=4096)]


class HostGroups(SpecModel):
    """Groups (clusters) of Hosts, handled one after another."""

    label_key: LabelKey = Field(
        default=HOST_GROUP_LABEL,
        description="Hosts are grouped by the value of this label on the Host; with the "
        "default key, a Host without the label is grouped by its spec.group.",
    )
    values: Annotated[list[LabelValue], UniqueItems()] = Field(
        default_factory=list,
        max_length=256,
        description="Groups to include, in this order; empty: every group, sorted by name.",
    )


_SCOPES = ["hosts", "selector", "groups"]


class RollingScope(SpecModel):
    """Exactly one of hosts, selector, groups."""

    hosts: Annotated[list[ObjectName], UniqueItems()] | None = Field(
        default=None, min_length=1, max_length=1024, description="These Hosts, in this order."
    )
    selector: LabelSelector | None = Field(default=None, description="Hosts whose labels match.")
    groups: HostGroups | None = None

    model_config = ConfigDict(json_schema_extra=cel_rules(exactly_one_cel(_SCOPES, "scope")))

    @model_validator(mode="after")
    def _one_form(self) -> RollingScope:
        exactly_one(self, _SCOPES, "scope")
        return self


class ConfigMapScript(SpecModel):
    """A script stored in a ConfigMap."""

    name: DnsLabel = Field(description="ConfigMap in the hooks' namespace.")
    key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = Field(
        description="Key holding the script."
    )


class HostRoot(StrEnum):
    """How the host's root filesystem is mounted at ``/host`` in a hook's container."""

    READ_ONLY = "ReadOnly"
    READ_WRITE = "ReadWrite"


class HostAccess(SpecModel):
    """What a hook may reach of its host (decision 0004). Everything is off by default: a hook
    runs as an unprivileged user in its own PID and network namespaces with no host files.

    Privileged hooks need a hooks namespace whose Pod Security level allows them (the
    operator's own namespace enforces "restricted")."""

    privileged: bool = Field(
        default=False,
        description="Run the container privileged, as root, with every capability.",
    )
    host_pid: bool = Field(
        default=False, alias="hostPID", description="Share the host's PID namespace."
    )
    host_network: bool = Field(default=False, description="Share the host's network namespace.")
    host_root: HostRoot | None = Field(
        default=None,
        description="Mount the host's root filesystem at /host (ReadOnly or ReadWrite).",
    )


class Hook(SpecModel):
    """A stage's hook: image + command, or a script from a ConfigMap run by ``image``."""

    image: Image = Field(description="Image the hook runs in.")
    command: list[Arg] | None = Field(
        default=None, min_length=1, max_length=64, description="Command and arguments."
    )
    script: ConfigMapScript | None = Field(
        default=None, description="A script from a ConfigMap, run with sh in image."
    )
    timeout: Annotated[Duration, DurationRange(minimum="1s", maximum="24h")] | None = Field(
        default=None, description="Overrides stageTimeout for this stage."
    )
    host_access: HostAccess | None = Field(
        default=None, description="Host privileges of this hook (none when absent)."
    )

    model_config = ConfigDict(
        json_schema_extra=cel_rules(exactly_one_cel(["command", "script"], "hook"))
    )

    @model_validator(mode="after")
    def _command_or_script(self) -> Hook:
        exactly_one(self, ["command", "script"], "hook")
        return self


class Stages(SpecModel):
    """The four hook stages, each optional (CloudStack's names)."""

    pre_flight: Hook | None = None
    pre_maintenance: Hook | None = None
    maintenance: Hook | None = None
    post_maintenance: Hook | None = None


class RollingMaintenanceSpec(SpecModel):
    scope: RollingScope
    stages: Stages = Field(default_factory=Stages)
    payload: list[Arg] = Field(
        default_factory=list, max_length=32, description="Arguments appended to every hook."
    )
    hooks_namespace: DnsLabel | None = Field(
        default=None, description="Namespace of the hook Jobs (default: the operator's)."
    )
    forced: bool = Field(default=False, description="Continue past a failing host.")
    stage_timeout: Annotated[Duration, DurationRange(minimum="1s", maximum="24h")] = duration_field(
        "1800s", "Timeout of each stage and of the drain"
    )
    poll_interval: Annotated[Duration, DurationRange(minimum="1s", maximum="5m")] = duration_field(
        "10s", "How often progress is checked; stageTimeout must be >= it"
    )
    max_unavailable: Annotated[int, Field(ge=1, le=100)] = Field(
        default=1, description="Hosts of a group in maintenance at once (when capacity allows)."
    )
    pre_maintenance_ahead: bool = Field(
        default=False,
        description="Run the PreMaintenance hook of the next hosts in line (at most "
        "maxUnavailable) while the hosts before them are in maintenance; only for "
        "PreMaintenance hooks that look at their own host (docs/decisions/0007).",
    )
    paused: bool = Field(default=False, description="Finish the running step, then wait.")
    abort: bool = Field(default=False, description="Stop the run (cannot be undone).")

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="!has(self.stageTimeout) || !has(self.pollInterval) || "
                "duration(self.stageTimeout) >= duration(self.pollInterval)",
                message="stageTimeout must be at least pollInterval",
                field_path=".stageTimeout",
            ),
            CelRule(
                rule="!(has(oldSelf.abort) && oldSelf.abort) || (has(self.abort) && self.abort)",
                message="abort cannot be undone",
                field_path=".abort",
            ),
        )
    )

    @model_validator(mode="after")
    def _timeouts(self) -> RollingMaintenanceSpec:
        if self.stage_timeout.timedelta < self.poll_interval.timedelta:
            raise ValueError(
                f"stageTimeout {self.stage_timeout} must be at least pollInterval "
                f"{self.poll_interval}"
            )
        return self


# --- status -----------------------------------------------------------------------------------


class StageName(StrEnum):
    PRE_FLIGHT = "PreFlight"
    PRE_MAINTENANCE = "PreMaintenance"
    MAINTENANCE = "Maintenance"
    POST_MAINTENANCE = "PostMaintenance"


class StageResultValue(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    TIMED_OUT = "TimedOut"


class StageResult(StatusModel):
    stage: StageName
    result: StageResultValue = StageResultValue.PENDING
    exit_code: Annotated[int, Field(ge=0, le=255)] | None = None
    job_name: ShortText | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    log_tail: Annotated[str, Field(max_length=LOG_TAIL_MAX)] | None = None
    message: LongText | None = None
    end_seen_at: datetime | None = Field(
        default=None, description="When the run first saw the end (CloudStack's timing only)."
    )


class HostRunState(StrEnum):
    PENDING = "Pending"
    PRE_FLIGHT = "PreFlight"
    READY = "Ready"  # PreFlight passed, waiting for its turn in its group
    PRE_MAINTENANCE = "PreMaintenance"
    ENTERING_MAINTENANCE = "EnteringMaintenance"
    MAINTENANCE = "Maintenance"
    ENDING_MAINTENANCE = "EndingMaintenance"
    POST_MAINTENANCE = "PostMaintenance"
    SUCCEEDED = "Succeeded"
    SKIPPED = "Skipped"
    FAILED = "Failed"
    CANCELLED = "Cancelled"  # not started (or aborted) because the run stopped


class HostProgress(StatusModel):
    host: str = Field(max_length=253)
    group: str | None = Field(default=None, max_length=63)
    state: HostRunState = HostRunState.PENDING
    stages: list[StageResult] = Field(default_factory=list, max_length=4)
    maintenance_started_at: datetime | None = None
    maintenance_finished_at: datetime | None = None
    maintenance_seen_at: datetime | None = Field(
        default=None, description="When the run first saw the Host in Maintenance (CloudStack's "
        "timing only)."
    )
    message: LongText | None = None


class GroupState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    DONE = "Done"
    FAILED = "Failed"


class GroupProgress(StatusModel):
    name: str = Field(max_length=63)
    hosts: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list, max_length=1024
    )
    state: GroupState = GroupState.PENDING
    scheduling_disabled: bool = Field(
        default=False, description="Scheduling is disabled for the group (restored after)."
    )


class RunState(StrEnum):
    PENDING = "Pending"
    PRE_FLIGHT = "PreFlight"
    RUNNING = "Running"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ABORTED = "Aborted"


class CapacityCheck(StatusModel):
    ok: bool
    checked_at: datetime | None = None
    message: LongText | None = None


class RollingMaintenanceStatus(ObjectStatus):
    state: RunState = RunState.PENDING
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: ShortText | None = Field(default=None, description="Hosts done/total, e.g. 3/20.")
    hosts_total: Annotated[int, Field(ge=0)] = 0
    hosts_done: Annotated[int, Field(ge=0)] = 0
    current_group: str | None = Field(default=None, max_length=63)
    current_hosts: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list, max_length=100
    )
    groups: list[GroupProgress] = Field(default_factory=list, max_length=256)
    hosts: list[HostProgress] = Field(
        default_factory=list,
        max_length=1024,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["host"]},
    )
    capacity_check: CapacityCheck | None = None
    stopping: bool = Field(
        default=False,
        description="A host failed without forced: nothing new starts, the hosts under way "
        "finish, then the run ends Failed.",
    )
    message: LongText | None = None


class RollingMaintenance(Resource):
    resource = ResourceInfo(
        kind="RollingMaintenance",
        plural="rollingmaintenances",
        short_names=("herolling",),
        scope=Scope.CLUSTER,
        description="Hosts walked through maintenance one group after another, with hooks.",
        printer_columns=(
            PrinterColumn("State", ".status.state"),
            PrinterColumn("Progress", ".status.progress"),
            PrinterColumn("Group", ".status.currentGroup"),
            PrinterColumn("Forced", ".spec.forced", "boolean", priority=1),
            AGE_COLUMN,
        ),
    )

    spec: RollingMaintenanceSpec
    status: RollingMaintenanceStatus = Field(default_factory=RollingMaintenanceStatus)
