"""The RollingMaintenance planner: CloudStack's KVM rolling maintenance, safer and faster.

Pure: ``step(state, spec, observation) -> (state, actions)``. The state
(:class:`RunState`) is plain data with :meth:`RunState.to_dict` / :meth:`RunState.from_dict`,
kept in the RollingMaintenance's status: a restarted operator reads it back and goes on, and a
stage with a recorded result is never run again. The input state is never mutated.

The run, step by step (CloudStack's order, ``hosts.rst`` "KVM Rolling Maintenance")
-----------------------------------------------------------------------------------
1. **Validate** (phase Pending): exactly one scope form (host names, label selector, groups by
   a label key); ``maxUnavailable >= 1``; ``stageTimeout`` not below the status poll interval
   (CloudStack refuses a timeout below ``kvm.rolling.maintenance.ping.interval``); the scope
   resolves to at least one host. Any failure ends the run at once (Failed).
2. **Hosts and capacity for the whole scope**: a host already in maintenance is skipped (left
   as the user put it); a host not Up (NonResponsive, Fenced, ...) stops the run, or with
   ``forced`` is skipped. For every other host, can the other usable hosts hold its VMs
   (:func:`hosted_engine.logic.drain.check_capacity`), and do enough hosts allowed to run the
   engine remain (one to run it plus ``engineSpares`` spares, as many as the cluster has)?
   A host that fails stops the run, or with ``forced`` is skipped.
3. **PreFlight** on every host (up to ``preflightParallelism`` at once, all by default; CloudStack
   runs them one by one). Exit 70 skips the host ("no maintenance needed"); any other failure
   (or a timeout) stops the run unless ``forced``, which skips the host.
4. **Groups one after another**. A group's scheduling is disabled while it runs
   (:class:`DisableGroupScheduling`) and restored when it ends, also on failure and abort.
   Within the group hosts start in order. A host holds an *unavailability slot* from its
   PreMaintenance until its maintenance has ended (the Host is Up again, also after a cancelled
   maintenance); its PostMaintenance runs outside the slot, on a host that is Up and
   schedulable again (``postMaintenanceHoldsSlot`` keeps CloudStack's stricter order). Up to
   ``maxUnavailable`` slots are used at once; a host beyond the first starts only when the
   other hosts can hold the VMs of every slot holder plus its own (and the engine keeps its
   spares), else it waits, keeping the order. ``maxUnavailable`` 1 keeps CloudStack's safety
   (one host down at a time); :func:`cloudstack_order` reproduces its exact order.
5. **Per host**: PreMaintenance (70 = skip the host) -> recompute capacity -> enter maintenance
   and wait up to ``maintenanceTimeout`` for the Host to reach Maintenance (a refusal fails the
   host) -> Maintenance hook -> end maintenance and wait for Up (bounded by ``stageTimeout``)
   -> PostMaintenance. Exit 70 of the Maintenance or PostMaintenance hook is a failure, as in
   CloudStack. With ``preMaintenanceAhead`` the PreMaintenance hook of the next hosts in line
   (at most ``maxUnavailable``) runs while they wait for a slot (they are Up and keep their
   VMs); the capacity is still checked when the host gets its slot
   (docs/decisions/0007-premaintenance-ahead.md). Before a stage starts, its hook script must
   exist (``missing_hooks`` of the observation): a missing one fails the stage without a Job;
   before the run starts, a missing one keeps the run Pending (``Ready=False``).
6. **A failing stage**: without ``forced`` the run stops: that host's maintenance is cancelled
   (:class:`EndMaintenance`), no other host starts, hosts already under way finish their
   sequence, then the group's scheduling is restored and the run is Failed with the error.
   With ``forced`` the host is marked Failed (skipped) and the run goes on.
7. **Pause** holds everything that would start something (a hook, entering or ending a
   maintenance, a new host); running hooks finish and their results are recorded; timeouts
   still apply. **Resume** carries on. **Abort** deletes running hooks, ends every maintenance
   this run asked for, restores scheduling and ends the run (Aborted).

Hooks are Kubernetes Jobs with deterministic names (:func:`job_name`), so re-emitting
:class:`RunHook` after a restart is idempotent; the payload is appended to every stage's
command. The handler must keep a hook's Job (owner reference, no TTL) until its result is
recorded here, or a lost Job is recreated and the stage runs again.

:func:`simulate` drives :func:`step` against a simulated world (hooks and drains that take given
durations) and returns the run's total duration: the benchmark compares a run with
``maxUnavailable`` and parallel PreFlight against :func:`cloudstack_order` of the same spec,
optionally with CloudStack's polling (its ping interval for stages, 30 s for maintenance).
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from hosted_engine.logic.drain import (
    DrainVM,
    MigrationLimits,
    Refusal,
    TargetHost,
    check_capacity,
)
from hosted_engine.logic.host_lifecycle import EmitEvent, SetCondition

EXIT_SKIP = 70
DEFAULT_STAGE_TIMEOUT_S = 1800.0
DEFAULT_MAINTENANCE_TIMEOUT_S = 1800.0


class Stage(StrEnum):
    PRE_FLIGHT = "PreFlight"
    PRE_MAINTENANCE = "PreMaintenance"
    MAINTENANCE = "Maintenance"
    POST_MAINTENANCE = "PostMaintenance"


SKIPPABLE = (Stage.PRE_FLIGHT, Stage.PRE_MAINTENANCE)


class RunPhase(StrEnum):
    PENDING = "Pending"
    PRE_FLIGHT = "PreFlight"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ABORTED = "Aborted"


TERMINAL = (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.ABORTED)


class HostPhase(StrEnum):
    PENDING = "Pending"
    PRE_FLIGHT = "PreFlight"
    READY = "Ready"  # PreFlight passed, waiting for its turn
    PRE_MAINTENANCE = "PreMaintenance"
    ENTERING_MAINTENANCE = "EnteringMaintenance"
    MAINTENANCE = "Maintenance"
    ENDING_MAINTENANCE = "EndingMaintenance"
    POST_MAINTENANCE = "PostMaintenance"
    DONE = "Done"
    SKIPPED = "Skipped"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


HOST_FINISHED = (HostPhase.DONE, HostPhase.SKIPPED, HostPhase.FAILED, HostPhase.CANCELLED)
HOLDS_SLOT = (
    HostPhase.PRE_MAINTENANCE,
    HostPhase.ENTERING_MAINTENANCE,
    HostPhase.MAINTENANCE,
    HostPhase.ENDING_MAINTENANCE,
)


class StageResult(StrEnum):
    SUCCEEDED = "Succeeded"
    SKIPPED = "Skipped"  # exit 70 at PreFlight / PreMaintenance
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"


class JobState(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


# ----------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class SelectorRequirement:
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[SelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and not (present and labels[req.key] in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
            if req.operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
                return False
        return True


@dataclass(frozen=True)
class Scope:
    """Exactly one of the three forms."""

    host_names: tuple[str, ...] | None = None
    selector: LabelSelector | None = None
    group_label_key: str | None = None
    group_values: tuple[str, ...] = ()  # with group_label_key: only these groups (all if empty)

    def forms(self) -> int:
        """How many scope forms are given (exactly one is valid)."""
        return sum(x is not None for x in (self.host_names, self.selector, self.group_label_key))


@dataclass(frozen=True)
class RollingSpec:
    scope: Scope
    hooks: Mapping[Stage, tuple[str, ...]] = field(default_factory=dict)  # command per stage
    payload: tuple[str, ...] = ()
    forced: bool = False
    stage_timeout_s: float = DEFAULT_STAGE_TIMEOUT_S
    hook_timeouts_s: Mapping[Stage, float] = field(default_factory=dict)  # per-hook override
    maintenance_timeout_s: float = DEFAULT_MAINTENANCE_TIMEOUT_S
    max_unavailable: int = 1
    preflight_parallelism: int | None = None  # None: every host at once
    engine_spares: int = 1
    post_maintenance_holds_slot: bool = False  # True: CloudStack's strict one-after-another
    # True: the PreMaintenance hook of the next hosts in line (at most maxUnavailable) runs
    # while the slot holders are in maintenance (docs/decisions/0007-premaintenance-ahead.md)
    pre_maintenance_ahead: bool = False
    # CloudStack's polling, to reproduce its timing (cloudstack_order): a stage's end is seen
    # only at its next poll (kvm.rolling.maintenance.ping.interval), a host in Maintenance only
    # at the next check of waitForHostInMaintenance (every 30 s). None: seen when it happens.
    stage_poll_s: float | None = None
    maintenance_poll_s: float | None = None
    paused: bool = False
    abort: bool = False


#: CloudStack's defaults: ``kvm.rolling.maintenance.ping.interval`` (10 s) and the fixed 30 s
#: step of ``RollingMaintenanceManagerImpl.waitForHostInMaintenance`` (apache/cloudstack,
#: server/src/main/java/com/cloud/resource/RollingMaintenanceManagerImpl.java).
CLOUDSTACK_PING_INTERVAL_S = 10.0
CLOUDSTACK_MAINTENANCE_POLL_S = 30.0


def cloudstack_order(
    spec: RollingSpec,
    *,
    ping_interval_s: float | None = None,
    maintenance_poll_s: float | None = None,
) -> RollingSpec:
    """The same run in CloudStack's order: PreFlight one host at a time, then one host at a
    time, the next host starting only after the previous one's PostMaintenance.

    ``ping_interval_s`` / ``maintenance_poll_s``: also CloudStack's reaction time. Its
    management server sends a stage's command, then polls the agent every ping interval until
    the stage is finished (``sendRollingMaintenanceCommandToHost``), and after asking for
    maintenance checks the host's state at once and then every 30 s
    (``waitForHostInMaintenance``). None (the default) leaves CloudStack the operator's own,
    watch-driven reaction time, which flatters it.
    """
    return replace(
        spec,
        max_unavailable=1,
        preflight_parallelism=1,
        post_maintenance_holds_slot=True,
        pre_maintenance_ahead=False,
        stage_poll_s=ping_interval_s,
        maintenance_poll_s=maintenance_poll_s,
    )


# ----------------------------------------------------------------------------- observation


@dataclass(frozen=True)
class HostView:
    name: str
    capacity: TargetHost  # the host as a migration target (allocatable, allocated, engine)
    labels: Mapping[str, str] = field(default_factory=dict)
    group: str = ""  # the Host's group label value ("" when none)
    state: str = "Up"  # the Host's lifecycle state (host_lifecycle.HostState value)
    maintenance_refused: str | None = None  # the Host's refusal message, if any
    vms: tuple[DrainVM, ...] = ()


@dataclass(frozen=True)
class JobView:
    state: JobState
    exit_code: int | None = None
    log_tail: str = ""
    finished_at: datetime | None = None


@dataclass(frozen=True)
class RollingObservation:
    run_name: str
    now: datetime
    hosts: Sequence[HostView]
    jobs: Mapping[str, JobView] = field(default_factory=dict)
    poll_interval_s: float = 10.0
    # stage -> why its hook script cannot be run now (a message that names the spec field);
    # the run does not start while any is missing, and a stage that would start fails
    missing_hooks: Mapping[Stage, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class RunHook:
    host: str
    stage: Stage
    job_name: str
    command: tuple[str, ...]  # the hook's command with the payload appended
    timeout_s: float


@dataclass(frozen=True)
class DeleteHook:
    job_name: str


@dataclass(frozen=True)
class EnterMaintenance:
    host: str


@dataclass(frozen=True)
class EndMaintenance:
    host: str


@dataclass(frozen=True)
class DisableGroupScheduling:
    """Steer new VMs away from the group while it runs (CloudStack disables the cluster).

    The group's hosts stay valid migration targets, as a disabled CloudStack cluster does for
    its own maintenance and as the capacity checks assume: a soft ``PreferNoSchedule`` taint
    (or an equivalent the placement honours), never a cordon.
    """

    group: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class EnableGroupScheduling:
    group: str
    hosts: tuple[str, ...]


Action = (
    RunHook
    | DeleteHook
    | EnterMaintenance
    | EndMaintenance
    | DisableGroupScheduling
    | EnableGroupScheduling
    | SetCondition
    | EmitEvent
)


# ----------------------------------------------------------------------------- state


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w.title() for w in rest)


def _parse_ts(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass
class StageRecord:
    job_name: str
    started_at: datetime
    finished_at: datetime | None = None
    result: StageResult | None = None
    exit_code: int | None = None
    log_tail: str = ""
    message: str = ""
    end_seen_at: datetime | None = None  # with stage_poll_s: when the end was first seen


@dataclass
class HostRun:
    name: str
    group: str
    phase: HostPhase = HostPhase.PENDING
    stages: dict[str, StageRecord] = field(default_factory=dict)
    maintenance_requested_at: datetime | None = None
    maintenance_ending_at: datetime | None = None
    maintenance_ended: bool = False
    message: str = ""
    maintenance_seen_at: datetime | None = None  # with maintenance_poll_s: first seen


@dataclass
class RunState:
    phase: RunPhase = RunPhase.PENDING
    hosts: list[HostRun] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    group_index: int = 0
    disabled_groups: list[str] = field(default_factory=list)
    stopping: bool = False
    paused: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str = ""
    message: str = ""

    def host(self, name: str) -> HostRun:
        return next(h for h in self.hosts if h.name == name)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    def progress(self) -> dict[str, int]:
        counts = {p.value: 0 for p in HostPhase}
        for h in self.hosts:
            counts[h.phase.value] += 1
        return {"total": len(self.hosts), **{k: v for k, v in counts.items() if v}}

    def to_dict(self) -> dict[str, Any]:
        def conv(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, StrEnum):
                return value.value
            if isinstance(value, dict):
                return {_camel(k): conv(v) for k, v in value.items()}
            if isinstance(value, list):
                return [conv(v) for v in value]
            return value

        data: dict[str, Any] = conv(asdict(self))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        hosts = []
        for h in data.get("hosts", []):
            stages = {
                stage: StageRecord(
                    job_name=r["jobName"],
                    started_at=_parse_ts(r["startedAt"]) or datetime.min,
                    finished_at=_parse_ts(r.get("finishedAt")),
                    result=StageResult(r["result"]) if r.get("result") else None,
                    exit_code=r.get("exitCode"),
                    log_tail=r.get("logTail", ""),
                    message=r.get("message", ""),
                    end_seen_at=_parse_ts(r.get("endSeenAt")),
                )
                for stage, r in h.get("stages", {}).items()
            }
            hosts.append(
                HostRun(
                    name=h["name"],
                    group=h.get("group", ""),
                    phase=HostPhase(h.get("phase", HostPhase.PENDING.value)),
                    stages=stages,
                    maintenance_requested_at=_parse_ts(h.get("maintenanceRequestedAt")),
                    maintenance_ending_at=_parse_ts(h.get("maintenanceEndingAt")),
                    maintenance_ended=bool(h.get("maintenanceEnded", False)),
                    message=h.get("message", ""),
                    maintenance_seen_at=_parse_ts(h.get("maintenanceSeenAt")),
                )
            )
        return cls(
            phase=RunPhase(data.get("phase", RunPhase.PENDING.value)),
            hosts=hosts,
            groups=list(data.get("groups", [])),
            group_index=int(data.get("groupIndex", 0)),
            disabled_groups=list(data.get("disabledGroups", [])),
            stopping=bool(data.get("stopping", False)),
            paused=bool(data.get("paused", False)),
            started_at=_parse_ts(data.get("startedAt")),
            finished_at=_parse_ts(data.get("finishedAt")),
            reason=data.get("reason", ""),
            message=data.get("message", ""),
        )


@dataclass(frozen=True)
class RollingStep:
    state: RunState
    actions: tuple[Action, ...]


def job_name(run_name: str, host: str, stage: Stage) -> str:
    """Deterministic Job name (<= 63 chars, DNS-1123 label)."""
    digest = hashlib.sha256(f"{run_name}/{host}/{stage.value}".encode()).hexdigest()[:8]
    base = f"{run_name}-{host}".lower()[:37]  # + "-postmaintenance-" + 8 hex <= 63
    safe = "".join(c if c.isalnum() or c == "-" else "-" for c in base).strip("-")
    return f"{safe}-{stage.value.lower()}-{digest}"


# ----------------------------------------------------------------------------- scope & capacity


def resolve_scope(scope: Scope, hosts: Sequence[HostView]) -> list[tuple[str, str]]:
    """(group, host) pairs in run order: groups sorted by name, hosts in scope order."""
    if scope.host_names is not None:
        known = {h.name: h for h in hosts}
        picked = [known[n] for n in dict.fromkeys(scope.host_names) if n in known]
        return _grouped([(h.group, h.name) for h in picked])
    if scope.selector is not None:
        selector = scope.selector
        picked = sorted((h for h in hosts if selector.matches(h.labels)), key=lambda h: h.name)
        return _grouped([(h.group, h.name) for h in picked])
    key = scope.group_label_key or ""
    pairs = [
        (h.labels[key], h.name)
        for h in sorted(hosts, key=lambda h: h.name)
        if key in h.labels and (not scope.group_values or h.labels[key] in scope.group_values)
    ]
    return _grouped(pairs)


def _grouped(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    order = sorted(dict.fromkeys(g for g, _ in pairs))
    return [(g, n) for g in order for gg, n in pairs if gg == g]


def engine_spare_refusal(
    leaving: set[str], hosts: Sequence[HostView], spares: int
) -> Refusal | None:
    """Enough hosts allowed to run the engine remain: one to run it plus the spares."""
    capable = [h for h in hosts if h.capacity.may_run_engine]
    if not capable:
        return None
    remaining = [h for h in capable if h.capacity.usable and h.name not in leaving]
    required = max(1, min(1 + spares, len(capable) - 1))
    if len(remaining) < required:
        return Refusal(
            "EngineSparesLost",
            f"with {', '.join(sorted(leaving))} unavailable only {len(remaining)} host(s) may "
            f"run the engine; {required} needed (the engine and its spares)",
        )
    return None


def capacity_refusal(leaving: set[str], hosts: Sequence[HostView], spares: int) -> Refusal | None:
    """Can the other hosts hold every VM of ``leaving``, with the engine's spares kept?"""
    vms = [vm for h in hosts if h.name in leaving for vm in h.vms]
    refusal = check_capacity(vms, [h.capacity for h in hosts], leaving=leaving)
    return refusal or engine_spare_refusal(leaving, hosts, spares)


