"""The drain planner: limits kept full and never exceeded, engine first, order, capacity."""

from __future__ import annotations

import heapq
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hosted_engine.logic.drain import (
    DrainPlan,
    DrainVM,
    MigrationLimits,
    MigrationState,
    NonMigratablePolicy,
    TargetHost,
    VMRef,
    check_capacity,
    ideal_makespan,
    makespan_lower_bound,
    migration_name,
    pipelined_makespan,
    plan_drain,
)
from hypothesis import given, settings
from hypothesis import strategies as st

GiB = 1 << 30
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOST = "node-a"


def vm(name: str, mem_gib: float = 2, cpu: int = 1000, **kw: object) -> DrainVM:
    return DrainVM(name=name, namespace="ns", memory_bytes=int(mem_gib * GiB), cpu_millis=cpu, **kw)  # type: ignore[arg-type]


def target(
    name: str, mem_gib: float = 64, cpu: int = 32000, used_gib: float = 0, **kw: object
) -> TargetHost:
    return TargetHost(
        name=name,
        allocatable_memory_bytes=int(mem_gib * GiB),
        allocatable_cpu_millis=cpu,
        allocated_memory_bytes=int(used_gib * GiB),
        **kw,  # type: ignore[arg-type]
    )


TARGETS = (target("node-b", may_run_engine=True), target("node-c"))
DEFAULT_LIMITS = MigrationLimits()


def plan(
    vms: Sequence[DrainVM],
    *,
    in_flight: dict[str, int] | None = None,
    limits: MigrationLimits = DEFAULT_LIMITS,
    policy: NonMigratablePolicy = NonMigratablePolicy.BLOCK,
    targets: Sequence[TargetHost] = TARGETS,
    now: datetime = T0,
) -> DrainPlan:
    return plan_drain(HOST, vms, targets, in_flight or {}, limits, policy, now)


# ------------------------------------------------------------------ limits


@pytest.mark.parametrize(
    ("per_cluster", "per_node", "own_in_flight", "reported", "expected"),
    [
        (5, 2, 0, {}, 2),  # KubeVirt defaults: the per-node limit binds
        (5, 2, 1, {}, 1),  # kept full: one more next to the running one
        (5, 2, 2, {}, 0),  # full
        (5, 2, 0, {"node-x": 4}, 1),  # the cluster limit binds
        (5, 2, 0, {"node-x": 5}, 0),  # the cluster is full
        (5, 2, 0, {"node-x": 7}, 0),  # over the limit already: never negative
        (5, 1, 0, {}, 1),  # HCO's default of 1 per node
        (10, 4, 0, {"node-x": 3}, 4),
        (5, 2, 0, {HOST: 2}, 0),  # the watch saw ours before the VMs did
        (5, 2, 1, {HOST: 0}, 1),  # the VMs saw ours before the watch did
    ],
)
def test_free_slots_respect_both_limits(
    per_cluster: int, per_node: int, own_in_flight: int, reported: dict[str, int], expected: int
) -> None:
    vms = [vm(f"busy{i}", migration=MigrationState.IN_FLIGHT) for i in range(own_in_flight)]
    vms += [vm(f"vm{i}") for i in range(10)]
    p = plan_drain(
        HOST,
        vms,
        TARGETS,
        reported,
        MigrationLimits(per_cluster, per_node),
        NonMigratablePolicy.BLOCK,
        T0,
    )
    assert len(p.start) == expected
    assert len(p.waiting) == 10 - expected
    assert p.free_slots_after == 0


def test_engine_first_then_largest_memory_first() -> None:
    vms = [
        vm("small", 1),
        vm("big", 16),
        vm("engine", 4, is_engine=True),
        vm("mid", 8),
        vm("mid-cpu", 8, cpu=4000),
    ]
    p = plan(vms, limits=MigrationLimits(10, 10))
    assert [m.vm.name for m in p.start] == ["engine", "big", "mid-cpu", "mid", "small"]
    engine = p.start[0]
    assert engine.is_engine
    assert engine.allowed_nodes == ("node-b",)  # only the host allowed to run it
    assert all(m.allowed_nodes == () for m in p.start[1:])


