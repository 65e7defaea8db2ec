"""The HostedEngine's HA state machine, in pure code.

``step(settings, memory, observation, now) -> Decision`` is the whole interface. ``memory`` is the
part of ``status`` the machine keeps between calls (:func:`memory_to_dict` /
:func:`memory_from_dict` turn it into JSON and back); ``Decision`` carries the next memory, typed
actions for the adapters, the per-host score table (``scores``, ``hosts`` rows as in
``hosted-engine --vm-status``), the engine-status summary (``engine``), the spares verdict and a
refusal message for a user request. Nothing here reads the clock, the API or the network; the
same inputs always give the same outputs, so a restarted operator resumes from status exactly
where it stopped. Call ``step`` on every relevant watch event and on a timer (the health
interval is a good period): time-based exits (grace periods, backoff, expiry) need a call.

One central operator decides for all hosts (oVirt ran one agent per host, each deciding for
itself and racing through a sanlock lease). States reuse oVirt's names where they mean the same.

Terms used below
================

* *active VMI*: the engine VMI in phase Pending, Scheduling, Scheduled, Running or Unknown, on a
  node not known dead. A node is *dead* when its fence is *confirmed* (powered off and out of
  service), or, only with ``fencing_required`` false, when the machine gave it up (``abandoned``)
  and it is still lost.
* *lost host*: its heartbeat (Node Lease renewal) is older than ``host_silence`` (default 22 s:
  2 missed kubelet renewals of 10 s with jitter and a margin; one late renewal is never a lost
  host) by the *lease clock* (``Observation.lease_horizon``, see
  :mod:`hosted_engine.logic.leaseclock`: now, held back to the newest renewal seen on any node
  plus its renew interval, so an operator behind its Lease watch does not see every host silent,
  and when every node falls silent at once nobody is lost by silence), its BMC reports power off
  (read after its last heartbeat: the Host polls the BMCs of engine hosts every 5 s, so a power
  loss is seen without the silence wait; a BMC that does not answer proves nothing), or a fence
  of it is in progress / confirmed. The Host accepts the
  fence on the same proofs although Kubernetes may still report the Node Ready.
* *suspect host*: the node of the newest VMI when an engine may still run there whatever the VMI
  says: the node is lost, or the VMI *ended* while the node was not Ready (the end was then
  decided elsewhere, e.g. a force-deleted pod, not reported by the node). A node that is back and
  Ready is trusted: its kubelet and virt-handler have removed what the API no longer has.
* *health* (from the probes since the VMI started): GOOD when the newest probe is ok; BAD when
  the newest ``failures_before_bad`` all failed (bad or timeout); FAILING when fewer failed in a
  row; UNKNOWN without probes, or when the newest is older than 3 x ``health_interval`` +
  ``health_timeout`` (the prober stopped). Only BAD ever leads to a stop, UNKNOWN never acts:
  one failed probe can never stop the engine, nor can a prober that is down.
* *a failure*: a start that fails (the new VMI ends, or it is not healthy within
  ``startup_grace``), an engine VMI that ends by itself on a trusted node, or a stop because
  health stayed BAD for ``restart_grace``. Each failure adds 1 to ``attempts``, records
  ``(host, time)`` (that host then loses 50 points per failure within ``failed_start_window``,
  all its points after 3) and sets ``backoff_until = now + backoff.delay(attempts)``
  (exponential, capped). ``attempts >= max_start_attempts`` -> Degraded. ``attempts`` goes back
  to 0 once the engine has been healthy for ``stable_period``. A lost or fenced host, a move and a
  user request are never failures.

Guards (checked first, in this order)
=====================================

1. Global maintenance in effect (``mode == global`` and ``now < until``) -> GlobalMaintenance,
   from every other state.
2. The active VMI's node (the engine's host) was fenced by someone else (e.g. the Host's own
   NonResponsive handling) -> EngineDown, counted as a failover, not a failure. (States that
   expect an engine: EngineStart ... LocalMaintenance.)
3. A suspect host holding the active VMI, or the host the engine last ran on, or any suspect
   host while in EngineDown -> HostLost (not from HostLost, Fencing, GlobalMaintenance,
   Degraded).

A step evaluates the new state at once after a transition (up to 8 times), except after an
action on the world (Start/Stop/PowerOff/Migrate/RequestFence): its effect can only be seen in a
later observation.

States and transitions
======================

EngineDown: no engine runs.
    Active VMI (started by KubeVirt's own runStrategy, by hand, or found after a restart) ->
    adopt it, no action: EngineStarting if Running, else EngineStart. VM object missing -> stay.
    ``now < backoff_until`` -> stay (says until when). No host scores
    > 0 -> stay, the reason lists every host's score, Degraded=True NoHostAvailable. Else
    StartEngine(best host; ties: the last host, then by name) -> EngineStart.
EngineStart: start asked on ``host``; the VMI is not Running yet.
    VMI Running -> EngineStarting. Its host in local maintenance -> LocalMaintenance. The VMI of
    this start (created at or after the request) Failed/Succeeded -> failure -> EngineDown.
    No node yet and the target now scores 0 -> StopEngine (cancel, no failure) -> EngineStop.
    ``startup_grace`` since the request -> failure, StopEngine(graceful) -> EngineStop.
EngineStarting: VMI Running, waiting for health GOOD.
    VMI no longer active -> failure -> EngineUnexpectedlyDown. Local maintenance of its host ->
    LocalMaintenance. Health GOOD -> EngineUp. ``startup_grace`` since the request -> failure,
    StopEngine(graceful) -> EngineStop; but with health UNKNOWN: Warning HealthUnknown and wait.
EngineUp: running and healthy.
    VMI no longer active -> failure -> EngineUnexpectedlyDown. VMI on another node (migrated by
    someone else) -> follow it (Event EngineMoved); if the host it left is lost or fenced, the
    engine failed over while the machine was not looking (an operator restart): count the
    failover (Event EngineFailedOver, ``last_failover``) and release that host's fence. Local
    maintenance of its host -> LocalMaintenance. Health BAD -> EngineUpBadHealth. Another host
    leads by ``move_hysteresis`` (800) or more -> move (below; never away from a host that is
    not Ready: it is lost and fenced, or back, first). Healthy for ``stable_period``
    -> attempts reset. Releases (ClearFenceRequest) the fence request of the host it failed
    over from.
EngineUpBadHealth: running, health BAD since ``since``.
    Same exits as EngineUp; health GOOD -> EngineUp; BAD for ``restart_grace`` -> failure,
    StopEngine(graceful) -> EngineStop. The failure costs the host 50 points, so an equal host
    takes the restart (oVirt restarted it on the same host for ever).
Moving (from EngineUp, EngineUpBadHealth, LocalMaintenance): VMI live-migratable and no
    migration of it failed within ``backoff.cap`` -> MigrateEngine(target) -> EngineMigrating;
    else a cold move: StopEngine(graceful) -> EngineStop, and EngineDown starts it on the best
    host.
EngineMigrating: MigrateEngine(target) issued.
    VMI on target and no migration running -> EngineUp. VMI on a third node and no migration
    running (someone else, e.g. the Host's drain, moved it) -> follow it, EngineUp. Migration
    failed or ``migration_timeout`` -> Warning MigrationFailed -> EngineUp (which may then
    cold-move).
    VMI no longer active -> failure -> EngineUnexpectedlyDown.
EngineStop: StopEngine(graceful) issued.
    VMI no longer active -> EngineDown. Paused VMI, or ``stop_timeout`` -> PowerOffEngine ->
    EngineForceStop.
EngineForceStop: PowerOffEngine issued.
    VMI no longer active -> EngineDown. Repeats PowerOffEngine every ``stop_timeout`` (Warning
    PowerOffNotEffective once).
EngineUnexpectedlyDown: the engine ended by itself (crash, guest shutdown, VMI deleted).
    Active VMI again -> adopt. After ``backoff_until`` -> EngineDown, which starts it at once on
    the best host (the same one if it is alone: oVirt waited 560 s).
HostLost: the engine's host H is lost or suspect (``lost_host``).
    H back (heard from, and Ready or still holding the active VMI) -> adopt. Fence of H
    confirmed -> EngineDown. H has no power management: with ``fencing_required`` stay, Warning
    FenceUnavailable, Degraded=True, and *never* start elsewhere; without it -> unfenced
    failover. Else RequestFence(H, reason) -> Fencing.
Fencing: waiting for the Host to confirm H is powered off and out of service.
    Confirmed -> Event FenceConfirmed -> EngineDown (starts on the best remaining host in the same
    step: no backoff, a lost host is not an engine failure). Failed -> Warning FenceFailed (once
    per failure), Degraded=True, RequestFence again every ``fence_retry``. Requested / in
    progress for ``fence_timeout`` -> Warning FenceTimeout once, keep waiting. H back while the
    fence has not started -> ClearFenceRequest, adopt. Without ``fencing_required``, a failed
    or timed-out fence -> unfenced failover.
Unfenced failover (only with ``fencing_required`` false): Warning UnfencedFailover, H is
    ``abandoned`` (its VMI counts as dead while H stays lost) -> EngineDown -> StartEngine
    elsewhere. The adapter must then replace the VMI still bound to H; two engines are possible
    if H was only partitioned: that is the risk the user chose.
LocalMaintenance: the host running the engine is in local maintenance: move the engine first.
    VMI on another host, no migration running (the Host's drain moved it) -> follow it (Event
    EngineMoved): EngineUp if health is GOOD, else adopt. Local maintenance cleared -> adopt. A
    migration of the VMI running -> wait for it. Another host scores > 0 -> move, unless the
    Host's drain moves the engine (``drain_moves_engine``: maintenance asked for and not
    refused, timed out or blocked for the engine) and the VMI is live-migratable: then wait,
    exactly one actor migrates the engine (the drain; the machine only cold-moves a VMI that
    cannot live-migrate, or moves it when the drain gave up or was refused). None -> stay, the
    engine keeps running, Warning LocalMaintenanceBlocked once, Degraded=True. The Host handler
    asks :func:`local_maintenance_verdict` before entering maintenance and refuses with its
    reason.
GlobalMaintenance: no automatic action on the engine VM (no start, stop, restart, move or
    fence request). Warning GlobalMaintenanceReminder every ``maintenance_reminder``. Leaves by
    itself when the mode is back to none or ``until`` has passed (Event
    GlobalMaintenanceExpired), resets attempts (manual work was done), then adopts the VMI or
    goes EngineDown.
Degraded: gave up after ``max_start_attempts`` consecutive failures (Notify + Warning on entry).
    No automatic action. Leaves on a manual reset (``request.reset_seq`` greater than the last
    one seen) -> EngineDown with attempts 0, on global maintenance, or when a healthy engine VMI
    is seen (started by hand) -> adopt.

User requests (``spec.running``, ``spec.stopMode``, the CLI)
============================================================

In global maintenance: ``running`` false with an active VMI -> StopEngine(graceful) once;
``power_off`` with an active VMI -> PowerOffEngine once; ``running`` turning true with no active
VMI and no suspect host -> StartEngine(best host). Outside global maintenance a stop or
power-off is refused (Warning StopRefused once per request, ``Decision.refusal`` says why) and
the engine is kept up, as oVirt's ``hosted-engine --vm-shutdown`` does.

Actions (what the adapters do)
==============================

StartEngine(host): make the engine VM run on that node (placement + run). StopEngine(graceful):
ACPI shutdown (graceful=True) or a stop request. PowerOffEngine: hard stop now.
MigrateEngine(target): a VirtualMachineInstanceMigration to that node. RequestFence(host,
reason): ask the Host to fence (BMC off, confirm Off, out-of-service taint); repeated only as a
retry. ClearFenceRequest(host): the HostedEngine no longer needs that fence. SetPlacement:
scores to turn into node preferences (sent only when a host's eligibility or 200-point band
changes). Notify(old, new, host, reason): one mail per transition, filtered by the user's
pattern. EmitEvent(type, reason, message). SetCondition(type, status, reason, message), sent when
it changes: Available (engine Running and health GOOD), Degraded, GlobalMaintenance,
SparesSatisfied (False with the numbers when fewer than ``spares`` other hosts score > 0 and have
the engine's memory free), Progressing. Every transition emits Notify and an Event whose reason
is the new state (Warning for EngineUpBadHealth, EngineForceStop, EngineUnexpectedlyDown,
HostLost, Fencing, Degraded).

``Memory.failover`` times a failover (lost, detected, fenced, started, healthy); when it
completes it moves to ``last_failover`` and ``failovers`` counts it (for status and the bench).

Deliberate differences from oVirt (shared/reference/ovirt-he-ha.md)
====================================================================

* Failover after host loss: fence through the Host, then start at once; no 60 s liveness window
  plus 140 s sanlock wait (§3.3). Without a confirmed fence the engine is never started
  elsewhere: KubeVirt keeps the VMI bound to a dead node (k8s-anchors §1.10) and replacing it
  unfenced could give two engines on the same disk; oVirt relied on the sanlock lease instead.
  A VMI that "ended" on a node that did not report it is not trusted either.
* Backoff is real and bounded: exponential, capped, then Degraded with a notification; oVirt's
  counter was reset every loop (mixed time bases) and it retried every 10-22 s for ever (§2.4).
* A health-caused stop counts against that host, so the restart goes elsewhere when an equal
  host exists; oVirt put no penalty on it (§3.2, §7.2).
* Grace timers are settings; defaults 60 s restart grace instead of 300 s + 300 s.
* No ReinitializeFSM, UnknownLocalVmState, EngineMaybeAway, StartState or AgentStopped: one
  central observer sees the VMI and its node directly, so a migration is not mistaken for a crash
  and nothing has to be guessed; a restarted operator re-derives the state by adopting what runs.
* Ties are broken deterministically (the last host, then by name) instead of letting every tied
  host start and the lease pick a winner (BZ 1093638).
* Local maintenance of the engine's host moves the engine (live migration when possible); oVirt's
  agent ignored it while the VM ran locally, and jumped to LocalMaintenance from
  EngineStart/Starting/Stop leaving a VM unmanaged (§4.2). It is refused, with the scores, when
  no other host can take the engine; oVirt's CLI just refused when the VM was local.
* Global maintenance expires at ``until`` and reminds at an interval; oVirt's had no expiry and
  was easy to forget (§7.5).
* A crashed engine restarts after the backoff delay (5 s by default) on the best host, the same
  one if it is alone; oVirt waited 560 s on a single host.
* Missing probes never stop the engine, also at the end of the start-up grace (oVirt stopped a
  slow-booting engine mid-boot, §7.3).
* The network penalty can be a fraction (several probes), not one gateway ping worth 1600 points
  (§7.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from hosted_engine.logic import leaseclock
from hosted_engine.logic.backoff import Backoff
from hosted_engine.logic.scoring import (
    HostFacts,
    HostScore,
    ScoreWeights,
    SparesVerdict,
    best_host,
    move_target,
    score_hosts,
    spares,
)

# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


class State(StrEnum):
    ENGINE_DOWN = "EngineDown"
    ENGINE_START = "EngineStart"
    ENGINE_STARTING = "EngineStarting"
    ENGINE_UP = "EngineUp"
    ENGINE_UP_BAD_HEALTH = "EngineUpBadHealth"
    ENGINE_MIGRATING = "EngineMigrating"
    ENGINE_STOP = "EngineStop"
    ENGINE_FORCE_STOP = "EngineForceStop"
    ENGINE_UNEXPECTEDLY_DOWN = "EngineUnexpectedlyDown"
    HOST_LOST = "HostLost"
    FENCING = "Fencing"
    LOCAL_MAINTENANCE = "LocalMaintenance"
    GLOBAL_MAINTENANCE = "GlobalMaintenance"
    DEGRADED = "Degraded"


WARNING_STATES = frozenset(
    {
        State.ENGINE_UP_BAD_HEALTH,
        State.ENGINE_FORCE_STOP,
        State.ENGINE_UNEXPECTEDLY_DOWN,
        State.HOST_LOST,
        State.FENCING,
        State.DEGRADED,
    }
)


class VmiPhase(StrEnum):
    PENDING = "Pending"
    SCHEDULING = "Scheduling"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


ACTIVE_PHASES = frozenset(
    {VmiPhase.PENDING, VmiPhase.SCHEDULING, VmiPhase.SCHEDULED, VmiPhase.RUNNING, VmiPhase.UNKNOWN}
)


class ProbeResult(StrEnum):
    OK = "ok"
    BAD = "bad"
    TIMEOUT = "timeout"


class PowerState(StrEnum):
    ON = "On"
    OFF = "Off"
    UNKNOWN = "Unknown"


class FenceStatus(StrEnum):
    NONE = "None"
    REQUESTED = "Requested"
    IN_PROGRESS = "InProgress"
    CONFIRMED = "Confirmed"
    FAILED = "Failed"


class MaintenanceMode(StrEnum):
    NONE = "none"
    GLOBAL = "global"


@dataclass(frozen=True)
class Settings:
    """The knobs of the machine (mapped from ``spec.health``, ``spec.failover`` and friends)."""

    health_interval: timedelta = timedelta(seconds=5)
    health_timeout: timedelta = timedelta(seconds=3)
    failures_before_bad: int = 3
    startup_grace: timedelta = timedelta(minutes=10)
    restart_grace: timedelta = timedelta(seconds=60)
    stop_timeout: timedelta = timedelta(minutes=2)
    host_silence: timedelta = timedelta(seconds=22)
    fencing_required: bool = True
    fence_timeout: timedelta = timedelta(minutes=2)
    fence_retry: timedelta = timedelta(seconds=30)
    backoff: Backoff = field(
        default_factory=lambda: Backoff(timedelta(seconds=5), 2.0, timedelta(minutes=5))
    )
    max_start_attempts: int = 5
    failed_start_window: timedelta = timedelta(minutes=10)
    stable_period: timedelta = timedelta(minutes=10)
    move_hysteresis: int = 800
    migration_timeout: timedelta = timedelta(minutes=5)
    spares: int = 0
    maintenance_reminder: timedelta = timedelta(hours=1)
    weights: ScoreWeights = field(default_factory=ScoreWeights)

    @property
    def probe_stale_after(self) -> timedelta:
        """Probe results older than this mean the prober stopped: health is then unknown."""
        return 3 * self.health_interval + self.health_timeout

    def __post_init__(self) -> None:
        if self.failures_before_bad < 1:
            raise ValueError("failures_before_bad must be >= 1")
        if self.max_start_attempts < 1:
            raise ValueError("max_start_attempts must be >= 1")


@dataclass(frozen=True)
class EngineVm:
    """The engine's VirtualMachine and its VMI as seen now."""

    exists: bool = True
    desired_running: bool = False
    phase: VmiPhase | None = None
    node: str | None = None
    since: datetime | None = None
    paused: bool = False
    live_migratable: bool = False
    migrating: bool = False
    migration_failed: bool = False