# ----------------------------------------------------------------------------- the planner


class _Ctx:
    def __init__(self, spec: RollingSpec, obs: RollingObservation, state: RunState) -> None:
        self.spec = spec
        self.obs = obs
        self.state = state
        self.now = obs.now
        self.actions: list[Action] = []
        self.views = {h.name: h for h in obs.hosts}
        self.may_start = not spec.paused

    def event(self, type_: str, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(type_, reason, message))

    def condition(self, type_: str, status: str, reason: str, message: str = "") -> None:
        self.actions.append(SetCondition(type_, status, reason, message))


def step(state: RunState | None, spec: RollingSpec, obs: RollingObservation) -> RollingStep:
    """One decision of the run (see the module docstring)."""
    s = copy.deepcopy(state) if state is not None else RunState()
    ctx = _Ctx(spec, obs, s)
    if s.terminal:
        return RollingStep(s, ())
    if spec.abort:
        _abort(ctx)
        return RollingStep(s, tuple(ctx.actions))
    if spec.paused != s.paused:
        s.paused = spec.paused
        if spec.paused:
            ctx.condition("Paused", "True", "PausedByUser")
            ctx.event("Normal", "RollingMaintenancePaused", "no new stage starts")
        else:
            ctx.condition("Paused", "False", "Resumed")
            ctx.event("Normal", "RollingMaintenanceResumed", "resumed")
    if s.phase is RunPhase.PENDING and not _start(ctx):
        return RollingStep(s, tuple(ctx.actions))
    if s.phase is RunPhase.PRE_FLIGHT:
        _preflight(ctx)
    if s.phase is RunPhase.RUNNING:
        _groups(ctx)
    return RollingStep(s, tuple(ctx.actions))