def test_engine_targets_exclude_cordoned_and_maintenance_hosts() -> None:
    targets = (
        target("node-b", may_run_engine=True, schedulable=False),
        target("node-c", may_run_engine=True, in_maintenance=True),
        target("node-d", may_run_engine=True),
    )
    p = plan([vm("engine", is_engine=True)], targets=targets)
    assert p.start[0].allowed_nodes == ("node-d",)


def test_non_migratable_blocks_or_is_shut_down() -> None:
    vms = [vm("ok"), vm("pinned", live_migratable=False, not_migratable_reason="HostDevice")]
    blocked = plan(vms, policy=NonMigratablePolicy.BLOCK)
    assert [b.vm.name for b in blocked.blocked] == ["pinned"]
    assert blocked.blocked[0].reason == "HostDevice"
    assert blocked.shutdown == ()
    shut = plan(vms, policy=NonMigratablePolicy.SHUTDOWN)
    assert shut.shutdown == (VMRef("ns", "pinned"),)
    assert shut.blocked == ()
    stopping = plan(
        [replace(vms[1], stopping=True)],
        policy=NonMigratablePolicy.SHUTDOWN,
    )
    assert stopping.shutdown == () and stopping.stopping == (VMRef("ns", "pinned"),)
    assert not stopping.complete


def test_engine_is_never_shut_down_nor_sent_anywhere() -> None:
    stuck = vm("engine", is_engine=True, live_migratable=False, not_migratable_reason="HostDisk")
    p = plan([stuck], policy=NonMigratablePolicy.SHUTDOWN)
    assert p.shutdown == () and p.blocked[0].reason == "EngineNotLiveMigratable: HostDisk"
    lonely = plan([vm("engine", is_engine=True), vm("a")], targets=(target("node-c"),))
    assert [m.vm.name for m in lonely.start] == ["a"]
    assert lonely.blocked[0].reason.startswith("EngineHasNoHost")


def test_failed_migrations_retry_after_backoff_then_block() -> None:
    recent = vm("a", migration=MigrationState.FAILED, failed_attempts=1, last_failure_at=T0)
    assert plan([recent], now=T0 + timedelta(seconds=5)).start == ()
    assert plan([recent], now=T0 + timedelta(seconds=5)).waiting == (VMRef("ns", "a"),)
    assert len(plan([recent], now=T0 + timedelta(seconds=11)).start) == 1
    exhausted = replace(recent, failed_attempts=3)
    p = plan([exhausted], now=T0 + timedelta(hours=1))
    assert p.start == () and p.blocked[0].reason.startswith("MigrationFailed")
    assert p.only_blocked_left


def test_complete_only_when_nothing_is_left() -> None:
    assert plan([]).complete
    assert plan([vm("done", migration=MigrationState.SUCCEEDED)]).complete
    assert not plan([vm("moving", migration=MigrationState.IN_FLIGHT)]).complete


def test_migration_names_are_deterministic_dns_labels() -> None:
    ref = VMRef("ns", "A-Very_Long.Name" * 6)
    name = migration_name(HOST, ref)
    assert name == migration_name(HOST, ref)
    assert name != migration_name("node-b", ref)
    assert name == migration_name(HOST, ref, 1) != migration_name(HOST, ref, 2)
    assert len(name) <= 63
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name)


def test_a_retry_gets_a_new_migration_name() -> None:
    failed = vm("a", migration=MigrationState.FAILED, failed_attempts=1)
    (start,) = plan([failed], now=T0).start
    assert start.migration_name == migration_name(HOST, VMRef("ns", "a"), 2)


def test_limits_from_kubevirt_cr() -> None:
    assert MigrationLimits.from_kubevirt_config(None) == MigrationLimits(5, 2)
    cfg = {"parallelMigrationsPerCluster": 8, "parallelOutboundMigrationsPerNode": 1}
    assert MigrationLimits.from_kubevirt_config(cfg) == MigrationLimits(8, 1)
    bad = {"parallelMigrationsPerCluster": 0, "parallelOutboundMigrationsPerNode": "3"}
    assert MigrationLimits.from_kubevirt_config(bad) == MigrationLimits(5, 2)
    with pytest.raises(ValueError):
        MigrationLimits(0, 2)


# ------------------------------------------------------------------ capacity