@dataclass(frozen=True)
class Probe:
    at: datetime
    result: ProbeResult


@dataclass(frozen=True)
class HostObservation:
    name: str
    ready: bool = True
    last_heartbeat: datetime | None = None
    local_maintenance: bool = False
    #: The Host's own drain live-migrates the engine off this host (its maintenance is asked for
    #: and not refused, finished, timed out, nor blocked for the engine): the machine waits.
    drain_moves_engine: bool = False
    network: float = 1.0
    cpu_load: float = 0.0
    free_memory: int = 0
    bmc_power: PowerState = PowerState.UNKNOWN
    can_fence: bool = True
    fence: FenceStatus = FenceStatus.NONE
    fence_since: datetime | None = None
    fence_message: str = ""
    failed_starts: tuple[datetime, ...] = ()


@dataclass(frozen=True)
class UserRequest:
    running: bool = True
    power_off: bool = False
    reset_seq: int = 0


@dataclass(frozen=True)
class Observation:
    vm: EngineVm = field(default_factory=EngineVm)
    probes: tuple[Probe, ...] = ()
    hosts: tuple[HostObservation, ...] = ()
    engine_memory: int = 0
    maintenance: MaintenanceMode = MaintenanceMode.NONE
    maintenance_until: datetime | None = None
    request: UserRequest = field(default_factory=UserRequest)
    #: the lease clock's limit (:func:`hosted_engine.logic.leaseclock.horizon` over every node
    #: Lease seen): heartbeats are judged at min(now, this). None: at now
    lease_horizon: datetime | None = None


