"""The RollingMaintenance planner: ordering, capacity, exit 70, forced, pause/abort, restart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hosted_engine.logic.drain import DrainVM, MigrationLimits, TargetHost
from hosted_engine.logic.host_lifecycle import EmitEvent, SetCondition
from hosted_engine.logic.rolling import (
    EXIT_SKIP,
    DeleteHook,
    DisableGroupScheduling,
    EnableGroupScheduling,
    EndMaintenance,
    EnterMaintenance,
    HostPhase,
    HostView,
    JobState,
    JobView,
    LabelSelector,
    RollingObservation,
    RollingSpec,
    RollingStep,
    RunHook,
    RunPhase,
    RunState,
    Scope,
    SelectorRequirement,
    SimDurations,
    Stage,
    StageResult,
    cloudstack_order,
    job_name,
    resolve_scope,
    simulate,
    step,
)
from hypothesis import given, settings
from hypothesis import strategies as st

GiB = 1 << 30
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOOKS = {stage: ("/hooks/run", stage.value) for stage in Stage}
DUR = SimDurations(
    hook_s={
        Stage.PRE_FLIGHT: 30,
        Stage.PRE_MAINTENANCE: 60,
        Stage.MAINTENANCE: 300,
        Stage.POST_MAINTENANCE: 60,
    },
    drain_s=lambda _h: 120,
    activate_s=10,
)
ONE = Scope(host_names=("h00",))
H = 60 + 120 + 300 + 10  # the time a host is unavailable (PreMaintenance .. Up again)


def host(
    name: str,
    group: str = "g1",
    *,
    vms: int = 3,
    free_gib: int = 100,
    engine: bool = False,
    labels: dict[str, str] | None = None,
) -> HostView:
    return HostView(
        name=name,
        capacity=TargetHost(
            name, free_gib * GiB + vms * 2 * GiB, 64000, vms * 2 * GiB, 0, may_run_engine=engine
        ),
        labels={"cluster": group, **(labels or {})},
        group=group,
        vms=tuple(DrainVM(f"{name}-vm{i}", "ns", 2 * GiB, 500) for i in range(vms)),
    )


def fleet(groups: int = 2, per_group: int = 3, **kw: object) -> list[HostView]:
    return [
        host(f"h{g}{i}", f"g{g}", **kw)  # type: ignore[arg-type]
        for g in range(groups)
        for i in range(per_group)
    ]


def spec(**kw: object) -> RollingSpec:
    base: dict[str, object] = {"scope": Scope(group_label_key="cluster"), "hooks": HOOKS}
    base.update(kw)
    return RollingSpec(**base)  # type: ignore[arg-type]


def observe(
    at: float, hosts: Sequence[HostView], jobs: dict[str, JobView] | None = None, poll: float = 10
) -> RollingObservation:
    return RollingObservation("rm", T0 + timedelta(seconds=at), hosts, jobs or {}, poll)


def of(s: RollingStep, kind: type) -> list[object]:
    return [a for a in s.actions if isinstance(a, kind)]


def reasons(s: RollingStep) -> list[str]:
    return [a.reason for a in s.actions if isinstance(a, EmitEvent)]


def conds(s: RollingStep) -> dict[str, tuple[str, str]]:
    return {a.type: (a.status, a.reason) for a in s.actions if isinstance(a, SetCondition)}


def phases(state: RunState) -> dict[str, HostPhase]:
    return {h.name: h.phase for h in state.hosts}


# ------------------------------------------------------------------ validation and scope


@pytest.mark.parametrize(
    ("rspec", "poll", "reason"),
    [
        (spec(scope=Scope()), 10, "InvalidScope"),
        (spec(scope=Scope(host_names=("h00",), group_label_key="cluster")), 10, "InvalidScope"),
        (spec(stage_timeout_s=5), 10, "StageTimeoutBelowPollInterval"),
        (spec(hook_timeouts_s={Stage.MAINTENANCE: 5}), 10, "StageTimeoutBelowPollInterval"),
        (spec(stage_timeout_s=5), 1, None),  # allowed with a 1 s poll interval
        (spec(max_unavailable=0), 10, "InvalidMaxUnavailable"),
        (spec(scope=Scope(host_names=("nope",))), 10, "EmptyScope"),
    ],
)
def test_refuses_to_start(rspec: RollingSpec, poll: float, reason: str | None) -> None:
    s = step(None, rspec, observe(0, fleet(), poll=poll))
    if reason is None:
        assert s.state.phase is RunPhase.PRE_FLIGHT
        return
    assert s.state.phase is RunPhase.FAILED and s.state.reason == reason
    assert conds(s)["Failed"] == ("True", reason)
    assert not of(s, RunHook)
    assert step(s.state, rspec, observe(1, fleet())).actions == ()  # terminal


def test_scope_forms_resolve_to_ordered_groups() -> None:
    hosts = [*fleet(groups=3, per_group=2), host("lone", "", labels={"role": "gpu"})]
    by_names = resolve_scope(Scope(host_names=("h11", "h10", "h01", "ghost")), hosts)
    assert by_names == [("g0", "h01"), ("g1", "h11"), ("g1", "h10")]
    by_groups = resolve_scope(Scope(group_label_key="cluster", group_values=("g2", "g0")), hosts)
    assert by_groups == [("g0", "h00"), ("g0", "h01"), ("g2", "h20"), ("g2", "h21")]
    selector = LabelSelector(
        match_labels={"role": "gpu"},
        match_expressions=(SelectorRequirement("cluster", "NotIn", ("g0",)),),
    )
    assert resolve_scope(Scope(selector=selector), hosts) == [("", "lone")]
    exists = LabelSelector(match_expressions=(SelectorRequirement("role", "DoesNotExist"),))
    assert len(resolve_scope(Scope(selector=exists), hosts)) == 6


def test_job_names_are_deterministic_and_short() -> None:
    name = job_name("rolling-" * 10, "host.example.com", Stage.POST_MAINTENANCE)
    assert name == job_name("rolling-" * 10, "host.example.com", Stage.POST_MAINTENANCE)
    assert len(name) <= 63 and name == name.lower() and "." not in name
    assert name != job_name("rolling-" * 10, "host.example.com", Stage.PRE_FLIGHT)


# ------------------------------------------------------------------ ordering


def test_cloudstack_order_one_host_at_a_time_in_order() -> None:
    hosts = fleet(groups=2, per_group=3)
    order: list[str] = []
    s: RunState | None = None
    world = {h.name: "Up" for h in hosts}
    jobs: dict[str, JobView] = {}
    for t in range(0, 400):
        views = [replace(h, state=world[h.name]) for h in hosts]
        r = step(s, spec(), observe(t, views, jobs))
        s = r.state
        for a in r.actions:
            if isinstance(a, RunHook):
                jobs[a.job_name] = JobView(JobState.SUCCEEDED, 0, "ok")
                assert a.command == ("/hooks/run", a.stage.value)
            elif isinstance(a, EnterMaintenance):
                if world[a.host] == "Up":
                    order.append(a.host)
                world[a.host] = "Maintenance"
            elif isinstance(a, EndMaintenance):
                world[a.host] = "Up"
        assert sum(1 for v in world.values() if v != "Up") <= 1
        if s.terminal:
            break
    assert s is not None and s.phase is RunPhase.SUCCEEDED
    assert order == ["h00", "h01", "h02", "h10", "h11", "h12"]
    assert set(phases(s).values()) == {HostPhase.DONE}


def test_groups_scheduling_disabled_while_they_run_and_restored() -> None:
    result = simulate(spec(), fleet(), DUR)
    assert result.state.phase is RunPhase.SUCCEEDED
    assert result.state.disabled_groups == []


def test_simulated_sequential_run_matches_cloudstack_arithmetic() -> None:
    hosts = fleet(groups=4, per_group=5)
    cs = simulate(cloudstack_order(spec()), hosts, DUR)
    assert cs.max_unavailable_seen == 1
    assert cs.total_s == 20 * 30 + 20 * (H + 60)  # every PreFlight, then host after host


def test_max_unavailable_two_is_faster_at_equal_safety() -> None:
    hosts = fleet(groups=4, per_group=5)
    ours = simulate(spec(max_unavailable=2), hosts, DUR, through_status=True)
    assert ours.state.phase is RunPhase.SUCCEEDED
    assert ours.max_unavailable_seen == 2
    # PreFlight all at once; per group slots start at 0, 0, H, H, 2H, then PostMaintenance
    assert ours.total_s == 30 + 4 * (3 * H + 60)
    cs = simulate(cloudstack_order(spec()), hosts, DUR)
    assert cs.total_s / ours.total_s > 1.8


def test_max_unavailable_limited_by_capacity() -> None:
    # each host has 6 GiB of VMs and 4 GiB free: the 3 others hold one host, never two
    hosts = [host(f"h{i}", "g", vms=3, free_gib=4) for i in range(4)]
    result = simulate(spec(max_unavailable=3), hosts, DUR)
    assert result.state.phase is RunPhase.SUCCEEDED
    assert result.max_unavailable_seen == 1
    roomy = simulate(spec(max_unavailable=3), [host(f"h{i}", "g") for i in range(4)], DUR)
    assert roomy.max_unavailable_seen == 3


def test_engine_spares_kept() -> None:
    hosts = [host(f"h{i}", "g", engine=i < 3) for i in range(5)]
    result = simulate(spec(max_unavailable=2), hosts, DUR)
    assert result.state.phase is RunPhase.SUCCEEDED
    engine_hosts = {"h0", "h1", "h2"}
    # never two of the three engine hosts down at once: the engine and one spare stay
    assert all(len(down & engine_hosts) <= 1 for _, down in result.timeline)
    assert max(len(down) for _, down in result.timeline) == 2  # others still pair up
    base = simulate(spec(max_unavailable=2), [host(f"h{i}", "g") for i in range(5)], DUR)
    assert result.total_s > base.total_s


def test_whole_scope_capacity_check_before_anything() -> None:
    hosts = [host("h0", vms=3, free_gib=0), host("h1", vms=30, free_gib=10)]
    s = step(None, spec(), observe(0, hosts))
    assert s.state.phase is RunPhase.FAILED and s.state.reason == "InsufficientMemory"
    assert not of(s, RunHook)
    forced = step(None, spec(forced=True), observe(0, hosts))
    assert forced.state.phase is RunPhase.PRE_FLIGHT
    assert phases(forced.state)["h1"] is HostPhase.FAILED
    assert [a.host for a in of(forced, RunHook)] == ["h0"]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ exit 70, failures, forced


def test_exit_70_at_preflight_and_premaintenance_skips_the_host() -> None:
    codes = {("h01", Stage.PRE_FLIGHT): EXIT_SKIP, ("h02", Stage.PRE_MAINTENANCE): EXIT_SKIP}
    result = simulate(spec(), fleet(groups=1), replace(DUR, exit_codes=codes))
    st_ = result.state
    assert st_.phase is RunPhase.SUCCEEDED and st_.reason == "Completed"
    assert phases(st_) == {
        "h00": HostPhase.DONE,
        "h01": HostPhase.SKIPPED,
        "h02": HostPhase.SKIPPED,
    }
    assert st_.host("h01").stages[Stage.PRE_FLIGHT.value].result is StageResult.SKIPPED
    assert Stage.PRE_MAINTENANCE.value not in st_.host("h01").stages
    assert st_.host("h02").maintenance_requested_at is None  # never entered maintenance
    # h02's PreMaintenance runs while h00's PostMaintenance does (h00 is Up again)
    assert result.total_s == 30 + H + 60


def test_exit_70_at_maintenance_is_a_failure() -> None:
    codes = {("h00", Stage.MAINTENANCE): EXIT_SKIP}
    result = simulate(spec(), fleet(groups=1), replace(DUR, exit_codes=codes))
    assert result.state.phase is RunPhase.FAILED
    assert result.state.host("h00").phase is HostPhase.FAILED


def test_preflight_failure_stops_the_run_unless_forced() -> None:
    codes = {("h01", Stage.PRE_FLIGHT): 1}
    result = simulate(spec(), fleet(groups=1), replace(DUR, exit_codes=codes))
    assert result.state.phase is RunPhase.FAILED
    assert all(h.maintenance_requested_at is None for h in result.state.hosts)
    forced = simulate(spec(forced=True), fleet(groups=1), replace(DUR, exit_codes=codes))
    assert forced.state.phase is RunPhase.SUCCEEDED
    assert forced.state.reason == "CompletedWithFailures"
    assert phases(forced.state) == {
        "h00": HostPhase.DONE,
        "h01": HostPhase.FAILED,
        "h02": HostPhase.DONE,
    }


def test_failing_maintenance_hook_without_forced_cancels_and_ends_the_run() -> None:
    hosts = fleet(groups=2, per_group=3)
    codes = {("h01", Stage.MAINTENANCE): 3}
    result = simulate(spec(), hosts, replace(DUR, exit_codes=codes))
    s = result.state
    assert s.phase is RunPhase.FAILED and s.reason == "StageFailed"
    assert "h01" in s.message and "exit code 3" in s.message
    h01 = s.host("h01")
    assert h01.phase is HostPhase.FAILED and h01.maintenance_ended  # maintenance cancelled
    assert h01.stages[Stage.MAINTENANCE.value].exit_code == 3
    assert Stage.POST_MAINTENANCE.value not in h01.stages
    assert phases(s)["h00"] is HostPhase.DONE
    assert {n for n, p in phases(s).items() if p is HostPhase.CANCELLED} == {
        "h02",
        "h10",
        "h11",
        "h12",
    }
    assert s.disabled_groups == []  # scheduling restored on failure too


def test_failing_maintenance_hook_with_forced_skips_the_host() -> None:
    codes = {("h01", Stage.MAINTENANCE): 3}
    result = simulate(spec(forced=True), fleet(groups=2), replace(DUR, exit_codes=codes))
    s = result.state
    assert s.phase is RunPhase.SUCCEEDED and s.reason == "CompletedWithFailures"
    assert [n for n, p in phases(s).items() if p is not HostPhase.DONE] == ["h01"]
    assert result.max_unavailable_seen == 1  # the cancelled host came back before the next


def test_stage_timeout_deletes_the_hook_and_fails() -> None:
    hosts = fleet(groups=1, per_group=2)  # h01 stays out of scope: it takes the VMs
    rspec = spec(scope=ONE, stage_timeout_s=100, hook_timeouts_s={Stage.MAINTENANCE: 900})
    s = step(None, rspec, observe(0, hosts))
    job = next(a for a in s.actions if isinstance(a, RunHook))
    assert job.timeout_s == 100
    running = {job.job_name: JobView(JobState.RUNNING)}
    s = step(s.state, rspec, observe(50, hosts, running))
    assert not of(s, DeleteHook)
    s = step(s.state, rspec, observe(100, hosts, running))
    assert of(s, DeleteHook) == [DeleteHook(job.job_name)]
    assert s.state.phase is RunPhase.FAILED
    assert s.state.host("h00").stages["PreFlight"].result is StageResult.TIMED_OUT


def test_maintenance_refused_or_too_slow_fails_the_host() -> None:
    hosts = fleet(groups=1, per_group=2)  # h01 stays out of scope: it takes the VMs
    rspec = spec(scope=ONE, hooks={}, maintenance_timeout_s=100)
    s = step(None, rspec, observe(0, hosts))
    assert of(s, EnterMaintenance) == [EnterMaintenance("h00")]
    assert of(s, DisableGroupScheduling)
    refused = [replace(hosts[0], maintenance_refused="EngineHasNoHost"), hosts[1]]
    r = step(s.state, rspec, observe(5, refused))
    assert r.state.phase is RunPhase.FAILED and "EngineHasNoHost" in r.state.message
    assert of(r, EndMaintenance) and of(r, EnableGroupScheduling)
    preparing = [replace(hosts[0], state="PreparingForMaintenance"), hosts[1]]
    w = step(s.state, rspec, observe(50, preparing))
    assert of(w, EnterMaintenance) and w.state.phase is RunPhase.RUNNING
    t = step(w.state, rspec, observe(100, preparing))
    assert t.state.phase is RunPhase.FAILED and "after 100s" in t.state.message


def test_payload_appended_to_every_stage() -> None:
    rspec = spec(scope=ONE, payload=("--kernel", "6.1"))
    result_actions: list[RunHook] = []
    s: RunState | None = None
    hosts = fleet(groups=1, per_group=2)  # h01 stays out of scope: it takes the VMs
    world = "Up"
    jobs: dict[str, JobView] = {}
    for t in range(50):
        r = step(s, rspec, observe(t, [replace(hosts[0], state=world), hosts[1]], jobs))
        s = r.state
        for a in r.actions:
            if isinstance(a, RunHook):
                result_actions.append(a)
                jobs[a.job_name] = JobView(JobState.SUCCEEDED, 0)
            elif isinstance(a, EnterMaintenance):
                world = "Maintenance"
            elif isinstance(a, EndMaintenance):
                world = "Up"
        if s.terminal:
            break
    assert [a.stage for a in result_actions] == list(Stage)
    assert all(a.command[-2:] == ("--kernel", "6.1") for a in result_actions)


# ------------------------------------------------------------------ pause, resume, abort


def test_pause_holds_new_stages_and_resume_goes_on() -> None:
    hosts = fleet(groups=1, per_group=2)
    s = step(None, spec(), observe(0, hosts))
    jobs = {a.job_name: JobView(JobState.RUNNING) for a in of(s, RunHook)}  # type: ignore[attr-defined]
    assert len(jobs) == 2  # both PreFlights at once
    paused = step(s.state, spec(paused=True), observe(1, hosts, jobs))
    assert conds(paused)["Paused"] == ("True", "PausedByUser")
    done = {k: JobView(JobState.SUCCEEDED, 0) for k in jobs}
    p2 = step(paused.state, spec(paused=True), observe(2, hosts, done))
    assert not of(p2, RunHook) and not of(p2, EnterMaintenance)  # results recorded, nothing new
    assert p2.state.phase is RunPhase.RUNNING
    assert all(h.stages["PreFlight"].result is StageResult.SUCCEEDED for h in p2.state.hosts)
    resumed = step(p2.state, spec(), observe(3, hosts, done))
    assert conds(resumed)["Paused"] == ("False", "Resumed")
    assert [a.stage for a in of(resumed, RunHook)] == [Stage.PRE_MAINTENANCE]  # type: ignore[attr-defined]


def test_abort_deletes_hooks_ends_maintenance_restores_scheduling() -> None:
    hosts = fleet(groups=1, per_group=3)
    rspec = spec(
        scope=Scope(host_names=("h00", "h01")),
        hooks={Stage.MAINTENANCE: ("/m",)},
        max_unavailable=2,
    )
    s = step(None, rspec, observe(0, hosts))
    assert len(of(s, EnterMaintenance)) == 2
    in_maint = [replace(h, state="Maintenance") for h in hosts[:2]] + hosts[2:]
    s = step(s.state, rspec, observe(10, in_maint))
    hooks = of(s, RunHook)
    assert len(hooks) == 2
    running = {a.job_name: JobView(JobState.RUNNING) for a in hooks}  # type: ignore[attr-defined]
    a = step(s.state, replace(rspec, abort=True), observe(20, in_maint, running))
    assert a.state.phase is RunPhase.ABORTED
    assert {d.job_name for d in of(a, DeleteHook)} == set(running)  # type: ignore[attr-defined]
    assert {e.host for e in of(a, EndMaintenance)} == {"h00", "h01"}  # type: ignore[attr-defined]
    assert of(a, EnableGroupScheduling) and a.state.disabled_groups == []
    assert "RollingMaintenanceAborted" in reasons(a)


# ------------------------------------------------------------------ restart


def test_state_round_trips_through_json() -> None:
    result = simulate(spec(), fleet(), replace(DUR, exit_codes={("h01", Stage.PRE_FLIGHT): 70}))
    data = json.loads(json.dumps(result.state.to_dict()))
    assert "groupIndex" in data and "jobName" in data["hosts"][0]["stages"]["PreFlight"]
    assert RunState.from_dict(data) == result.state


def test_restart_every_step_never_reruns_a_stage() -> None:
    hosts = fleet(groups=2, per_group=3)
    result = simulate(spec(max_unavailable=2), hosts, DUR, through_status=True)
    assert result.state.phase is RunPhase.SUCCEEDED
    assert result.jobs_created == 4 * len(hosts)
    assert result.run_hook_actions == result.jobs_created  # no stage was run twice


def test_restart_after_the_hook_finished_records_it_without_rerun() -> None:
    hosts = fleet(groups=1, per_group=2)  # h01 stays out of scope: it takes the VMs
    s = step(None, spec(scope=ONE), observe(0, hosts))
    (hook,) = of(s, RunHook)
    saved = json.loads(json.dumps(s.state.to_dict()))
    # the operator dies; the Job finishes; a new operator reads the status back
    finished = {hook.job_name: JobView(JobState.SUCCEEDED, 0, "all good")}  # type: ignore[attr-defined]
    r = step(RunState.from_dict(saved), spec(scope=ONE), observe(40, hosts, finished))
    rec = r.state.host("h00").stages["PreFlight"]
    assert rec.result is StageResult.SUCCEEDED and rec.log_tail == "all good"
    assert [a.stage for a in of(r, RunHook)] == [Stage.PRE_MAINTENANCE]  # type: ignore[attr-defined]
    # a Job that never got created (crash between status write and create) is created again
    lost = step(RunState.from_dict(saved), spec(scope=ONE), observe(40, hosts, {}))
    assert [a.job_name for a in of(lost, RunHook)] == [hook.job_name]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ properties


@settings(max_examples=40, deadline=None)
@given(
    groups=st.integers(1, 3),
    per_group=st.integers(2, 4),
    max_unavailable=st.integers(1, 3),
    forced=st.booleans(),
    codes=st.dictionaries(
        st.tuples(st.integers(0, 2), st.integers(0, 3), st.sampled_from(list(Stage))),
        st.sampled_from([0, 1, EXIT_SKIP]),
        max_size=6,
    ),
)
def test_property_runs_end_safely(
    groups: int,
    per_group: int,
    max_unavailable: int,
    forced: bool,
    codes: dict[tuple[int, int, Stage], int],
) -> None:
    hosts = fleet(groups=groups, per_group=per_group)
    exit_codes = {(f"h{g}{i}", stage): c for (g, i, stage), c in codes.items()}
    rspec = spec(max_unavailable=max_unavailable, forced=forced)
    result = simulate(rspec, hosts, replace(DUR, exit_codes=exit_codes), through_status=True)
    s = result.state
    assert s.terminal and s.disabled_groups == []
    assert result.max_unavailable_seen <= max_unavailable
    assert result.run_hook_actions == result.jobs_created
    assert all(
        h.phase in (HostPhase.DONE, HostPhase.SKIPPED, HostPhase.FAILED, HostPhase.CANCELLED)
        for h in s.hosts
    )
    failing = {
        (h, stage)
        for (h, stage), c in exit_codes.items()
        if c == 1 or (c == EXIT_SKIP and stage in (Stage.MAINTENANCE, Stage.POST_MAINTENANCE))
    }
    failed_hosts = {h.name for h in s.hosts if h.phase is HostPhase.FAILED}
    if forced:
        assert s.phase is RunPhase.SUCCEEDED
        assert (s.reason == "CompletedWithFailures") == bool(failed_hosts)
    elif failed_hosts:
        assert s.phase is RunPhase.FAILED
    for name in failed_hosts:
        assert any(h == name for h, _ in failing)
    for h in s.hosts:
        if exit_codes.get((h.name, Stage.PRE_FLIGHT)) == EXIT_SKIP:
            assert h.phase in (HostPhase.SKIPPED, HostPhase.CANCELLED)
            assert h.maintenance_requested_at is None
        if h.phase is HostPhase.DONE:
            assert all(h.stages[st_.value].result is StageResult.SUCCEEDED for st_ in Stage)


def test_simulated_drains_share_the_cluster_migration_limit() -> None:
    hosts = [host(f"h{i}", "g") for i in range(6)]
    free = simulate(spec(hooks={}, max_unavailable=3), hosts, DUR)
    shared = simulate(
        spec(hooks={}, max_unavailable=3), hosts, replace(DUR, limits=MigrationLimits(5, 2))
    )
    # three hosts drain at once: 6 migrations wanted, 5 allowed -> the third drain is slower
    assert free.total_s == 2 * (120 + 10)
    assert shared.total_s == 2 * (120 * 6 / 5 + 10)


def test_hosts_not_up_at_the_start() -> None:
    hosts = fleet(groups=1, per_group=3)
    hosts[1] = replace(hosts[1], state="Maintenance")
    hosts[2] = replace(hosts[2], state="NonResponsive")
    s = step(None, spec(), observe(0, hosts))
    assert s.state.phase is RunPhase.FAILED and s.state.reason == "HostNotUp"
    forced = step(None, spec(forced=True), observe(0, hosts))
    assert phases(forced.state) == {
        "h00": HostPhase.PRE_FLIGHT,
        "h01": HostPhase.SKIPPED,  # the user's maintenance is left alone
        "h02": HostPhase.FAILED,
    }
    assert [a.host for a in of(forced, RunHook)] == ["h00"]  # type: ignore[attr-defined]