@pytest.mark.parametrize(
    ("vms", "targets", "reason"),
    [
        # the engine runs here and no other host may run it
        ([vm("engine", is_engine=True)], (target("node-c"),), "EngineHasNoHost"),
        # the only engine-capable host is full
        (
            [vm("engine", 8, is_engine=True)],
            (target("node-b", 16, used_gib=12, may_run_engine=True), target("node-c")),
            "EngineHasNoHost",
        ),
        # totals do not fit
        ([vm(f"v{i}", 8) for i in range(10)], (target("node-b", 32),), "InsufficientMemory"),
        (
            [vm(f"v{i}", 1, cpu=4000) for i in range(4)],
            (target("node-b", cpu=8000),),
            "InsufficientCPU",
        ),
        # totals fit, no single host can take the big one
        ([vm("big", 12)], (target("node-b", 8), target("node-c", 8)), "InsufficientCapacity"),
        # hosts in maintenance or cordoned do not count
        (
            [vm("a", 4)],
            (target("node-b", schedulable=False), target("node-c", in_maintenance=True)),
            "InsufficientMemory",
        ),
        # capacity is fine
        ([vm("a", 4), vm("b", 4)], (target("node-b", 8),), None),
        # tight but feasible: 6+2 and 5+3 into two 8 GiB hosts
        ([vm("a", 6), vm("b", 5), vm("c", 3), vm("d", 2)], (target("x", 8), target("y", 8)), None),
        # non-migratable VMs need no room, moved and moving ones neither
        (
            [
                vm("pinned", 100, live_migratable=False),
                vm("gone", 100, migration=MigrationState.SUCCEEDED),
                vm("going", 100, migration=MigrationState.IN_FLIGHT),
            ],
            (target("node-b", 1),),
            None,
        ),
        ([], (), None),
    ],
)
def test_capacity_check(
    vms: list[DrainVM], targets: tuple[TargetHost, ...], reason: str | None
) -> None:
    refusal = check_capacity(vms, targets, leaving=(HOST,))
    assert (refusal.reason if refusal else None) == reason
    if refusal:
        assert refusal.message


def test_capacity_excludes_the_leaving_hosts() -> None:
    vms = [vm("a", 4)]
    targets = (target("node-b", 8), target("node-c", 2))
    assert check_capacity(vms, targets) is None
    refusal = check_capacity(vms, targets, leaving=("node-b",))
    assert refusal is not None and refusal.reason == "InsufficientMemory"


# ------------------------------------------------------------------ makespan


def test_pipelined_and_ideal_makespan() -> None:
    assert pipelined_makespan([], 2) == 0.0
    assert pipelined_makespan([4, 4, 4, 4], 2) == 8
    assert pipelined_makespan([1, 1, 6], 2) == 7  # the big one last waits for a slot
    # LPT: 6 first, the small ones fill the other slot
    assert ideal_makespan([1, 1, 6], MigrationLimits(5, 2)) == 6
    assert ideal_makespan([3, 3, 3], MigrationLimits(5, 2), engine_duration=2) == 6
    # other hosts' migrations take cluster slots
    assert ideal_makespan([3, 3, 3, 3], MigrationLimits(5, 2), other_in_flight=4) == 12
    assert makespan_lower_bound([3, 3, 2, 2, 2], 2) == 6
    with pytest.raises(ValueError):
        ideal_makespan([1], MigrationLimits(5, 2), other_in_flight=5)


# ------------------------------------------------------------------ simulated drains


@dataclass
class DrainRun:
    makespan: float
    moved: set[str]
    blocked: set[str]
    shut_down: set[str]
    max_in_flight: int


