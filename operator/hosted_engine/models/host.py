"""Host (cluster-scoped, short name ``hehost``): one Kubernetes Node that runs VMs.

Maintenance with a live-migration drain, hosted-engine deploy/undeploy, power management
(Redfish, IPMI) and fencing.

Power actions are requested with annotations, not spec fields (they are imperative):

* ``hostedengine.io/power-action: status|on|off|soft|reset|cycle`` asks for one action;
* ``hostedengine.io/power-action-id: <any id>`` (optional) makes a repeat of the same action a
  new request. The operator acts when (action, id) differs from
  ``status.powerManagement.lastAction``'s, and records the result there.

Fencing is requested by whoever needs it (the HostedEngine, the Host's own NonResponsive
handling) with ``hostedengine.io/fence-request: <requester>/<request id>``; the result is in
``status.fencing`` with the same ``requestId``. One fence at a time per host.

Maintenance is requested by the user with ``spec.maintenance.mode: local``, or by another part
of the operator (a RollingMaintenance run) with the annotation
``hostedengine.io/maintenance-request: <requester>/<name>`` (e.g. ``rolling/nightly``), which the
Host honours exactly like mode ``local`` (same drain, progress in ``status.drain``); removing the
annotation cancels or ends that maintenance unless the spec itself asks for it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from hosted_engine import API_GROUP
from hosted_engine.models.base import (
    AGE_COLUMN,
    CelRule,
    ClusterSecretKeyRef,
    ClusterSecretRef,
    DnsLabel,
    Duration,
    DurationRange,
    HostAddress,
    LongText,
    ObjectName,
    Port,
    PrinterColumn,
    Resource,
    ResourceInfo,
    Scope,
    ShortText,
    SpecModel,
    StatusModel,
    cel_rules,
    duration_field,
)
from hosted_engine.models.conditions import ObjectStatus

POWER_ACTION_ANNOTATION = f"{API_GROUP}/power-action"
POWER_ACTION_ID_ANNOTATION = f"{API_GROUP}/power-action-id"
FENCE_REQUEST_ANNOTATION = f"{API_GROUP}/fence-request"
MAINTENANCE_REQUEST_ANNOTATION = f"{API_GROUP}/maintenance-request"
"""Maintenance asked for by the operator itself (rolling maintenance), honoured like mode local."""
HOSTED_ENGINE_NODE_LABEL = f"{API_GROUP}/engine-host"
"""Label put on the Node of a Host deployed for the hosted engine (value ``"true"``)."""
HOST_GROUP_LABEL = f"{API_GROUP}/group"
"""Label carrying a Host's group (rolling maintenance groups hosts by it by default)."""
CLOCK_SKEW_LIMIT_SECONDS = 2.0


class PowerAction(StrEnum):
    STATUS = "status"
    ON = "on"
    OFF = "off"
    SOFT = "soft"
    RESET = "reset"
    CYCLE = "cycle"


class PowerState(StrEnum):
    ON = "On"
    OFF = "Off"
    UNKNOWN = "Unknown"
    DISABLED = "Disabled"


class PowerActionResult(StrEnum):
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    REJECTED = "Rejected"


# --- spec -------------------------------------------------------------------------------------


class HostedEngineDeployment(StrEnum):
    DEPLOY = "deploy"
    UNDEPLOY = "undeploy"


class LocalMaintenanceMode(StrEnum):
    NONE = "none"
    LOCAL = "local"


class NonMigratablePolicy(StrEnum):
    BLOCK = "block"
    SHUTDOWN = "shutdown"


class HostMaintenance(SpecModel):
    """Local maintenance: cordon and drain by live migration."""

    mode: LocalMaintenanceMode = Field(
        default=LocalMaintenanceMode.NONE,
        description="local: cordon the Node and live-migrate every VM away; none: activate.",
    )
    reason: LongText | None = Field(default=None, description="Why (shown in Events).")
    timeout: Annotated[Duration, DurationRange(minimum="1s", maximum="72h")] = duration_field(
        "30m", "Time the drain may take before it stops and reports (the host stays cordoned)"
    )
    non_migratable_policy: NonMigratablePolicy = Field(
        default=NonMigratablePolicy.BLOCK,
        description="VMs that cannot live-migrate: block the drain, or shut them down.",
    )


