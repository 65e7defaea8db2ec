"""Table tests of the HostedEngine HA state machine: every state and transition."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, TypeVar

import pytest
from hosted_engine.logic.backoff import Backoff
from hosted_engine.logic.ha import (
    ClearFenceRequest,
    Decision,
    EmitEvent,
    EngineVm,
    EventType,
    FailedStart,
    FenceStatus,
    HostObservation,
    MaintenanceMode,
    Memory,
    MigrateEngine,
    Notify,
    Observation,
    PowerOffEngine,
    PowerState,
    Probe,
    ProbeResult,
    RequestFence,
    SetCondition,
    SetPlacement,
    Settings,
    StartEngine,
    State,
    StopEngine,
    UserRequest,
    VmiPhase,
    assess_health,
    local_maintenance_verdict,
    memory_from_dict,
    memory_to_dict,
    step,
)

GIB = 1 << 30
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# Explicit timers so the expectations below read plainly (defaults may change).
S = Settings(
    health_interval=timedelta(seconds=10),
    host_silence=timedelta(seconds=20),
    backoff=Backoff(timedelta(seconds=10), 2.0, timedelta(minutes=5)),
    max_start_attempts=6,
)


def tuned(**kw: Any) -> Settings:
    return replace(S, **kw)


A = TypeVar("A")


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def host(name: str, now: datetime, **kw: Any) -> HostObservation:
    base: dict[str, Any] = {
        "name": name,
        "last_heartbeat": now,
        "free_memory": 16 * GIB,
        "bmc_power": PowerState.ON,
    }
    base.update(kw)
    return HostObservation(**base)


def hosts(now: datetime, names: str = "h1 h2 h3", **per_host: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(host(n, now, **per_host.get(n, {})) for n in names.split())


def vm(phase: VmiPhase | None = VmiPhase.RUNNING, node: str | None = "h1", **kw: Any) -> EngineVm:
    base: dict[str, Any] = {"exists": True, "phase": phase, "node": node, "since": T0}
    base.update(kw)
    return EngineVm(**base)


NO_VMI = EngineVm(exists=True)


def probes(start: float, *results: str) -> tuple[Probe, ...]:
    """Probes 10 s apart from ``start``: 'o' ok, 'b' bad, 't' timeout."""
    kinds = {"o": ProbeResult.OK, "b": ProbeResult.BAD, "t": ProbeResult.TIMEOUT}
    return tuple(Probe(t(start + 10 * i), kinds[r]) for i, r in enumerate(results))


def obs(now: datetime, engine: EngineVm = NO_VMI, **kw: Any) -> Observation:
    base: dict[str, Any] = {"vm": engine, "hosts": hosts(now), "engine_memory": 8 * GIB}
    base.update(kw)
    return Observation(**base)


def mem(state: State, since: datetime = T0, **kw: Any) -> Memory:
    return Memory(state=state, since=since, **kw)


def of(decision: Decision, kind: type[A]) -> list[A]:
    return [a for a in decision.actions if isinstance(a, kind)]


def engine_actions(decision: Decision) -> list[object]:
    kinds = (StartEngine, StopEngine, PowerOffEngine, MigrateEngine)
    return [a for a in decision.actions if isinstance(a, kinds)]


def run(memory: Memory, observation: Observation, now: datetime, s: Settings = S) -> Decision:
    return step(s, memory, observation, now)


UP = {"host": "h1", "healthy_since": T0}


# ---- EngineDown ---------------------------------------------------------------------------


def test_down_starts_on_the_best_host_and_notifies() -> None:
    o = obs(t(0), hosts=hosts(t(0), h1={"network": 0.0}, h2={"cpu_load": 0.8}))
    d = run(Memory(), o, t(0))
    assert d.state is State.ENGINE_START
    assert of(d, StartEngine) == [StartEngine("h3")]
    assert of(d, Notify) == [Notify(State.ENGINE_DOWN, State.ENGINE_START, "h3", d_reason(d))]
    events = of(d, EmitEvent)
    assert events[0].reason == "EngineStart" and events[0].type is EventType.NORMAL
    assert of(d, SetPlacement) == [SetPlacement((("h1", 1800), ("h2", 2600), ("h3", 3400)))]
    assert d.memory.host == "h3" and d.memory.start_requested_at == t(0)


def d_reason(d: Decision) -> str:
    return next(a.reason for a in d.actions if isinstance(a, Notify))


def test_down_waits_for_the_vm_object() -> None:
    d = run(Memory(), obs(t(0), EngineVm(exists=False)), t(0))
    assert d.state is State.ENGINE_DOWN and engine_actions(d) == []
    assert "VirtualMachine" in d.memory.reason


def test_down_respects_backoff_then_starts() -> None:
    m = mem(State.ENGINE_DOWN, attempts=2, backoff_until=t(20))
    d = run(m, obs(t(10)), t(10))
    assert d.state is State.ENGINE_DOWN and engine_actions(d) == []
    assert "backoff" in d.memory.reason
    d = run(d.memory, obs(t(20)), t(20))
    assert of(d, StartEngine) != []


def test_down_without_eligible_host_says_why_and_is_degraded() -> None:
    o = obs(
        t(0),
        hosts=hosts(
            t(0),
            h1={"ready": False},
            h2={"local_maintenance": True},
            h3={"fence": FenceStatus.CONFIRMED},
        ),
    )
    d = run(Memory(), o, t(0))
    assert d.state is State.ENGINE_DOWN and engine_actions(d) == []
    assert "h1 0 (not Ready)" in d.memory.reason and "local maintenance" in d.memory.reason
    degraded = [c for c in of(d, SetCondition) if c.type == "Degraded"]
    assert degraded == [SetCondition("Degraded", True, "NoHostAvailable", d.memory.reason)]


@pytest.mark.parametrize(
    ("phase", "expected"),
    [(VmiPhase.RUNNING, State.ENGINE_STARTING), (VmiPhase.SCHEDULED, State.ENGINE_START)],
)
def test_down_adopts_an_engine_that_already_runs(phase: VmiPhase, expected: State) -> None:
    d = run(Memory(), obs(t(0), vm(phase, "h2")), t(0))
    assert d.state is expected and d.memory.host == "h2"
    assert engine_actions(d) == []


def test_down_refuses_to_start_while_the_last_vmi_host_is_lost_and_unfenced() -> None:
    # The VMI says Failed, but its host is silent: the engine may still run there.
    o = obs(t(60), vm(VmiPhase.FAILED, "h1"), hosts=hosts(t(60), h1={"last_heartbeat": t(0)}))
    d = run(mem(State.ENGINE_DOWN), o, t(60))
    assert of(d, StartEngine) == []
    assert d.state is State.FENCING
    assert of(d, RequestFence)[0].host == "h1"


# ---- EngineStart / EngineStarting ---------------------------------------------------------


def test_start_goes_starting_when_vmi_runs() -> None:
    m = mem(State.ENGINE_START, host="h1", start_requested_at=T0)
    d = run(m, obs(t(5), vm(since=t(1))), t(5))
    assert d.state is State.ENGINE_STARTING


def test_start_failure_records_a_failed_start_and_backs_off() -> None:
    m = mem(State.ENGINE_START, host="h1", start_requested_at=T0)
    d = run(m, obs(t(5), vm(VmiPhase.FAILED, since=t(1))), t(5))
    assert d.state is State.ENGINE_DOWN
    assert d.memory.attempts == 1 and d.memory.backoff_until == t(15)
    assert d.memory.failed_starts == (FailedStart("h1", t(5)),)
    assert {s.host: s.score for s in d.scores}["h1"] == 3350
    # After the backoff it starts on another (now better) host.
    d = run(d.memory, obs(t(15), vm(VmiPhase.FAILED, since=t(1))), t(15))
    assert of(d, StartEngine) == [StartEngine("h2")]


def test_start_ignores_the_previous_failed_vmi() -> None:
    m = mem(State.ENGINE_START, host="h1", start_requested_at=t(10))
    d = run(m, obs(t(12), vm(VmiPhase.FAILED, since=t(0))), t(12))
    assert d.state is State.ENGINE_START and d.memory.attempts == 0


def test_start_that_never_runs_times_out_into_a_stop() -> None:
    s = tuned(startup_grace=timedelta(seconds=30))
    m = mem(State.ENGINE_START, host="h1", start_requested_at=T0)
    d = run(m, obs(t(30), vm(VmiPhase.PENDING, None, since=t(1))), t(30), s)
    assert d.state is State.ENGINE_STOP and of(d, StopEngine) == [StopEngine(True)]
    assert d.memory.attempts == 1


def test_starting_becomes_up_on_a_good_probe_after_the_vmi_started() -> None:
    m = mem(State.ENGINE_STARTING, host="h1", start_requested_at=T0)
    stale = (Probe(t(-5), ProbeResult.OK),)
    d = run(m, obs(t(10), vm(since=T0), probes=stale), t(10))
    assert d.state is State.ENGINE_STARTING  # a probe from before the VMI does not count
    d = run(m, obs(t(20), vm(since=T0), probes=probes(10, "b", "o")), t(20))
    assert d.state is State.ENGINE_UP and d.memory.healthy_since == t(20)


def test_starting_vmi_dies_is_unexpectedly_down() -> None:
    m = mem(State.ENGINE_STARTING, host="h1", start_requested_at=T0)
    d = run(m, obs(t(10), vm(VmiPhase.FAILED)), t(10))
    assert d.state is State.ENGINE_UNEXPECTEDLY_DOWN
    assert of(d, EmitEvent)[0].type is EventType.WARNING


def test_starting_times_out_after_the_startup_grace() -> None:
    s = tuned(startup_grace=timedelta(seconds=60))
    m = mem(State.ENGINE_STARTING, host="h1", start_requested_at=T0)
    d = run(m, obs(t(59), vm(), probes=probes(10, "b", "b", "b", "b")), t(59), s)
    assert d.state is State.ENGINE_STARTING
    d = run(m, obs(t(60), vm(), probes=probes(10, "b", "b", "b", "b")), t(60), s)
    assert d.state is State.ENGINE_STOP and of(d, StopEngine) == [StopEngine(True)]
    assert d.memory.failed_starts == (FailedStart("h1", t(60)),)


# ---- EngineUp / EngineUpBadHealth ---------------------------------------------------------


def test_up_stays_up_quietly() -> None:
    m = mem(State.ENGINE_UP, **UP)
    d = run(m, obs(t(30), vm(), probes=probes(0, "o", "o", "o")), t(30))
    assert d.state is State.ENGINE_UP and engine_actions(d) == [] and of(d, Notify) == []
    d2 = run(d.memory, obs(t(40), vm(), probes=probes(0, "o", "o", "o", "o")), t(40))
    assert of(d2, SetCondition) == [] and of(d2, SetPlacement) == []


@pytest.mark.parametrize("pattern", ["ob", "obb", "bbo", "obtob", "tt"])
def test_fewer_than_three_failures_in_a_row_never_leave_up(pattern: str) -> None:
    m = mem(State.ENGINE_UP, **UP)
    now = t(10 * len(pattern))
    d = run(m, obs(now, vm(), probes=probes(0, *pattern)), now)
    assert d.state is State.ENGINE_UP and engine_actions(d) == []


@pytest.mark.parametrize("pattern", ["bbb", "obtb", "ttt"])
def test_three_failures_in_a_row_is_bad_health(pattern: str) -> None:
    m = mem(State.ENGINE_UP, **UP)
    now = t(10 * len(pattern))
    d = run(m, obs(now, vm(), probes=probes(0, *pattern)), now)
    assert d.state is State.ENGINE_UP_BAD_HEALTH and engine_actions(d) == []


def test_bad_health_recovers_on_a_good_probe() -> None:
    m = mem(State.ENGINE_UP_BAD_HEALTH, host="h1")
    d = run(m, obs(t(50), vm(), probes=probes(0, "b", "b", "b", "o")), t(50))
    assert d.state is State.ENGINE_UP


def test_bad_health_for_the_grace_restarts_the_engine_elsewhere() -> None:
    m = mem(State.ENGINE_UP_BAD_HEALTH, since=t(30), host="h1")
    bad = probes(0, *"bbbbbbbbb")
    d = run(m, obs(t(89), vm(), probes=bad), t(89))
    assert d.state is State.ENGINE_UP_BAD_HEALTH and engine_actions(d) == []
    d = run(m, obs(t(90), vm(), probes=bad), t(90))
    assert d.state is State.ENGINE_STOP and of(d, StopEngine) == [StopEngine(True)]
    assert d.memory.failed_starts == (FailedStart("h1", t(90)),)
    # Stopped: the restart goes to an equal host, not back to the one that hung.
    d = run(d.memory, obs(t(95), vm(VmiPhase.SUCCEEDED)), t(95))
    assert d.state is State.ENGINE_DOWN
    d = run(d.memory, obs(t(101), vm(VmiPhase.SUCCEEDED)), t(101))
    assert of(d, StartEngine) == [StartEngine("h2")]


def test_unknown_health_never_acts() -> None:
    assert assess_health((), None, 3).value == "unknown"
    m = mem(State.ENGINE_UP_BAD_HEALTH, since=T0, host="h1")
    d = run(m, obs(t(600), vm(), probes=()), t(600))
    assert engine_actions(d) == []
    # Bad results that stopped coming (the prober died) are not news: no restart on them.
    m = mem(State.ENGINE_UP_BAD_HEALTH, since=t(-10), host="h1")
    stale = probes(0, "b", "b", "b")  # newest at 20 s; stale after 3 x 10 s + 3 s
    d = run(m, obs(t(53), vm(), probes=stale), t(53))
    assert of(d, StopEngine) != []
    d = run(m, obs(t(54), vm(), probes=stale), t(54))
    assert engine_actions(d) == [] and d.engine.health == "unknown"


def test_up_vmi_dies_then_restarts_after_backoff() -> None:
    m = mem(State.ENGINE_UP, **UP)
    d = run(m, obs(t(30), vm(VmiPhase.FAILED)), t(30))
    assert d.state is State.ENGINE_UNEXPECTEDLY_DOWN and engine_actions(d) == []
    assert d.memory.attempts == 1 and d.memory.backoff_until == t(40)
    assert of(d, Notify)[0].new is State.ENGINE_UNEXPECTEDLY_DOWN
    d = run(d.memory, obs(t(35), vm(VmiPhase.FAILED)), t(35))
    assert d.state is State.ENGINE_UNEXPECTEDLY_DOWN and engine_actions(d) == []
    d = run(d.memory, obs(t(40), vm(VmiPhase.FAILED)), t(40))
    # Crashed host carries a penalty: the engine comes back on an equal host at once.
    assert d.state is State.ENGINE_START and of(d, StartEngine) == [StartEngine("h2")]


def test_unexpectedly_down_adopts_an_engine_restarted_by_kubevirt() -> None:
    m = mem(State.ENGINE_UNEXPECTEDLY_DOWN, host="h1", backoff_until=t(100))
    d = run(m, obs(t(10), vm(VmiPhase.SCHEDULING, since=t(5))), t(10))
    assert d.state is State.ENGINE_START and engine_actions(d) == []


def test_up_follows_a_migration_done_by_someone_else() -> None:
    m = mem(State.ENGINE_UP, **UP)
    d = run(m, obs(t(30), vm(node="h2"), probes=probes(0, "o")), t(30))
    assert d.state is State.ENGINE_UP and d.memory.host == "h2"
    assert [e.reason for e in of(d, EmitEvent)] == ["EngineMoved"]


def test_attempts_reset_after_a_stable_period() -> None:
    s = tuned(stable_period=timedelta(seconds=100))
    m = mem(State.ENGINE_UP, host="h1", healthy_since=T0, attempts=3, backoff_until=t(40))
    d = run(m, obs(t(99), vm(), probes=probes(90, "o")), t(99), s)
    assert d.memory.attempts == 3
    d = run(m, obs(t(100), vm(), probes=probes(90, "o")), t(100), s)
    assert d.memory.attempts == 0 and d.memory.backoff_until is None


# ---- Moving by score ----------------------------------------------------------------------


def test_no_move_below_the_hysteresis() -> None:
    # h1 loses 799 points (CPU ~80%): not enough.
    o = obs(
        t(30),
        vm(live_migratable=True),
        probes=probes(0, "o"),
        hosts=hosts(t(30), h1={"cpu_load": 0.79975}),
    )
    d = run(mem(State.ENGINE_UP, **UP), o, t(30))
    assert {s.host: s.score for s in d.scores}["h1"] == 2601
    assert d.state is State.ENGINE_UP and engine_actions(d) == []


def test_move_by_live_migration_when_another_host_leads_by_800() -> None:
    o = obs(
        t(30),
        vm(live_migratable=True),
        probes=probes(0, "o"),
        hosts=hosts(t(30), h1={"cpu_load": 0.8}),
    )
    d = run(mem(State.ENGINE_UP, **UP), o, t(30))
    assert d.state is State.ENGINE_MIGRATING and of(d, MigrateEngine) == [MigrateEngine("h2")]
    assert "h2 scores 3400, h1 scores 2600" in d.memory.reason


def test_move_cold_when_not_migratable() -> None:
    o = obs(t(30), vm(), probes=probes(0, "o"), hosts=hosts(t(30), h1={"network": 0.0}))
    d = run(mem(State.ENGINE_UP, **UP), o, t(30))
    assert d.state is State.ENGINE_STOP and of(d, StopEngine) == [StopEngine(True)]
    assert d.memory.attempts == 0  # a move is not a failure


def test_migration_completes() -> None:
    m = mem(State.ENGINE_MIGRATING, host="h1", migration_target="h2")
    d = run(m, obs(t(10), vm(node="h2", live_migratable=True), probes=probes(0, "o")), t(10))
    assert d.state is State.ENGINE_UP and d.memory.host == "h2"


@pytest.mark.parametrize(("failed", "at"), [(True, 10), (False, 300)])
def test_migration_failure_or_timeout_falls_back(failed: bool, at: float) -> None:
    m = mem(State.ENGINE_MIGRATING, host="h1", migration_target="h2")
    engine = vm(migrating=not failed, migration_failed=failed, live_migratable=True)
    o = obs(t(at), engine, probes=probes(0, "o"), hosts=hosts(t(at), h1={"cpu_load": 0.9}))
    d = run(m, o, t(at))
    assert "MigrationFailed" in [e.reason for e in of(d, EmitEvent)]
    assert d.memory.migration_failed_at == t(at)
    # The next move of this engine is cold (stop, start elsewhere), not another migration.
    assert d.state is State.ENGINE_STOP and of(d, MigrateEngine) == []


# ---- Local maintenance --------------------------------------------------------------------


def test_local_maintenance_of_the_engine_host_moves_it_first() -> None:
    o = obs(
        t(30),
        vm(live_migratable=True),
        probes=probes(0, "o"),
        hosts=hosts(t(30), h1={"local_maintenance": True}),
    )
    d = run(mem(State.ENGINE_UP, **UP), o, t(30))
    assert of(d, MigrateEngine) == [MigrateEngine("h2")]
    assert [n.new for n in of(d, Notify)] == [State.LOCAL_MAINTENANCE, State.ENGINE_MIGRATING]


def test_local_maintenance_refused_when_no_other_host_can_take_it() -> None:
    o = obs(
        t(30),
        vm(),
        probes=probes(0, "o"),
        hosts=hosts(
            t(30),
            h1={"local_maintenance": True},
            h2={"ready": False},
            h3={"last_heartbeat": T0 - timedelta(minutes=5)},
        ),
    )
    d = run(mem(State.ENGINE_UP, **UP), o, t(30))
    assert d.state is State.LOCAL_MAINTENANCE and engine_actions(d) == []
    blocked = [e for e in of(d, EmitEvent) if e.reason == "LocalMaintenanceBlocked"]
    assert len(blocked) == 1 and "h2 0 (not Ready)" in blocked[0].message
    assert SetCondition("Degraded", True, "LocalMaintenanceBlocked", d.memory.reason) in of(
        d, SetCondition
    )
    d2 = run(d.memory, o, t(40))
    assert of(d2, EmitEvent) == []  # said once
    verdict = local_maintenance_verdict(S, d.memory, o, t(30), "h1")
    assert not verdict.allowed and "no other host can take it" in verdict.reason
    assert local_maintenance_verdict(S, d.memory, o, t(30), "h2").allowed


def test_local_maintenance_verdict_names_the_target() -> None:
    o = obs(t(30), vm(), hosts=hosts(t(30), h2={"cpu_load": 0.9}))
    verdict = local_maintenance_verdict(S, Memory(), o, t(30), "h1")
    assert verdict.allowed and verdict.target == "h3"


def test_local_maintenance_ended_returns_to_normal() -> None:
    m = mem(State.LOCAL_MAINTENANCE, host="h1")
    d = run(m, obs(t(30), vm(), probes=probes(0, "o")), t(30))
    assert d.state is State.ENGINE_UP and engine_actions(d) == []


def test_local_maintenance_during_start_is_handled_not_abandoned() -> None:
    m = mem(State.ENGINE_STARTING, host="h1", start_requested_at=T0)
    o = obs(t(10), vm(), hosts=hosts(t(10), h1={"local_maintenance": True}))
    d = run(m, o, t(10))
    assert d.state is State.ENGINE_STOP and of(d, StopEngine) == [StopEngine(True)]


# ---- Stopping -----------------------------------------------------------------------------


def test_stop_completes_into_down() -> None:
    d = run(mem(State.ENGINE_STOP, host="h1"), obs(t(10), vm(VmiPhase.SUCCEEDED)), t(10))
    assert next(n.new for n in of(d, Notify)) is State.ENGINE_DOWN


def test_stop_times_out_into_power_off() -> None:
    s = tuned(stop_timeout=timedelta(seconds=30))
    d = run(mem(State.ENGINE_STOP, host="h1"), obs(t(29), vm()), t(29), s)
    assert d.state is State.ENGINE_STOP and engine_actions(d) == []
    d = run(mem(State.ENGINE_STOP, host="h1"), obs(t(30), vm()), t(30), s)
    assert d.state is State.ENGINE_FORCE_STOP and of(d, PowerOffEngine) == [PowerOffEngine()]


def test_paused_engine_is_powered_off_at_once() -> None:
    d = run(mem(State.ENGINE_STOP, host="h1"), obs(t(1), vm(paused=True)), t(1))
    assert d.state is State.ENGINE_FORCE_STOP


def test_force_stop_repeats_and_completes() -> None:
    s = tuned(stop_timeout=timedelta(seconds=30))
    m = mem(State.ENGINE_FORCE_STOP, host="h1", last_action_at=T0)
    d = run(m, obs(t(30), vm()), t(30), s)
    assert of(d, PowerOffEngine) == [PowerOffEngine()]
    assert "PowerOffNotEffective" in [e.reason for e in of(d, EmitEvent)]
    d = run(d.memory, obs(t(31), vm(VmiPhase.SUCCEEDED)), t(31), s)
    assert d.memory.state in (State.ENGINE_DOWN, State.ENGINE_START)


# ---- Host lost and fencing ----------------------------------------------------------------


def lost_h1(now: datetime, **h1: Any) -> tuple[HostObservation, ...]:
    base: dict[str, Any] = {"last_heartbeat": T0}
    base.update(h1)
    return hosts(now, h1=base)


def test_silent_host_is_fenced_and_nothing_starts_before_confirmation() -> None:
    m = mem(State.ENGINE_UP, **UP)
    d = run(m, obs(t(20), vm(), hosts=lost_h1(t(20))), t(20))
    assert d.state is State.ENGINE_UP  # 20 s is not past the threshold
    d = run(m, obs(t(21), vm(), hosts=lost_h1(t(21))), t(21))
    assert d.state is State.FENCING
    assert [n.new for n in of(d, Notify)] == [State.HOST_LOST, State.FENCING]
    assert of(d, RequestFence)[0].host == "h1" and of(d, StartEngine) == []
    for status in (FenceStatus.REQUESTED, FenceStatus.IN_PROGRESS):
        d = run(d.memory, obs(t(25), vm(), hosts=lost_h1(t(25), fence=status)), t(25))
        assert d.state is State.FENCING and engine_actions(d) == []
    d = run(d.memory, obs(t(27), vm(), hosts=lost_h1(t(27), fence=FenceStatus.CONFIRMED)), t(27))
    assert of(d, StartEngine) == [StartEngine("h2")]
    assert "FenceConfirmed" in [e.reason for e in of(d, EmitEvent)]
    assert d.memory.attempts == 0  # a lost host is not a failed start
    # Once the engine is up elsewhere the fence request is released.
    up = run(
        mem(State.ENGINE_STARTING, host="h2", start_requested_at=t(27), fenced_host="h1"),
        obs(
            t(40),
            vm(node="h2", since=t(28)),
            probes=probes(30, "o"),
            hosts=lost_h1(t(40), fence=FenceStatus.CONFIRMED),
        ),
        t(40),
    )
    assert up.state is State.ENGINE_UP
    assert of(up, ClearFenceRequest) == [ClearFenceRequest("h1")]
    up = run(up.memory, obs(t(41), vm(node="h2", since=t(28)), probes=probes(30, "o")), t(41))
    assert of(up, ClearFenceRequest) == []


def test_bmc_power_off_is_host_lost_at_once() -> None:
    o = obs(t(5), vm(), hosts=hosts(t(5), h1={"bmc_power": PowerState.OFF}))
    d = run(mem(State.ENGINE_UP, **UP), o, t(5))
    assert d.state is State.FENCING and "BMC reports power off" in of(d, RequestFence)[0].reason


def test_unfenceable_host_waits_and_says_why() -> None:
    o = obs(t(60), vm(), hosts=lost_h1(t(60), can_fence=False))
    d = run(mem(State.ENGINE_UP, **UP), o, t(60))
    assert d.state is State.HOST_LOST and engine_actions(d) == [] and of(d, RequestFence) == []
    warn = [e for e in of(d, EmitEvent) if e.reason == "FenceUnavailable"]
    assert len(warn) == 1 and "NOT started elsewhere" in warn[0].message
    assert SetCondition("Degraded", True, "FenceUnavailable", d.memory.reason) in of(
        d, SetCondition
    )
    d = run(d.memory, obs(t(600), vm(), hosts=lost_h1(t(600), can_fence=False)), t(600))
    assert engine_actions(d) == [] and of(d, EmitEvent) == []


def test_without_fencing_required_an_unfenceable_host_is_abandoned() -> None:
    s = tuned(fencing_required=False)
    o = obs(t(60), vm(), hosts=lost_h1(t(60), can_fence=False))
    d = run(mem(State.ENGINE_UP, **UP), o, t(60), s)
    assert of(d, StartEngine) == [StartEngine("h2")]
    assert "UnfencedFailover" in [e.reason for e in of(d, EmitEvent)]
    assert d.memory.abandoned_host == "h1"


def test_failed_fence_never_starts_and_retries() -> None:
    m = mem(State.FENCING, host="h1", lost_host="h1", last_action_at=t(20))
    failed = lost_h1(t(30), fence=FenceStatus.FAILED, fence_since=t(25), fence_message="BMC 401")
    d = run(m, obs(t(30), vm(), hosts=failed), t(30))
    assert engine_actions(d) == [] and of(d, RequestFence) == []
    assert [e.reason for e in of(d, EmitEvent)] == ["FenceFailed"]
    assert "BMC 401" in d.memory.reason
    d = run(d.memory, obs(t(50), vm(), hosts=failed), t(50))
    assert of(d, RequestFence) != [] and of(d, EmitEvent) == [] and engine_actions(d) == []


def test_fence_timeout_is_reported_once() -> None:
    m = mem(State.FENCING, host="h1", lost_host="h1", last_action_at=T0)
    slow = lost_h1(t(120), fence=FenceStatus.IN_PROGRESS)
    d = run(m, obs(t(120), vm(), hosts=slow), t(120))
    assert [e.reason for e in of(d, EmitEvent)] == ["FenceTimeout"]
    assert engine_actions(d) == []
    d = run(d.memory, obs(t(130), vm(), hosts=slow), t(130))
    assert of(d, EmitEvent) == []


def test_host_back_before_the_fence_runs_cancels_it() -> None:
    m = mem(State.FENCING, host="h1", lost_host="h1", last_action_at=T0)
    o = obs(
        t(10), vm(), hosts=hosts(t(10), h1={"fence": FenceStatus.REQUESTED}), probes=probes(0, "o")
    )
    d = run(m, o, t(10))
    assert of(d, ClearFenceRequest) == [ClearFenceRequest("h1")]
    assert d.state in (State.ENGINE_STARTING, State.ENGINE_UP) and engine_actions(d) == []


def test_host_back_while_fence_in_progress_keeps_waiting() -> None:
    m = mem(State.FENCING, host="h1", lost_host="h1", last_action_at=T0)
    o = obs(t(10), vm(), hosts=hosts(t(10), h1={"fence": FenceStatus.IN_PROGRESS}))
    d = run(m, o, t(10))
    assert d.state is State.FENCING and engine_actions(d) == []


# ---- Global maintenance -------------------------------------------------------------------


def gm(now: datetime, engine: EngineVm, until: datetime | None = None, **kw: Any) -> Observation:
    return obs(now, engine, maintenance=MaintenanceMode.GLOBAL, maintenance_until=until, **kw)


def test_global_maintenance_takes_no_automatic_action() -> None:
    d = run(mem(State.ENGINE_UP, **UP), gm(t(10), vm()), t(10))
    assert d.state is State.GLOBAL_MAINTENANCE
    assert SetCondition("GlobalMaintenance", True, "MaintenanceOn", "no expiry") in of(
        d, SetCondition
    )
    for o in (
        gm(t(20), vm(VmiPhase.FAILED)),
        gm(t(30), vm(), probes=probes(0, *"bbbbbbbbb")),
        gm(t(40), vm(), hosts=lost_h1(t(40))),
        gm(t(50), vm(), hosts=hosts(t(50), h1={"network": 0.0})),
    ):
        d2 = run(d.memory, o, o.hosts[0].last_heartbeat or t(0))
        assert d2.state is State.GLOBAL_MAINTENANCE
        assert engine_actions(d2) == [] and of(d2, RequestFence) == []


def test_global_maintenance_reminds_at_an_interval() -> None:
    s = tuned(maintenance_reminder=timedelta(minutes=30))
    d = run(mem(State.ENGINE_UP, **UP), gm(t(0), vm()), t(0), s)
    d = run(d.memory, gm(t(1799), vm()), t(1799), s)
    assert of(d, EmitEvent) == []
    d = run(d.memory, gm(t(1800), vm()), t(1800), s)
    reminder = of(d, EmitEvent)
    assert [(e.type, e.reason) for e in reminder] == [
        (EventType.WARNING, "GlobalMaintenanceReminder")
    ]


def test_global_maintenance_expires_by_itself() -> None:
    m = mem(State.GLOBAL_MAINTENANCE, host="h1", attempts=4)
    d = run(m, gm(t(99), vm(), until=t(100)), t(99))
    assert d.state is State.GLOBAL_MAINTENANCE
    d = run(m, gm(t(100), NO_VMI, until=t(100)), t(100))
    assert "GlobalMaintenanceExpired" in [e.reason for e in of(d, EmitEvent)]
    assert d.memory.attempts == 0 and of(d, StartEngine) == [StartEngine("h1")]


def test_user_stop_power_off_and_start_in_global_maintenance() -> None:
    m = mem(State.GLOBAL_MAINTENANCE, host="h1")
    d = run(m, gm(t(1), vm(), request=UserRequest(running=False)), t(1))
    assert engine_actions(d) == [StopEngine(True)]
    d = run(d.memory, gm(t(2), vm(), request=UserRequest(running=False)), t(2))
    assert engine_actions(d) == []  # asked once
    d = run(d.memory, gm(t(3), vm(), request=UserRequest(running=False, power_off=True)), t(3))
    assert engine_actions(d) == [PowerOffEngine()]
    d = run(d.memory, gm(t(4), vm(VmiPhase.SUCCEEDED), request=UserRequest(running=False)), t(4))
    assert engine_actions(d) == [] and d.state is State.GLOBAL_MAINTENANCE
    d = run(d.memory, gm(t(5), vm(VmiPhase.SUCCEEDED)), t(5))
    assert engine_actions(d) == [StartEngine("h1")]
    # running stays true: no further automatic start.
    d = run(d.memory, gm(t(6), vm(VmiPhase.SUCCEEDED)), t(6))
    assert engine_actions(d) == []


def test_stop_outside_global_maintenance_is_refused_once() -> None:
    req = UserRequest(running=False)
    d = run(mem(State.ENGINE_UP, **UP), obs(t(1), vm(), request=req, probes=probes(0, "o")), t(1))
    assert engine_actions(d) == [] and d.state is State.ENGINE_UP
    assert d.refusal is not None and "not in global maintenance" in d.refusal
    assert [e.reason for e in of(d, EmitEvent)] == ["StopRefused"]
    d = run(d.memory, obs(t(2), vm(), request=req, probes=probes(0, "o")), t(2))
    assert of(d, EmitEvent) == [] and d.refusal is not None


def test_entering_global_maintenance_from_degraded_and_leaving_resets() -> None:
    m = mem(State.DEGRADED, attempts=6, backoff_until=t(1000))
    d = run(m, gm(t(1), NO_VMI), t(1))
    assert d.state is State.GLOBAL_MAINTENANCE
    d = run(d.memory, obs(t(2)), t(2))
    assert of(d, StartEngine) != [] and d.memory.attempts == 0


# ---- Degraded and backoff -----------------------------------------------------------------


def test_failed_starts_back_off_exponentially_then_give_up() -> None:
    s = tuned(
        backoff=Backoff(timedelta(seconds=10), 2.0, timedelta(seconds=60)), max_start_attempts=5
    )
    m, now, starts, gaps = Memory(), t(0), [], []
    for _ in range(200):
        d = run(m, obs(now, vm(VmiPhase.FAILED, since=now)), now, s)
        if of(d, StartEngine):
            starts.append(now)
        m = d.memory
        if m.state is State.DEGRADED:
            assert [n.new for n in of(d, Notify)][-1] is State.DEGRADED
            break
        now += timedelta(seconds=1)
    gaps = [(b - a).total_seconds() for a, b in pairwise(starts)]
    assert m.state is State.DEGRADED and len(starts) == 5
    # Each gap is the backoff (plus the 1 s it takes to see the failure): 10, 20, 40, 60 (cap).
    assert gaps == [11, 21, 41, 61]
    assert SetCondition("Degraded", True, "GaveUp", m.reason) in of(d, SetCondition)
    # Degraded: nothing more happens, however long we wait.
    for later in (t(10_000), t(100_000)):
        assert engine_actions(run(m, obs(later, vm(VmiPhase.FAILED)), later, s)) == []
    # A manual reset starts again at once.
    d = run(m, obs(t(100_001), request=UserRequest(reset_seq=1)), t(100_001), s)
    assert of(d, StartEngine) != [] and d.memory.attempts == 0


def test_degraded_adopts_a_healthy_engine_started_by_hand() -> None:
    m = mem(State.DEGRADED, attempts=6)
    d = run(m, obs(t(50), vm(since=t(10)), probes=probes(20, "o")), t(50))
    assert d.state is State.ENGINE_UP and engine_actions(d) == []


# ---- Conditions ---------------------------------------------------------------------------


def test_conditions_available_and_spares() -> None:
    s = tuned(spares=2)
    o = obs(t(10), vm(), probes=probes(0, "o"), hosts=hosts(t(10), h3={"free_memory": GIB}))
    d = run(mem(State.ENGINE_UP, **UP), o, t(10), s)
    conds = {c.type: c for c in of(d, SetCondition)}
    assert conds["Available"].status is True and conds["Available"].reason == "EngineHealthy"
    spare = conds["SparesSatisfied"]
    assert spare.status is False and spare.reason == "NotEnoughSpares"
    assert spare.message.startswith("1 of 2 required spare host(s)") and "h2" in spare.message
    assert d.spares.available == 1
    assert conds["Progressing"].status is False and conds["Degraded"].status is False


# ---- Failover record and not-Ready hosts --------------------------------------------------


def test_failover_record_times_detection_fence_start_and_health() -> None:
    m = mem(State.ENGINE_UP, **UP)
    d = run(m, obs(t(21), vm(), hosts=lost_h1(t(21))), t(21))
    record = d.memory.failover
    assert record is not None and (record.from_host, record.lost_at, record.detected_at) == (
        "h1",
        T0,
        t(21),
    )
    confirmed = lost_h1(t(24), fence=FenceStatus.CONFIRMED)
    d = run(d.memory, obs(t(24), vm(), hosts=confirmed), t(24))
    record = d.memory.failover
    assert record is not None and record.fenced_at == t(24) and record.started_at == t(24)
    assert record.to_host == "h2"
    d = run(d.memory, obs(t(30), vm(node="h2", since=t(25)), hosts=confirmed), t(30))
    d = run(
        d.memory,
        obs(t(40), vm(node="h2", since=t(25)), hosts=confirmed, probes=probes(35, "o")),
        t(40),
    )
    assert d.state is State.ENGINE_UP and d.memory.failover is None
    assert d.memory.failovers == 1
    last = d.memory.last_failover
    assert last is not None and last.healthy_at == t(40) and last.to_host == "h2"


def test_host_back_cancels_the_failover_record() -> None:
    m = mem(State.ENGINE_UP, **UP)
    d = run(m, obs(t(21), vm(), hosts=lost_h1(t(21))), t(21))
    assert d.memory.failover is not None
    d = run(d.memory, obs(t(22), vm(), hosts=hosts(t(22)), probes=probes(0, "o")), t(22))
    assert d.memory.failover is None and d.memory.failovers == 0


def test_vmi_ended_on_a_not_ready_node_is_not_trusted() -> None:
    # KubeVirt says Failed, but the node did not report it (NotReady): fence before restarting.
    o = obs(t(5), vm(VmiPhase.FAILED), hosts=hosts(t(5), h1={"ready": False}))
    d = run(mem(State.ENGINE_UP, **UP), o, t(5))
    assert of(d, StartEngine) == []
    assert d.state is State.FENCING and of(d, RequestFence)[0].host == "h1"
    assert "not Ready" in of(d, RequestFence)[0].reason
    # The same end reported by a Ready node is a plain crash.
    d = run(mem(State.ENGINE_UP, **UP), obs(t(5), vm(VmiPhase.FAILED)), t(5))
    assert d.state is State.ENGINE_UNEXPECTEDLY_DOWN and of(d, RequestFence) == []


# ---- Status view and memory persistence ---------------------------------------------------


def test_host_rows_mirror_vm_status() -> None:
    o = obs(
        t(30),
        vm(),
        probes=probes(20, "o"),
        hosts=hosts(
            t(30),
            h2={"local_maintenance": True},
            h3={"last_heartbeat": T0, "free_memory": GIB, "network": 0.0},
        ),
    )
    d = run(mem(State.ENGINE_UP, **UP), o, t(30))
    rows = {r.host: r for r in d.hosts}
    assert rows["h1"].engine_running and rows["h1"].state == "Up" and rows["h1"].up_to_date
    assert rows["h1"].score == 3400 and rows["h1"].penalties == ()
    assert rows["h2"].state == "LocalMaintenance" and rows["h2"].score == 0
    assert rows["h2"].penalties == ("score 0: local maintenance",)
    assert rows["h3"].state == "Lost" and not rows["h3"].up_to_date
    assert rows["h3"].last_seen == T0 and not rows["h3"].has_room
    assert d.engine.vm == "up" and d.engine.health == "good" and d.engine.detail == "Up"


@pytest.mark.parametrize(
    ("state", "engine", "expected"),
    [
        (State.ENGINE_UP_BAD_HEALTH, vm(), ("up", "bad")),
        (State.ENGINE_STARTING, vm(VmiPhase.SCHEDULED), ("up", "bad")),
        (State.ENGINE_UNEXPECTEDLY_DOWN, vm(VmiPhase.FAILED), ("down_unexpected", "bad")),
        (State.ENGINE_DOWN, NO_VMI, ("down", "bad")),
        (State.ENGINE_DOWN, EngineVm(exists=False), ("down_missing", "bad")),
    ],
)
def test_engine_summary(state: State, engine: EngineVm, expected: tuple[str, str]) -> None:
    pr = probes(20, "b", "b", "b")
    d = run(mem(state, host="h1", backoff_until=t(1000)), obs(t(50), engine, probes=pr), t(50))
    assert (d.engine.vm, d.engine.health) == expected
    assert d.engine.reason == d.memory.reason


def test_memory_from_damaged_status_falls_back_to_defaults() -> None:
    assert memory_from_dict(None) == Memory()
    damaged = memory_from_dict(
        {
            "state": "NoSuchState",
            "attempts": "three",
            "since": "yesterday",
            "backoffUntil": "2026-03-01T12:00:00",  # no zone: refused
            "failedStarts": [{"host": "h1", "at": "bad"}, {"host": "h2", "at": T0.isoformat()}],
            "placement": [{"host": "h1", "score": "x"}],
            "failover": {"fromHost": "h1"},
            "seenRunning": "yes",
        }
    )
    assert damaged.state is State.ENGINE_DOWN and damaged.attempts == 0
    assert damaged.since is None and damaged.backoff_until is None
    assert damaged.failed_starts == (FailedStart("h2", T0),)
    assert damaged.placement == () and damaged.failover is None and damaged.seen_running
    good = mem(State.FENCING, host="h1", lost_host="h1", attempts=2, backoff_until=t(9))
    data = memory_to_dict(good)
    assert data["state"] == "Fencing" and data["lostHost"] == "h1" and "fencedHost" not in data
    assert memory_from_dict(data) == good


# ---- Edge cases ---------------------------------------------------------------------------


def test_start_cancelled_when_the_target_becomes_unusable_before_scheduling() -> None:
    m = mem(State.ENGINE_START, host="h2", start_requested_at=T0)
    o = obs(t(5), vm(VmiPhase.PENDING, None, since=t(1)), hosts=hosts(t(5), h2={"ready": False}))
    d = run(m, o, t(5))
    assert d.state is State.ENGINE_STOP and of(d, StopEngine) == [StopEngine(True)]
    assert "h2 0 (not Ready)" in d.memory.reason and d.memory.attempts == 0
    unusable = hosts(t(6), h2={"ready": False})
    d = run(d.memory, obs(t(6), vm(VmiPhase.SUCCEEDED, None, since=t(1)), hosts=unusable), t(6))
    assert of(d, StartEngine) == [StartEngine("h1")]


def test_startup_timeout_without_any_probe_does_not_stop_blindly() -> None:
    s = tuned(startup_grace=timedelta(seconds=60))
    m = mem(State.ENGINE_STARTING, host="h1", start_requested_at=T0)
    d = run(m, obs(t(60), vm()), t(60), s)
    assert d.state is State.ENGINE_STARTING and engine_actions(d) == []
    assert [e.reason for e in of(d, EmitEvent)] == ["HealthUnknown"]


def test_engine_host_fenced_by_someone_else_is_a_host_loss_not_a_crash() -> None:
    o = obs(t(30), vm(), hosts=hosts(t(30), h1={"fence": FenceStatus.CONFIRMED}))
    d = run(mem(State.ENGINE_UP, **UP), o, t(30))
    assert of(d, StartEngine) == [StartEngine("h2")]
    assert d.memory.attempts == 0 and d.memory.fenced_host == "h1"
    record = d.memory.failover
    assert record is not None and record.fenced_at == t(30) and record.to_host == "h2"


def test_fence_timeout_without_fencing_required_fails_over_unfenced() -> None:
    s = tuned(fencing_required=False)
    m = mem(State.FENCING, host="h1", lost_host="h1", last_action_at=T0)
    slow = lost_h1(t(120), fence=FenceStatus.REQUESTED)
    d = run(m, obs(t(120), vm(), hosts=slow), t(120), s)
    assert of(d, StartEngine) == [StartEngine("h2")]
    assert "UnfencedFailover" in [e.reason for e in of(d, EmitEvent)]


def test_placement_is_not_re_sent_for_small_score_wobbles() -> None:
    m = mem(State.ENGINE_UP, **UP)
    d = run(m, obs(t(10), vm(), probes=probes(0, "o")), t(10))
    assert len(of(d, SetPlacement)) == 1
    wobble = hosts(t(20), h2={"cpu_load": 0.45})  # -100: same 200-point band
    d2 = run(d.memory, obs(t(20), vm(), probes=probes(0, "o"), hosts=wobble), t(20))
    assert of(d2, SetPlacement) == []
    drop = hosts(t(30), h2={"cpu_load": 0.8})  # -800
    d3 = run(d2.memory, obs(t(30), vm(), probes=probes(0, "o"), hosts=drop), t(30))
    assert of(d3, SetPlacement) == [SetPlacement((("h1", 3400), ("h2", 2600), ("h3", 3400)))]


def test_start_waits_instead_of_cancelling_when_no_host_is_eligible() -> None:
    """Every engine host scored 0 (an operator behind its Lease events sees them all silent):
    cancelling the start could only restart it nowhere; the machine waits with a reason, and
    the start timeout still applies. With another eligible host it cancels, as before."""
    s = tuned(startup_grace=timedelta(seconds=60))
    m = mem(State.ENGINE_START, host="h1", start_requested_at=T0)
    silent = obs(t(30), vm(VmiPhase.PENDING, None, since=t(1)),
                 hosts=hosts(t(30), h1={"last_heartbeat": t(0)}, h2={"last_heartbeat": t(0)},
                             h3={"last_heartbeat": t(0)}))
    d = run(m, silent, t(30), s)
    assert d.state is State.ENGINE_START and engine_actions(d) == []
    assert "no host is eligible" in d.memory.reason and d.memory.attempts == 0
    # one host heard from again, not the target: the start moves there
    back = obs(t(31), vm(VmiPhase.PENDING, None, since=t(1)),
               hosts=hosts(t(31), h1={"last_heartbeat": t(0)}))
    d = run(d.memory, back, t(31), s)
    assert d.state is State.ENGINE_STOP and of(d, StopEngine) == [StopEngine(True)]
    # still nobody after the start timeout: it times out as any start does
    late = obs(t(60), vm(VmiPhase.PENDING, None, since=t(1)),
               hosts=hosts(t(60), h1={"last_heartbeat": t(0)}, h2={"last_heartbeat": t(0)},
                           h3={"last_heartbeat": t(0)}))
    d = run(m, late, t(60), s)
    assert d.memory.attempts == 1