def _finish(ctx: _Ctx, phase: RunPhase, reason: str, message: str) -> None:
    s = ctx.state
    for group in list(s.disabled_groups):
        _enable_group(ctx, group)
    s.phase = phase
    s.finished_at = ctx.now
    s.reason = reason
    s.message = message
    ctx.condition("Progressing", "False", reason, message)
    if phase is RunPhase.SUCCEEDED:
        ctx.condition("Succeeded", "True", reason, message)
        ctx.event("Normal", "RollingMaintenanceSucceeded", message)
    elif phase is RunPhase.FAILED:
        ctx.condition("Failed", "True", reason, message)
        ctx.event("Warning", "RollingMaintenanceFailed", message)
    else:
        ctx.condition("Failed", "True", reason, message)
        ctx.event("Warning", "RollingMaintenanceAborted", message)


def _start(ctx: _Ctx) -> bool:
    spec, s, obs = ctx.spec, ctx.state, ctx.obs
    if spec.scope.forms() != 1:
        _finish(ctx, RunPhase.FAILED, "InvalidScope", "give exactly one scope form")
        return False
    if spec.max_unavailable < 1:
        _finish(ctx, RunPhase.FAILED, "InvalidMaxUnavailable", "maxUnavailable must be >= 1")
        return False
    shortest = min([spec.stage_timeout_s, *spec.hook_timeouts_s.values()])
    if shortest < obs.poll_interval_s:
        _finish(
            ctx,
            RunPhase.FAILED,
            "StageTimeoutBelowPollInterval",
            f"a stage timeout of {shortest:g}s is below the status poll interval "
            f"{obs.poll_interval_s:g}s",
        )
        return False
    if obs.missing_hooks:
        # not a failure: the run waits (Pending) until the scripts are there
        message = "; ".join(obs.missing_hooks[st] for st in Stage if st in obs.missing_hooks)
        ctx.condition("Ready", "False", "HookScriptMissing", message)
        ctx.event("Warning", "HookScriptMissing", f"not starting: {message}")
        return False
    pairs = resolve_scope(spec.scope, obs.hosts)
    if not pairs:
        _finish(ctx, RunPhase.FAILED, "EmptyScope", "the scope matches no Host")
        return False
    s.hosts = [HostRun(name=n, group=g) for g, n in pairs]
    s.groups = list(dict.fromkeys(g for g, _ in pairs))
    s.started_at = ctx.now
    for h in s.hosts:
        view = ctx.views[h.name]
        if view.state in ("Maintenance", "PreparingForMaintenance"):
            h.phase = HostPhase.SKIPPED
            h.message = f"already {view.state} before the run: left as it is"
            ctx.event("Normal", "HostSkipped", f"{h.name}: {h.message}")
            continue
        if view.state != "Up":
            msg = f"{h.name} is {view.state}, not Up"
            h.phase = HostPhase.FAILED
            h.message = msg
            if not spec.forced:
                _finish(ctx, RunPhase.FAILED, "HostNotUp", msg)
                return False
            ctx.event("Warning", "HostSkipped", f"{msg} (forced: skipped)")
            continue
        refusal = capacity_refusal({h.name}, obs.hosts, spec.engine_spares)
        if refusal is None:
            continue
        msg = f"{h.name}: {refusal.message}"
        if not spec.forced:
            h.phase = HostPhase.FAILED
            h.message = refusal.reason
            _finish(ctx, RunPhase.FAILED, refusal.reason, msg)
            return False
        h.phase = HostPhase.FAILED
        h.message = f"{refusal.reason}: {refusal.message}"
        ctx.event("Warning", "HostSkipped", msg)
    s.phase = RunPhase.PRE_FLIGHT
    ctx.condition("Progressing", "True", "PreFlight", f"{len(s.hosts)} hosts in scope")
    ctx.event(
        "Normal", "RollingMaintenanceStarted", f"{len(s.hosts)} hosts, {len(s.groups)} groups"
    )
    return True