# --------------------------------------------------------------------------------------------
# Memory (kept in status between calls)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedStart:
    host: str
    at: datetime


ConditionKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class FailoverRecord:
    """Timings of a failover after a host loss (for status.lastFailover and the benchmark)."""

    from_host: str
    lost_at: datetime
    detected_at: datetime
    fenced_at: datetime | None = None
    started_at: datetime | None = None
    to_host: str | None = None
    healthy_at: datetime | None = None


@dataclass(frozen=True)
class Memory:
    state: State = State.ENGINE_DOWN
    since: datetime | None = None
    host: str | None = None
    reason: str = ""
    attempts: int = 0
    backoff_until: datetime | None = None
    failed_starts: tuple[FailedStart, ...] = ()
    start_requested_at: datetime | None = None
    healthy_since: datetime | None = None
    last_action_at: datetime | None = None
    lost_host: str | None = None
    fenced_host: str | None = None
    abandoned_host: str | None = None
    migration_target: str | None = None
    migration_failed_at: datetime | None = None
    reminder_at: datetime | None = None
    notice: str | None = None
    seen_running: bool = True
    seen_power_off: bool = False
    user_action: str | None = None
    refusal: str | None = None
    reset_seq: int = 0
    placement: tuple[tuple[str, int], ...] = ()
    conditions: tuple[ConditionKey, ...] = ()
    failover: FailoverRecord | None = None
    last_failover: FailoverRecord | None = None
    failovers: int = 0


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartEngine:
    host: str


@dataclass(frozen=True)
class StopEngine:
    graceful: bool = True


@dataclass(frozen=True)
class PowerOffEngine:
    pass


@dataclass(frozen=True)
class MigrateEngine:
    target: str


@dataclass(frozen=True)
class RequestFence:
    host: str
    reason: str


@dataclass(frozen=True)
class ClearFenceRequest:
    host: str


@dataclass(frozen=True)
class SetPlacement:
    scores: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Notify:
    old: State
    new: State
    host: str | None
    reason: str


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class EmitEvent:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class SetCondition:
    type: str
    status: bool
    reason: str
    message: str


Action = (
    StartEngine
    | StopEngine
    | PowerOffEngine
    | MigrateEngine
    | RequestFence
    | ClearFenceRequest
    | SetPlacement
    | Notify
    | EmitEvent
    | SetCondition
)


@dataclass(frozen=True)
class HostRow:
    """One row of the per-host table in status (one block of ``hosted-engine --vm-status``)."""

    host: str
    score: int
    state: str
    up_to_date: bool
    last_seen: datetime | None
    ready: bool
    local_maintenance: bool
    engine_running: bool
    failed_starts: int
    has_room: bool
    penalties: tuple[str, ...]


@dataclass(frozen=True)
class EngineSummary:
    """oVirt's engine-status dict: vm up/down/down_unexpected/down_missing/unknown, health
    good/bad/unknown, a detail and the reason."""

    vm: str
    health: str
    detail: str
    reason: str


@dataclass(frozen=True)
class Decision:
    memory: Memory
    actions: tuple[Action, ...]
    scores: tuple[HostScore, ...]
    spares: SparesVerdict
    refusal: str | None = None
    hosts: tuple[HostRow, ...] = ()
    engine: EngineSummary = EngineSummary("unknown", "unknown", "", "")

    @property
    def state(self) -> State:
        return self.memory.state


# --------------------------------------------------------------------------------------------
# Derived facts
# --------------------------------------------------------------------------------------------


def host_lost(host: HostObservation, now: datetime, silence: timedelta) -> bool:
    """Silent past ``silence``, powered off per its BMC, or being / already fenced."""
    if host.fence in (FenceStatus.IN_PROGRESS, FenceStatus.CONFIRMED):
        return True
    if host.bmc_power is PowerState.OFF:
        return True
    return host.last_heartbeat is None or now - host.last_heartbeat > silence


def global_maintenance_on(obs: Observation, now: datetime) -> bool:
    if obs.maintenance is not MaintenanceMode.GLOBAL:
        return False
    return obs.maintenance_until is None or now < obs.maintenance_until


class Health(StrEnum):
    GOOD = "good"
    BAD = "bad"
    FAILING = "failing"
    UNKNOWN = "unknown"


def assess_health(
    probes: tuple[Probe, ...],
    after: datetime | None,
    failures_before_bad: int,
    now: datetime | None = None,
    stale_after: timedelta | None = None,
) -> Health:
    """GOOD: newest probe ok. BAD: the newest ``failures_before_bad`` all failed. FAILING: the
    newest failed but not enough in a row yet. UNKNOWN: no probe since ``after``, or the newest
    is older than ``stale_after`` (the prober stopped: its last word is not news)."""
    relevant = sorted((p for p in probes if after is None or p.at >= after), key=lambda p: p.at)
    if (
        relevant
        and now is not None
        and stale_after is not None
        and now - relevant[-1].at > stale_after
    ):
        return Health.UNKNOWN
    if not relevant:
        return Health.UNKNOWN
    if relevant[-1].result is ProbeResult.OK:
        return Health.GOOD
    run = 0
    for probe in reversed(relevant):
        if probe.result is ProbeResult.OK:
            break
        run += 1
    return Health.BAD if run >= failures_before_bad else Health.FAILING


def recent_failures(memory: Memory, host: HostObservation, now: datetime, window: timedelta) -> int:
    """Failed starts on ``host`` within ``window``: remembered ones and observed ones, merged."""
    times = {f.at for f in memory.failed_starts if f.host == host.name}
    times.update(host.failed_starts)
    return sum(1 for t in times if now - t <= window)


