"""HostedEngine (namespaced, short name ``he``): the engine VM and how it is kept available.

Field names follow oVirt where they fit (``sparesCount``, ``maintenance.mode: global|none``, the
liveliness page healthy on ``DB Up``, the notification keys of ``hosted-engine
--set-shared-config``). Defaults, and why they differ from oVirt's:

* ``health.restartGrace`` 60s (oVirt: 300 s of bad health, then up to 300 s of shutdown).
* ``failover.silenceThreshold`` 22s (oVirt: 60 s of stale metadata plus sanlock's 140 s): a
  node whose Lease missed 2 kubelet renewals (10 s each, plus jitter and a margin; one late
  renewal is never a loss) is lost, its BMC fences it, then the engine is started elsewhere. A
  power loss does not wait for it: the Host polls engine hosts' BMCs (5 s) and a host whose BMC
  reports power off is lost at once.
* ``failover.startRetries``: real exponential backoff (5s doubling to 5m) and a limit (5) after
  which the operator stops trying and sets Degraded (oVirt's retry penalty is broken and it
  retries forever).
"""

from __future__ import annotations

import ipaddress
import random
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, field_validator, model_validator

from hosted_engine.models.base import (
    AGE_COLUMN,
    CelRule,
    DnsLabel,
    Duration,
    DurationRange,
    Email,
    Fqdn,
    HostAddress,
    HttpUrl,
    Image,
    IPv4,
    LabelSelector,
    LongText,
    MacAddress,
    ObjectName,
    Port,
    PrinterColumn,
    Quantity,
    QuantityRange,
    Resource,
    ResourceInfo,
    Scope,
    SecretKeyRef,
    SecretRef,
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

DEFAULT_HEALTH_URL = "http://{fqdn}/ovirt-engine/services/health"
DEFAULT_HEALTH_EXPECT = "DB Up"
DEFAULT_STATE_TRANSITION = "maintenance|start|stop|up|down"
OVIRT_MAC_PREFIX = "00:16:3e"


def random_mac(rng: random.Random) -> str:
    """A random MAC in oVirt's 00:16:3e range (the operator picks one once, keeps it in status)."""
    tail = ":".join(f"{rng.randrange(256):02x}" for _ in range(3))
    return f"{OVIRT_MAC_PREFIX}:{tail}"


# --- spec: the VM -----------------------------------------------------------------------------


class ContainerDiskImage(SpecModel):
    """The disk image shipped in a container image (KubeVirt containerDisk)."""

    image: Image = Field(description="Container image holding the engine's disk image.")


class UrlImage(SpecModel):
    """A disk image imported from an HTTP(S) URL by a CDI DataVolume."""

    url: HttpUrl = Field(description="HTTP(S) URL of the disk image, imported by a DataVolume.")
    secret_ref: SecretRef | None = Field(
        default=None, description="Secret with accessKeyId/secretKey for the URL, if needed."
    )
    cert_config_map: DnsLabel | None = Field(
        default=None, description="ConfigMap holding the CA bundle that signs the URL's server."
    )


class PvcImage(SpecModel):
    """A disk cloned from an existing PVC in the same namespace."""

    claim_name: DnsLabel = Field(description="An existing PVC to clone the engine's disk from.")


class EngineImage(SpecModel):
    """Where the engine's disk comes from: exactly one source.

    A change of the source or of ``version`` starts an engine upgrade (unless
    ``upgradePolicy.mode`` is Manual).
    """

    container_disk: ContainerDiskImage | None = Field(default=None)
    url: UrlImage | None = Field(default=None)
    pvc: PvcImage | None = Field(default=None)
    version: ShortText | None = Field(
        default=None, description="The engine version this image carries (shown in status)."
    )

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            exactly_one_cel(["container_disk", "url", "pvc"], "image source")
        )
    )

    @model_validator(mode="after")
    def _one_source(self) -> EngineImage:
        exactly_one(self, ["container_disk", "url", "pvc"], "image source")
        return self


