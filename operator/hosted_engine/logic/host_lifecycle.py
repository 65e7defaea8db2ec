"""The Host state machine: maintenance with a live-migration drain, health and fencing.

Pure: ``step(status, observation) -> (status, actions)``. ``status`` is this module's own
frozen :class:`HostStatus` (serialisable with :meth:`HostStatus.to_dict` /
:meth:`HostStatus.from_dict`, so it lives in the Host's ``status`` and a restarted operator
resumes); the observation carries ``now``. The handler maps the Host spec, the Node, the VMIs,
migrations, the KubeVirt CR and the BMC's answers into a :class:`HostObservation`, persists the
returned status and carries out the actions (all idempotent: cordon, deterministic migration
names, ...).

States::

    Up --mode local--> PreparingForMaintenance --drained--> Maintenance --mode none--> Activating
     ^                   |  mode none: delete our pending migrations, uncordon     |    (uncordon)
     +-------------------+---------------------------------------------------------+--> Up
    any --Node not Ready for silentAfter, or a fence request for a lost host--> NonResponsive
    NonResponsive --fence confirmed Off--> Fenced
    NonResponsive --not lost any more (no fence in progress)--> the state it left
    Fenced --Ready again--> remove out-of-service taint --> Maintenance (mode local) or Up
    Up/Activating --Ready but unusable--> NonOperational --usable--> Up

Entering maintenance
    :func:`hosted_engine.logic.drain.check_capacity` first: refused (the engine has nowhere to
    go, or the other hosts cannot hold the VMs) -> stay Up, condition ``MaintenanceRefused`` and
    one Warning Event per distinct refusal. Otherwise cordon and drain with
    :func:`hosted_engine.logic.drain.plan_drain` on every step (limits kept full, engine first).
    Progress (to move, moved, in flight, blocked with reasons, shut down, started, finished) is
    in :class:`MaintenanceProgress`.

Timeout
    Past ``maintenance_timeout_s`` the migrations this Host started and that are still in flight
    are deleted, condition ``Draining=False/TimedOut`` and a Warning Event; the host stays in
    PreparingForMaintenance, cordoned, starting nothing more, until the user sets mode none
    (cancel) or the VMs leave by other means (then Maintenance is reached).

Cancel
    Mode none at any point of the drain: delete our migrations still in flight, uncordon, Up.

Fencing
    Asked for by the HostedEngine (``fence_requested``) or needed because the NonResponsive host
    runs VMs that must restart elsewhere (runStrategy Always/RerunOnFailure) and its Node has not
    been Ready for ``silent_after_s + fence_after_s``. A request is accepted (the host goes
    NonResponsive at once; the requester has waited its own threshold) when the host is *lost*
    by one of :func:`lost_reason`'s proofs, not only when Kubernetes says so:

    * the Node is missing or not Ready (``NodeNotReady``);
    * its BMC reports power ``Off``, read after the Lease's last renewal (``PoweredOff``; an
      older Off is stale: the node spoke since). A BMC that does not answer proves nothing;
    * its Lease in ``kube-node-lease`` has missed ``fence_missed_renewals`` renewals
      (``LeaseExpired``, :func:`lease_threshold_s`). The kubelet renews every quarter of
      ``leaseDurationSeconds`` (10 s of 40 s) with client-go's 4 % jitter; the default, 2 missed
      renewals, is ``10 s x (2 x 1.04 + 0.1) = 21.8 s``: one late renewal (a GC pause, a slow
      API write) is never enough, and the 0.1 interval is room for the write and the watch
      delivery. The node-lifecycle controller waits 40 s (``node-monitor-grace-period``)
      before NotReady; waiting for it would miss a 30 s failover. The silence is measured by
      the *lease clock* (:mod:`hosted_engine.logic.leaseclock`, ``NodeObservation.lease_horizon``):
      the wall clock held back to the newest renewal seen on any node plus its renew interval,
      so an operator behind its Lease watch does not see every node silent; the re-read of the
      Node and Lease right before a power-off has no horizon: wall clock.

    Otherwise (Node Ready, Lease fresh, BMC not Off) the host is never fenced: the request is
    refused with ``FencingBlocked=True/NodeReady`` and waits, re-checked when the Lease would
    cross the threshold. Guards, in order: power management configured, fencing allowed on
    this host, the cluster is not partitioned (at least ``min_healthy_ratio`` of all hosts with
    a fresh Lease -- Ready when no Lease is known --, like NHC's minHealthy / CloudStack's
    ``kvm.ha.accepted.problematic.hosts.ratio``: a partitioned operator sees many silent
    leases at once and fences none), and one fence at a time (a request in flight is awaited
    for ``fence_timeout_s``, then retried up to ``max_fence_attempts``). The fence is confirmed
    only by a power state ``Off`` observed after the request; then the
    ``node.kubernetes.io/out-of-service`` taint lets Kubernetes release the pods; while the Node
    is still Ready (PodGC releases an out-of-service node's pods only once it is NotReady) the
    Host force-deletes them itself (``ReleasePods``), its power being confirmed Off. Every
    request, confirmation, failure and block is an Event. A NonResponsive host whose fence has not
    started returns to its previous state once no proof holds any more (Ready, Lease renewed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from hosted_engine.logic import leaseclock
from hosted_engine.logic.drain import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_AFTER_S,
    BlockedVM,
    DrainVM,
    MigrationLimits,
    MigrationStart,
    MigrationState,
    NonMigratablePolicy,
    Refusal,
    TargetHost,
    VMRef,
    check_capacity,
    current_attempt,
    migration_name,
    plan_drain,
)


class HostState(StrEnum):
    UP = "Up"
    PREPARING_FOR_MAINTENANCE = "PreparingForMaintenance"
    MAINTENANCE = "Maintenance"
    ACTIVATING = "Activating"
    NON_RESPONSIVE = "NonResponsive"
    FENCED = "Fenced"
    NON_OPERATIONAL = "NonOperational"


class MaintenanceMode(StrEnum):
    NONE = "none"
    LOCAL = "local"


# ----------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Cordon:
    pass


@dataclass(frozen=True)
class Uncordon:
    pass


@dataclass(frozen=True)
class CreateMigration:
    migration: MigrationStart


@dataclass(frozen=True)
class DeleteMigration:
    vm: VMRef
    migration_name: str


@dataclass(frozen=True)
class ShutdownVM:
    vm: VMRef


@dataclass(frozen=True)
class RequestFence:
    attempt: int


@dataclass(frozen=True)
class TaintOutOfService:
    pass


@dataclass(frozen=True)
class RemoveOutOfServiceTaint:
    pass


@dataclass(frozen=True)
class ReleasePods:
    """Force-delete the pods of the confirmed powered-off node: Kubernetes does it for an
    out-of-service node only once it is NotReady (PodGC), and a node fenced on its Lease or BMC
    is often still Ready for the node-lifecycle grace (40 s)."""


@dataclass(frozen=True)
class EmitEvent:
    type: str  # Normal | Warning
    reason: str  # CamelCase
    message: str


@dataclass(frozen=True)
class SetCondition:
    type: str
    status: str  # True | False | Unknown
    reason: str
    message: str = ""


Action = (
    Cordon
    | Uncordon
    | CreateMigration
    | DeleteMigration
    | ShutdownVM
    | RequestFence
    | TaintOutOfService
    | RemoveOutOfServiceTaint
    | ReleasePods
    | EmitEvent
    | SetCondition
)


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class NodeObservation:
    exists: bool = True
    ready: bool | None = True  # None: Unknown (kubelet silent)
    not_ready_since: datetime | None = None  # last transition of Ready away from True
    lease_renewed_at: datetime | None = None  # the node Lease's renewTime (None: no Lease seen)
    lease_duration_s: float | None = None  # its leaseDurationSeconds
    #: the lease clock's limit over every node Lease seen (:func:`leaseclock.horizon`): Lease
    #: silence is judged at min(now, this). None: at now (a Lease read fresh from the API)
    lease_horizon: datetime | None = None
    cordoned: bool = False
    out_of_service_taint: bool = False
    usable: bool = True  # e.g. reaches its storage
    unusable_reason: str = ""


@dataclass(frozen=True)
class PowerObservation:
    configured: bool = False
    fencing_allowed: bool = False
    power_state: str = "Unknown"  # On | Off | Unknown, as the BMC last answered
    observed_at: datetime | None = None


@dataclass(frozen=True)
class ClusterHealth:
    """For the storm guard: ``ready_hosts`` counts the hosts heard from, i.e. whose node Lease
    is fresh (:func:`lease_fresh`), or, without a Lease, whose Node is Ready."""

    total_hosts: int
    ready_hosts: int


@dataclass(frozen=True)
class HostPolicy:
    maintenance_timeout_s: float | None = None
    non_migratable: NonMigratablePolicy = NonMigratablePolicy.BLOCK
    silent_after_s: float = 60.0
    fence_after_s: float = 0.0
    fence_timeout_s: float = 60.0
    max_fence_attempts: int = 3
    min_healthy_ratio: float = 0.5
    migration_max_attempts: int = DEFAULT_MAX_ATTEMPTS
    migration_retry_after_s: float = DEFAULT_RETRY_AFTER_S
    #: missed Lease renewals that prove a Ready node lost (see the module docstring)
    fence_missed_renewals: float = 2.0
    #: the kubelet's renew interval; None: a quarter of the Lease's leaseDurationSeconds
    lease_renew_interval_s: float | None = None


@dataclass(frozen=True)
class HostObservation:
    host: str
    now: datetime
    mode: MaintenanceMode = MaintenanceMode.NONE
    node: NodeObservation = field(default_factory=NodeObservation)
    power: PowerObservation = field(default_factory=PowerObservation)
    cluster: ClusterHealth = field(default_factory=lambda: ClusterHealth(1, 1))
    vms: Sequence[DrainVM] = ()
    targets: Sequence[TargetHost] = ()
    in_flight_by_source: Mapping[str, int] = field(default_factory=dict)
    limits: MigrationLimits = field(default_factory=MigrationLimits)
    policy: HostPolicy = field(default_factory=HostPolicy)
    fence_requested: bool = False  # someone (the HostedEngine) asks for this host to be fenced
    runs_restartable_vms: bool = False  # VMs with runStrategy Always/RerunOnFailure on it
    #: VMs that left the node through a Succeeded migration of this Host's (labelled for it,
    #: kept until the Host is Up again): moved by the drain even when no status recorded them
    #: (an operator killed between the migration's create and its status write)
    migrated_away: Sequence[VMRef] = ()


# ----------------------------------------------------------------------------- status


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_ts(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class MaintenanceProgress:
    started_at: datetime
    finished_at: datetime | None = None
    to_move: tuple[str, ...] = ()
    moved: tuple[str, ...] = ()
    in_flight: tuple[str, ...] = ()
    blocked: tuple[BlockedVM, ...] = ()
    shut_down: tuple[str, ...] = ()
    started_migrations: tuple[str, ...] = ()  # VM keys ns/name whose migration we created
    timed_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "startedAt": _ts(self.started_at),
            "finishedAt": _ts(self.finished_at),
            "toMove": list(self.to_move),
            "moved": list(self.moved),
            "inFlight": list(self.in_flight),
            "blocked": [
                {"namespace": b.vm.namespace, "name": b.vm.name, "reason": b.reason}
                for b in self.blocked
            ],
            "shutDown": list(self.shut_down),
            "startedMigrations": list(self.started_migrations),
            "timedOut": self.timed_out,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaintenanceProgress:
        started = _parse_ts(data.get("startedAt"))
        if started is None:
            raise ValueError("maintenance progress without startedAt")
        return cls(
            started_at=started,
            finished_at=_parse_ts(data.get("finishedAt")),
            to_move=tuple(data.get("toMove", ())),
            moved=tuple(data.get("moved", ())),
            in_flight=tuple(data.get("inFlight", ())),
            blocked=tuple(
                BlockedVM(VMRef(b["namespace"], b["name"]), b["reason"])
                for b in data.get("blocked", ())
            ),
            shut_down=tuple(data.get("shutDown", ())),
            started_migrations=tuple(data.get("startedMigrations", ())),
            timed_out=bool(data.get("timedOut", False)),
        )


@dataclass(frozen=True)
class FenceProgress:
    requested_at: datetime | None = None
    attempts: int = 0
    confirmed_off_at: datetime | None = None
    gave_up: bool = False

    @property
    def in_flight(self) -> bool:
        return self.requested_at is not None and self.confirmed_off_at is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "requestedAt": _ts(self.requested_at),
            "attempts": self.attempts,
            "confirmedOffAt": _ts(self.confirmed_off_at),
            "gaveUp": self.gave_up,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FenceProgress:
        return cls(
            requested_at=_parse_ts(data.get("requestedAt")),
            attempts=int(data.get("attempts", 0)),
            confirmed_off_at=_parse_ts(data.get("confirmedOffAt")),
            gave_up=bool(data.get("gaveUp", False)),
        )


@dataclass(frozen=True)
class HostStatus:
    state: HostState = HostState.UP
    since: datetime | None = None
    return_to: HostState | None = None  # where NonResponsive goes back to
    maintenance: MaintenanceProgress | None = None
    fence: FenceProgress | None = None
    refusal: Refusal | None = None
    fence_blocked_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "since": _ts(self.since),
            "returnTo": self.return_to.value if self.return_to else None,
            "maintenance": self.maintenance.to_dict() if self.maintenance else None,
            "fence": self.fence.to_dict() if self.fence else None,
            "refusal": (
                {"reason": self.refusal.reason, "message": self.refusal.message}
                if self.refusal
                else None
            ),
            "fenceBlockedReason": self.fence_blocked_reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostStatus:
        refusal = data.get("refusal")
        maintenance = data.get("maintenance")
        fence = data.get("fence")
        return_to = data.get("returnTo")
        return cls(
            state=HostState(data.get("state", HostState.UP.value)),
            since=_parse_ts(data.get("since")),
            return_to=HostState(return_to) if return_to else None,
            maintenance=MaintenanceProgress.from_dict(maintenance) if maintenance else None,
            fence=FenceProgress.from_dict(fence) if fence else None,
            refusal=Refusal(refusal["reason"], refusal["message"]) if refusal else None,
            fence_blocked_reason=data.get("fenceBlockedReason"),
        )


@dataclass(frozen=True)
class Step:
    status: HostStatus
    actions: tuple[Action, ...]


# ----------------------------------------------------------------------------- the machine


def _key(ref: VMRef) -> str:
    return f"{ref.namespace}/{ref.name}"


def _ref(key: str) -> VMRef:
    namespace, _, name = key.partition("/")
    return VMRef(namespace, name)


def _goto(status: HostStatus, state: HostState, now: datetime, **changes: Any) -> HostStatus:
    return replace(status, state=state, since=now, **changes)


def _silent_for(obs: HostObservation) -> float | None:
    """Seconds the Node has not been Ready, or None when it is Ready."""
    node = obs.node
    if node.exists and node.ready is True:
        return None
    if not node.exists or node.not_ready_since is None:
        return float("inf")
    return (obs.now - node.not_ready_since).total_seconds()


#: client-go's lease controller adds up to 4 % jitter to each renewal (wait.JitterUntil).
RENEW_JITTER = 0.04
#: Room for the renewal's API write and the watch delivery, in renew intervals.
LEASE_LATENCY_MARGIN = 0.1


def renew_interval_s(node: NodeObservation, policy: HostPolicy) -> float:
    """The kubelet's Lease renew interval: the policy's, else a quarter of the Lease's
    leaseDurationSeconds, else 10 s (:func:`hosted_engine.logic.leaseclock.renew_interval_s`)."""
    return leaseclock.renew_interval_s(node.lease_duration_s, policy.lease_renew_interval_s)


def lease_threshold_s(node: NodeObservation, policy: HostPolicy) -> float:
    """Lease silence that proves a node lost: ``fence_missed_renewals`` renewals missed, each
    with its jitter, plus a latency margin (21.8 s for the kubelet's 10 s and 2 renewals)."""
    interval = renew_interval_s(node, policy)
    missed = max(1.0, policy.fence_missed_renewals)
    return interval * (missed * (1 + RENEW_JITTER) + LEASE_LATENCY_MARGIN)


def lease_silent_for(obs: HostObservation) -> float | None:
    """Seconds since the node's Lease was renewed, by the lease clock (None: no Lease seen)."""
    renewed = obs.node.lease_renewed_at
    if renewed is None:
        return None
    now = leaseclock.lease_now(obs.now, obs.node.lease_horizon)
    return max(0.0, (now - renewed).total_seconds())


def lease_fresh(node: NodeObservation, policy: HostPolicy, now: datetime) -> bool:
    """Heard from: the Lease renewed within the threshold, by the lease clock (without a Lease:
    the Node Ready)."""
    if node.lease_renewed_at is None:
        return node.exists and node.ready is True
    now = leaseclock.lease_now(now, node.lease_horizon)
    return (now - node.lease_renewed_at).total_seconds() < lease_threshold_s(node, policy)


def powered_off(obs: HostObservation) -> bool:
    """The BMC said Off, and said it after the node's last Lease renewal (an older Off is
    stale: the node has spoken since). Unknown or unanswered is not Off."""
    power = obs.power
    if power.power_state != "Off" or power.observed_at is None:
        return False
    renewed = obs.node.lease_renewed_at
    return renewed is None or power.observed_at >= renewed


def lost_reason(obs: HostObservation) -> str | None:
    """Why this host may be fenced on request (None: it is alive, never fence it)."""
    node = obs.node
    if not node.exists or node.ready is not True:
        return "NodeNotReady"
    if powered_off(obs):
        return "PoweredOff"
    silent = lease_silent_for(obs)
    if silent is not None and silent >= lease_threshold_s(node, obs.policy):
        return "LeaseExpired"
    return None


def _lost_message(obs: HostObservation, reason: str) -> str:
    if reason == "NodeNotReady":
        return "the Node does not exist" if not obs.node.exists else "the Node is not Ready"
    if reason == "PoweredOff":
        return "the BMC reports power Off"
    silent = lease_silent_for(obs) or 0.0
    return (
        f"the Node's Lease was last renewed {silent:.1f}s ago "
        f"(threshold {lease_threshold_s(obs.node, obs.policy):.1f}s)"
    )


def _alive_message(obs: HostObservation) -> str:
    silent = lease_silent_for(obs)
    if silent is None:
        return f"{obs.host}: the Node is Ready"
    return (
        f"{obs.host}: the Node is Ready and its Lease was renewed {silent:.1f}s ago "
        f"(threshold {lease_threshold_s(obs.node, obs.policy):.1f}s)"
    )


def step(status: HostStatus | None, obs: HostObservation) -> Step:
    """One decision for one Host (see the module docstring)."""
    current = status or HostStatus(state=HostState.UP, since=obs.now)
    actions: list[Action] = []
    silent = _silent_for(obs)
    lost = lost_reason(obs)

    if current.state is HostState.FENCED:
        new = _fenced(current, obs, actions)
    elif current.state is HostState.NON_RESPONSIVE:
        new = _non_responsive(current, obs, silent, lost, actions)
    elif (silent is not None and silent >= obs.policy.silent_after_s) or (
        obs.fence_requested and lost is not None
    ):
        reason = lost or "NodeNotReady"
        new = _goto(current, HostState.NON_RESPONSIVE, obs.now, return_to=current.state)
        why = _lost_message(obs, reason)
        actions.append(SetCondition("Responsive", "False", reason, why))
        actions.append(EmitEvent("Warning", "HostNonResponsive", f"{obs.host}: {why}"))
        new = _non_responsive(new, obs, silent, lost, actions)
    else:
        new = _lifecycle(current, obs, actions)
        if obs.fence_requested:  # Ready, Lease fresh, BMC not Off: never fence a live host
            if new.fence_blocked_reason != "NodeReady":
                actions.append(SetCondition("FencingBlocked", "True", "NodeReady",
                                            _alive_message(obs)))
                actions.append(EmitEvent("Warning", "FencingBlocked", _alive_message(obs)))
            new = replace(new, fence_blocked_reason="NodeReady")
        elif new.fence_blocked_reason is not None:
            actions.append(SetCondition("FencingBlocked", "False", "NoFenceRequested"))
            new = replace(new, fence_blocked_reason=None)
    return Step(new, tuple(actions))


def _lifecycle(current: HostStatus, obs: HostObservation, actions: list[Action]) -> HostStatus:
    state = current.state
    if state in (HostState.UP, HostState.NON_OPERATIONAL):
        return _up(current, obs, actions)
    if state is HostState.PREPARING_FOR_MAINTENANCE:
        return _preparing(current, obs, actions)
    if state is HostState.MAINTENANCE:
        if obs.mode is MaintenanceMode.NONE:
            actions.append(Uncordon())
            actions.append(SetCondition("InMaintenance", "False", "Activating"))
            actions.append(EmitEvent("Normal", "MaintenanceEnding", f"{obs.host}: activating"))
            return _goto(current, HostState.ACTIVATING, obs.now)
        if not obs.node.cordoned:
            actions.append(Cordon())
        return current
    if state is HostState.ACTIVATING:
        if obs.mode is MaintenanceMode.LOCAL:
            return _enter(current, obs, actions)
        if obs.node.cordoned:
            actions.append(Uncordon())
            return current
        actions.append(EmitEvent("Normal", "HostUp", f"{obs.host} is active"))
        return _goto(current, HostState.UP, obs.now, maintenance=None)
    return current


def _up(current: HostStatus, obs: HostObservation, actions: list[Action]) -> HostStatus:
    if obs.mode is MaintenanceMode.LOCAL:
        return _enter(current, obs, actions)
    new = current
    if current.refusal is not None:
        actions.append(SetCondition("MaintenanceRefused", "False", "NotRequested"))
        new = replace(new, refusal=None)
    if not obs.node.usable and new.state is HostState.UP:
        reason = obs.node.unusable_reason or "HostUnusable"
        actions.append(SetCondition("Operational", "False", reason, obs.node.unusable_reason))
        actions.append(EmitEvent("Warning", "HostNonOperational", f"{obs.host}: {reason}"))
        return _goto(new, HostState.NON_OPERATIONAL, obs.now)
    if obs.node.usable and new.state is HostState.NON_OPERATIONAL:
        actions.append(SetCondition("Operational", "True", "HostUsable"))
        actions.append(EmitEvent("Normal", "HostUp", f"{obs.host} is operational again"))
        return _goto(new, HostState.UP, obs.now)
    return new


def _enter(current: HostStatus, obs: HostObservation, actions: list[Action]) -> HostStatus:
    refusal = check_capacity(obs.vms, obs.targets, leaving=(obs.host,))
    if refusal is not None:
        if refusal != current.refusal:
            actions.append(
                SetCondition("MaintenanceRefused", "True", refusal.reason, refusal.message)
            )
            actions.append(EmitEvent("Warning", "MaintenanceRefused", refusal.message))
        return replace(current, refusal=refusal)
    if current.refusal is not None:
        actions.append(SetCondition("MaintenanceRefused", "False", "CapacityAvailable"))
    actions.append(Cordon())
    actions.append(SetCondition("Draining", "True", "MigratingVMs"))
    actions.append(
        EmitEvent("Normal", "MaintenanceStarted", f"{obs.host}: draining {len(obs.vms)} VMs")
    )
    progress = MaintenanceProgress(
        started_at=obs.now,
        to_move=tuple(sorted({_key(v.ref) for v in obs.vms}
                             | {_key(r) for r in obs.migrated_away})),
    )
    new = _goto(current, HostState.PREPARING_FOR_MAINTENANCE, obs.now, refusal=None)
    return _preparing(replace(new, maintenance=progress), obs, actions)


def _delete_ours(progress: MaintenanceProgress, obs: HostObservation) -> list[Action]:
    ours = set(progress.started_migrations)
    return [
        DeleteMigration(vm.ref, migration_name(obs.host, vm.ref, current_attempt(vm)))
        for vm in obs.vms
        if _key(vm.ref) in ours and vm.migration is MigrationState.IN_FLIGHT
    ]


def _preparing(current: HostStatus, obs: HostObservation, actions: list[Action]) -> HostStatus:
    progress = current.maintenance or MaintenanceProgress(started_at=obs.now)
    if obs.mode is MaintenanceMode.NONE:
        actions.extend(_delete_ours(progress, obs))
        actions.append(Uncordon())
        actions.append(SetCondition("Draining", "False", "Cancelled"))
        actions.append(SetCondition("DrainBlocked", "False", "Cancelled"))
        actions.append(EmitEvent("Normal", "MaintenanceCancelled", f"{obs.host}: cancelled"))
        return _goto(current, HostState.UP, obs.now, maintenance=None)
    if not obs.node.cordoned:
        actions.append(Cordon())

    plan = plan_drain(
        obs.host,
        obs.vms,
        obs.targets,
        obs.in_flight_by_source,
        obs.limits,
        obs.policy.non_migratable,
        obs.now,
        max_attempts=obs.policy.migration_max_attempts,
        retry_after_s=obs.policy.migration_retry_after_s,
    )
    present = {_key(v.ref) for v in obs.vms}
    shut_down = set(progress.shut_down)
    timeout = obs.policy.maintenance_timeout_s
    timing_out = (
        not progress.timed_out
        and timeout is not None
        and (obs.now - progress.started_at).total_seconds() >= timeout
    )
    frozen = progress.timed_out or timing_out
    start = () if frozen else plan.start
    shutdown = () if frozen else plan.shutdown
    shut_down |= {_key(r) for r in shutdown}
    away = {_key(r) for r in obs.migrated_away} - present
    to_move = set(progress.to_move) | present | away
    moved = (
        set(progress.moved)
        | away
        | {_key(r) for r in plan.moved}
        | {k for k in to_move if k not in present and k not in shut_down}
    )
    in_flight = {_key(r) for r in plan.in_flight} | {_key(m.vm) for m in start}
    progress = replace(
        progress,
        to_move=tuple(sorted(to_move)),
        moved=tuple(sorted(moved)),
        in_flight=tuple(sorted(in_flight)),
        shut_down=tuple(sorted(shut_down)),
        started_migrations=tuple(
            sorted(set(progress.started_migrations) | {_key(m.vm) for m in start})
        ),
    )
    actions.extend(CreateMigration(m) for m in start)
    actions.extend(ShutdownVM(r) for r in shutdown)

    if plan.blocked != progress.blocked:
        if plan.blocked:
            names = ", ".join(f"{b.vm} ({b.reason})" for b in plan.blocked)
            actions.append(SetCondition("DrainBlocked", "True", "VMsCannotMigrate", names))
            actions.append(EmitEvent("Warning", "DrainBlocked", f"{obs.host}: {names}"))
        else:
            actions.append(SetCondition("DrainBlocked", "False", "NothingBlocked"))
        progress = replace(progress, blocked=plan.blocked)

    if timing_out and not plan.complete:
        actions.extend(_delete_ours(progress, obs))
        msg = f"{obs.host}: not drained after {timeout:g}s; migrations stopped, host stays cordoned"
        actions.append(SetCondition("Draining", "False", "TimedOut", msg))
        actions.append(EmitEvent("Warning", "MaintenanceTimedOut", msg))
        progress = replace(progress, timed_out=True, in_flight=())

    if plan.complete:
        progress = replace(progress, finished_at=obs.now, in_flight=())
        actions.append(SetCondition("Draining", "False", "Completed"))
        actions.append(SetCondition("InMaintenance", "True", "Drained"))
        actions.append(
            EmitEvent("Normal", "MaintenanceReached", f"{obs.host}: {len(moved)} VMs moved")
        )
        return _goto(current, HostState.MAINTENANCE, obs.now, maintenance=progress)
    return replace(current, maintenance=progress)


def _non_responsive(
    current: HostStatus,
    obs: HostObservation,
    silent: float | None,
    lost: str | None,
    actions: list[Action],
) -> HostStatus:
    fence = current.fence or FenceProgress()
    policy = obs.policy
    if fence.in_flight:
        requested_at = fence.requested_at
        assert requested_at is not None
        confirmed = (
            obs.power.power_state == "Off"
            and obs.power.observed_at is not None
            and obs.power.observed_at >= requested_at
        )
        if confirmed:
            fence = replace(fence, confirmed_off_at=obs.now)
            actions.append(TaintOutOfService())
            if obs.node.exists and obs.node.ready is True:
                actions.append(ReleasePods())
            actions.append(SetCondition("Fenced", "True", "PoweredOff"))
            actions.append(
                EmitEvent("Warning", "HostFenced", f"{obs.host} powered off; pods released")
            )
            return _goto(current, HostState.FENCED, obs.now, fence=fence)
        if (obs.now - requested_at).total_seconds() < policy.fence_timeout_s:
            return current
        actions.append(
            EmitEvent(
                "Warning",
                "FenceFailed",
                f"{obs.host}: power-off not confirmed within {policy.fence_timeout_s:g}s "
                f"(attempt {fence.attempts})",
            )
        )
        fence = replace(fence, requested_at=None)
        if fence.attempts >= policy.max_fence_attempts:
            fence = replace(fence, gave_up=True)
            actions.append(SetCondition("Fenced", "False", "FenceFailed"))
        current = replace(current, fence=fence)

    if lost is None:  # Ready again, Lease fresh, BMC not Off; no fence in flight
        back = current.return_to or HostState.UP
        actions.append(SetCondition("Responsive", "True", "NodeReady"))
        actions.append(EmitEvent("Normal", "HostResponsive", f"{obs.host} is Ready again"))
        new = _goto(current, back, obs.now, return_to=None, fence=None, fence_blocked_reason=None)
        return _lifecycle(new, obs, actions)

    wanted = obs.fence_requested or (
        obs.runs_restartable_vms
        and silent is not None
        and silent >= policy.silent_after_s + policy.fence_after_s
    )
    if not wanted or fence.gave_up:
        return current
    blocked = _fence_guard(obs)
    if blocked is not None:
        if blocked != current.fence_blocked_reason:
            actions.append(SetCondition("FencingBlocked", "True", blocked))
            actions.append(EmitEvent("Warning", "FencingBlocked", f"{obs.host}: {blocked}"))
        return replace(current, fence_blocked_reason=blocked)
    if current.fence_blocked_reason is not None:
        actions.append(SetCondition("FencingBlocked", "False", "GuardsPassed"))
    fence = replace(fence, requested_at=obs.now, attempts=fence.attempts + 1)
    actions.append(RequestFence(fence.attempts))
    actions.append(
        EmitEvent("Warning", "FenceRequested", f"{obs.host}: power off (attempt {fence.attempts})")
    )
    return replace(current, fence=fence, fence_blocked_reason=None)


def requests_fence(result: Step) -> bool:
    """The step asks for a BMC power-off."""
    return any(isinstance(a, RequestFence) for a in result.actions)


def without_fence(result: Step) -> Step:
    """``result`` with its power-off withdrawn (the caller could not confirm, right before the
    BMC call, that the host is lost): no :class:`RequestFence` nor its ``FenceRequested`` Event,
    and the attempt is not counted (no attempt in flight, the budget unchanged)."""
    fence = result.status.fence
    if not requests_fence(result) or fence is None:
        return result
    status = replace(result.status, fence=replace(
        fence, requested_at=None, attempts=max(0, fence.attempts - 1)))
    actions = tuple(
        a for a in result.actions
        if not isinstance(a, RequestFence)
        and not (isinstance(a, EmitEvent) and a.reason == "FenceRequested"))
    return Step(status, actions)


def _fence_guard(obs: HostObservation) -> str | None:
    if not obs.power.configured:
        return "NoPowerManagement"
    if not obs.power.fencing_allowed:
        return "FencingDisabled"
    total = max(1, obs.cluster.total_hosts)
    if obs.cluster.ready_hosts / total < obs.policy.min_healthy_ratio:
        return "ClusterPartitioned"
    return None


def _fenced(current: HostStatus, obs: HostObservation, actions: list[Action]) -> HostStatus:
    # back only when no proof of loss holds: a Node still Ready (the node-lifecycle grace has
    # not run out) with a silent Lease or an Off BMC is still down
    if lost_reason(obs) is not None:
        if not obs.node.out_of_service_taint:
            actions.append(TaintOutOfService())  # keep it: the host is still down
        if obs.node.exists and obs.node.ready is True:
            actions.append(ReleasePods())  # still Ready: PodGC will not release them yet
        return current
    actions.append(RemoveOutOfServiceTaint())
    actions.append(SetCondition("Fenced", "False", "HostBack"))
    actions.append(SetCondition("Responsive", "True", "NodeReady"))
    cleared = dict(return_to=None, fence=None, fence_blocked_reason=None)
    if obs.mode is MaintenanceMode.LOCAL:
        actions.append(Cordon())
        actions.append(SetCondition("InMaintenance", "True", "BackFromFence"))
        actions.append(EmitEvent("Normal", "HostRecovered", f"{obs.host} back, in maintenance"))
        progress = current.maintenance or MaintenanceProgress(started_at=obs.now)
        progress = replace(progress, finished_at=progress.finished_at or obs.now, in_flight=())
        return _goto(current, HostState.MAINTENANCE, obs.now, maintenance=progress, **cleared)
    actions.append(EmitEvent("Normal", "HostRecovered", f"{obs.host} back, Up"))
    we_cordoned = current.return_to in (
        HostState.PREPARING_FOR_MAINTENANCE,
        HostState.MAINTENANCE,
        HostState.ACTIVATING,
    )
    if obs.node.cordoned and we_cordoned:
        actions.append(Uncordon())
    return _goto(current, HostState.UP, obs.now, maintenance=None, **cleared)