def compute_scores(
    settings: Settings, memory: Memory, obs: Observation, now: datetime
) -> tuple[HostScore, ...]:
    engine_node = obs.vm.node if obs.vm.phase in ACTIVE_PHASES else None
    lease_now = leaseclock.lease_now(now, obs.lease_horizon)
    facts = [
        HostFacts(
            name=h.name,
            ready=h.ready,
            alive=not host_lost(h, lease_now, settings.host_silence),
            fenced=h.fence is FenceStatus.CONFIRMED,
            local_maintenance=h.local_maintenance,
            network=h.network,
            cpu_load=h.cpu_load,
            free_memory=h.free_memory,
            runs_engine=h.name == engine_node,
            recent_failed_starts=recent_failures(memory, h, now, settings.failed_start_window),
        )
        for h in obs.hosts
    ]
    return score_hosts(facts, obs.engine_memory, settings.weights)


@dataclass(frozen=True)
class LocalMaintenanceVerdict:
    allowed: bool
    reason: str
    target: str | None = None


def local_maintenance_verdict(
    settings: Settings, memory: Memory, obs: Observation, now: datetime, host: str
) -> LocalMaintenanceVerdict:
    """May ``host`` enter local maintenance now? For the Host handler: refused, with the reason,
    when the engine runs there and no other host can take it."""
    vm = obs.vm
    if vm.phase not in ACTIVE_PHASES or vm.node != host:
        return LocalMaintenanceVerdict(True, f"the engine does not run on {host}")
    scores = compute_scores(settings, memory, obs, now)
    target = best_host(scores, exclude=(host,))
    if target is None:
        others = "; ".join(s.explain() for s in scores if s.host != host) or "no other host"
        return LocalMaintenanceVerdict(
            False, f"the engine runs on {host} and no other host can take it: {others}"
        )
    return LocalMaintenanceVerdict(
        True, f"the engine will move from {host} to {target.host}", target.host
    )


# --------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------

_MAX_CHAIN = 8
_EXPECTS_ENGINE = frozenset(
    {
        State.ENGINE_START,
        State.ENGINE_STARTING,
        State.ENGINE_UP,
        State.ENGINE_UP_BAD_HEALTH,
        State.ENGINE_MIGRATING,
        State.ENGINE_STOP,
        State.ENGINE_FORCE_STOP,
        State.LOCAL_MAINTENANCE,
    }
)
_WORLD_ACTIONS = (StartEngine, StopEngine, PowerOffEngine, MigrateEngine, RequestFence)


class _Run:
    """Mutable scratch space for one :func:`step` (never escapes it)."""

    def __init__(self, settings: Settings, memory: Memory, obs: Observation, now: datetime):
        self.s = settings
        self.mem = memory
        self.obs = obs
        self.now = now
        #: heartbeats (Lease renewals) are judged at the lease clock, not at now
        self.lease_now = leaseclock.lease_now(now, obs.lease_horizon)
        self.actions: list[Action] = []
        self.chain = False
        self.hosts = {h.name: h for h in obs.hosts}
        self.scores = compute_scores(settings, memory, obs, now)
        self.by_host = {s.host: s for s in self.scores}
        self.gm = global_maintenance_on(obs, now)

    def dead_node(self, node: str | None) -> bool:
        """A VMI bound to this node is known dead: the node's fence is confirmed, or the machine
        gave it up (unfenced failover without ``fencing_required``)."""
        if node is None:
            return False
        if node == self.mem.abandoned_host and self.lost(node):
            return True
        return node in self.hosts and self.hosts[node].fence is FenceStatus.CONFIRMED

    @property
    def active(self) -> bool:
        vm = self.obs.vm
        return vm.phase in ACTIVE_PHASES and not self.dead_node(vm.node)

    @property
    def node(self) -> str | None:
        return self.obs.vm.node if self.active else None

    def ready(self, host: str | None) -> bool:
        return host is not None and host in self.hosts and self.hosts[host].ready

    def unfenced_vmi_host(self) -> str | None:
        """The node of the newest VMI if an engine may still run there whatever the VMI's phase
        says: the node is lost, or the VMI ended while the node was not Ready (then the end was
        not reported by the node itself but decided elsewhere, e.g. a force-deleted pod)."""
        node = self.obs.vm.node
        if node is None or self.obs.vm.phase is None or self.dead_node(node):
            return None
        if self.lost(node) or (not self.active and node in self.hosts and not self.ready(node)):
            return node
        return None

    def back(self, host: str) -> bool:
        """A lost host counts as back: heard from again, and either still holding the active
        engine VMI (its health decides) or Ready (so its report that the VMI ended is real)."""
        return not self.lost(host) and (self.active or self.ready(host))

    def fenced_cleanup(self) -> None:
        host = self.mem.fenced_host
        if host is not None and host != self.node:
            self.act(ClearFenceRequest(host))
            self.set(fenced_host=None)
        if self.mem.abandoned_host is not None and self.mem.abandoned_host != self.node:
            self.set(abandoned_host=None)

    # -- helpers ---------------------------------------------------------------------------

    def set(self, **changes: object) -> None:
        self.mem = replace(self.mem, **changes)  # type: ignore[arg-type]
        if "failed_starts" in changes:
            self.scores = compute_scores(self.s, self.mem, self.obs, self.now)
            self.by_host = {s.host: s for s in self.scores}

    def act(self, action: Action) -> None:
        self.actions.append(action)

    def event(self, warning: bool, reason: str, message: str) -> None:
        kind = EventType.WARNING if warning else EventType.NORMAL
        self.act(EmitEvent(kind, reason, message))

    def notice_once(self, key: str, reason: str, message: str) -> None:
        """A Warning Event emitted once per stay in the current state (per ``key``)."""
        if self.mem.notice != key:
            self.set(notice=key)
            self.event(True, reason, message)

    def goto(self, state: State, reason: str, **changes: object) -> None:
        """Change state; the new state is evaluated at once in the same step, unless an engine
        action was just issued (its effect can only be seen in a later observation)."""
        old = self.mem.state
        self.set(state=state, since=self.now, reason=reason, notice=None, **changes)
        record = self.mem.failover
        if state is State.ENGINE_UP and record is not None and record.started_at is not None:
            done = replace(record, healthy_at=self.now, to_host=self.node or record.to_host)
            self.set(failover=None, last_failover=done, failovers=self.mem.failovers + 1)
        if old is not state:
            host = self.mem.host
            self.act(Notify(old, state, host, reason))
            where = f" on {host}" if host else ""
            self.event(state in WARNING_STATES, state.value, f"{old} -> {state}{where}: {reason}")
        self.chain = not any(isinstance(a, _WORLD_ACTIONS) for a in self.actions)

    def begin_failover(self, host: str) -> None:
        record = self.mem.failover
        if record is not None and record.from_host == host:
            return
        seen = self.hosts[host].last_heartbeat if host in self.hosts else None
        lost_at = min(seen, self.now) if seen is not None else self.now
        self.set(failover=FailoverRecord(host, lost_at=lost_at, detected_at=self.now))

    def mark_fenced(self) -> None:
        record = self.mem.failover
        if record is not None and record.fenced_at is None:
            self.set(failover=replace(record, fenced_at=self.now))

    def stay(self, reason: str) -> None:
        if self.mem.reason != reason:
            self.set(reason=reason)

    def lost(self, host: str | None) -> bool:
        if host is None or host not in self.hosts:
            return False
        return host_lost(self.hosts[host], self.lease_now, self.s.host_silence)

    def health(self) -> Health:
        return assess_health(
            self.obs.probes,
            self.obs.vm.since,
            self.s.failures_before_bad,
            self.now,
            self.s.probe_stale_after,
        )

    def elapsed(self, since: datetime | None) -> timedelta:
        return self.now - since if since is not None else timedelta(0)

    def why_no_host(self, exclude: tuple[str, ...] = ()) -> str:
        listed = [s.explain() for s in self.scores if s.host not in exclude]
        return "; ".join(listed) if listed else "no allowed hosts"

    def failure(self, host: str | None, why: str) -> bool:
        """Record a failure; returns True when the machine gives up (Degraded)."""
        attempts = self.mem.attempts + 1
        keep = tuple(
            f for f in self.mem.failed_starts if self.now - f.at <= self.s.failed_start_window
        )
        if host is not None:
            keep = (*keep, FailedStart(host, self.now))
        self.set(
            attempts=attempts,
            failed_starts=keep,
            backoff_until=self.s.backoff.next_try(attempts, self.now),
            healthy_since=None,
        )
        if attempts >= self.s.max_start_attempts:
            self.goto(
                State.DEGRADED,
                f"gave up after {attempts} consecutive failures (last: {why}); "
                "no automatic start until a manual reset",
            )
            return True
        return False

    def adopt(self, reason: str) -> None:
        """Follow what runs: an active VMI becomes EngineStarting / EngineStart, else EngineDown."""
        if self.active:
            state = (
                State.ENGINE_STARTING
                if self.obs.vm.phase is VmiPhase.RUNNING
                else State.ENGINE_START
            )
            self.goto(state, reason, host=self.node, start_requested_at=self.now)
        else:
            self.goto(State.ENGINE_DOWN, reason)

    def move(self, target: HostScore, why: str) -> None:
        recently_failed = (
            self.mem.migration_failed_at is not None
            and self.now - self.mem.migration_failed_at < self.s.backoff.cap
        )
        if self.obs.vm.live_migratable and not recently_failed:
            self.act(MigrateEngine(target.host))
            self.goto(
                State.ENGINE_MIGRATING,
                f"live-migrating to {target.host}: {why}",
                migration_target=target.host,
                last_action_at=self.now,
            )
        else:
            how = "live migration failed recently"
            if not self.obs.vm.live_migratable:
                how = "not live-migratable"
            self.act(StopEngine(graceful=True))
            self.goto(
                State.ENGINE_STOP,
                f"stopping to restart on {target.host} ({how}): {why}",
                last_action_at=self.now,
            )


