"""Property-based tests of the HA state machine against a small simulated world.

The world keeps the *truth* (where an engine process really runs, which hosts are powered,
partitioned, fenced) apart from what the machine observes (KubeVirt's VMI, heartbeats, BMC
power, probes). Random sequences of node loss, partitions, BMC power-off, fences that confirm or
fail, crashes, hung guests, maintenance toggles, user requests and time jumps are played through
``step``; every action the machine emits is carried out by the world.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from hosted_engine.logic.backoff import Backoff
from hosted_engine.logic.ha import (
    ACTIVE_PHASES,
    ClearFenceRequest,
    Decision,
    EngineVm,
    FenceStatus,
    HostObservation,
    MaintenanceMode,
    Memory,
    MigrateEngine,
    Observation,
    PowerOffEngine,
    PowerState,
    Probe,
    ProbeResult,
    RequestFence,
    Settings,
    StartEngine,
    State,
    StopEngine,
    UserRequest,
    VmiPhase,
    global_maintenance_on,
    memory_from_dict,
    memory_to_dict,
    step,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

GIB = 1 << 30
T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOSTS = ("h1", "h2", "h3")

FAST = Settings(
    host_silence=timedelta(seconds=20),
    restart_grace=timedelta(seconds=30),
    startup_grace=timedelta(seconds=120),
    stop_timeout=timedelta(seconds=30),
    fence_timeout=timedelta(seconds=60),
    fence_retry=timedelta(seconds=20),
    backoff=Backoff(timedelta(seconds=5), 2.0, timedelta(seconds=60)),
    max_start_attempts=4,
    stable_period=timedelta(seconds=120),
    failed_start_window=timedelta(seconds=300),
    maintenance_reminder=timedelta(seconds=300),
    migration_timeout=timedelta(seconds=60),
)

ENGINE_ACTIONS = (StartEngine, StopEngine, PowerOffEngine, MigrateEngine)


@dataclass
class WHost:
    name: str
    powered: bool = True
    partitioned: bool = False
    ready: bool = True
    local_maintenance: bool = False
    can_fence: bool = True
    fence_works: bool = True
    fence: FenceStatus = FenceStatus.NONE
    fence_since: datetime | None = None
    heartbeat: datetime = T0
    network: float = 1.0
    cpu: float = 0.0


@dataclass
class World:
    now: datetime = T0
    hosts: dict[str, WHost] = field(default_factory=lambda: {h: WHost(h) for h in HOSTS})
    qemu: set[str] = field(default_factory=set)  # the truth: where an engine process runs
    phase: VmiPhase | None = None
    node: str | None = None
    since: datetime | None = None
    hung: bool = False
    start_fails: bool = False
    stop_requested: bool = False
    probes: list[Probe] = field(default_factory=list)
    migratable: bool = False
    migrate_to: str | None = None
    migration_works: bool = True
    migration_failed: bool = False
    maintenance: MaintenanceMode = MaintenanceMode.NONE
    until: datetime | None = None
    running: bool = True
    power_off: bool = False
    reset_seq: int = 0
    violations: list[str] = field(default_factory=list)
    starts: list[datetime] = field(default_factory=list)

    def reachable(self, name: str | None) -> bool:
        if name is None:
            return False
        h = self.hosts[name]
        return h.powered and not h.partitioned

    def observe(self) -> Observation:
        hosts = tuple(
            HostObservation(
                name=h.name,
                ready=h.ready and self.reachable(h.name),
                last_heartbeat=h.heartbeat,
                local_maintenance=h.local_maintenance,
                network=h.network,
                cpu_load=h.cpu,
                free_memory=16 * GIB,
                bmc_power=PowerState.ON if h.powered else PowerState.OFF,
                can_fence=h.can_fence,
                fence=h.fence,
                fence_since=h.fence_since,
                fence_message="" if h.fence is not FenceStatus.FAILED else "simulated failure",
            )
            for h in self.hosts.values()
        )
        vm = EngineVm(
            exists=True,
            phase=self.phase,
            node=self.node,
            since=self.since,
            live_migratable=self.migratable,
            migrating=self.migrate_to is not None,
            migration_failed=self.migration_failed,
        )
        return Observation(
            vm=vm,
            probes=tuple(self.probes[-12:]),
            hosts=hosts,
            engine_memory=8 * GIB,
            maintenance=self.maintenance,
            maintenance_until=self.until,
            request=UserRequest(self.running, self.power_off, self.reset_seq),
        )

    # -- the machine's actions, carried out ----------------------------------------------------

    def apply(self, decision: Decision) -> None:
        for action in decision.actions:
            if isinstance(action, StartEngine):
                if self.qemu:
                    self.violations.append(
                        f"StartEngine({action.host}) while engine on {self.qemu}"
                    )
                # KubeVirt keeps one VMI per VM: a start while one is active only happens in an
                # unfenced failover, where the handler replaces it (the old process may live on).
                self.starts.append(self.now)
                self.phase, self.node, self.since = VmiPhase.PENDING, action.host, self.now
                self.stop_requested = False
                self.migrate_to, self.migration_failed = None, False
            elif isinstance(action, StopEngine):
                self.stop_requested = True
            elif isinstance(action, PowerOffEngine):
                if self.node is not None and self.reachable(self.node):
                    self.qemu.discard(self.node)
                    if self.phase in ACTIVE_PHASES:
                        self.phase = VmiPhase.SUCCEEDED
            elif isinstance(action, MigrateEngine):
                if action.target == self.node:
                    self.violations.append(f"migration to the same host {action.target}")
                self.migrate_to, self.migration_failed = action.target, False
            elif isinstance(action, RequestFence):
                h = self.hosts[action.host]
                if h.fence in (FenceStatus.NONE, FenceStatus.FAILED):
                    h.fence, h.fence_since = FenceStatus.REQUESTED, self.now
            elif isinstance(action, ClearFenceRequest):
                h = self.hosts[action.host]
                if h.fence is not FenceStatus.IN_PROGRESS:
                    h.fence, h.fence_since = FenceStatus.NONE, self.now
        if len(self.qemu) > 1:
            self.violations.append(f"two engines: {self.qemu}")

    # -- time passes -------------------------------------------------------------------------

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        for h in self.hosts.values():
            if h.fence is FenceStatus.IN_PROGRESS:
                # The Host powers it off through the BMC, confirms Off, taints it out of service.
                h.powered = False
                self.qemu.discard(h.name)
                h.fence, h.fence_since = FenceStatus.CONFIRMED, self.now
                if self.node == h.name and self.phase in ACTIVE_PHASES:
                    self.phase = VmiPhase.FAILED
            elif h.fence is FenceStatus.REQUESTED:
                ok = h.can_fence and h.fence_works
                h.fence = FenceStatus.IN_PROGRESS if ok else FenceStatus.FAILED
                h.fence_since = self.now
            if self.reachable(h.name):
                h.heartbeat = self.now
        node = self.node
        if self.phase in (VmiPhase.PENDING, VmiPhase.SCHEDULING, VmiPhase.SCHEDULED):
            if self.stop_requested:
                self.phase = VmiPhase.SUCCEEDED
            elif node is not None and self.reachable(node) and self.hosts[node].ready:
                if self.start_fails:
                    self.phase = VmiPhase.FAILED
                else:
                    self.phase = VmiPhase.RUNNING
                    self.qemu.add(node)
        elif self.phase is VmiPhase.RUNNING and node is not None:
            if self.stop_requested and self.reachable(node) and not self.hung:
                self.qemu.discard(node)
                self.phase = VmiPhase.SUCCEEDED
            elif self.migrate_to is not None:
                target = self.migrate_to
                if self.migration_works and self.reachable(node) and self.reachable(target):
                    if node in self.qemu:
                        self.qemu = {target}
                    self.node = target
                else:
                    self.migration_failed = True
                self.migrate_to = None
        if self.phase is VmiPhase.RUNNING and self.node is not None:
            # The prober runs every 10 s; a long pause brings several results.
            up = self.node in self.qemu and self.reachable(self.node) and not self.hung
            result = ProbeResult.OK if up else ProbeResult.TIMEOUT
            count = max(1, min(int(seconds) // 10, 12))
            for k in reversed(range(count)):
                self.probes.append(Probe(self.now - timedelta(seconds=10 * k), result))
            del self.probes[:-12]
        if len(self.qemu) > 1:
            self.violations.append(f"two engines: {self.qemu}")

    # -- faults and operator requests --------------------------------------------------------

    def event(self, ev: tuple[Any, ...]) -> None:
        kind = ev[0]
        if kind == "power_loss":
            h = self.hosts[ev[1]]
            h.powered = False
            self.qemu.discard(h.name)  # KubeVirt still shows the VMI Running there
        elif kind == "partition":
            self.hosts[ev[1]].partitioned = True  # the engine keeps running, unseen
        elif kind == "heal":
            self.heal(ev[1])
        elif kind == "crash" and self.phase is VmiPhase.RUNNING and self.reachable(self.node):
            if self.node is not None:
                self.qemu.discard(self.node)
            self.phase = VmiPhase.FAILED if ev[1] else VmiPhase.SUCCEEDED
        elif kind == "vmi_failed_unseen" and self.phase in ACTIVE_PHASES:
            # KubeVirt gives up on a VMI whose node went silent (NodeUnresponsive, or someone
            # force-deleted the pod), while the engine may still run on a partitioned node.
            if not self.reachable(self.node):
                self.phase = VmiPhase.FAILED
        elif kind == "hang":
            self.hung = ev[1]
        elif kind == "local_maintenance":
            self.hosts[ev[1]].local_maintenance = ev[2]
        elif kind == "global":
            on, minutes = ev[1], ev[2]
            self.maintenance = MaintenanceMode.GLOBAL if on else MaintenanceMode.NONE
            self.until = self.now + timedelta(minutes=minutes) if on and minutes else None
        elif kind == "running":
            self.running = ev[1]
        elif kind == "power_off":
            self.power_off = ev[1]
        elif kind == "fence_works":
            self.hosts[ev[1]].fence_works = ev[2]
        elif kind == "can_fence":
            self.hosts[ev[1]].can_fence = ev[2]
        elif kind == "start_fails":
            self.start_fails = ev[1]
        elif kind == "migratable":
            self.migratable = ev[1]
        elif kind == "migration_works":
            self.migration_works = ev[1]
        elif kind == "network":
            self.hosts[ev[1]].network = ev[2]
        elif kind == "cpu":
            self.hosts[ev[1]].cpu = ev[2]
        elif kind == "ready":
            self.hosts[ev[1]].ready = ev[2]

    def heal(self, name: str) -> None:
        h = self.hosts[name]
        if (h.partitioned and self.node != name) or self.phase not in ACTIVE_PHASES:
            # A kubelet that rejoins kills pods deleted from the API while it was away (and
            # virt-handler the domains without a VMI) before it reports Ready again.
            self.qemu.discard(name)
        h.partitioned = False
        if not h.powered:
            h.powered = True
            if h.fence is FenceStatus.CONFIRMED:
                h.fence, h.fence_since = FenceStatus.NONE, self.now  # the Host untaints it
        if self.node == name and name not in self.qemu and self.phase is VmiPhase.RUNNING:
            self.phase = VmiPhase.FAILED  # the kubelet is back and reports the pod gone

    def recover(self) -> None:
        """Everything good: hosts back and healthy, no maintenance, engine wanted running."""
        for name, h in self.hosts.items():
            self.heal(name)
            h.ready, h.local_maintenance, h.network, h.cpu = True, False, 1.0, 0.0
            h.can_fence = h.fence_works = True
        self.hung = self.start_fails = self.power_off = False
        self.maintenance, self.until, self.running = MaintenanceMode.NONE, None, True
        self.migration_works = True


host_names = st.sampled_from(HOSTS)
faults = st.one_of(
    st.tuples(st.just("power_loss"), host_names),
    st.tuples(st.just("partition"), host_names),
    st.tuples(st.just("heal"), host_names),
    st.tuples(st.just("crash"), st.booleans()),
    st.tuples(st.just("vmi_failed_unseen")),
    st.tuples(st.just("hang"), st.booleans()),
    st.tuples(st.just("fence_works"), host_names, st.booleans()),
    st.tuples(st.just("can_fence"), host_names, st.booleans()),
)
events = st.one_of(
    st.tuples(st.just("tick")),
    faults,
    faults,
    faults,
    st.tuples(st.just("local_maintenance"), host_names, st.booleans()),
    st.tuples(st.just("global"), st.booleans(), st.sampled_from([0, 0, 2, 30])),
    st.tuples(st.just("running"), st.booleans()),
    st.tuples(st.just("power_off"), st.booleans()),
    st.tuples(st.just("start_fails"), st.booleans()),
    st.tuples(st.just("migratable"), st.booleans()),
    st.tuples(st.just("migration_works"), st.booleans()),
    st.tuples(st.just("network"), host_names, st.sampled_from([0.0, 0.4, 0.8, 1.0])),
    st.tuples(st.just("cpu"), host_names, st.sampled_from([0.0, 0.5, 0.9, 1.0])),
    st.tuples(st.just("ready"), host_names, st.booleans()),
)


Step = tuple[tuple[Any, ...], int]
# Each fault or request is followed by some seconds passing.
timed_events = st.tuples(events, st.integers(1, 90))


def ticks(n: int, seconds: int = 5) -> list[Step]:
    return [(("tick",), seconds)] * n


def play(
    world: World, memory: Memory, steps: list[Step], s: Settings = FAST
) -> tuple[Memory, list[Decision]]:
    """For each (event, seconds): the event happens, the machine steps and its actions are
    carried out, then the seconds pass in the world."""
    decisions: list[Decision] = []
    prev_running = world.running
    for ev, seconds in steps:
        world.event(ev)
        obs = world.observe()
        decision = step(s, memory, obs, world.now)
        check_global_maintenance_hands_off(world, obs, decision, prev_running)
        prev_running = world.running
        world.apply(decision)
        memory = decision.memory
        decisions.append(decision)
        assert not world.violations, (world.violations, memory)
        world.tick(seconds)
        assert not world.violations, (world.violations, memory)
    return memory, decisions


def check_global_maintenance_hands_off(
    world: World, obs: Observation, decision: Decision, prev_running: bool
) -> None:
    if not global_maintenance_on(obs, world.now):
        return
    for action in decision.actions:
        assert not isinstance(action, (MigrateEngine, RequestFence)), action
        if isinstance(action, StopEngine):
            assert not world.running, "stop in global maintenance without a request"
        if isinstance(action, PowerOffEngine):
            assert world.power_off, "power-off in global maintenance without a request"
        if isinstance(action, StartEngine):
            assert world.running and not prev_running, "start without a request"


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(timed_events, min_size=1, max_size=50))
def test_never_two_engines_and_no_start_beside_an_unfenced_host(
    evs: list[Step],
) -> None:
    """(1) Whatever happens, at most one engine process runs, and StartEngine is only ever
    emitted when no engine process runs anywhere (an engine on a partitioned, unfenced host
    counts). Global maintenance takes no automatic action."""
    world = World()
    play(world, Memory(), [*ticks(1, 1), *evs])


failover_steps = st.tuples(
    st.one_of(st.tuples(st.just("tick")), faults, st.tuples(st.just("migratable"), st.booleans())),
    st.integers(1, 60),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(failover_steps, min_size=1, max_size=50))
# Sequences that once found real holes, kept as fixed examples.
@example([(("partition", "h1"), 1), (("vmi_failed_unseen",), 1)])
@example(
    [
        (("partition", "h1"), 1),
        (("fence_works", "h1", False), 1),
        (("vmi_failed_unseen",), 1),
        (("heal", "h1"), 1),
    ]
)
@example([(("partition", "h1"), 1), (("vmi_failed_unseen",), 30), (("tick",), 30)])
def test_never_two_engines_under_host_failures(evs: list[Step]) -> None:
    """(1) again, with only host faults, fences that work or fail, crashes and hangs."""
    world = World()
    play(world, Memory(), [*ticks(1, 1), *evs])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(failover_steps, min_size=1, max_size=40))
def test_without_fencing_required_the_machine_still_recovers(evs: list[Step]) -> None:
    """With fencingRequired false the operator may fail over unfenced (the user's explicit
    risk; two engines are then possible, so that invariant is not checked here), but it never
    gets stuck and never crashes."""
    s = replace(FAST, fencing_required=False)
    world = World()
    world.violations = _Ignored()
    memory, _ = play(world, Memory(), [*ticks(1, 1), *evs], s)
    world.recover()
    for _ in range(400):
        memory, _ = play(world, memory, ticks(1, 10), s)
        if memory.state is State.DEGRADED:
            world.reset_seq += 1
        if memory.state is State.ENGINE_UP:
            break
    assert memory.state is State.ENGINE_UP


class _Ignored(list[str]):
    """A violations list that stays empty (for the run without required fencing)."""

    def append(self, item: str) -> None:
        return None


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(timed_events, min_size=1, max_size=30))
def test_every_state_has_a_way_out(evs: list[Step]) -> None:
    """(2) From any reachable state, good observations lead to EngineUp (Degraded needs its
    designated manual reset)."""
    world = World()
    memory, _ = play(world, Memory(), [*ticks(1, 1), *evs])
    world.recover()
    seen: list[State] = []
    for _ in range(400):
        if memory.state is State.DEGRADED:
            world.reset_seq += 1
        memory, _ = play(world, memory, ticks(1, 10))
        seen.append(memory.state)
        if memory.state is State.ENGINE_UP:
            break
    assert memory.state is State.ENGINE_UP, seen[-20:]
    assert len(world.qemu) == 1 and world.node in world.qemu


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.integers(1, 30),
    factor=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    cap_extra=st.integers(0, 300),
    attempts=st.integers(1, 8),
)
def test_failing_starts_back_off_capped_then_give_up(
    base: int, factor: float, cap_extra: int, attempts: int
) -> None:
    """(3) With starts that always fail: the waits between starts never shrink and never exceed
    the cap, there are exactly ``max_start_attempts`` starts, then Degraded and silence."""
    backoff = Backoff(timedelta(seconds=base), factor, timedelta(seconds=base + cap_extra))
    s = Settings(
        backoff=backoff,
        max_start_attempts=attempts,
        failed_start_window=timedelta(seconds=1),  # keep every host eligible
        host_silence=timedelta(hours=10),
    )
    world = World(start_fails=True)
    memory, decisions = Memory(), []
    for _ in range(3000):
        memory, decisions = play(world, memory, ticks(1, 1), s)
        if memory.state is State.DEGRADED:
            break
    assert memory.state is State.DEGRADED
    assert len(world.starts) == attempts
    gaps = [(b - a).total_seconds() for a, b in pairwise(world.starts)]
    assert all(a <= b for a, b in pairwise(gaps))
    # One tick to see the failure, one to start: the wait is the backoff plus those ticks.
    assert all(g <= backoff.cap.total_seconds() + 3 for g in gaps)
    assert all(g >= backoff.base.total_seconds() for g in gaps)
    memory, decisions = play(world, memory, ticks(3, 600), s)
    assert memory.state is State.DEGRADED
    assert all(not isinstance(a, ENGINE_ACTIONS) for d in decisions for a in d.actions)


@st.composite
def flaky_probes(draw: st.DrawFn) -> tuple[int, list[bool]]:
    """A probe history where failures never come ``failures_before_bad`` in a row."""
    limit = draw(st.integers(2, 5))
    results: list[bool] = []
    run = 0
    for ok in draw(st.lists(st.booleans(), min_size=1, max_size=60)):
        if not ok and run + 1 >= limit:
            ok = True
        run = 0 if ok else run + 1
        results.append(ok)
    return limit, results


@settings(max_examples=100, deadline=None)
@given(flaky_probes(), st.sampled_from([ProbeResult.BAD, ProbeResult.TIMEOUT]))
def test_isolated_bad_probes_never_stop_the_engine(
    flaky: tuple[int, list[bool]], failure: ProbeResult
) -> None:
    """(4) Failed probes shorter than ``failures_before_bad`` in a row never stop the engine."""
    limit, results = flaky
    s = Settings(failures_before_bad=limit, restart_grace=timedelta(seconds=1))
    world = World(phase=VmiPhase.RUNNING, node="h1", since=T0, qemu={"h1"})
    memory = Memory(state=State.ENGINE_UP, since=T0, host="h1", healthy_since=T0)
    history: list[Probe] = []
    for i, ok in enumerate(results):
        now = T0 + timedelta(seconds=10 * (i + 1))
        history.append(Probe(now, ProbeResult.OK if ok else failure))
        for h in world.hosts.values():
            h.heartbeat = now
        world.now = now
        obs = world.observe()
        obs = Observation(
            vm=obs.vm, probes=tuple(history), hosts=obs.hosts, engine_memory=obs.engine_memory
        )
        decision = step(s, memory, obs, now)
        assert decision.state is State.ENGINE_UP
        assert not any(isinstance(a, ENGINE_ACTIONS) for a in decision.actions)
        memory = decision.memory


def test_world_scenario_power_loss_fails_over_after_a_confirmed_fence() -> None:
    """End to end in the simulated world: h1 loses power while running the engine."""
    world = World()
    memory, _ = play(world, Memory(), ticks(4))
    assert memory.state is State.ENGINE_UP and world.node == "h1"
    memory, decisions = play(world, memory, [(("power_loss", "h1"), 5), *ticks(12)])
    states = [d.state for d in decisions]
    assert State.FENCING in states
    fence_at = states.index(State.FENCING)
    assert all(not isinstance(a, StartEngine) for d in decisions[: fence_at + 1] for a in d.actions)
    assert memory.state is State.ENGINE_UP and world.node in ("h2", "h3")
    assert world.hosts["h1"].fence is FenceStatus.NONE  # request released once up elsewhere
    assert world.hosts["h1"].powered is False


def test_world_scenario_partition_without_fencing_waits() -> None:
    """A partitioned host that cannot be fenced keeps its engine; none starts elsewhere."""
    world = World()
    memory, _ = play(world, Memory(), ticks(4))
    evs: list[Step] = [(("can_fence", "h1", False), 1), (("partition", "h1"), 1)]
    memory, _ = play(world, memory, evs + ticks(20, 30))
    assert memory.state is State.HOST_LOST and world.qemu == {"h1"}
    assert len(world.starts) == 1  # the first start only
    memory, _ = play(world, memory, [(("heal", "h1"), 5), *ticks(3)])
    assert memory.state is State.ENGINE_UP and world.node == "h1"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(timed_events, min_size=1, max_size=30))
def test_memory_survives_a_status_round_trip_and_an_operator_restart(evs: list[Step]) -> None:
    """Every reachable memory goes through JSON unchanged, so a restarted operator that reads
    it back from status decides exactly as the one that wrote it."""
    world = World()
    memory, decisions = play(world, Memory(), [*ticks(1, 1), *evs])
    for d in decisions:
        assert memory_from_dict(json.loads(json.dumps(memory_to_dict(d.memory)))) == d.memory
    restored = memory_from_dict(json.loads(json.dumps(memory_to_dict(memory))))
    obs = world.observe()
    assert step(FAST, restored, obs, world.now) == step(FAST, memory, obs, world.now)


# ---- Arbitrary snapshots: no crash, and the start rule holds from any memory -------------

times = st.integers(-600, 600).map(lambda s: T0 + timedelta(seconds=s))
opt_times = st.none() | times
host_obs = st.builds(
    HostObservation,
    name=host_names,
    ready=st.booleans(),
    last_heartbeat=opt_times,
    local_maintenance=st.booleans(),
    network=st.floats(-1, 2, allow_nan=False),
    cpu_load=st.floats(0, 1.5, allow_nan=False),
    free_memory=st.integers(0, 32 * GIB),
    bmc_power=st.sampled_from(PowerState),
    can_fence=st.booleans(),
    fence=st.sampled_from(FenceStatus),
    fence_since=opt_times,
    failed_starts=st.lists(times, max_size=5).map(tuple),
)
snapshots = st.builds(
    Observation,
    vm=st.builds(
        EngineVm,
        exists=st.booleans(),
        phase=st.none() | st.sampled_from(VmiPhase),
        node=st.none() | host_names | st.just("elsewhere"),
        since=opt_times,
        paused=st.booleans(),
        live_migratable=st.booleans(),
        migrating=st.booleans(),
        migration_failed=st.booleans(),
    ),
    probes=st.lists(st.builds(Probe, times, st.sampled_from(ProbeResult)), max_size=8).map(tuple),
    hosts=st.lists(host_obs, max_size=4, unique_by=lambda h: h.name).map(tuple),
    engine_memory=st.integers(0, 16 * GIB),
    maintenance=st.sampled_from(MaintenanceMode),
    maintenance_until=opt_times,
    request=st.builds(UserRequest, st.booleans(), st.booleans(), st.integers(0, 3)),
)
memories = st.builds(
    Memory,
    state=st.sampled_from(State),
    since=opt_times,
    host=st.none() | host_names,
    attempts=st.integers(0, 10),
    backoff_until=opt_times,
    start_requested_at=opt_times,
    healthy_since=opt_times,
    last_action_at=opt_times,
    lost_host=st.none() | host_names,
    migration_target=st.none() | host_names,
    seen_running=st.booleans(),
    reset_seq=st.integers(0, 3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(memories, snapshots, times)
def test_any_snapshot_from_any_memory(memory: Memory, obs: Observation, now: datetime) -> None:
    """Whatever status and observation it is handed, ``step`` never raises, returns a known
    state, and never starts an engine while a VMI is active on a node that is not fenced, nor
    while the last VMI's node is lost or not Ready (without a confirmed fence)."""
    decision = step(FAST, memory, obs, now)
    assert decision.state in State
    assert memory_from_dict(json.loads(json.dumps(memory_to_dict(decision.memory)))) == (
        decision.memory
    )
    if not any(isinstance(a, StartEngine) for a in decision.actions):
        return
    hosts = {h.name: h for h in obs.hosts}
    node = obs.vm.node
    if node is None or obs.vm.phase is None:
        return
    confirmed = node in hosts and hosts[node].fence is FenceStatus.CONFIRMED
    if confirmed:
        return
    assert obs.vm.phase not in ACTIVE_PHASES, "start beside an active VMI"
    if node in hosts:
        h = hosts[node]
        lost = h.bmc_power is PowerState.OFF or h.fence in (
            FenceStatus.IN_PROGRESS,
            FenceStatus.CONFIRMED,
        )
        lost = lost or h.last_heartbeat is None or now - h.last_heartbeat > FAST.host_silence
        assert not lost and h.ready, "start while the last engine host is lost or not Ready"
