"""metav1.Condition-shaped conditions, and the pure helpers that maintain them.

Conditions live in ``status.conditions``, a list map keyed by ``type``
(``x-kubernetes-list-type: map``). :func:`set_condition` returns a new list: it keeps
``lastTransitionTime`` when the status does not change (cert-manager's rule) and always sets
``observedGeneration``. Condition types are PascalCase adjectives or past participles; reasons
are one CamelCase word.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from hosted_engine.models.base import StatusModel

CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """One observation of an aspect of the object's state (``metav1.Condition``)."""

    type: str = Field(
        description="Type of condition in CamelCase (e.g. Available, Degraded).",
        pattern=CONDITION_TYPE_PATTERN,
        min_length=1,
        max_length=316,
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="The .metadata.generation the condition was set from.",
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed from one status to another."
    )
    reason: str = Field(
        description="One CamelCase word for the reason of the last transition.",
        pattern=REASON_PATTERN,
        min_length=1,
        max_length=1024,
    )
    message: str = Field(
        default="",
        description="A human-readable message with details about the transition.",
        max_length=32768,
    )


# --- condition types ------------------------------------------------------------------------


class ConditionType:
    """Condition types used across the kinds (strings, so logic can compare them freely)."""

    READY = "Ready"
    """Summary: the object is reconciled and does what its spec asks."""
    AVAILABLE = "Available"
    """HostedEngine: the engine VM runs and its health page answers ``DB Up``."""
    DEGRADED = "Degraded"
    """Something needs attention (start attempts exhausted, fencing impossible ...)."""
    PROGRESSING = "Progressing"
    """A multi-step operation is under way (start, failover, drain, rolling run, upgrade)."""
    GLOBAL_MAINTENANCE = "GlobalMaintenance"
    """HostedEngine: HA hands off; nothing is done to the engine VM automatically."""
    SPARES_SATISFIED = "SparesSatisfied"
    """HostedEngine: at least ``sparesCount`` other allowed hosts have room for the engine."""
    UPGRADED = "Upgraded"
    """HostedEngine: the last engine upgrade finished (False with the reason when it failed)."""
    # Host
    MAINTENANCE = "Maintenance"
    """Host: in maintenance (True), entering it (False, reason Draining ...)."""
    POWER_MANAGEMENT_READY = "PowerManagementReady"
    """Host: its BMC answers with the given credentials."""
    FENCED = "Fenced"
    """Host: a confirmed power-off fenced it; its pods were released."""
    CLOCK_SKEWED = "ClockSkewed"
    """Host: the node's clock is more than the allowed skew away from the API server's."""
    DELETION_BLOCKED = "DeletionBlocked"
    """Host/StorageDomain: deletion is held (not in maintenance / claims still use it)."""
    # StorageDomain
    REACHABLE = "Reachable"
    """StorageDomain: the storage endpoint answered the TCP probe."""
    SOLE_DATA_DOMAIN = "SoleDataDomain"
    """StorageDomain: the hosted-engine domain is the only data domain (losing it = redeploy)."""
    # Backup / Restore / RollingMaintenance
    SUSPENDED = "Suspended"
    """Backup: scheduling suspended (by the user or after maxFailures)."""
    LAST_RUN_SUCCEEDED = "LastRunSucceeded"
    """Backup: the most recent run succeeded."""
    VERIFIED = "Verified"
    """Restore: every checksum of the backup matched."""
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    PAUSED = "Paused"