def _hook(ctx: _Ctx, h: HostRun, stage: Stage) -> StageResult | None:
    """Run (or follow) the stage's hook. None: not finished (or not started while paused)."""
    spec, obs = ctx.spec, ctx.obs
    command = spec.hooks.get(stage)
    if command is None:
        return StageResult.SUCCEEDED  # stage not configured
    name = job_name(obs.run_name, h.name, stage)
    timeout = spec.hook_timeouts_s.get(stage, spec.stage_timeout_s)
    run = RunHook(h.name, stage, name, tuple(command) + spec.payload, timeout)
    rec = h.stages.get(stage.value)
    if rec is None:
        if not ctx.may_start:
            return None
        rec = StageRecord(job_name=name, started_at=ctx.now)
        h.stages[stage.value] = rec
        missing = obs.missing_hooks.get(stage)
        if missing is not None:  # checked right before the stage, as CloudStack does
            rec.result = StageResult.FAILED
            rec.finished_at = ctx.now
            rec.message = f"{stage.value} not started: {missing}"
            ctx.event("Warning", "HookScriptMissing", f"{h.name}: {rec.message}")
            return rec.result
        ctx.actions.append(run)
        return None
    if rec.result is not None:
        return rec.result
    job = obs.jobs.get(rec.job_name)
    if job is not None and job.state is not JobState.RUNNING and not _polled(ctx, rec):
        job = JobView(JobState.RUNNING)  # finished, but CloudStack has not asked yet
    if job is None or job.state is JobState.RUNNING:
        if (ctx.now - rec.started_at).total_seconds() >= timeout:
            ctx.actions.append(DeleteHook(rec.job_name))
            rec.result = StageResult.TIMED_OUT
            rec.finished_at = ctx.now
            rec.message = f"{stage.value} did not finish within {timeout:g}s"
            return rec.result
        if job is None:
            ctx.actions.append(run)  # idempotent: the Job may never have been created
        return None
    rec.exit_code = job.exit_code
    rec.log_tail = job.log_tail
    # a Job's completionTime has whole seconds: never before the stage's own start
    rec.finished_at = max(job.finished_at or ctx.now, rec.started_at)
    if job.state is JobState.SUCCEEDED and job.exit_code in (0, None):
        rec.result = StageResult.SUCCEEDED
    elif job.exit_code == EXIT_SKIP and stage in SKIPPABLE:
        rec.result = StageResult.SKIPPED
        rec.message = "exit 70: no maintenance needed"
    else:
        rec.result = StageResult.FAILED
        rec.message = f"{stage.value} failed with exit code {job.exit_code}"
    return rec.result