class EngineDisk(SpecModel):
    """The engine's disk, on a StorageDomain."""

    # Sanity bounds kept in the model only (no CEL quantity rule on every HostedEngine).
    size: Annotated[Quantity, QuantityRange(minimum="1Gi", cel=False)] = Field(
        default=Quantity("58Gi"), description="Size of the engine's disk."
    )
    storage_domain: ObjectName = Field(
        description="The StorageDomain the disk lives on (normally the hostedEngine one)."
    )


class BootProtocol(StrEnum):
    DHCP = "dhcp"
    STATIC = "static"


class EngineNetwork(SpecModel):
    """The engine VM's network; a static address must lie in the gateway's subnet."""

    fqdn: Fqdn = Field(description="The engine's FQDN (kept across restores, as oVirt requires).")
    mac_address: MacAddress | None = Field(
        default=None,
        description="MAC address; when unset the operator picks a random 00:16:3e:xx:xx:xx "
        "once and keeps it in status.vm.macAddress.",
    )
    boot_protocol: BootProtocol = Field(default=BootProtocol.DHCP, description="dhcp or static.")
    address: IPv4 | None = Field(default=None, description="Static IPv4 address.")
    prefix: Annotated[int, Field(ge=1, le=32)] | None = Field(
        default=None, description="Static address prefix length."
    )
    gateway: IPv4 | None = Field(
        default=None,
        description="Default gateway; also the target of the hosts' network probe.",
    )
    dns_servers: Annotated[list[IPv4], UniqueItems()] = Field(
        default_factory=list, max_length=3, description="Up to 3 DNS servers."
    )
    network_name: DnsLabel | None = Field(
        default=None,
        description="A Multus NetworkAttachmentDefinition to attach to (default: pod network).",
    )

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="!has(self.bootProtocol) || self.bootProtocol != 'static' || "
                "(has(self.address) && has(self.prefix) && has(self.gateway))",
                message="a static address requires address, prefix and gateway",
            ),
            CelRule(
                rule="(has(self.bootProtocol) && self.bootProtocol == 'static') || "
                "(!has(self.address) && !has(self.prefix))",
                message="address and prefix are only used with bootProtocol static",
            ),
        )
    )

    @model_validator(mode="after")
    def _static_is_complete(self) -> EngineNetwork:
        if self.boot_protocol == BootProtocol.STATIC:
            missing = [
                n
                for n, v in (
                    ("address", self.address),
                    ("prefix", self.prefix),
                    ("gateway", self.gateway),
                )
                if v is None
            ]
            if missing:
                raise ValueError(
                    f"bootProtocol static requires {', '.join(missing)} "
                    "(a static address requires address, prefix and gateway)"
                )
            assert self.address is not None and self.gateway is not None
            subnet = ipaddress.ip_network(f"{self.address}/{self.prefix}", strict=False)
            if ipaddress.ip_address(self.gateway) not in subnet:
                raise ValueError(
                    f"gateway {self.gateway} is not in the subnet {subnet} of address "
                    f"{self.address}/{self.prefix}"
                )
            if self.address == self.gateway:
                raise ValueError("address and gateway must differ")
        elif self.address is not None or self.prefix is not None:
            raise ValueError("address and prefix are only used with bootProtocol static")
        return self


class RootSshAccess(StrEnum):
    YES = "yes"
    NO = "no"
    WITHOUT_PASSWORD = "without-password"


class CloudInit(SpecModel):
    """cloud-init for the engine VM; passwords only from Secrets."""

    root_ssh_keys: list[Annotated[str, Field(min_length=1, max_length=16384)]] = Field(
        default_factory=list, max_length=32, description="Public keys for root's authorized_keys."
    )
    root_ssh_access: RootSshAccess = Field(
        default=RootSshAccess.YES,
        description="sshd PermitRootLogin: yes, no or without-password.",
    )
    root_password_secret_ref: SecretKeyRef | None = Field(
        default=None, description="The engine VM's root password (never copied into status)."
    )
    admin_password_secret_ref: SecretKeyRef | None = Field(
        default=None, description="The engine's admin@internal password."
    )
    etc_hosts: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default_factory=list,
        max_length=64,
        description="Lines appended to /etc/hosts ('<ip> <name> [aliases]').",
    )
    extra_user_data: Annotated[str, Field(max_length=65536)] | None = Field(
        default=None,
        description="Extra cloud-config (a YAML string) merged into the generated user data.",
    )

    @field_validator("etc_hosts")
    @classmethod
    def _hosts_lines(cls, lines: list[str]) -> list[str]:
        for i, line in enumerate(lines):
            parts = line.split()
            if len(parts) < 2:
                raise ValueError(f"etcHosts[{i}]: expected '<ip> <name> [aliases]', got {line!r}")
            try:
                ipaddress.ip_address(parts[0])
            except ValueError as exc:
                raise ValueError(f"etcHosts[{i}]: {parts[0]!r} is not an IP address") from exc
        return lines