class PowerManagementType(StrEnum):
    REDFISH = "redfish"
    IPMI = "ipmi"


class PowerManagement(SpecModel):
    """The host's BMC. Credentials come only from the Secret (keys username and password)."""

    type: PowerManagementType = Field(description="redfish or ipmi.")
    address: HostAddress = Field(description="BMC host name or IP address.")
    port: Port | None = Field(default=None, description="Default 443 (Redfish) or 623 (IPMI).")
    system_id: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None,
        description="Redfish system id (e.g. the node name); default: the only system.",
    )
    credentials_secret_ref: ClusterSecretRef = Field(
        description="Secret with keys username and password."
    )
    verify_tls: bool = Field(default=True, description="Verify the Redfish TLS certificate.")
    ca_bundle_secret_ref: ClusterSecretKeyRef | None = Field(
        default=None, description="CA bundle (PEM) that signs the BMC's certificate."
    )
    fencing_enabled: bool = Field(default=True, description="Whether this host may be fenced.")
    action_timeout: Annotated[Duration, DurationRange(minimum="1s", maximum="10m")] = (
        duration_field("60s", "Timeout of one power action (CloudStack's default)")
    )

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="self.type == 'redfish' || !has(self.systemID)",
                message="systemID is only used with type redfish",
            ),
            CelRule(
                rule="self.type == 'redfish' || !has(self.caBundleSecretRef)",
                message="caBundleSecretRef is only used with type redfish",
            ),
        )
    )

    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 443 if self.type == PowerManagementType.REDFISH else 623

    @model_validator(mode="after")
    def _redfish_only_fields(self) -> PowerManagement:
        if self.type != PowerManagementType.REDFISH:
            if self.system_id is not None:
                raise ValueError("systemID is only used with type redfish")
            if self.ca_bundle_secret_ref is not None:
                raise ValueError("caBundleSecretRef is only used with type redfish")
        return self


class HostSpec(SpecModel):
    node_name: ObjectName = Field(
        description="The Kubernetes Node this Host stands for (immutable).",
        json_schema_extra=cel_rules(
            CelRule(rule="self == oldSelf", message="nodeName is immutable")
        ),
    )
    hosted_engine: HostedEngineDeployment = Field(
        default=HostedEngineDeployment.UNDEPLOY,
        description="deploy: this host may run the hosted engine; undeploy: it may not.",
    )
    maintenance: HostMaintenance = Field(default_factory=HostMaintenance)
    power_management: PowerManagement | None = None
    group: DnsLabel | None = Field(
        default=None,
        description="Group (cluster) of the host; rolling maintenance handles groups in turn.",
    )


# --- status -----------------------------------------------------------------------------------


class HostState(StrEnum):
    PENDING = "Pending"
    UP = "Up"
    PREPARING_FOR_MAINTENANCE = "PreparingForMaintenance"
    MAINTENANCE = "Maintenance"
    ACTIVATING = "Activating"
    NON_RESPONSIVE = "NonResponsive"
    FENCED = "Fenced"
    NON_OPERATIONAL = "NonOperational"


class VmRef(StatusModel):
    namespace: str = Field(max_length=63)
    name: str = Field(max_length=253)


class MigratingVm(VmRef):
    migration: str | None = Field(default=None, max_length=253, description="VMIM name.")
    target_node: str | None = Field(default=None, max_length=253)
    started_at: datetime | None = None


class BlockedVm(VmRef):
    reason: LongText


class DrainStatus(StatusModel):
    """Progress of entering maintenance (kept so a restarted operator resumes)."""

    started_at: datetime | None = None
    finished_at: datetime | None = None
    total: Annotated[int, Field(ge=0)] = 0
    to_move: list[VmRef] = Field(default_factory=list, max_length=512)
    in_flight: list[MigratingVm] = Field(default_factory=list, max_length=512)
    moved: list[VmRef] = Field(default_factory=list, max_length=512)
    blocked: list[BlockedVm] = Field(default_factory=list, max_length=512)
    shut_down: list[VmRef] = Field(default_factory=list, max_length=512)
    failed: list[BlockedVm] = Field(default_factory=list, max_length=512)
    timed_out: bool = False
    message: LongText | None = None