def _next_poll(since: datetime, poll_s: float, at: datetime) -> datetime:
    """The first poll (every ``poll_s`` after ``since``, never ``since`` itself) at or after
    ``at``; a poll within a millisecond of ``at`` counts (timers may fire early)."""
    k = max(1, math.ceil(((at - since).total_seconds() - 1e-3) / poll_s))
    return since + timedelta(seconds=k * poll_s)


def _polled(ctx: _Ctx, rec: StageRecord) -> bool:
    """With CloudStack's polling: is the end of a finished hook seen now? CloudStack sees it
    at its first poll after it ended; the planner takes "ended" as when it first saw the end
    (so no wake-up is needed while a hook runs). Without polling: seen when it happens."""
    poll = ctx.spec.stage_poll_s
    if poll is None:
        return True
    if rec.end_seen_at is None:
        rec.end_seen_at = ctx.now
    due = _next_poll(rec.started_at, poll, rec.end_seen_at)
    return ctx.now >= due - timedelta(milliseconds=1)


def poll_deadline(state: RunState, spec: RollingSpec, now: datetime) -> datetime | None:
    """With CloudStack's polling: when it next sees an end the planner already saw."""
    due: list[datetime] = []
    for h in state.hosts:
        if spec.stage_poll_s is not None:
            for rec in h.stages.values():
                if rec.result is None and rec.end_seen_at is not None:
                    due.append(_next_poll(rec.started_at, spec.stage_poll_s, rec.end_seen_at))
        if (
            spec.maintenance_poll_s is not None
            and h.phase is HostPhase.ENTERING_MAINTENANCE
            and h.maintenance_requested_at is not None
            and h.maintenance_seen_at is not None
        ):
            due.append(_next_poll(h.maintenance_requested_at, spec.maintenance_poll_s,
                                  h.maintenance_seen_at))
    return min(due) if due else None