class EngineVM(SpecModel):
    """The engine VM: size, disk, image, network and cloud-init."""

    cpu: Annotated[int, Field(ge=1, le=256)] = Field(default=4, description="Virtual CPUs.")
    memory: Annotated[Quantity, QuantityRange(minimum="1Gi", cel=False)] = Field(
        default=Quantity("16Gi"), description="Memory (oVirt recommends at least 16Gi)."
    )
    disk: EngineDisk
    image: EngineImage
    network: EngineNetwork
    cloud_init: CloudInit = Field(default_factory=CloudInit)


# --- spec: HA behaviour -----------------------------------------------------------------------


class EngineHosts(SpecModel):
    """Which Hosts may run the engine.

    A Host is allowed when it is deployed for the hosted engine (``spec.hostedEngine: deploy``)
    and, when given, its name is in ``names`` and its labels match ``selector``.
    """

    names: Annotated[list[ObjectName], UniqueItems()] = Field(
        default_factory=list, max_length=128, description="Only these Hosts (empty: any)."
    )
    selector: LabelSelector | None = Field(
        default=None, description="Only Hosts whose labels match."
    )


class GlobalMaintenanceMode(StrEnum):
    NONE = "none"
    GLOBAL = "global"


class EngineMaintenance(SpecModel):
    """Global maintenance: HA hands off (oVirt's --set-maintenance --mode=global)."""

    mode: GlobalMaintenanceMode = Field(
        default=GlobalMaintenanceMode.NONE,
        description="global: HA hands off, nothing is done to the engine VM automatically.",
    )
    until: datetime | None = Field(
        default=None, description="Global maintenance ends by itself at this time."
    )
    reason: LongText | None = Field(default=None, description="Why (shown in status and Events).")
    reminder_interval: Annotated[Duration, DurationRange(minimum="1m", maximum="168h")] = (
        duration_field("1h", "Interval of the reminder Events while in global maintenance")
    )