def _guards(r: _Run) -> bool:
    state = r.mem.state
    if r.gm and state is not State.GLOBAL_MAINTENANCE:
        until = r.obs.maintenance_until
        tail = f" until {until.isoformat()}" if until else " (no expiry)"
        r.goto(State.GLOBAL_MAINTENANCE, f"global maintenance{tail}", reminder_at=r.now)
        return True
    node = r.obs.vm.node
    if (
        state in _EXPECTS_ENGINE
        and node is not None
        and node == r.mem.host
        and r.obs.vm.phase in ACTIVE_PHASES
        and r.dead_node(node)
    ):
        # Fenced by someone else (e.g. the Host's own NonResponsive handling): a host loss, not a
        # crash of the engine, so no failure is counted.
        r.begin_failover(node)
        r.mark_fenced()
        r.goto(State.ENGINE_DOWN, f"{node} was fenced", fenced_host=node)
        return True
    suspect = r.unfenced_vmi_host()
    if (
        state not in (State.HOST_LOST, State.FENCING, State.GLOBAL_MAINTENANCE, State.DEGRADED)
        and suspect is not None
        and (r.active or suspect == r.mem.host or state is State.ENGINE_DOWN)
    ):
        # EngineDown included: a start elsewhere must wait for the fence of that host.
        r.begin_failover(suspect)
        r.goto(
            State.HOST_LOST,
            f"the engine's host {suspect} is lost or unhealthy ({_lost_why(r, suspect)}); "
            "it must be fenced before the engine runs elsewhere",
            host=suspect,
            lost_host=suspect,
        )
        return True
    return False


def _lost_why(r: _Run, host: str | None) -> str:
    if host is None or host not in r.hosts:
        return "unknown"
    h = r.hosts[host]
    if h.fence in (FenceStatus.IN_PROGRESS, FenceStatus.CONFIRMED):
        return f"fence {h.fence.value}"
    if h.bmc_power is PowerState.OFF:
        return "BMC reports power off"
    if h.last_heartbeat is None:
        return "no heartbeat seen"
    if r.lease_now - h.last_heartbeat <= r.s.host_silence:
        return "not Ready"
    return f"silent for more than {int(r.s.host_silence.total_seconds())}s"


def _engine_down(r: _Run) -> None:
    if r.active:
        r.adopt(f"engine VMI found {r.obs.vm.phase} on {r.node}")
        return
    if not r.obs.vm.exists:
        r.stay("waiting for the engine VirtualMachine to be created")
        return
    if r.mem.backoff_until is not None and r.now < r.mem.backoff_until:
        r.stay(
            f"start backoff after {r.mem.attempts} failed attempt(s); next try at "
            f"{r.mem.backoff_until.isoformat()}"
        )
        return
    target = best_host(r.scores, prefer=r.mem.host)
    if target is None:
        r.stay(f"no allowed host can run the engine: {r.why_no_host()}")
        return
    r.act(StartEngine(target.host))
    record = r.mem.failover
    if record is not None and record.started_at is None:
        r.set(failover=replace(record, started_at=r.now, to_host=target.host))
    r.goto(
        State.ENGINE_START,
        f"starting on {target.host} (score {target.score})",
        host=target.host,
        start_requested_at=r.now,
    )


def _start_timed_out(r: _Run) -> bool:
    if r.elapsed(r.mem.start_requested_at) < r.s.startup_grace:
        return False
    if r.active and r.obs.vm.phase is VmiPhase.RUNNING and r.health() is Health.UNKNOWN:
        r.notice_once(
            "no-probes",
            "HealthUnknown",
            "no health probe result since the engine started; not stopping it blindly",
        )
        r.stay("start-up grace over but no health probe result: health unknown")
        return True
    why = f"not healthy within the start-up grace of {int(r.s.startup_grace.total_seconds())}s"
    if r.failure(r.mem.host, why):
        if r.active:
            r.act(StopEngine(graceful=True))
        return True
    r.act(StopEngine(graceful=True))
    r.goto(State.ENGINE_STOP, why, last_action_at=r.now)
    return True


def _engine_start(r: _Run) -> None:
    vm = r.obs.vm
    if r.active and r.node is not None and r.hosts.get(r.node, _NO_HOST).local_maintenance:
        r.goto(State.LOCAL_MAINTENANCE, f"host {r.node} entered local maintenance", host=r.node)
        return
    if r.active and vm.phase is VmiPhase.RUNNING:
        r.goto(State.ENGINE_STARTING, f"VMI running on {r.node}", host=r.node)
        return
    started = r.mem.start_requested_at
    new_vmi = vm.since is not None and started is not None and vm.since >= started
    if vm.phase in (VmiPhase.FAILED, VmiPhase.SUCCEEDED) and new_vmi:
        why = f"start on {r.mem.host} failed (VMI {vm.phase})"
        if not r.failure(r.mem.host, why):
            r.goto(State.ENGINE_DOWN, why)
        return
    target = r.by_host.get(r.mem.host or "")
    if vm.node is None and (target is None or not target.eligible):
        why = target.explain() if target is not None else f"{r.mem.host} is not an allowed host"
        if best_host(r.scores) is None:
            # no host is eligible at all (e.g. every engine host silent to an operator behind
            # its Lease events): a cancelled start could only be restarted nowhere -- and each
            # cancel counted against the hosts. Wait for a host, within the start timeout.
            if _start_timed_out(r):
                return
            r.stay(f"waiting for the VMI to run on {r.mem.host}: no host is eligible "
                   f"({r.why_no_host()})")
            return
        r.act(StopEngine(graceful=True))
        r.goto(State.ENGINE_STOP, f"start cancelled, target unusable: {why}", last_action_at=r.now)
        return
    if _start_timed_out(r):
        return
    r.stay(f"waiting for the VMI to run on {r.mem.host}")


def _engine_starting(r: _Run) -> None:
    if not r.active:
        why = f"engine VMI ended ({r.obs.vm.phase or 'gone'}) while starting"
        if not r.failure(r.mem.host, why):
            r.goto(State.ENGINE_UNEXPECTEDLY_DOWN, why)
        return
    if r.node != r.mem.host:
        r.set(host=r.node)
    if r.hosts.get(r.node or "", _NO_HOST).local_maintenance:
        r.goto(State.LOCAL_MAINTENANCE, f"host {r.node} entered local maintenance")
        return
    if r.health() is Health.GOOD:
        r.goto(State.ENGINE_UP, "engine healthy", healthy_since=r.now)
        return
    if _start_timed_out(r):
        return
    r.stay(f"waiting for the engine to become healthy ({r.health().value})")


def _running_checks(r: _Run) -> bool:
    """Exits shared by EngineUp and EngineUpBadHealth."""
    if not r.active:
        why = f"engine VMI ended unexpectedly ({r.obs.vm.phase or 'gone'}) on {r.mem.host}"
        if not r.failure(r.mem.host, why):
            r.goto(State.ENGINE_UNEXPECTEDLY_DOWN, why)
        return True
    if r.node != r.mem.host:
        old = r.mem.host
        if old is not None and (r.dead_node(old) or r.lost(old)):
            _record_missed_failover(r, old)
        else:
            r.event(False, "EngineMoved", f"engine VMI now on {r.node} (was {old})")
        r.set(host=r.node)
    if r.hosts.get(r.node or "", _NO_HOST).local_maintenance:
        r.goto(State.LOCAL_MAINTENANCE, f"host {r.node} entered local maintenance")
        return True
    return False


def _record_missed_failover(r: _Run, old: str) -> None:
    """The engine runs elsewhere and the host it ran on is lost or fenced: it failed over while
    the machine was not looking (KubeVirt restarted it after the fence while the operator was
    down). Count that failover, not a move, and release the fence request of the old host."""
    seen = r.hosts[old].last_heartbeat if old in r.hosts else None
    fenced = r.hosts[old].fence_since if old in r.hosts and r.dead_node(old) else None
    started = r.obs.vm.since or r.now
    lost_at = min(seen, r.now) if seen is not None else r.now
    record = FailoverRecord(
        old,
        lost_at=lost_at,
        detected_at=r.now,
        fenced_at=fenced,
        started_at=min(started, r.now),
        to_host=r.node,
        healthy_at=r.now,
    )
    r.event(
        False, "EngineFailedOver", f"engine VMI now on {r.node}; {old} was lost or fenced"
    )
    r.set(
        failover=None,
        last_failover=record,
        failovers=r.mem.failovers + 1,
        fenced_host=old if r.dead_node(old) else r.mem.fenced_host,
    )