class FencePhase(StrEnum):
    REQUESTED = "Requested"
    POWERING_OFF = "PoweringOff"
    CONFIRMED = "Confirmed"
    FAILED = "Failed"
    REFUSED = "Refused"
    RELEASED = "Released"


class FencingStatus(StatusModel):
    request_id: ShortText | None = None
    requested_by: ShortText | None = None
    reason: LongText | None = None
    phase: FencePhase | None = None
    requested_at: datetime | None = None
    started_at: datetime | None = None
    confirmed_at: datetime | None = None
    finished_at: datetime | None = None
    out_of_service_taint: bool = Field(
        default=False, description="The node.kubernetes.io/out-of-service taint is on the Node."
    )
    previous_state: HostState | None = Field(
        default=None, description="State to return to when the host is back (Up/Maintenance)."
    )
    message: LongText | None = None
    count: Annotated[int, Field(ge=0)] = 0


class PowerActionStatus(StatusModel):
    id: ShortText | None = None
    action: PowerAction
    result: PowerActionResult
    message: LongText | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class PowerManagementStatus(StatusModel):
    power_state: PowerState = PowerState.UNKNOWN
    checked_at: datetime | None = None
    last_action: PowerActionStatus | None = None


class ClockSkewStatus(StatusModel):
    seconds: float | None = Field(
        default=None,
        description="Node clock minus the operator's clock, from the node's Lease renewals. "
                    "Rewritten when it crosses the 2 s limit, or beyond the limit when it "
                    "moves by 0.5 s; within the limit it is the value last written.")
    measured_at: datetime | None = None


class NodeStatus(StatusModel):
    ready: bool = False
    last_heartbeat: datetime | None = None
    unschedulable: bool = False
    out_of_service: bool = False


class HostedEngineHostStatus(StatusModel):
    deployed: bool = False
    host_id: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="oVirt-style host id in the engine's host table."
    )
    score: Annotated[int, Field(ge=0, le=3400)] | None = None
    engine_running: bool = False


class HostStatus(ObjectStatus):
    state: HostState = HostState.PENDING
    state_since: datetime | None = None
    node: NodeStatus = Field(default_factory=NodeStatus)
    hosted_engine: HostedEngineHostStatus = Field(default_factory=HostedEngineHostStatus)
    drain: DrainStatus | None = None
    fencing: FencingStatus | None = None
    power_management: PowerManagementStatus = Field(default_factory=PowerManagementStatus)
    clock_skew: ClockSkewStatus = Field(default_factory=ClockSkewStatus)
    message: LongText | None = None


class Host(Resource):
    resource = ResourceInfo(
        kind="Host",
        plural="hosts",
        short_names=("hehost",),
        scope=Scope.CLUSTER,
        description="A Kubernetes Node that runs VMs: maintenance, power management, fencing.",
        printer_columns=(
            PrinterColumn("Node", ".spec.nodeName"),
            PrinterColumn("State", ".status.state"),
            PrinterColumn("Score", ".status.hostedEngine.score", "integer"),
            PrinterColumn("HE", ".spec.hostedEngine"),
            PrinterColumn("Power", ".status.powerManagement.powerState"),
            PrinterColumn("Group", ".spec.group", priority=1),
            PrinterColumn("Maintenance", ".spec.maintenance.mode", priority=1),
            AGE_COLUMN,
        ),
    )

    spec: HostSpec
    status: HostStatus = Field(default_factory=HostStatus)

    def requested_power_action(self) -> tuple[PowerAction, str | None] | None:
        """The (action, id) asked for by annotation, or None; a bad value raises ValueError."""
        raw = self.metadata.annotations.get(POWER_ACTION_ANNOTATION)
        if raw is None:
            return None
        try:
            action = PowerAction(raw.strip().lower())
        except ValueError:
            allowed = ", ".join(a.value for a in PowerAction)
            raise ValueError(
                f"annotation {POWER_ACTION_ANNOTATION}: {raw!r} is not one of {allowed}"
            ) from None
        return action, self.metadata.annotations.get(POWER_ACTION_ID_ANNOTATION)

    def power_action_pending(self) -> bool:
        """Whether the requested power action has not been handled yet."""
        request = self.requested_power_action()
        if request is None:
            return False
        last = self.status.power_management.last_action
        if last is None:
            return True
        action, request_id = request
        return (last.action, last.id) != (action, request_id)