class EngineHealth(SpecModel):
    """The engine's liveliness check and how bad health is handled."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2048)] = Field(
        default=DEFAULT_HEALTH_URL,
        description="Liveliness page; {fqdn} is replaced by the engine's FQDN.",
    )
    expect: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        default=DEFAULT_HEALTH_EXPECT, description="Healthy when the body contains this text."
    )
    insecure_skip_tls_verify: bool = Field(
        default=False, description="Skip TLS verification for an https URL (off by default)."
    )
    interval: Annotated[Duration, DurationRange(minimum="1s", maximum="10m")] = duration_field(
        "5s", "Time between two probes"
    )
    timeout: Annotated[Duration, DurationRange(minimum="100ms", maximum="5m")] = duration_field(
        "3s", "Timeout of one probe"
    )
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = Field(
        default=3, description="Consecutive failed probes before health is bad (hysteresis)."
    )
    startup_grace: Annotated[Duration, DurationRange(maximum="2h")] = duration_field(
        "10m", "Time a starting engine has to become healthy (oVirt: 600 s)"
    )
    restart_grace: Annotated[Duration, DurationRange(maximum="2h")] = duration_field(
        "60s", "Continuous bad health before the engine is restarted (oVirt: 300 s + 300 s)"
    )

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="!has(self.timeout) || !has(self.interval) || "
                "duration(self.timeout) <= duration(self.interval)",
                message="timeout must not exceed interval",
            )
        )
    )

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> EngineHealth:
        if self.timeout.timedelta > self.interval.timedelta:
            raise ValueError(f"timeout {self.timeout} must not exceed interval {self.interval}")
        return self

    def url_for(self, fqdn: str) -> str:
        return self.url.replace("{fqdn}", fqdn)


class StartRetries(SpecModel):
    """Exponential backoff of failed starts, and when to give up (Degraded)."""

    limit: Annotated[int, Field(ge=1, le=100)] = Field(
        default=5, description="Failed starts before the operator stops trying (Degraded)."
    )
    initial_backoff: Annotated[Duration, DurationRange(maximum="1h")] = duration_field(
        "5s", "Delay after the first failed start; it doubles after each failure"
    )
    max_backoff: Annotated[Duration, DurationRange(maximum="24h")] = duration_field(
        "5m", "Upper bound of the delay between two start attempts"
    )

    @model_validator(mode="after")
    def _ordered(self) -> StartRetries:
        if self.initial_backoff.timedelta > self.max_backoff.timedelta:
            raise ValueError("initialBackoff must not exceed maxBackoff")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="!has(self.initialBackoff) || !has(self.maxBackoff) || "
                "duration(self.initialBackoff) <= duration(self.maxBackoff)",
                message="initialBackoff must not exceed maxBackoff",
            )
        )
    )


class Failover(SpecModel):
    """When a host is lost and how the engine fails over."""

    silence_threshold: Annotated[Duration, DurationRange(minimum="2s", maximum="10m")] = (
        duration_field(
            "22s",
            "How long a host's node Lease may go unrenewed before the host is treated as lost "
            "and fenced: 22s is 2 missed kubelet renewals (10s each, 4% jitter) plus a margin, "
            "so one late renewal is never a lost host. A host whose BMC reports power off is "
            "lost at once, without this wait",
        )
    )
    require_fencing: bool = Field(
        default=True,
        description="Start the engine elsewhere only after a confirmed fence of the lost host.",
    )
    move_threshold: Annotated[int, Field(ge=0, le=3400)] = Field(
        default=800, description="Score lead another host needs before the engine moves."
    )
    start_retries: StartRetries = Field(default_factory=StartRetries)


class Notifications(SpecModel):
    """SMTP notifications on state transitions (oVirt's broker.conf keys)."""

    enabled: bool = Field(default=True, description="Send mails (false: Events only).")
    smtp_server: HostAddress = Field(default="localhost", description="SMTP server.")
    smtp_port: Port = Field(default=25, description="SMTP port.")
    start_tls: bool = Field(default=False, description="Use STARTTLS (verified by default).")
    insecure_skip_tls_verify: bool = Field(
        default=False, description="Skip STARTTLS certificate verification (off by default)."
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None, description="Secret with keys username and password for SMTP AUTH."
    )
    source_email: Email = Field(default="root@localhost", description="Sender address.")
    destination_emails: Annotated[list[Email], UniqueItems()] = Field(
        default_factory=lambda: ["root@localhost"],
        min_length=1,
        max_length=32,
        description="Recipients (default root@localhost).",
    )
    state_transition: Annotated[str, Field(min_length=1, max_length=1024)] = Field(
        default=DEFAULT_STATE_TRANSITION,
        description="Regular expression (case-insensitive) matched against 'Old-New' states.",
    )
    smtp_timeout: Annotated[Duration, DurationRange(minimum="1s", maximum="5m")] = duration_field(
        "10s", "SMTP connection timeout"
    )
    ca_bundle_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key with the PEM CA bundle that signs the SMTP server's certificate "
        "(default: the system's trust store).",
    )

    @field_validator("state_transition")
    @classmethod
    def _is_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"stateTransition is not a valid regular expression: {exc}") from exc
        return value


class UpgradeMode(StrEnum):
    AUTOMATIC = "Automatic"
    MANUAL = "Manual"