def _maybe_move_for_score(r: _Run) -> bool:
    if r.node is None:
        return False
    if not r.ready(r.node):
        # its host just went silent: a move needs it (live migration, graceful stop); wait
        # until it is lost (then fenced: a failover, not a move) or Ready again
        return False
    target = move_target(r.scores, r.node, r.s.move_hysteresis)
    if target is None:
        return False
    mine = r.by_host.get(r.node)
    why = (
        f"{target.host} scores {target.score}, {r.node} scores {mine.score if mine else 0} "
        f"(gap >= {r.s.move_hysteresis})"
    )
    r.move(target, why)
    return True


def _engine_up(r: _Run) -> None:
    if _running_checks(r):
        return
    r.fenced_cleanup()
    if r.health() is Health.BAD:
        r.goto(State.ENGINE_UP_BAD_HEALTH, "engine health check failing", healthy_since=None)
        return
    if _maybe_move_for_score(r):
        return
    if r.mem.healthy_since is None:
        r.set(healthy_since=r.now)
    if r.mem.attempts and r.elapsed(r.mem.healthy_since) >= r.s.stable_period:
        r.set(attempts=0, backoff_until=None)
    r.stay(f"engine up on {r.node}")


def _engine_up_bad_health(r: _Run) -> None:
    if _running_checks(r):
        return
    health = r.health()
    if health is Health.GOOD:
        r.goto(State.ENGINE_UP, "engine health recovered")
        return
    if _maybe_move_for_score(r):
        return
    if health is Health.BAD and r.elapsed(r.mem.since) >= r.s.restart_grace:
        why = f"engine unhealthy for {int(r.s.restart_grace.total_seconds())}s on {r.node}"
        if r.failure(r.mem.host, why):
            r.act(StopEngine(graceful=True))
            return
        r.act(StopEngine(graceful=True))
        r.goto(State.ENGINE_STOP, why, last_action_at=r.now)
        return
    r.stay(f"engine health {health.value}; restart after the grace period")


def _engine_migrating(r: _Run) -> None:
    vm = r.obs.vm
    target = r.mem.migration_target
    if not r.active:
        why = f"engine VMI ended ({vm.phase or 'gone'}) during migration"
        if not r.failure(r.mem.host, why):
            r.goto(State.ENGINE_UNEXPECTEDLY_DOWN, why)
        return
    if r.node == target and not vm.migrating:
        r.goto(State.ENGINE_UP, f"migrated to {target}", host=target, migration_target=None)
        return
    if r.node not in (target, r.mem.host) and not vm.migrating:
        # moved elsewhere by someone else (the Host's drain got there first): follow it
        r.event(False, "EngineMoved", f"engine VMI now on {r.node} (was {r.mem.host})")
        r.goto(State.ENGINE_UP, f"moved to {r.node}", host=r.node, migration_target=None)
        return
    if vm.migration_failed or r.elapsed(r.mem.since) >= r.s.migration_timeout:
        why = "migration failed" if vm.migration_failed else "migration timed out"
        r.event(True, "MigrationFailed", f"{why}: {r.node} -> {target}")
        r.goto(
            State.ENGINE_UP,
            f"{why}; engine stays on {r.node}",
            host=r.node,
            migration_target=None,
            migration_failed_at=r.now,
        )
        return
    if r.node == target:  # arrived; another migration of the VMI is still listed as running
        r.stay(f"on {target}; waiting for another migration of the engine VMI to finish")
        return
    r.stay(f"live-migrating {r.node} -> {target}")


def _engine_stop(r: _Run) -> None:
    if not r.active:
        r.goto(State.ENGINE_DOWN, "engine stopped")
        return
    if r.obs.vm.paused or r.elapsed(r.mem.since) >= r.s.stop_timeout:
        why = "engine paused" if r.obs.vm.paused else "graceful shutdown timed out"
        r.act(PowerOffEngine())
        r.goto(State.ENGINE_FORCE_STOP, why, last_action_at=r.now)
        return
    r.stay("waiting for the graceful shutdown")


def _engine_force_stop(r: _Run) -> None:
    if not r.active:
        r.goto(State.ENGINE_DOWN, "engine powered off")
        return
    if r.elapsed(r.mem.last_action_at) >= r.s.stop_timeout:
        r.act(PowerOffEngine())
        r.set(last_action_at=r.now)
        r.notice_once("power-off", "PowerOffNotEffective", "the engine VMI is still active")
    r.stay("waiting for the power-off")


def _engine_unexpectedly_down(r: _Run) -> None:
    if r.active:
        r.adopt(f"engine VMI active again on {r.node}")
        return
    if r.mem.backoff_until is None or r.now >= r.mem.backoff_until:
        r.goto(State.ENGINE_DOWN, "restarting after an unexpected stop")
        return
    r.stay(f"restart after {r.mem.backoff_until.isoformat()}")


def _takeover_unfenced(r: _Run, host: str, why: str) -> None:
    r.event(True, "UnfencedFailover", f"{why}; fencingRequired is false: restarting elsewhere")
    r.goto(
        State.ENGINE_DOWN,
        f"{why}; restarting without a fence",
        lost_host=None,
        abandoned_host=host,
    )


def _host_lost(r: _Run) -> None:
    host = r.mem.lost_host
    if host is None or host not in r.hosts:
        r.adopt("lost host no longer known")
        return
    h = r.hosts[host]
    if h.fence is FenceStatus.CONFIRMED:
        r.mark_fenced()
        r.goto(State.ENGINE_DOWN, f"{host} fenced", lost_host=None, fenced_host=host)
        return
    if r.back(host):
        r.adopt(f"{host} is back")
        r.set(lost_host=None, failover=None)
        return
    if not h.can_fence:
        why = f"{host} is lost ({_lost_why(r, host)}) and cannot be fenced (no power management)"
        if not r.s.fencing_required:
            _takeover_unfenced(r, host, why)
            return
        r.notice_once(
            "no-fence",
            "FenceUnavailable",
            f"{why}; the engine is NOT started elsewhere while it might still run there. "
            f"Bring {host} back, or power it off and confirm the fence by hand.",
        )
        r.stay(f"{why}; waiting: never two engines")
        return
    reason = f"hosted engine: {host} lost ({_lost_why(r, host)})"
    r.act(RequestFence(host, reason))
    r.goto(State.FENCING, f"fence of {host} requested", last_action_at=r.now)


def _fencing(r: _Run) -> None:
    host = r.mem.lost_host
    if host is None or host not in r.hosts:
        r.adopt("fenced host no longer known")
        return
    h = r.hosts[host]
    if h.fence is FenceStatus.CONFIRMED:
        r.event(False, "FenceConfirmed", f"{host} is powered off and out of service")
        r.mark_fenced()
        r.goto(State.ENGINE_DOWN, f"{host} fenced", lost_host=None, fenced_host=host)
        return
    if r.back(host) and h.fence is not FenceStatus.IN_PROGRESS:
        if h.fence is not FenceStatus.NONE:
            r.act(ClearFenceRequest(host))
        r.adopt(f"{host} is back; fence cancelled")
        r.set(lost_host=None, failover=None)
        return
    if h.fence is FenceStatus.FAILED:
        why = f"fence of {host} failed: {h.fence_message or 'no detail'}"
        if not r.s.fencing_required:
            _takeover_unfenced(r, host, why)
            return
        r.notice_once(
            f"fence-failed:{h.fence_since}",
            "FenceFailed",
            f"{why}; the engine is NOT started elsewhere while it might still run on {host}",
        )
        if r.elapsed(r.mem.last_action_at) >= r.s.fence_retry:
            r.act(RequestFence(host, f"hosted engine: retry after failure ({why})"))
            r.set(last_action_at=r.now)
        r.stay(f"{why}; retrying; waiting: never two engines")
        return
    if h.fence is FenceStatus.NONE and r.elapsed(r.mem.last_action_at) >= r.s.fence_retry:
        r.act(RequestFence(host, f"hosted engine: {host} lost ({_lost_why(r, host)})"))
        r.set(last_action_at=r.now)
    if r.elapsed(r.mem.since) >= r.s.fence_timeout:
        if not r.s.fencing_required:
            _takeover_unfenced(r, host, f"fence of {host} not confirmed in time")
            return
        r.notice_once(
            "fence-timeout",
            "FenceTimeout",
            f"fence of {host} not confirmed after {int(r.s.fence_timeout.total_seconds())}s "
            f"({h.fence.value}); still waiting",
        )
    r.stay(f"waiting for the fence of {host} ({h.fence.value})")


