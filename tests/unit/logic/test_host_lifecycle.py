"""The Host state machine: maintenance, cancel, timeout, refusal, health and fencing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hosted_engine.logic.drain import (
    DrainVM,
    MigrationLimits,
    MigrationState,
    NonMigratablePolicy,
    TargetHost,
    VMRef,
    migration_name,
)
from hosted_engine.logic.host_lifecycle import (
    Action,
    ClusterHealth,
    Cordon,
    CreateMigration,
    DeleteMigration,
    EmitEvent,
    HostObservation,
    HostPolicy,
    HostState,
    HostStatus,
    MaintenanceMode,
    NodeObservation,
    PowerObservation,
    RemoveOutOfServiceTaint,
    RequestFence,
    SetCondition,
    ShutdownVM,
    Step,
    TaintOutOfService,
    Uncordon,
    step,
)
from hypothesis import given, settings
from hypothesis import strategies as st

GiB = 1 << 30
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOST = "node-a"


def vm(name: str, mem_gib: int = 2, **kw: object) -> DrainVM:
    return DrainVM(name=name, namespace="ns", memory_bytes=mem_gib * GiB, cpu_millis=500, **kw)  # type: ignore[arg-type]


TARGETS = (
    TargetHost("node-b", 64 * GiB, 32000, may_run_engine=True),
    TargetHost("node-c", 64 * GiB, 32000),
)


def obs(at: float = 0, **kw: object) -> HostObservation:
    base: dict[str, object] = {
        "host": HOST,
        "now": T0 + timedelta(seconds=at),
        "targets": TARGETS,
        "node": NodeObservation(),
    }
    base.update(kw)
    return HostObservation(**base)  # type: ignore[arg-type]


def events(s: Step) -> list[str]:
    return [a.reason for a in s.actions if isinstance(a, EmitEvent)]


def conditions(s: Step) -> dict[str, tuple[str, str]]:
    return {a.type: (a.status, a.reason) for a in s.actions if isinstance(a, SetCondition)}


def of(s: Step, kind: type) -> list[Action]:
    return [a for a in s.actions if isinstance(a, kind)]


LOCAL = MaintenanceMode.LOCAL
NONE = MaintenanceMode.NONE
CORDONED = NodeObservation(cordoned=True)


def enter(vms: Sequence[DrainVM], **kw: object) -> Step:
    return step(None, obs(mode=LOCAL, vms=tuple(vms), **kw))


# ------------------------------------------------------------------ maintenance


def test_entering_maintenance_cordons_and_fills_the_limits_engine_first() -> None:
    vms = [vm("a", 4), vm("b", 8), vm("engine", 4, is_engine=True), vm("c", 1)]
    s = enter(vms)
    assert s.status.state is HostState.PREPARING_FOR_MAINTENANCE
    assert of(s, Cordon)
    created = [a.migration.vm.name for a in of(s, CreateMigration)]  # type: ignore[attr-defined]
    assert created == ["engine", "b"]  # KubeVirt's default of 2 per node, engine first
    assert "MaintenanceStarted" in events(s)
    progress = s.status.maintenance
    assert progress is not None and progress.started_at == T0
    assert set(progress.to_move) == {"ns/a", "ns/b", "ns/engine", "ns/c"}
    assert set(progress.in_flight) == {"ns/engine", "ns/b"}


def test_drain_reaches_maintenance_with_progress() -> None:
    vms = [vm("a"), vm("b"), vm("c")]
    s = enter(vms)
    # a and b are migrating; a finished (gone from the host), b still running
    on_host = [replace(vms[1], migration=MigrationState.IN_FLIGHT), vms[2]]
    s = step(s.status, obs(10, mode=LOCAL, vms=on_host, node=CORDONED))
    assert [a.migration.vm.name for a in of(s, CreateMigration)] == ["c"]  # type: ignore[attr-defined]
    assert s.status.maintenance is not None
    assert s.status.maintenance.moved == ("ns/a",)
    assert set(s.status.maintenance.in_flight) == {"ns/b", "ns/c"}
    s = step(s.status, obs(30, mode=LOCAL, vms=[], node=CORDONED))
    assert s.status.state is HostState.MAINTENANCE
    assert s.status.maintenance is not None
    assert s.status.maintenance.moved == ("ns/a", "ns/b", "ns/c")
    assert s.status.maintenance.finished_at == T0 + timedelta(seconds=30)
    assert conditions(s)["InMaintenance"] == ("True", "Drained")
    assert "MaintenanceReached" in events(s)
    # staying in maintenance does nothing more
    again = step(s.status, obs(40, mode=LOCAL, node=CORDONED))
    assert again.actions == () and again.status == s.status


def test_empty_host_reaches_maintenance_at_once() -> None:
    s = enter([])
    assert s.status.state is HostState.MAINTENANCE
    assert of(s, Cordon)


@pytest.mark.parametrize(
    ("vms", "targets", "reason"),
    [
        (
            [vm("engine", is_engine=True)],
            (TargetHost("node-c", 64 * GiB, 32000),),
            "EngineHasNoHost",
        ),
        ([vm("engine", is_engine=True)], (), "EngineHasNoHost"),
        ([vm(f"v{i}", 16) for i in range(10)], TARGETS, "InsufficientMemory"),
    ],
)
def test_refused_with_a_reason_and_one_event(
    vms: list[DrainVM], targets: tuple[TargetHost, ...], reason: str
) -> None:
    s = enter(vms, targets=targets)
    assert s.status.state is HostState.UP
    assert not of(s, Cordon) and not of(s, CreateMigration)
    assert conditions(s)["MaintenanceRefused"] == ("True", reason)
    assert events(s) == ["MaintenanceRefused"]
    assert s.status.refusal is not None and s.status.refusal.reason == reason
    again = step(s.status, obs(5, mode=LOCAL, vms=vms, targets=targets))
    assert again.actions == ()  # no repeated event
    cleared = step(again.status, obs(6, mode=NONE, vms=vms, targets=targets))
    assert conditions(cleared)["MaintenanceRefused"][0] == "False"
    assert cleared.status.refusal is None


def test_cancel_midway_deletes_only_our_pending_migrations_and_uncordons() -> None:
    vms = [vm("a"), vm("b"), vm("c")]
    s = enter(vms)
    on_host = [
        replace(vms[0], migration=MigrationState.IN_FLIGHT),
        replace(vms[1], migration=MigrationState.IN_FLIGHT),
        vms[2],
    ]
    # a finished meanwhile? no: user set mode none while a and b migrate
    s2 = step(s.status, obs(5, mode=NONE, vms=on_host, node=CORDONED))
    deleted = {a.vm.name for a in of(s2, DeleteMigration)}  # type: ignore[attr-defined]
    assert deleted == {"a", "b"}
    assert all(
        a.migration_name == migration_name(HOST, a.vm, 1)  # type: ignore[attr-defined]
        for a in of(s2, DeleteMigration)
    )
    assert of(s2, Uncordon)
    assert s2.status.state is HostState.UP and s2.status.maintenance is None
    assert "MaintenanceCancelled" in events(s2)
    # someone else's migration of c is left alone
    s3 = enter(vms)
    foreign = [vms[0], vms[1], replace(vms[2], migration=MigrationState.IN_FLIGHT)]
    s4 = step(s3.status, obs(5, mode=NONE, vms=foreign, node=CORDONED))
    assert "c" not in {a.vm.name for a in of(s4, DeleteMigration)}  # type: ignore[attr-defined]


def test_timeout_stops_migrations_warns_and_stays_cordoned() -> None:
    policy = HostPolicy(maintenance_timeout_s=60)
    vms = [vm(f"v{i}") for i in range(5)]
    s = enter(vms, policy=policy)
    running = [replace(v, migration=MigrationState.IN_FLIGHT) for v in vms[:2]] + vms[2:]
    s = step(s.status, obs(30, mode=LOCAL, vms=running, policy=policy, node=CORDONED))
    assert not of(s, CreateMigration)  # slots are full
    s = step(s.status, obs(60, mode=LOCAL, vms=running, policy=policy, node=CORDONED))
    assert {a.vm.name for a in of(s, DeleteMigration)} == {"v0", "v1"}  # type: ignore[attr-defined]
    assert conditions(s)["Draining"] == ("False", "TimedOut")
    assert "MaintenanceTimedOut" in events(s)
    assert not of(s, Uncordon) and not of(s, CreateMigration)
    assert s.status.state is HostState.PREPARING_FOR_MAINTENANCE
    assert s.status.maintenance is not None and s.status.maintenance.timed_out
    # afterwards: nothing new starts, no second warning, still cordoned
    later = step(s.status, obs(90, mode=LOCAL, vms=vms, policy=policy, node=CORDONED))
    assert not of(later, CreateMigration) and "MaintenanceTimedOut" not in events(later)
    assert not of(later, Uncordon)
    # the user decides: cancel
    cancel = step(later.status, obs(120, mode=NONE, vms=vms, policy=policy, node=CORDONED))
    assert of(cancel, Uncordon) and cancel.status.state is HostState.UP


def test_blocked_vm_is_listed_and_holds_maintenance() -> None:
    pinned = vm("pinned", live_migratable=False, not_migratable_reason="HostDeviceAttached")
    s = enter([vm("a"), pinned])
    assert conditions(s)["DrainBlocked"][0] == "True"
    assert "DrainBlocked" in events(s)
    s = step(s.status, obs(10, mode=LOCAL, vms=[pinned], node=CORDONED))
    assert s.status.state is HostState.PREPARING_FOR_MAINTENANCE
    assert s.status.maintenance is not None
    assert [(b.vm.name, b.reason) for b in s.status.maintenance.blocked] == [
        ("pinned", "HostDeviceAttached")
    ]
    assert "DrainBlocked" not in events(s)  # not repeated
    # the user stops it by hand: maintenance is reached
    s = step(s.status, obs(20, mode=LOCAL, vms=[], node=CORDONED))
    assert s.status.state is HostState.MAINTENANCE


def test_shutdown_policy_stops_non_migratable_vms() -> None:
    policy = HostPolicy(non_migratable=NonMigratablePolicy.SHUTDOWN)
    pinned = vm("pinned", live_migratable=False)
    s = enter([pinned], policy=policy)
    assert [a.vm for a in of(s, ShutdownVM)] == [VMRef("ns", "pinned")]  # type: ignore[attr-defined]
    stopping = replace(pinned, stopping=True)
    s = step(s.status, obs(5, mode=LOCAL, vms=[stopping], policy=policy, node=CORDONED))
    assert not of(s, ShutdownVM)
    s = step(s.status, obs(10, mode=LOCAL, vms=[], policy=policy, node=CORDONED))
    assert s.status.state is HostState.MAINTENANCE
    assert s.status.maintenance is not None
    assert s.status.maintenance.shut_down == ("ns/pinned",)
    assert s.status.maintenance.moved == ()


def test_activation_uncordons_then_up() -> None:
    s = enter([])
    s = step(s.status, obs(5, mode=NONE, node=CORDONED))
    assert s.status.state is HostState.ACTIVATING and of(s, Uncordon)
    s = step(s.status, obs(6, mode=NONE, node=CORDONED))
    assert s.status.state is HostState.ACTIVATING and of(s, Uncordon)
    s = step(s.status, obs(7, mode=NONE))
    assert s.status.state is HostState.UP and "HostUp" in events(s)


def test_migration_limits_respected_with_other_hosts_migrating() -> None:
    s = enter(
        [vm(f"v{i}") for i in range(6)],
        limits=MigrationLimits(per_cluster=5, per_node_outbound=4),
        in_flight_by_source={"node-x": 3},
    )
    assert len(of(s, CreateMigration)) == 2


# ------------------------------------------------------------------ health and fencing

SILENT = NodeObservation(ready=None, not_ready_since=T0)
FENCE_OK = PowerObservation(configured=True, fencing_allowed=True, power_state="On")


def silent_obs(at: float, **kw: object) -> HostObservation:
    base: dict[str, object] = {
        "node": SILENT,
        "power": FENCE_OK,
        "cluster": ClusterHealth(3, 2),
        "runs_restartable_vms": True,
    }
    base.update(kw)
    return obs(at, **base)


def test_non_responsive_after_the_silence_threshold() -> None:
    s = step(None, silent_obs(30))
    assert s.status.state is HostState.UP and s.actions == ()
    s = step(s.status, silent_obs(60))
    assert s.status.state is HostState.NON_RESPONSIVE
    assert conditions(s)["Responsive"] == ("False", "NodeNotReady")
    assert "HostNonResponsive" in events(s)


def test_fence_confirm_taint_and_recover_to_up() -> None:
    s = step(None, silent_obs(60))
    assert of(s, RequestFence) == [RequestFence(1)]
    assert "FenceRequested" in events(s)
    # one fence at a time: no second request while the first is awaited
    s = step(s.status, silent_obs(70))
    assert not of(s, RequestFence)
    # an Off seen before the request does not count
    stale = replace(FENCE_OK, power_state="Off", observed_at=T0 + timedelta(seconds=59))
    s = step(s.status, silent_obs(75, power=stale))
    assert s.status.state is HostState.NON_RESPONSIVE and not of(s, TaintOutOfService)
    off = replace(FENCE_OK, power_state="Off", observed_at=T0 + timedelta(seconds=80))
    s = step(s.status, silent_obs(80, power=off))
    assert s.status.state is HostState.FENCED
    assert of(s, TaintOutOfService) and "HostFenced" in events(s)
    # still down: keeps the taint, nothing else
    s = step(s.status, silent_obs(100, power=off, node=replace(SILENT, out_of_service_taint=True)))
    assert s.status.state is HostState.FENCED and s.actions == ()
    back = NodeObservation(ready=True, out_of_service_taint=True)
    s = step(s.status, obs(200, node=back))
    assert of(s, RemoveOutOfServiceTaint)
    assert s.status.state is HostState.UP and s.status.fence is None


def test_fenced_host_in_maintenance_returns_to_maintenance() -> None:
    s = enter([])
    assert s.status.state is HostState.MAINTENANCE
    s = step(s.status, silent_obs(60, mode=LOCAL, fence_requested=True))
    assert s.status.state is HostState.NON_RESPONSIVE and of(s, RequestFence)
    off = replace(FENCE_OK, power_state="Off", observed_at=T0 + timedelta(seconds=61))
    s = step(s.status, silent_obs(61, mode=LOCAL, power=off))
    assert s.status.state is HostState.FENCED
    s = step(
        s.status, obs(300, mode=LOCAL, node=NodeObservation(ready=True, out_of_service_taint=True))
    )
    assert s.status.state is HostState.MAINTENANCE
    assert of(s, RemoveOutOfServiceTaint) and of(s, Cordon)


@pytest.mark.parametrize(
    ("power", "cluster", "reason"),
    [
        (PowerObservation(), ClusterHealth(3, 2), "NoPowerManagement"),
        (PowerObservation(configured=True), ClusterHealth(3, 2), "FencingDisabled"),
        (FENCE_OK, ClusterHealth(5, 2), "ClusterPartitioned"),  # storm guard
        (FENCE_OK, ClusterHealth(3, 1), "ClusterPartitioned"),
    ],
)
def test_fencing_guards(power: PowerObservation, cluster: ClusterHealth, reason: str) -> None:
    s = step(None, silent_obs(60, power=power, cluster=cluster))
    assert not of(s, RequestFence)
    assert conditions(s)["FencingBlocked"] == ("True", reason)
    assert "FencingBlocked" in events(s)
    again = step(s.status, silent_obs(70, power=power, cluster=cluster))
    assert again.actions == ()
    if reason == "ClusterPartitioned":  # the partition heals: fence now
        healed = step(again.status, silent_obs(80, power=power, cluster=ClusterHealth(3, 2)))
        assert of(healed, RequestFence)
        assert conditions(healed)["FencingBlocked"][0] == "False"


def test_no_fence_when_nothing_needs_restarting_unless_requested() -> None:
    s = step(None, silent_obs(60, runs_restartable_vms=False))
    assert s.status.state is HostState.NON_RESPONSIVE and not of(s, RequestFence)
    s = step(s.status, silent_obs(70, runs_restartable_vms=False, fence_requested=True))
    assert of(s, RequestFence)


def test_fence_timeout_retries_then_gives_up() -> None:
    policy = HostPolicy(fence_timeout_s=60, max_fence_attempts=2)
    s = step(None, silent_obs(60, policy=policy))
    assert of(s, RequestFence) == [RequestFence(1)]
    s = step(s.status, silent_obs(120, policy=policy))
    assert "FenceFailed" in events(s) and of(s, RequestFence) == [RequestFence(2)]
    s = step(s.status, silent_obs(180, policy=policy))
    assert "FenceFailed" in events(s) and not of(s, RequestFence)
    assert s.status.fence is not None and s.status.fence.gave_up
    s = step(s.status, silent_obs(240, policy=policy))
    assert not of(s, RequestFence)


def test_node_back_without_fence_returns_to_previous_state() -> None:
    s = enter([vm("a")])
    assert s.status.state is HostState.PREPARING_FOR_MAINTENANCE
    silent = replace(SILENT, cordoned=True)
    s = step(s.status, silent_obs(60, mode=LOCAL, node=silent, runs_restartable_vms=False))
    assert s.status.state is HostState.NON_RESPONSIVE
    s = step(s.status, obs(90, mode=LOCAL, vms=[], node=CORDONED))
    assert "HostResponsive" in events(s)
    assert s.status.state is HostState.MAINTENANCE  # the drain went on and finished


def test_non_operational_and_back() -> None:
    sick = NodeObservation(usable=False, unusable_reason="StorageUnreachable")
    s = step(None, obs(0, node=sick))
    assert s.status.state is HostState.NON_OPERATIONAL
    assert conditions(s)["Operational"] == ("False", "StorageUnreachable")
    s = step(s.status, obs(10, node=sick))
    assert s.actions == ()
    s = step(s.status, obs(20))
    assert s.status.state is HostState.UP


# ------------------------------------------------------------------ restart


def test_status_round_trips_through_json_and_resumes() -> None:
    policy = HostPolicy(maintenance_timeout_s=600)
    vms = [vm(f"v{i}") for i in range(4)] + [vm("pinned", live_migratable=False)]
    s = enter(vms, policy=policy)
    on_host = [replace(v, migration=MigrationState.IN_FLIGHT) for v in vms[:2]] + vms[3:]
    s = step(s.status, obs(10, mode=LOCAL, vms=on_host, policy=policy, node=CORDONED))
    restored = HostStatus.from_dict(json.loads(json.dumps(s.status.to_dict())))
    assert restored == s.status
    later = obs(20, mode=LOCAL, vms=on_host, policy=policy, node=CORDONED)
    assert step(restored, later) == step(s.status, later)
    fenced = step(None, silent_obs(60)).status
    assert HostStatus.from_dict(json.loads(json.dumps(fenced.to_dict()))) == fenced


def test_fence_request_for_a_ready_node_is_refused_and_a_silent_one_fenced_at_once() -> None:
    ready = step(None, obs(0, power=FENCE_OK, fence_requested=True))
    assert not of(ready, RequestFence) and ready.status.state is HostState.UP
    assert conditions(ready)["FencingBlocked"] == ("True", "NodeReady")
    assert step(ready.status, obs(5, power=FENCE_OK, fence_requested=True)).actions == ()
    withdrawn = step(ready.status, obs(6, power=FENCE_OK))
    assert conditions(withdrawn)["FencingBlocked"][0] == "False"
    # not Ready for 5 s only: the requester waited its own threshold, fence now
    early = step(None, silent_obs(5, fence_requested=True, runs_restartable_vms=False))
    assert early.status.state is HostState.NON_RESPONSIVE and of(early, RequestFence)


# ------------------------------------------------------------------ property


@settings(max_examples=50, deadline=None)
@given(
    n_vms=st.integers(0, 12),
    pinned=st.sets(st.integers(0, 11), max_size=3),
    durations=st.lists(st.integers(1, 6), min_size=12, max_size=12),
    per_node=st.integers(1, 3),
    shutdown=st.booleans(),
    modes=st.lists(st.booleans(), min_size=1, max_size=40),  # mode local? per tick
    timeout=st.one_of(st.none(), st.integers(3, 30)),
)
def test_property_maintenance_in_a_simulated_world(
    n_vms: int,
    pinned: set[int],
    durations: list[int],
    per_node: int,
    shutdown: bool,
    modes: list[bool],
    timeout: int | None,
) -> None:
    policy = HostPolicy(
        maintenance_timeout_s=timeout,
        non_migratable=NonMigratablePolicy.SHUTDOWN if shutdown else NonMigratablePolicy.BLOCK,
    )
    limits = MigrationLimits(5, per_node)
    on_host = {f"v{i}": vm(f"v{i}", live_migratable=i not in pinned) for i in range(n_vms)}
    ends: dict[str, int] = {}
    cordoned = False
    status: HostStatus | None = None
    for t, local in enumerate([*modes, *([False] * 10)]):
        for name in [n for n, end in ends.items() if end <= t]:
            del ends[name]
            on_host.pop(name, None)
        mode = LOCAL if local else NONE
        o = obs(
            t,
            mode=mode,
            vms=tuple(on_host.values()),
            node=NodeObservation(cordoned=cordoned),
            limits=limits,
            policy=policy,
        )
        s = step(status, o)
        status = s.status
        for a in s.actions:
            if isinstance(a, Cordon):
                cordoned = True
            elif isinstance(a, Uncordon):
                cordoned = False
            elif isinstance(a, CreateMigration):
                name = a.migration.vm.name
                assert mode is LOCAL
                assert on_host[name].migration is not MigrationState.IN_FLIGHT
                assert on_host[name].live_migratable
                on_host[name] = replace(on_host[name], migration=MigrationState.IN_FLIGHT)
                ends[name] = t + durations[int(name[1:])]
            elif isinstance(a, DeleteMigration):
                on_host[a.vm.name] = replace(on_host[a.vm.name], migration=MigrationState.NONE)
                ends.pop(a.vm.name, None)
            elif isinstance(a, ShutdownVM):
                on_host[a.vm.name] = replace(on_host[a.vm.name], stopping=True)
                ends[a.vm.name] = t + 1
        in_flight = sum(1 for v in on_host.values() if v.migration is MigrationState.IN_FLIGHT)
        assert in_flight <= per_node  # never exceeded
        if status.state is HostState.MAINTENANCE:
            assert cordoned and not on_host
        if status.state is HostState.PREPARING_FOR_MAINTENANCE:
            assert cordoned and mode is LOCAL
    # the run ends with mode none for 10 ticks: back Up, uncordoned, no migration of ours left
    assert status is not None and status.state is HostState.UP
    assert not cordoned
    assert all(v.migration is not MigrationState.IN_FLIGHT for v in on_host.values())