class UpgradePolicy(SpecModel):
    """How a change of the engine's image is rolled out (with rollback)."""

    mode: UpgradeMode = Field(
        default=UpgradeMode.AUTOMATIC,
        description="Automatic: a change of spec.vm.image starts an upgrade.",
    )
    pre_upgrade_backup: bool = Field(
        default=True, description="Take a Backup before switching the image."
    )
    backup_name: DnsLabel | None = Field(
        default=None,
        description="A Backup in this namespace whose target the pre-upgrade backup uses "
        "(default: the first Backup, by name, whose source is this HostedEngine).",
    )
    health_timeout: Annotated[Duration, DurationRange(minimum="1s", maximum="6h")] = duration_field(
        "15m", "Time the new image has, from the switch, to become healthy before rollback"
    )


class StopMode(StrEnum):
    GRACEFUL = "Graceful"
    POWER_OFF = "PowerOff"


class HostedEngineSpec(SpecModel):
    running: bool = Field(
        default=True,
        description="Desired power state. Stopping is refused outside global maintenance.",
    )
    stop_mode: StopMode = Field(
        default=StopMode.GRACEFUL,
        description="How running: false stops the VM: Graceful shutdown or PowerOff.",
    )
    shutdown_timeout: Annotated[Duration, DurationRange(maximum="1h")] = duration_field(
        "120s", "Graceful shutdown time before a power-off"
    )
    vm: EngineVM = Field(description="The engine VM.")
    hosts: EngineHosts = Field(default_factory=EngineHosts)
    maintenance: EngineMaintenance = Field(default_factory=EngineMaintenance)
    health: EngineHealth = Field(default_factory=EngineHealth)
    failover: Failover = Field(default_factory=Failover)
    spares_count: Annotated[int, Field(ge=0, le=64)] = Field(
        default=0,
        description="How many other allowed hosts must keep room for the engine (HeSparesCount).",
    )
    notifications: Notifications | None = None
    upgrade_policy: UpgradePolicy = Field(default_factory=UpgradePolicy)
    reset_seq: Annotated[int, Field(ge=0)] = Field(
        default=0,
        description="Raise it to leave Degraded by hand: the operator tries to start again.",
    )


# --- status -----------------------------------------------------------------------------------


class EngineState(StrEnum):
    """HA states: oVirt's names where they mean the same, plus the failover states."""

    PENDING = "Pending"
    ENGINE_DOWN = "EngineDown"
    ENGINE_START = "EngineStart"
    ENGINE_STARTING = "EngineStarting"
    ENGINE_UP = "EngineUp"
    ENGINE_UP_BAD_HEALTH = "EngineUpBadHealth"
    ENGINE_STOP = "EngineStop"
    ENGINE_FORCE_STOP = "EngineForceStop"
    ENGINE_UNEXPECTEDLY_DOWN = "EngineUnexpectedlyDown"
    ENGINE_MAYBE_AWAY = "EngineMaybeAway"
    ENGINE_MIGRATING = "EngineMigrating"
    GLOBAL_MAINTENANCE = "GlobalMaintenance"
    LOCAL_MAINTENANCE = "LocalMaintenance"
    HOST_LOST = "HostLost"
    FENCING = "Fencing"
    DEGRADED = "Degraded"
    UPGRADING = "Upgrading"


class VmStatus(StrEnum):
    UP = "up"
    DOWN = "down"
    DOWN_UNEXPECTED = "down_unexpected"
    DOWN_MISSING = "down_missing"
    UNKNOWN = "unknown"


class HealthStatus(StrEnum):
    GOOD = "good"
    BAD = "bad"
    UNKNOWN = "unknown"


class EngineStatus(StatusModel):
    """oVirt's engine-status dict, as in ``hosted-engine --vm-status``."""

    vm: VmStatus = VmStatus.UNKNOWN
    health: HealthStatus = HealthStatus.UNKNOWN
    detail: ShortText | None = None
    reason: LongText | None = None


class VmInfo(StatusModel):
    name: str | None = Field(default=None, max_length=253)
    mac_address: MacAddress | None = None
    image: Annotated[str, Field(max_length=2048)] | None = None
    version: ShortText | None = None
    node_name: str | None = Field(default=None, max_length=253)
    phase: ShortText | None = Field(default=None, description="The VMI phase.")