def simulate_drain(
    vms: Sequence[DrainVM],
    durations: dict[str, float],
    limits: MigrationLimits,
    policy: NonMigratablePolicy,
    others: int = 0,
    fail_first: frozenset[str] = frozenset(),
) -> DrainRun:
    """Zero-latency world: a migration ends after its duration; planner called on every event."""
    on_host = {v.name: v for v in vms}
    events: list[tuple[float, str, str]] = []
    t = 0.0
    moved: set[str] = set()
    shut: set[str] = set()
    failed_once: set[str] = set()
    max_seen = 0
    reported = {"node-x": others} if others else {}
    for _ in range(10_000):
        p = plan_drain(
            HOST,
            list(on_host.values()),
            TARGETS,
            reported,
            limits,
            policy,
            T0 + timedelta(seconds=t),
            retry_after_s=0,
        )
        for m in p.start:
            on_host[m.vm.name] = replace(on_host[m.vm.name], migration=MigrationState.IN_FLIGHT)
            heapq.heappush(events, (t + durations[m.vm.name], "migrated", m.vm.name))
        for ref in p.shutdown:
            on_host[ref.name] = replace(on_host[ref.name], stopping=True)
            heapq.heappush(events, (t + 1.0, "stopped", ref.name))
        in_flight = sum(1 for v in on_host.values() if v.migration is MigrationState.IN_FLIGHT)
        max_seen = max(max_seen, in_flight)
        # never exceeded
        assert in_flight <= limits.per_node_outbound
        assert in_flight + others <= limits.per_cluster
        # kept full: a queued VM waits only when no slot is free
        queued = [r for r in p.waiting if on_host[r.name].migration is MigrationState.NONE]
        if queued:
            assert in_flight == min(limits.per_node_outbound, limits.per_cluster - others)
        if p.complete or p.only_blocked_left:
            return DrainRun(t, moved, {b.vm.name for b in p.blocked}, shut, max_seen)
        assert events, "stalled"
        t = events[0][0]
        while events and events[0][0] == t:
            _, kind, name = heapq.heappop(events)
            if kind == "stopped":
                shut.add(name)
                del on_host[name]
            elif name in fail_first and name not in failed_once:
                failed_once.add(name)
                on_host[name] = replace(
                    on_host[name], migration=MigrationState.FAILED, failed_attempts=1
                )
            else:
                moved.add(name)
                del on_host[name]
    raise AssertionError("drain did not finish")


def test_fifty_vms_drain_in_the_ideal_pipelined_time() -> None:
    vms = [vm(f"vm{i:02d}", 1 + (i * 7) % 13) for i in range(50)] + [
        vm("engine", 6, is_engine=True)
    ]
    durations = {v.name: v.memory_bytes / GiB * 3.0 for v in vms}  # 3 s per GiB
    limits = MigrationLimits()
    run = simulate_drain(vms, durations, limits, NonMigratablePolicy.BLOCK)
    assert run.moved == {v.name for v in vms}
    assert run.max_in_flight == 2
    ideal = ideal_makespan(
        [d for n, d in durations.items() if n != "engine"],
        limits,
        engine_duration=durations["engine"],
    )
    assert run.makespan == pytest.approx(ideal)
    assert run.makespan <= 1.05 * makespan_lower_bound(list(durations.values()), 2)


vm_strategy = st.builds(
    lambda i, mem, cpu, migratable, engine: vm(
        f"vm{i}", mem, cpu, live_migratable=migratable, is_engine=engine
    ),
    st.integers(0, 10_000),
    st.integers(1, 32),
    st.integers(100, 8000),
    st.booleans(),
    st.just(False),
)


@settings(max_examples=60, deadline=None)
@given(
    vms=st.lists(vm_strategy, max_size=25, unique_by=lambda v: v.name),
    per_cluster=st.integers(1, 8),
    per_node=st.integers(1, 4),
    others=st.integers(0, 7),
    policy=st.sampled_from(list(NonMigratablePolicy)),
    durations=st.lists(st.floats(0.5, 50.0), min_size=25, max_size=25),
    fail=st.sets(st.integers(0, 24), max_size=5),
)
def test_property_limits_never_exceeded_and_every_vm_ends_somewhere(
    vms: list[DrainVM],
    per_cluster: int,
    per_node: int,
    others: int,
    policy: NonMigratablePolicy,
    durations: list[float],
    fail: set[int],
) -> None:
    others = min(others, per_cluster - 1)  # at least one cluster slot, or nothing can move
    limits = MigrationLimits(per_cluster, per_node)
    dur = {v.name: durations[i] for i, v in enumerate(vms)}
    fail_first = frozenset(vms[i].name for i in fail if i < len(vms))
    run = simulate_drain(vms, dur, limits, policy, others, fail_first)
    names = {v.name for v in vms}
    assert run.moved | run.blocked | run.shut_down == names
    assert not (run.moved & run.blocked) and not (run.moved & run.shut_down)
    non_migratable = {v.name for v in vms if not v.live_migratable}
    if policy is NonMigratablePolicy.BLOCK:
        assert run.blocked == non_migratable and not run.shut_down
    else:
        assert run.shut_down == non_migratable and not run.blocked
    assert run.max_in_flight <= min(per_node, per_cluster - others)