def _local_maintenance(r: _Run) -> None:
    if not r.active:
        why = f"engine VMI ended ({r.obs.vm.phase or 'gone'}) on {r.mem.host}"
        if not r.failure(r.mem.host, why):
            r.goto(State.ENGINE_UNEXPECTEDLY_DOWN, why)
        return
    host = r.node or ""
    if not r.hosts.get(host, _NO_HOST).local_maintenance:
        if r.mem.host is not None and host != r.mem.host and not r.obs.vm.migrating:
            # the Host's drain moved it: follow it, a move is not a start
            r.event(False, "EngineMoved", f"engine VMI now on {host} (was {r.mem.host})")
            why = f"moved to {host} ({r.mem.host} in local maintenance)"
            if r.health() is Health.GOOD:
                r.goto(State.ENGINE_UP, why, host=host)
            else:
                r.adopt(why)
            return
        r.adopt(f"local maintenance of {host} ended")
        return
    if r.obs.vm.migrating:
        r.stay(f"engine VMI migrating off {host} (local maintenance)")
        return
    target = best_host(r.scores, exclude=(host,))
    if target is None:
        why = f"no other host can take the engine: {r.why_no_host(exclude=(host,))}"
        r.notice_once(
            "blocked",
            "LocalMaintenanceBlocked",
            f"{host} is in local maintenance but the engine cannot move: {why}",
        )
        r.stay(f"engine stays on {host}: {why}")
        return
    if r.hosts[host].drain_moves_engine and r.obs.vm.live_migratable:
        # one actor per move: the Host's drain live-migrates the engine first (engine first,
        # under KubeVirt's limits); two migrations of one VMI would race
        r.stay(f"waiting for the drain of {host} to live-migrate the engine")
        return
    r.move(target, f"{host} is in local maintenance")


def _global_maintenance(r: _Run) -> None:
    if not r.gm:
        expired = (
            r.obs.maintenance is MaintenanceMode.GLOBAL and r.obs.maintenance_until is not None
        )
        if expired and r.obs.maintenance_until is not None:
            r.event(
                False,
                "GlobalMaintenanceExpired",
                f"global maintenance expired at {r.obs.maintenance_until.isoformat()}",
            )
        r.set(attempts=0, backoff_until=None, user_action=None)
        r.adopt("global maintenance ended")
        return
    if r.elapsed(r.mem.reminder_at) >= r.s.maintenance_reminder:
        until = r.obs.maintenance_until
        tail = f"until {until.isoformat()}" if until else "with no expiry"
        r.event(
            True,
            "GlobalMaintenanceReminder",
            f"global maintenance is on {tail}: the engine VM has no HA",
        )
        r.set(reminder_at=r.now)
    req = r.obs.request
    if r.active:
        if req.power_off and r.mem.user_action != "poweroff":
            r.act(PowerOffEngine())
            r.set(user_action="poweroff")
            r.event(False, "EnginePowerOff", "power off requested in global maintenance")
        elif not req.running and r.mem.user_action not in ("stop", "poweroff"):
            r.act(StopEngine(graceful=True))
            r.set(user_action="stop")
            r.event(False, "EngineShutdown", "shutdown requested in global maintenance")
    else:
        if r.mem.user_action in ("stop", "poweroff"):
            r.set(user_action=None)
        if req.running and not r.mem.seen_running and r.unfenced_vmi_host() is None:
            target = best_host(r.scores, prefer=r.mem.host)
            if target is None:
                r.notice_once(
                    "start-refused",
                    "StartRefused",
                    f"no allowed host can run the engine: {r.why_no_host()}",
                )
            else:
                r.act(StartEngine(target.host))
                r.set(host=target.host, user_action="start")
                r.event(False, "EngineStartRequested", f"starting on {target.host} on request")
    vm_word = f"running on {r.node}" if r.active else "not running"
    r.stay(f"global maintenance: no automatic action; engine {vm_word}")


def _degraded(r: _Run) -> None:
    req = r.obs.request
    if req.reset_seq > r.mem.reset_seq:
        r.set(reset_seq=req.reset_seq, attempts=0, backoff_until=None, failed_starts=())
        r.adopt("manual reset")
        return
    if r.active and r.obs.vm.phase is VmiPhase.RUNNING and r.health() is Health.GOOD:
        r.adopt(f"healthy engine VMI running on {r.node} (started by hand)")
        return
    r.stay(r.mem.reason)


_NO_HOST = HostObservation(name="")

_HANDLERS = {
    State.ENGINE_DOWN: _engine_down,
    State.ENGINE_START: _engine_start,
    State.ENGINE_STARTING: _engine_starting,
    State.ENGINE_UP: _engine_up,
    State.ENGINE_UP_BAD_HEALTH: _engine_up_bad_health,
    State.ENGINE_MIGRATING: _engine_migrating,
    State.ENGINE_STOP: _engine_stop,
    State.ENGINE_FORCE_STOP: _engine_force_stop,
    State.ENGINE_UNEXPECTEDLY_DOWN: _engine_unexpectedly_down,
    State.HOST_LOST: _host_lost,
    State.FENCING: _fencing,
    State.LOCAL_MAINTENANCE: _local_maintenance,
    State.GLOBAL_MAINTENANCE: _global_maintenance,
    State.DEGRADED: _degraded,
}


def _user_refusals(r: _Run) -> str | None:
    """Outside global maintenance a stop/power-off request is refused, once per request."""
    if r.gm or r.mem.state is State.GLOBAL_MAINTENANCE:
        r.set(refusal=None)
        return None
    req = r.obs.request
    wanted = "power off" if req.power_off else ("stop" if not req.running else None)
    if wanted is None:
        r.set(refusal=None)
        return None
    message = (
        f"{wanted} refused: the cluster is not in global maintenance; the engine is kept highly "
        "available. Set spec.maintenance.mode=global first (as hosted-engine --vm-shutdown "
        "requires)."
    )
    if r.mem.refusal != message:
        r.event(True, "StopRefused", message)
        r.set(refusal=message)
    return message


def _conditions(r: _Run, verdict: SparesVerdict) -> None:
    state = r.mem.state
    health = r.health() if r.active else Health.UNKNOWN
    available = r.active and health is Health.GOOD and r.obs.vm.phase is VmiPhase.RUNNING
    conds: list[SetCondition] = [
        SetCondition(
            "Available",
            available,
            "EngineHealthy" if available else state.value,
            f"engine {'healthy' if available else 'not available'} ({state.value})",
        )
    ]
    degraded_reason: str | None = None
    if state is State.DEGRADED:
        degraded_reason = "GaveUp"
    elif state in (State.HOST_LOST, State.FENCING) and r.mem.notice is not None:
        degraded_reason = {
            "no-fence": "FenceUnavailable",
            "fence-timeout": "FenceTimeout",
        }.get(r.mem.notice, "FenceFailed")
    elif state is State.ENGINE_DOWN and r.mem.reason.startswith("no allowed host"):
        degraded_reason = "NoHostAvailable"
    elif state is State.LOCAL_MAINTENANCE and r.mem.notice == "blocked":
        degraded_reason = "LocalMaintenanceBlocked"
    conds.append(
        SetCondition(
            "Degraded",
            degraded_reason is not None,
            degraded_reason or "AsExpected",
            r.mem.reason if degraded_reason else "",
        )
    )
    until = r.obs.maintenance_until
    conds.append(
        SetCondition(
            "GlobalMaintenance",
            r.gm,
            "MaintenanceOn" if r.gm else "MaintenanceOff",
            (f"until {until.isoformat()}" if until else "no expiry") if r.gm else "",
        )
    )
    conds.append(
        SetCondition(
            "SparesSatisfied",
            verdict.satisfied,
            "EnoughSpares" if verdict.satisfied else "NotEnoughSpares",
            verdict.message(),
        )
    )
    progressing = state in (
        State.ENGINE_START,
        State.ENGINE_STARTING,
        State.ENGINE_MIGRATING,
        State.ENGINE_STOP,
        State.ENGINE_FORCE_STOP,
        State.HOST_LOST,
        State.FENCING,
    )
    conds.append(SetCondition("Progressing", progressing, state.value, r.mem.reason))
    known = {c[0]: c for c in r.mem.conditions}
    keys: list[ConditionKey] = []
    for c in conds:
        key: ConditionKey = (c.type, str(c.status), c.reason, c.message)
        keys.append(key)
        if known.get(c.type) != key:
            r.act(c)
    r.set(conditions=tuple(keys))


_BAND = 200