def _host_failed(ctx: _Ctx, h: HostRun, message: str) -> None:
    if h.maintenance_requested_at is not None and not h.maintenance_ended:
        ctx.actions.append(EndMaintenance(h.name))  # cancel the host's maintenance
        h.maintenance_ended = True
    h.phase = HostPhase.FAILED
    h.message = message
    if ctx.spec.forced:
        ctx.event("Warning", "HostSkipped", f"{h.name}: {message} (forced: the run goes on)")
    else:
        ctx.state.stopping = True
        ctx.state.reason = "StageFailed"
        ctx.state.message = f"{h.name}: {message}"
        ctx.event("Warning", "HostFailed", f"{h.name}: {message}")


def _preflight(ctx: _Ctx) -> None:
    s, spec = ctx.state, ctx.spec
    limit = spec.preflight_parallelism or len(s.hosts)
    for h in s.hosts:
        if h.phase is HostPhase.PENDING and ctx.may_start and not s.stopping:
            running = sum(1 for x in s.hosts if x.phase is HostPhase.PRE_FLIGHT)
            if running >= limit:
                continue
            h.phase = HostPhase.PRE_FLIGHT
        if h.phase is not HostPhase.PRE_FLIGHT:
            continue
        result = _hook(ctx, h, Stage.PRE_FLIGHT)
        if result is None:
            continue
        if result is StageResult.SUCCEEDED:
            h.phase = HostPhase.READY
        elif result is StageResult.SKIPPED:
            h.phase = HostPhase.SKIPPED
            h.message = "PreFlight exit 70: no maintenance needed"
            ctx.event("Normal", "HostSkipped", f"{h.name}: {h.message}")
        else:
            _host_failed(ctx, h, h.stages[Stage.PRE_FLIGHT.value].message)
    if s.stopping:
        if any(h.phase is HostPhase.PRE_FLIGHT for h in s.hosts):
            return  # let the PreFlights under way finish
        for h in s.hosts:
            if h.phase in (HostPhase.PENDING, HostPhase.READY):
                h.phase = HostPhase.CANCELLED
                h.message = "not started: the run stopped"
        _finish(ctx, RunPhase.FAILED, s.reason, s.message)
        return
    if all(h.phase not in (HostPhase.PENDING, HostPhase.PRE_FLIGHT) for h in s.hosts):
        s.phase = RunPhase.RUNNING
        ctx.condition("Progressing", "True", "HostsInMaintenance")


def _disable_group(ctx: _Ctx, group: str) -> None:
    hosts = tuple(h.name for h in ctx.state.hosts if h.group == group)
    ctx.actions.append(DisableGroupScheduling(group, hosts))
    ctx.state.disabled_groups.append(group)


def _enable_group(ctx: _Ctx, group: str) -> None:
    hosts = tuple(h.name for h in ctx.state.hosts if h.group == group)
    ctx.actions.append(EnableGroupScheduling(group, hosts))
    ctx.state.disabled_groups.remove(group)


def _groups(ctx: _Ctx) -> None:
    s = ctx.state
    while s.group_index < len(s.groups):
        group = s.groups[s.group_index]
        members = [h for h in s.hosts if h.group == group]
        if group not in s.disabled_groups and any(h.phase is HostPhase.READY for h in members):
            _disable_group(ctx, group)
        for h in members:
            if h.phase not in HOST_FINISHED and h.phase is not HostPhase.READY:
                _advance(ctx, h)
        if not s.stopping:
            for h in _start_hosts(ctx, members):  # a host just started moves on at once
                _advance(ctx, h)
        if ctx.spec.pre_maintenance_ahead and not s.stopping:
            _run_ahead(ctx, members)
        active = [h for h in members if h.phase not in HOST_FINISHED]
        waiting = [h for h in active if h.phase is HostPhase.READY]
        if s.stopping and len(active) == len(waiting):
            for other in s.hosts:
                if other.phase is HostPhase.READY:
                    _cancel_waiting(ctx, other)
            _finish(ctx, RunPhase.FAILED, s.reason or "StageFailed", s.message)
            return
        if active:
            return
        if group in s.disabled_groups:
            _enable_group(ctx, group)
        s.group_index += 1
    failed = [h.name for h in s.hosts if h.phase is HostPhase.FAILED]
    done = sum(1 for h in s.hosts if h.phase is HostPhase.DONE)
    skipped = sum(1 for h in s.hosts if h.phase is HostPhase.SKIPPED)
    if failed:
        msg = f"{done} hosts done, {skipped} skipped, failed (forced): {', '.join(failed)}"
        _finish(ctx, RunPhase.SUCCEEDED, "CompletedWithFailures", msg)
    else:
        _finish(ctx, RunPhase.SUCCEEDED, "Completed", f"{done} hosts done, {skipped} skipped")


def _cancel_waiting(ctx: _Ctx, h: HostRun) -> None:
    """A host that never got its slot: not started (a hook run ahead is stopped)."""
    for rec in h.stages.values():
        if rec.result is None:
            ctx.actions.append(DeleteHook(rec.job_name))
            rec.result = StageResult.FAILED
            rec.finished_at = ctx.now
            rec.message = "cancelled: the run stopped"
    h.phase = HostPhase.CANCELLED
    h.message = "not started: the run stopped"


def _run_ahead(ctx: _Ctx, members: list[HostRun]) -> None:
    """PreMaintenance of the next hosts in line (at most maxUnavailable of them) while the
    slot holders are in maintenance: it runs on a host that is Up and keeps its VMs, so it
    takes no capacity; its result is used when the host gets its slot (the capacity is
    checked again then). Exit 70 skips the host at once; a failure is the host's failure."""
    ahead = [h for h in members if h.phase is HostPhase.READY][: ctx.spec.max_unavailable]
    for h in ahead:
        result = _hook(ctx, h, Stage.PRE_MAINTENANCE)
        if result is StageResult.SKIPPED:
            h.phase = HostPhase.SKIPPED
            h.message = "PreMaintenance exit 70: no maintenance needed"
            ctx.event("Normal", "HostSkipped", f"{h.name}: {h.message}")
        elif result in (StageResult.FAILED, StageResult.TIMED_OUT):
            _host_failed(ctx, h, h.stages[Stage.PRE_MAINTENANCE.value].message)