class HostEntry(StatusModel):
    """One row of the per-host table (one block of ``--vm-status``)."""

    host: str = Field(max_length=253)
    host_id: Annotated[int, Field(ge=1)] | None = None
    node_name: str | None = Field(default=None, max_length=253)
    score: Annotated[int, Field(ge=0, le=3400)] = 0
    state: ShortText | None = Field(default=None, description="HA view of this host.")
    up_to_date: bool = Field(default=False, description="Status up-to-date (live data).")
    last_seen: datetime | None = None
    local_maintenance: bool = False
    engine_running: bool = False
    ready: bool = False
    failed_starts: Annotated[int, Field(ge=0)] = 0
    has_room: bool | None = Field(default=None, description="Enough free memory for the engine.")
    penalties: list[ShortText] = Field(
        default_factory=list, max_length=16, description="Why the score is below 3400."
    )


class MaintenanceSource(StrEnum):
    USER = "User"
    UPGRADE = "Upgrade"


class MaintenanceStatus(StatusModel):
    mode: GlobalMaintenanceMode = GlobalMaintenanceMode.NONE
    source: MaintenanceSource | None = Field(
        default=None,
        description="Who asked: the user (spec) or the operator's own upgrade (left by it).",
    )
    since: datetime | None = None
    until: datetime | None = None
    last_reminder_at: datetime | None = None


class FenceRequest(StatusModel):
    host: str = Field(max_length=253)
    request_id: ShortText
    requested_at: datetime
    confirmed_at: datetime | None = None
    result: ShortText | None = None


class FailoverRecord(StatusModel):
    """Timings of the last failover (detection, fence, reschedule, boot)."""

    from_host: str | None = Field(default=None, max_length=253)
    to_host: str | None = Field(default=None, max_length=253)
    lost_at: datetime | None = None
    detected_at: datetime | None = None
    fenced_at: datetime | None = None
    started_at: datetime | None = None
    healthy_at: datetime | None = None


class FailedStartMemo(StatusModel):
    host: str = Field(max_length=253)
    at: datetime


class PlacementMemo(StatusModel):
    host: str = Field(max_length=253)
    score: Annotated[int, Field(ge=0, le=3400)] = 0


class ConditionMemo(StatusModel):
    """The conditions the HA machine last sent (it re-sends only what changes)."""

    type: ShortText
    status: ShortText
    reason: ShortText
    message: Annotated[str, Field(max_length=32768)] = ""


class HaMemory(StatusModel):
    """What the HA state machine keeps between two decisions (survives restarts).

    Mirrors ``hosted_engine.logic.ha.memory_to_dict`` field for field, so the API server's
    pruning keeps all of it.
    """

    state: ShortText | None = None
    since: datetime | None = None
    host: str | None = Field(default=None, max_length=253)
    reason: Annotated[str, Field(max_length=32768)] | None = None
    attempts: Annotated[int, Field(ge=0)] = 0
    backoff_until: datetime | None = None
    failed_starts: list[FailedStartMemo] = Field(default_factory=list, max_length=256)
    start_requested_at: datetime | None = None
    healthy_since: datetime | None = None
    last_action_at: datetime | None = None
    lost_host: str | None = Field(default=None, max_length=253)
    fenced_host: str | None = Field(default=None, max_length=253)
    abandoned_host: str | None = Field(default=None, max_length=253)
    migration_target: str | None = Field(default=None, max_length=253)
    migration_failed_at: datetime | None = None
    reminder_at: datetime | None = None
    notice: Annotated[str, Field(max_length=1024)] | None = None
    seen_running: bool | None = None
    seen_power_off: bool | None = None
    user_action: ShortText | None = None
    refusal: Annotated[str, Field(max_length=4096)] | None = None
    reset_seq: Annotated[int, Field(ge=0)] = 0
    placement: list[PlacementMemo] = Field(default_factory=list, max_length=128)
    conditions: list[ConditionMemo] = Field(default_factory=list, max_length=16)
    failover: FailoverRecord | None = None
    last_failover: FailoverRecord | None = None
    failovers: Annotated[int, Field(ge=0)] = 0