def _bands(placement: tuple[tuple[str, int], ...]) -> tuple[tuple[str, bool, int], ...]:
    """What placement depends on: eligibility and the score in 200-point bands, so a CPU load
    wobbling by a few percent does not re-patch the VM's placement at every step."""
    return tuple((host, score > 0, -(-score // _BAND)) for host, score in placement)


def _host_rows(r: _Run) -> tuple[HostRow, ...]:
    rows = []
    for score in r.scores:
        h = r.hosts[score.host]
        dead = h.fence is FenceStatus.CONFIRMED
        lost = host_lost(h, r.lease_now, r.s.host_silence)
        if dead:
            view = "Fenced"
        elif lost:
            view = "Lost"
        elif h.local_maintenance:
            view = "LocalMaintenance"
        elif not h.ready:
            view = "NotReady"
        else:
            view = "Up"
        penalties = tuple(f"{p.reason} -{p.points}" for p in score.penalties)
        if score.zero_reason is not None:
            penalties = (f"score 0: {score.zero_reason}",)
        rows.append(
            HostRow(
                host=h.name,
                score=score.score,
                state=view,
                up_to_date=not lost,
                last_seen=h.last_heartbeat,
                ready=h.ready,
                local_maintenance=h.local_maintenance,
                engine_running=r.node == h.name,
                failed_starts=recent_failures(r.mem, h, r.now, r.s.failed_start_window),
                has_room=h.free_memory >= r.obs.engine_memory,
                penalties=penalties,
            )
        )
    return tuple(rows)


def _engine_summary(r: _Run) -> EngineSummary:
    vm = r.obs.vm
    phase = vm.phase
    reason = r.mem.reason
    if not vm.exists:
        return EngineSummary("down_missing", "bad", "NoVirtualMachine", reason)
    if r.active and r.lost(r.node):
        return EngineSummary("unknown", "unknown", f"host {r.node} lost", reason)
    if r.active and phase is VmiPhase.RUNNING:
        health = r.health()
        word = {Health.GOOD: "good", Health.UNKNOWN: "unknown"}.get(health, "bad")
        if vm.paused:
            return EngineSummary("up", "bad", "Paused", reason)
        return EngineSummary("up", word, "Migrating" if vm.migrating else "Up", reason)
    if r.active:
        return EngineSummary("up", "bad", f"Powering up ({phase})", reason)
    if phase is VmiPhase.UNKNOWN:
        return EngineSummary("unknown", "unknown", "Unknown", reason)
    if r.mem.state is State.ENGINE_UNEXPECTEDLY_DOWN:
        return EngineSummary("down_unexpected", "bad", str(phase or "Gone"), reason)
    return EngineSummary("down", "bad", str(phase) if phase else "Down", reason)


def step(settings: Settings, memory: Memory, obs: Observation, now: datetime) -> Decision:
    """Advance the machine to ``now`` given what is observed; see the module docstring."""
    r = _Run(settings, memory, obs, now)
    if r.mem.since is None:
        r.set(since=now)
    for _ in range(_MAX_CHAIN):
        r.chain = False
        if not _guards(r):
            _HANDLERS[r.mem.state](r)
        if not r.chain:
            break
    refusal = _user_refusals(r)
    r.set(seen_running=obs.request.running, seen_power_off=obs.request.power_off)
    placement = tuple((s.host, s.score) for s in r.scores)
    if _bands(placement) != _bands(r.mem.placement):
        r.act(SetPlacement(placement))
        r.set(placement=placement)
    verdict = spares(r.scores, r.node, obs.engine_memory, settings.spares)
    _conditions(r, verdict)
    return Decision(
        r.mem,
        tuple(r.actions),
        r.scores,
        verdict,
        refusal,
        _host_rows(r),
        _engine_summary(r),
    )


# --------------------------------------------------------------------------------------------
# Memory <-> status (JSON-friendly, camelCase; tolerant of missing or bad fields)
# --------------------------------------------------------------------------------------------

_TIME_FIELDS = frozenset(
    {
        "since",
        "backoff_until",
        "start_requested_at",
        "healthy_since",
        "last_action_at",
        "migration_failed_at",
        "reminder_at",
    }
)
_TEXT_FIELDS = frozenset(
    {
        "host",
        "lost_host",
        "fenced_host",
        "abandoned_host",
        "migration_target",
        "notice",
        "user_action",
        "refusal",
    }
)
_INT_FIELDS = frozenset({"attempts", "reset_seq", "failovers"})
_BOOL_FIELDS = frozenset({"seen_running", "seen_power_off"})
_RECORD_FIELDS = ("from_host", "lost_at", "detected_at", "fenced_at", "started_at", "to_host")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError(f"time without zone: {value}")
        return parsed
    return None


def _record_to_dict(record: FailoverRecord | None) -> dict[str, object] | None:
    if record is None:
        return None
    out: dict[str, object] = {}
    for name in (*_RECORD_FIELDS, "healthy_at"):
        value = getattr(record, name)
        if value is not None:
            out[_camel(name)] = _time(value) if isinstance(value, datetime) else value
    return out


def _record_from_dict(data: object) -> FailoverRecord | None:
    if not isinstance(data, dict):
        return None
    lost_at = _parse_time(data.get("lostAt"))
    detected_at = _parse_time(data.get("detectedAt"))
    if not isinstance(data.get("fromHost"), str) or lost_at is None or detected_at is None:
        return None
    to_host = data.get("toHost")
    return FailoverRecord(
        from_host=str(data["fromHost"]),
        lost_at=lost_at,
        detected_at=detected_at,
        fenced_at=_parse_time(data.get("fencedAt")),
        started_at=_parse_time(data.get("startedAt")),
        to_host=to_host if isinstance(to_host, str) else None,
        healthy_at=_parse_time(data.get("healthyAt")),
    )


def memory_to_dict(memory: Memory) -> dict[str, object]:
    """The memory as a JSON-friendly dict with camelCase keys (``None`` values left out)."""
    out: dict[str, object] = {"state": memory.state.value}
    for name in sorted(_TIME_FIELDS):
        out[_camel(name)] = _time(getattr(memory, name))
    for name in sorted(_TEXT_FIELDS | _INT_FIELDS | _BOOL_FIELDS):
        out[_camel(name)] = getattr(memory, name)
    out["reason"] = memory.reason
    out["failedStarts"] = [{"host": f.host, "at": f.at.isoformat()} for f in memory.failed_starts]
    out["placement"] = [{"host": h, "score": sc} for h, sc in memory.placement]
    out["conditions"] = [
        {"type": c[0], "status": c[1], "reason": c[2], "message": c[3]} for c in memory.conditions
    ]
    out["failover"] = _record_to_dict(memory.failover)
    out["lastFailover"] = _record_to_dict(memory.last_failover)
    return {k: v for k, v in out.items() if v is not None}


def memory_from_dict(data: object) -> Memory:
    """Rebuild the memory from :func:`memory_to_dict` output. A missing or malformed field falls
    back to its default instead of failing: a damaged status never stops the machine (at worst
    it re-derives the state from what it observes, starting from EngineDown)."""
    if not isinstance(data, dict):
        return Memory()
    values: dict[str, object] = {}
    try:
        values["state"] = State(data.get("state", State.ENGINE_DOWN.value))
    except ValueError:
        values["state"] = State.ENGINE_DOWN
    for name in _TIME_FIELDS:
        try:
            values[name] = _parse_time(data.get(_camel(name)))
        except ValueError:
            values[name] = None
    for name in _TEXT_FIELDS:
        value = data.get(_camel(name))
        values[name] = value if isinstance(value, str) else None
    for name in _INT_FIELDS:
        value = data.get(_camel(name))
        values[name] = value if isinstance(value, int) and not isinstance(value, bool) else 0
    for name in _BOOL_FIELDS:
        value = data.get(_camel(name))
        values[name] = value if isinstance(value, bool) else name == "seen_running"
    reason = data.get("reason")
    values["reason"] = reason if isinstance(reason, str) else ""
    values["failed_starts"] = tuple(_failed_starts(data.get("failedStarts")))
    values["placement"] = tuple(
        (p["host"], p["score"])
        for p in _dicts(data.get("placement"))
        if isinstance(p.get("host"), str) and isinstance(p.get("score"), int)
    )
    values["conditions"] = tuple(
        (str(c.get("type")), str(c.get("status")), str(c.get("reason")), str(c.get("message")))
        for c in _dicts(data.get("conditions"))
    )
    values["failover"] = _record_from_dict(data.get("failover"))
    values["last_failover"] = _record_from_dict(data.get("lastFailover"))
    return Memory(**values)  # type: ignore[arg-type]


def _dicts(value: object) -> list[dict[str, object]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _failed_starts(value: object) -> list[FailedStart]:
    out = []
    for item in _dicts(value):
        try:
            at = _parse_time(item.get("at"))
        except ValueError:
            continue
        host = item.get("host")
        if isinstance(host, str) and at is not None:
            out.append(FailedStart(host, at))
    return out