def _holders(ctx: _Ctx) -> set[str]:
    """Hosts holding an unavailability slot: under way, or cancelled and not Up again yet."""
    held = set()
    for x in ctx.state.hosts:
        if x.phase in HOLDS_SLOT or (
            x.phase is HostPhase.POST_MAINTENANCE and ctx.spec.post_maintenance_holds_slot
        ):
            held.add(x.name)
        elif x.maintenance_requested_at is not None and x.phase in HOST_FINISHED:
            view = ctx.views.get(x.name)
            if view is not None and view.state != "Up":
                held.add(x.name)
    return held


def _start_hosts(ctx: _Ctx, members: list[HostRun]) -> list[HostRun]:
    started: list[HostRun] = []
    if not ctx.may_start:
        return started
    for h in members:
        if h.phase is not HostPhase.READY:
            continue
        holders = _holders(ctx)
        if len(holders) >= ctx.spec.max_unavailable:
            break
        if holders and capacity_refusal(holders | {h.name}, ctx.obs.hosts, ctx.spec.engine_spares):
            break  # wait for a slot holder to come back; keep the order
        h.phase = HostPhase.PRE_MAINTENANCE
        started.append(h)
        ctx.event("Normal", "HostMaintenanceStarting", f"{h.name}: PreMaintenance")
    return started


def _advance(ctx: _Ctx, h: HostRun) -> None:
    spec = ctx.spec
    if h.phase is HostPhase.PRE_MAINTENANCE:
        result = _hook(ctx, h, Stage.PRE_MAINTENANCE)
        if result is None:
            return
        if result is StageResult.SKIPPED:
            h.phase = HostPhase.SKIPPED
            h.message = "PreMaintenance exit 70: no maintenance needed"
            ctx.event("Normal", "HostSkipped", f"{h.name}: {h.message}")
            return
        if result is not StageResult.SUCCEEDED:
            _host_failed(ctx, h, h.stages[Stage.PRE_MAINTENANCE.value].message)
            return
        if not ctx.may_start:
            return
        others = _holders(ctx) - {h.name}
        refusal = capacity_refusal(others | {h.name}, ctx.obs.hosts, spec.engine_spares)
        if refusal is not None:
            _host_failed(ctx, h, f"{refusal.reason}: {refusal.message}")
            return
        h.phase = HostPhase.ENTERING_MAINTENANCE
        h.maintenance_requested_at = ctx.now
        ctx.actions.append(EnterMaintenance(h.name))
        return
    view = ctx.views.get(h.name)
    state = view.state if view else "Unknown"
    if h.phase is HostPhase.ENTERING_MAINTENANCE:
        assert h.maintenance_requested_at is not None
        seen = True
        if spec.maintenance_poll_s is not None and state == "Maintenance":
            # CloudStack looks at once, then every 30 s: seen at its next look
            h.maintenance_seen_at = h.maintenance_seen_at or ctx.now
            due = _next_poll(h.maintenance_requested_at, spec.maintenance_poll_s,
                             h.maintenance_seen_at)
            seen = ctx.now >= due - timedelta(milliseconds=1)
        if state == "Maintenance" and seen:
            h.phase = HostPhase.MAINTENANCE
        elif view is not None and view.maintenance_refused:
            _host_failed(ctx, h, f"maintenance refused: {view.maintenance_refused}")
            return
        elif (ctx.now - h.maintenance_requested_at).total_seconds() >= spec.maintenance_timeout_s:
            _host_failed(
                ctx, h, f"not in Maintenance after {spec.maintenance_timeout_s:g}s (state {state})"
            )
            return
        else:
            ctx.actions.append(EnterMaintenance(h.name))  # idempotent, survives restarts
            return
    if h.phase is HostPhase.MAINTENANCE:
        result = _hook(ctx, h, Stage.MAINTENANCE)
        if result is None:
            return
        if result is not StageResult.SUCCEEDED:
            _host_failed(ctx, h, h.stages[Stage.MAINTENANCE.value].message)
            return
        if not ctx.may_start:
            return
        h.phase = HostPhase.ENDING_MAINTENANCE
        h.maintenance_ending_at = ctx.now
        h.maintenance_ended = True
        ctx.actions.append(EndMaintenance(h.name))
        return
    if h.phase is HostPhase.ENDING_MAINTENANCE:
        assert h.maintenance_ending_at is not None
        if state == "Up":
            h.phase = HostPhase.POST_MAINTENANCE
        elif (ctx.now - h.maintenance_ending_at).total_seconds() >= spec.stage_timeout_s:
            _host_failed(ctx, h, f"not Up {spec.stage_timeout_s:g}s after maintenance ended")
            return
        else:
            ctx.actions.append(EndMaintenance(h.name))
            return
    if h.phase is HostPhase.POST_MAINTENANCE:
        result = _hook(ctx, h, Stage.POST_MAINTENANCE)
        if result is None:
            return
        if result is not StageResult.SUCCEEDED:
            _host_failed(ctx, h, h.stages[Stage.POST_MAINTENANCE.value].message)
            return
        h.phase = HostPhase.DONE
        ctx.event("Normal", "HostMaintenanceDone", f"{h.name}: all stages done")