class Reason:
    """Reasons shared by several kinds (kinds add their own CamelCase reasons)."""

    INVALID_SPEC = "InvalidSpec"
    NOT_IMPLEMENTED = "NotImplemented"
    RECONCILED = "Reconciled"
    RECONCILING = "Reconciling"
    PENDING = "Pending"
    UNKNOWN = "Unknown"
    # HostedEngine
    ENGINE_UP = "EngineUp"
    ENGINE_DOWN = "EngineDown"
    ENGINE_STARTING = "EngineStarting"
    BAD_HEALTH = "EngineBadHealth"
    START_ATTEMPTS_EXHAUSTED = "StartAttemptsExhausted"
    HOST_LOST = "HostLost"
    FENCE_NOT_CONFIRMED = "FenceNotConfirmed"
    NO_HOST_AVAILABLE = "NoHostAvailable"
    NOT_ENOUGH_SPARES = "NotEnoughSpares"
    SPARES_AVAILABLE = "SparesAvailable"
    MAINTENANCE_REQUESTED = "MaintenanceRequested"
    MAINTENANCE_EXPIRED = "MaintenanceExpired"
    STOP_REFUSED = "StopRefusedOutsideGlobalMaintenance"
    UPGRADE_FAILED = "UpgradeFailed"
    ROLLED_BACK = "RolledBack"
    # Host
    DRAINING = "Draining"
    DRAIN_TIMED_OUT = "DrainTimedOut"
    DRAIN_BLOCKED = "DrainBlocked"
    MAINTENANCE_REFUSED = "MaintenanceRefused"
    NODE_NOT_READY = "NodeNotReady"
    FENCE_CONFIRMED = "FenceConfirmed"
    FENCE_FAILED = "FenceFailed"
    NO_POWER_MANAGEMENT = "NoPowerManagement"
    BMC_UNREACHABLE = "BmcUnreachable"
    BMC_AUTH_FAILED = "BmcAuthenticationFailed"
    CLOCK_SKEW = "ClockSkewDetected"
    CLOCK_IN_SYNC = "ClockInSync"
    NOT_IN_MAINTENANCE = "NotInMaintenance"
    # StorageDomain
    ENDPOINT_REACHABLE = "EndpointReachable"
    ENDPOINT_UNREACHABLE = "EndpointUnreachable"
    IN_USE = "InUse"
    # Backup / Restore / RollingMaintenance
    RUN_SUCCEEDED = "RunSucceeded"
    RUN_FAILED = "RunFailed"
    MAX_FAILURES_REACHED = "MaxFailuresReached"
    SUSPENDED_BY_USER = "SuspendedByUser"
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    STAGE_FAILED = "StageFailed"
    STAGE_TIMED_OUT = "StageTimedOut"
    ABORTED = "Aborted"
    PAUSED_BY_USER = "PausedByUser"
    CAPACITY_INSUFFICIENT = "CapacityInsufficient"


# --- helpers ----------------------------------------------------------------------------------


def get_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The condition of ``type_``, or None."""
    for cond in conditions:
        if cond.type == type_:
            return cond
    return None


def is_condition_true(conditions: Iterable[Condition], type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.status == ConditionStatus.TRUE


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus | str | bool,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None,
    now: datetime,
) -> list[Condition]:
    """A new condition list with ``type_`` set (replaced in place, or appended).

    ``lastTransitionTime`` is kept when the status does not change, and set to ``now`` when it
    does; ``observedGeneration``, ``reason`` and ``message`` are always updated. ``status`` may
    be a bool (True/False).
    """
    if isinstance(status, bool):
        new_status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    else:
        new_status = ConditionStatus(status)
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type_:
            out.append(cond)
            continue
        found = True
        transition = cond.last_transition_time if cond.status == new_status else now
        out.append(
            Condition(
                type=type_,
                status=new_status,
                reason=reason,
                message=message,
                observed_generation=observed_generation,
                last_transition_time=transition,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type_,
                status=new_status,
                reason=reason,
                message=message,
                observed_generation=observed_generation,
                last_transition_time=now,
            )
        )
    return out


def remove_condition(conditions: Sequence[Condition], type_: str) -> list[Condition]:
    return [c for c in conditions if c.type != type_]


def conditions_changed(old: Sequence[Condition], new: Sequence[Condition]) -> bool:
    """Whether writing ``new`` would change anything (compare before patching status)."""
    return [c.to_dict() for c in old] != [c.to_dict() for c in new]


ConditionList = Annotated[
    list[Condition],
    Field(
        max_length=32,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    ),
]
"""The type of every ``status.conditions`` field (a list map keyed by ``type``)."""


class ObjectStatus(StatusModel):
    """Fields every kind's status carries."""

    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="The .metadata.generation the operator last acted on.",
    )
    conditions: ConditionList = Field(
        default_factory=list,
        description="Current observations of the object's state, one per type.",
    )