class UpgradeStepName(StrEnum):
    PRE_FLIGHT = "PreFlight"
    BACKUP = "Backup"
    ENTER_GLOBAL_MAINTENANCE = "EnterGlobalMaintenance"
    SWITCH_IMAGE = "SwitchImage"
    WAIT_HEALTHY = "WaitHealthy"
    LEAVE_GLOBAL_MAINTENANCE = "LeaveGlobalMaintenance"
    ROLLBACK = "Rollback"


class StepState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class UpgradeStep(StatusModel):
    name: UpgradeStepName
    state: StepState = StepState.PENDING
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: LongText | None = None


class UpgradePhase(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"


class UpgradeStatus(StatusModel):
    """The last engine upgrade (hosted_engine.logic.upgrade): all of its progress, so that a
    restarted operator resumes it at the step it stopped."""

    phase: UpgradePhase
    from_image: Annotated[str, Field(max_length=2048)] | None = None
    to_image: Annotated[str, Field(max_length=2048)] | None = None
    from_version: ShortText | None = None
    to_version: ShortText | None = None
    from_disk: str | None = Field(
        default=None, max_length=253, description="The DataVolume the old image runs from."
    )
    to_disk: str | None = Field(
        default=None, max_length=253, description="The DataVolume of the new image."
    )
    target_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="The newest spec generation seen during the upgrade: a failed target is "
        "tried again only from a later generation (no loop).",
    )
    backup_run: ShortText | None = Field(
        default=None, description="The pre-upgrade Backup object (one-shot) of this upgrade."
    )
    owns_global_maintenance: bool = Field(
        default=False, description="The upgrade entered global maintenance and must leave it."
    )
    started_at: datetime | None = None
    finished_at: datetime | None = None
    steps: list[UpgradeStep] = Field(default_factory=list, max_length=16)
    reason: ShortText | None = Field(default=None, description="Why it failed (CamelCase).")
    message: LongText | None = None


class SparesStatus(StatusModel):
    required: Annotated[int, Field(ge=0)] = 0
    available: Annotated[int, Field(ge=0)] = 0
    hosts: list[Annotated[str, Field(max_length=253)]] = Field(default_factory=list, max_length=128)


class NotificationStatus(StatusModel):
    sent: Annotated[int, Field(ge=0)] = 0
    last_sent_at: datetime | None = None
    last_error: LongText | None = None
    last_error_at: datetime | None = None


class HostedEngineStatus(ObjectStatus):
    state: EngineState = Field(default=EngineState.PENDING, description="HA state.")
    engine: EngineStatus = Field(default_factory=EngineStatus)
    host: str | None = Field(default=None, max_length=253, description="Host running the engine.")
    vm: VmInfo = Field(default_factory=VmInfo)
    hosts: list[HostEntry] = Field(
        default_factory=list,
        max_length=128,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["host"]},
    )
    maintenance: MaintenanceStatus = Field(default_factory=MaintenanceStatus)
    ha: HaMemory = Field(default_factory=HaMemory)
    spares: SparesStatus = Field(default_factory=SparesStatus)
    upgrade: UpgradeStatus | None = None
    last_failover: FailoverRecord | None = None
    failovers: Annotated[int, Field(ge=0)] = 0
    notifications: NotificationStatus = Field(default_factory=NotificationStatus)


class HostedEngine(Resource):
    resource = ResourceInfo(
        kind="HostedEngine",
        plural="hostedengines",
        short_names=("he",),
        scope=Scope.NAMESPACED,
        description="A self-hosted engine VM kept highly available across the allowed Hosts.",
        printer_columns=(
            PrinterColumn("State", ".status.state"),
            PrinterColumn("Host", ".status.host"),
            PrinterColumn("Health", ".status.engine.health"),
            PrinterColumn("Maintenance", ".status.maintenance.mode"),
            PrinterColumn("FQDN", ".spec.vm.network.fqdn", priority=1),
            PrinterColumn("Version", ".status.vm.version", priority=1),
            AGE_COLUMN,
        ),
    )

    spec: HostedEngineSpec
    status: HostedEngineStatus = Field(default_factory=HostedEngineStatus)