def _abort(ctx: _Ctx) -> None:
    s = ctx.state
    for h in s.hosts:
        if h.phase in HOST_FINISHED:
            continue
        for rec in h.stages.values():
            if rec.result is None:
                ctx.actions.append(DeleteHook(rec.job_name))
                rec.result = StageResult.FAILED
                rec.finished_at = ctx.now
                rec.message = "aborted"
        if h.maintenance_requested_at is not None and not h.maintenance_ended:
            ctx.actions.append(EndMaintenance(h.name))
            h.maintenance_ended = True
        h.phase = HostPhase.CANCELLED
        h.message = "aborted"
    _finish(ctx, RunPhase.ABORTED, "Aborted", "aborted by the user")


# ----------------------------------------------------------------------------- simulator


@dataclass(frozen=True)
class SimDurations:
    """Durations for :func:`simulate`, in seconds."""

    hook_s: Mapping[Stage, float] = field(default_factory=dict)
    drain_s: Callable[[str], float] = lambda _host: 60.0
    activate_s: float = 5.0
    exit_codes: Mapping[tuple[str, Stage], int] = field(default_factory=dict)
    # With limits: hosts draining at once share parallelMigrationsPerCluster; a drain that
    # starts while k hosts drain takes drain_s * max(1, k * perNode / perCluster).
    limits: MigrationLimits | None = None

    def drain_time(self, host: str, draining: int) -> float:
        base = self.drain_s(host)
        if self.limits is None:
            return base
        share = draining * self.limits.per_node_outbound / self.limits.per_cluster
        return base * max(1.0, share)


@dataclass(frozen=True)
class SimResult:
    total_s: float
    state: RunState
    steps: int
    max_unavailable_seen: int  # most hosts not Up at once
    run_hook_actions: int  # RunHook actions emitted (== jobs created when nothing reruns)
    jobs_created: int
    timeline: tuple[tuple[float, frozenset[str]], ...] = ()  # (seconds, hosts not Up)


def simulate(
    spec: RollingSpec,
    hosts: Sequence[HostView],
    durations: SimDurations,
    *,
    start: datetime | None = None,
    max_steps: int = 100_000,
    through_status: bool = False,
) -> SimResult:
    """Drive :func:`step` in a discrete-event world; return how long the run takes.

    Hooks end after ``hook_s[stage]`` with ``exit_codes.get((host, stage), 0)``; entering
    maintenance takes ``drain_s(host)``; ending it takes ``activate_s``. Capacity is static.
    ``through_status``: the state goes through :meth:`RunState.to_dict` /
    :meth:`RunState.from_dict` between steps, as it does through the object's status when the
    operator restarts.
    """
    t0 = start or datetime(2026, 1, 1)
    now = t0
    jobs: dict[str, JobView] = {}
    host_state = {h.name: "Up" for h in hosts}
    events: list[tuple[datetime, int, str, str, str]] = []  # (when, seq, kind, key, value)
    scheduled: dict[tuple[str, str], int] = {}  # latest event per key
    seq = 0
    state: RunState | None = None
    max_seen = 0
    run_hooks = 0
    deleted = 0
    timeline: list[tuple[float, frozenset[str]]] = []
    for steps in range(1, max_steps + 1):
        if through_status and state is not None:
            state = RunState.from_dict(state.to_dict())
        views = [replace(h, state=host_state[h.name]) for h in hosts]
        obs = RollingObservation(run_name="sim", now=now, hosts=views, jobs=dict(jobs))
        result = step(state, spec, obs)
        state = result.state
        for action in result.actions:
            run_hooks += isinstance(action, RunHook)
            key: tuple[str, str] | None = None
            when = now
            value = ""
            if isinstance(action, RunHook) and action.job_name not in jobs:
                jobs[action.job_name] = JobView(JobState.RUNNING)
                key = ("job", action.job_name)
                when = now + timedelta(seconds=durations.hook_s.get(action.stage, 0.0))
                value = str(durations.exit_codes.get((action.host, action.stage), 0))
            elif isinstance(action, EnterMaintenance) and host_state[action.host] == "Up":
                host_state[action.host] = "PreparingForMaintenance"
                key = ("host", action.host)
                draining = sum(1 for v in host_state.values() if v == "PreparingForMaintenance")
                when = now + timedelta(seconds=durations.drain_time(action.host, draining))
                value = "Maintenance"
            elif isinstance(action, EndMaintenance) and host_state[action.host] in (
                "Maintenance",
                "PreparingForMaintenance",
            ):
                host_state[action.host] = "Activating"
                key = ("host", action.host)
                when = now + timedelta(seconds=durations.activate_s)
                value = "Up"
            elif isinstance(action, DeleteHook):
                deleted += action.job_name in jobs
                jobs.pop(action.job_name, None)
                scheduled.pop(("job", action.job_name), None)
            if key is not None:
                seq += 1
                scheduled[key] = seq
                heapq.heappush(events, (when, seq, key[0], key[1], value))
        down = frozenset(n for n, v in host_state.items() if v != "Up")
        timeline.append(((now - t0).total_seconds(), down))
        max_seen = max(max_seen, len(down))
        if state.terminal:
            total = (now - t0).total_seconds()
            created = len(jobs) + deleted
            return SimResult(total, state, steps, max_seen, run_hooks, created, tuple(timeline))
        poll = poll_deadline(state, spec, now)
        if poll is not None:  # CloudStack's next poll: the planner must look then
            seq += 1
            heapq.heappush(events, (poll, seq, "tick", "", ""))
        if not events:
            raise RuntimeError("simulation stalled: nothing scheduled and the run not finished")
        now = events[0][0]
        while events and events[0][0] == now:
            _, number, kind, name, value = heapq.heappop(events)
            if scheduled.get((kind, name)) != number:
                continue  # cancelled (hook deleted) or superseded
            del scheduled[(kind, name)]
            if kind == "job":
                code = int(value)
                jobs[name] = JobView(
                    JobState.SUCCEEDED if code == 0 else JobState.FAILED, code, "", now
                )
            else:
                host_state[name] = value
    raise RuntimeError("simulation did not finish")
