"""The rolling planner: PreMaintenance ahead of the slot, CloudStack's polling in its order
(the benchmark's baseline), and hook scripts that are missing before the run or a stage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hosted_engine.logic.drain import DrainVM, TargetHost
from hosted_engine.logic.host_lifecycle import EmitEvent, SetCondition
from hosted_engine.logic.rolling import (
    CLOUDSTACK_MAINTENANCE_POLL_S,
    CLOUDSTACK_PING_INTERVAL_S,
    EXIT_SKIP,
    DeleteHook,
    EnterMaintenance,
    HostPhase,
    HostView,
    JobState,
    JobView,
    RollingObservation,
    RollingSpec,
    RollingStep,
    RunHook,
    RunPhase,
    RunState,
    Scope,
    SimDurations,
    Stage,
    StageResult,
    cloudstack_order,
    job_name,
    poll_deadline,
    simulate,
    step,
)

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


def host(name: str, group: str = "g1", *, vms: int = 2) -> HostView:
    return HostView(
        name=name,
        capacity=TargetHost(name, 100 * GiB + vms * 2 * GiB, 64000, vms * 2 * GiB, 0),
        labels={"cluster": group},
        group=group,
        vms=tuple(DrainVM(f"{name}-vm{i}", "ns", 2 * GiB, 500) for i in range(vms)),
    )


def fleet(groups: int = 1, per_group: int = 4) -> list[HostView]:
    return [host(f"h{g}{i}", f"g{g}") for g in range(groups) for i in range(per_group)]


def spec(**kw: object) -> RollingSpec:
    base: dict[str, object] = {"scope": Scope(group_label_key="cluster"), "hooks": HOOKS}
    base.update(kw)
    return RollingSpec(**base)  # type: ignore[arg-type]


def observe(at: float, hosts: Sequence[HostView], jobs: dict[str, JobView] | None = None,
            missing: dict[Stage, str] | None = None) -> RollingObservation:
    return RollingObservation("rm", T0 + timedelta(seconds=at), hosts, jobs or {}, 10,
                              missing_hooks=missing or {})


def done(code: int = 0, at: float = 0) -> JobView:
    state = JobState.SUCCEEDED if code == 0 else JobState.FAILED
    return JobView(state, code, "", T0 + timedelta(seconds=at))


def runs(s: RollingStep) -> list[tuple[str, Stage]]:
    return [(a.host, a.stage) for a in s.actions if isinstance(a, RunHook)]


def reasons(s: RollingStep) -> list[str]:
    return [a.reason for a in s.actions if isinstance(a, EmitEvent)]


def through_preflight(sp: RollingSpec, hosts: Sequence[HostView]) -> tuple[RunState, float]:
    """Start the run and let every PreFlight succeed; returns the state at t=1."""
    first = step(None, sp, observe(0, hosts))
    jobs = {job_name("rm", h.name, Stage.PRE_FLIGHT): done() for h in hosts}
    second = step(first.state, sp, observe(1, hosts, jobs))
    return second.state, 1.0


# ------------------------------------------------------------------ PreMaintenance ahead


def test_ahead_runs_premaintenance_of_the_next_hosts_in_line_only() -> None:
    hosts = fleet(per_group=5)
    sp = spec(max_unavailable=1, pre_maintenance_ahead=True)
    first = step(None, sp, observe(0, hosts))
    jobs = {job_name("rm", h.name, Stage.PRE_FLIGHT): done() for h in hosts}
    s = step(first.state, sp, observe(1, hosts, jobs))
    # h00 holds the one slot; only h01 (the next in line, maxUnavailable = 1) runs ahead
    assert sorted(runs(s)) == [("h00", Stage.PRE_MAINTENANCE), ("h01", Stage.PRE_MAINTENANCE)]
    assert s.state.host("h00").phase is HostPhase.PRE_MAINTENANCE
    assert s.state.host("h01").phase is HostPhase.READY  # still waiting for its slot
    assert all(not s.state.host(n).stages.get("PreMaintenance") for n in ("h02", "h03", "h04"))


def test_without_ahead_the_next_host_waits_for_its_slot() -> None:
    hosts = fleet(per_group=3)
    state, _ = through_preflight(spec(max_unavailable=1), hosts)
    assert "PreMaintenance" not in state.host("h01").stages
    assert "PreMaintenance" in state.host("h00").stages


def test_ahead_result_is_used_when_the_slot_frees_and_capacity_is_checked_then() -> None:
    hosts = fleet(per_group=2)
    sp = spec(max_unavailable=1, pre_maintenance_ahead=True)
    state, _ = through_preflight(sp, hosts)
    pm = {h.name: job_name("rm", h.name, Stage.PRE_MAINTENANCE) for h in hosts}
    jobs = {pm["h00"]: done(), pm["h01"]: done()}
    s = step(state, sp, observe(2, hosts, jobs))
    # h01's PreMaintenance finished while h00 holds the slot: recorded, h01 still waits
    assert s.state.host("h01").stages["PreMaintenance"].result is StageResult.SUCCEEDED
    assert s.state.host("h01").phase is HostPhase.READY
    assert [a.host for a in s.actions if isinstance(a, EnterMaintenance)] == ["h00"]
    # h00 goes through its stages; once it is Up again (its PostMaintenance runs outside the
    # slot) h01 enters maintenance at once, its PreMaintenance is not run again
    for stage in (Stage.MAINTENANCE, Stage.POST_MAINTENANCE):
        jobs[job_name("rm", "h00", stage)] = done()
    down = [replace(h, state="Maintenance") if h.name == "h00" else h for h in hosts]
    state = s.state
    for at in (3, 4):  # Maintenance hook; maintenance ended
        state = step(state, sp, observe(at, down, jobs)).state
    s = step(state, sp, observe(5, hosts, jobs))
    assert s.state.host("h00").phase is HostPhase.POST_MAINTENANCE
    assert s.state.host("h01").phase is HostPhase.ENTERING_MAINTENANCE
    assert ("h01", Stage.PRE_MAINTENANCE) not in runs(s)
    assert [a.host for a in s.actions if isinstance(a, EnterMaintenance)] == ["h01"]
    # a host that no longer fits is refused at its slot, even with its PreMaintenance done
    full = [replace(h, capacity=replace(h.capacity, allocatable_memory_bytes=0))
            if h.name == "h00" else h for h in hosts]
    s = step(state, sp, observe(5, full, jobs))
    assert s.state.host("h01").phase is HostPhase.FAILED
    assert not [a for a in s.actions if isinstance(a, EnterMaintenance)]


def test_ahead_exit_70_skips_and_failure_fails_the_waiting_host() -> None:
    hosts = fleet(per_group=3)
    sp = spec(max_unavailable=2, pre_maintenance_ahead=True, forced=True)
    state, _ = through_preflight(sp, hosts)
    # h00 and h01 hold the two slots; h02 runs ahead
    assert state.host("h02").stages["PreMaintenance"].result is None
    jobs = {job_name("rm", "h02", Stage.PRE_MAINTENANCE): done(EXIT_SKIP)}
    s = step(state, sp, observe(2, hosts, jobs))
    assert s.state.host("h02").phase is HostPhase.SKIPPED
    assert "HostSkipped" in reasons(s)
    jobs = {job_name("rm", "h02", Stage.PRE_MAINTENANCE): done(4)}
    s = step(state, sp, observe(2, hosts, jobs))
    assert s.state.host("h02").phase is HostPhase.FAILED  # forced: skipped, the run goes on
    assert s.state.phase is RunPhase.RUNNING


def test_stopping_cancels_a_waiting_host_and_deletes_its_ahead_hook() -> None:
    hosts = fleet(per_group=2)
    sp = spec(max_unavailable=1, pre_maintenance_ahead=True)
    state, _ = through_preflight(sp, hosts)
    # h00's PreMaintenance fails (not forced): the run stops; h01's hook running ahead goes
    jobs = {job_name("rm", "h00", Stage.PRE_MAINTENANCE): done(3)}
    s = step(state, sp, observe(2, hosts, jobs))
    assert s.state.phase is RunPhase.FAILED
    assert s.state.host("h01").phase is HostPhase.CANCELLED
    deleted = [a.job_name for a in s.actions if isinstance(a, DeleteHook)]
    assert deleted == [job_name("rm", "h01", Stage.PRE_MAINTENANCE)]


def test_ahead_is_faster_in_simulation_and_keeps_the_same_hosts_down() -> None:
    hosts = fleet(groups=2, per_group=5)
    base = spec(max_unavailable=2)
    plain = simulate(base, hosts, DUR)
    ahead = simulate(replace(base, pre_maintenance_ahead=True), hosts, DUR)
    assert ahead.total_s < plain.total_s
    assert ahead.max_unavailable_seen == plain.max_unavailable_seen == 2
    assert ahead.jobs_created == plain.jobs_created == 10 * 4
    assert ahead.state.phase is RunPhase.SUCCEEDED
    assert all(h.phase is HostPhase.DONE for h in ahead.state.hosts)


def test_cloudstack_order_never_runs_ahead() -> None:
    assert cloudstack_order(spec(pre_maintenance_ahead=True)).pre_maintenance_ahead is False


# ------------------------------------------------------------------ CloudStack's polling


def test_stage_end_is_seen_only_at_the_next_poll() -> None:
    hosts = [host("h00", vms=0), host("h01", vms=0)]
    sp = cloudstack_order(spec(scope=Scope(host_names=("h00",))), ping_interval_s=10,
                          maintenance_poll_s=30)
    first = step(None, sp, observe(0, hosts))
    pf = job_name("rm", "h00", Stage.PRE_FLIGHT)
    assert poll_deadline(first.state, sp, T0) is None  # no wake-up while the hook runs
    # the hook ended at 3 s; CloudStack sees it at its poll at 10 s, not before
    s = step(first.state, sp, observe(3, hosts, {pf: done(at=3)}))
    assert s.state.host("h00").stages["PreFlight"].result is None
    assert poll_deadline(s.state, sp, T0) == T0 + timedelta(seconds=10)
    s = step(s.state, sp, observe(10, hosts, {pf: done(at=3)}))
    assert s.state.host("h00").stages["PreFlight"].result is StageResult.SUCCEEDED


def test_an_end_seen_after_a_poll_waits_for_the_next_one_across_restarts() -> None:
    hosts = [host("h00", vms=0), host("h01", vms=0)]
    sp = cloudstack_order(spec(scope=Scope(host_names=("h00",))), ping_interval_s=10)
    first = step(None, sp, observe(0, hosts))
    pf = job_name("rm", "h00", Stage.PRE_FLIGHT)
    s = step(first.state, sp, observe(10, hosts, {pf: JobView(JobState.RUNNING)}))
    s = step(s.state, sp, observe(12, hosts, {pf: done(at=11)}))
    assert s.state.host("h00").stages["PreFlight"].result is None
    # the state goes through the status between reconciles and keeps its count of polls
    state = RunState.from_dict(s.state.to_dict())
    assert step(state, sp, observe(19, hosts, {pf: done(at=11)})).state.host(
        "h00").stages["PreFlight"].result is None
    assert step(state, sp, observe(20, hosts, {pf: done(at=11)})).state.host(
        "h00").stages["PreFlight"].result is StageResult.SUCCEEDED


def test_maintenance_is_seen_only_at_the_30s_checks() -> None:
    hosts = [host("h00"), host("h01")]
    sp = cloudstack_order(spec(scope=Scope(host_names=("h00",)), hooks={}),
                          ping_interval_s=10, maintenance_poll_s=30)
    s = step(None, sp, observe(0, hosts))
    assert s.state.host("h00").phase is HostPhase.ENTERING_MAINTENANCE
    in_maintenance = [replace(hosts[0], state="Maintenance"), hosts[1]]
    s2 = step(s.state, sp, observe(5, in_maintenance))
    assert s2.state.host("h00").phase is HostPhase.ENTERING_MAINTENANCE
    assert poll_deadline(s2.state, sp, T0 + timedelta(seconds=5)) == T0 + timedelta(seconds=30)
    s3 = step(s2.state, sp, observe(30, in_maintenance))
    assert s3.state.host("h00").phase in (HostPhase.MAINTENANCE, HostPhase.ENDING_MAINTENANCE)


def test_polling_slows_cloudstack_order_in_simulation_by_its_poll_waits() -> None:
    hosts = fleet(per_group=2)
    watch = simulate(cloudstack_order(spec()), hosts, DUR)
    polled = simulate(cloudstack_order(spec(), ping_interval_s=CLOUDSTACK_PING_INTERVAL_S,
                                       maintenance_poll_s=CLOUDSTACK_MAINTENANCE_POLL_S),
                      hosts, DUR)
    # every stage lasts a multiple of the poll already (30/60/300/60 s); the 120 s drain is
    # seen at the next 30 s check (120 s), the 10 s activation is not polled: same total
    assert polled.total_s == watch.total_s
    slow = replace(DUR, drain_s=lambda _h: 100, hook_s={**DUR.hook_s, Stage.MAINTENANCE: 295})
    watch = simulate(cloudstack_order(spec()), hosts, slow)
    polled = simulate(cloudstack_order(spec(), ping_interval_s=10, maintenance_poll_s=30),
                      hosts, slow)
    # per host: Maintenance 295 -> 300 s, drain 100 -> 120 s
    assert polled.total_s - watch.total_s == 2 * (5 + 20)  # two hosts
    assert polled.max_unavailable_seen == 1


# ------------------------------------------------------------------ missing hook scripts


def test_a_missing_script_keeps_the_run_pending_with_a_condition_and_a_warning() -> None:
    hosts = fleet(per_group=2)
    message = "spec.stages.maintenance.script: ConfigMap hooks/x not found"
    s = step(None, spec(), observe(0, hosts, missing={Stage.MAINTENANCE: message}))
    assert s.state.phase is RunPhase.PENDING and not s.state.hosts
    assert not runs(s)
    cond = [a for a in s.actions if isinstance(a, SetCondition)]
    assert [(c.type, c.status, c.reason) for c in cond] == [
        ("Ready", "False", "HookScriptMissing")]
    assert message in cond[0].message
    events = [a for a in s.actions if isinstance(a, EmitEvent)]
    assert [(e.type, e.reason) for e in events] == [("Warning", "HookScriptMissing")]
    assert "spec.stages.maintenance.script" in events[0].message
    # once it is there the run starts
    assert step(None, spec(), observe(1, hosts)).state.phase is RunPhase.PRE_FLIGHT


def test_a_script_missing_at_its_stage_fails_the_stage_without_a_job() -> None:
    hosts = fleet(per_group=2)
    state, _ = through_preflight(spec(), hosts)
    jobs = {job_name("rm", "h00", Stage.PRE_MAINTENANCE): done()}
    message = "spec.stages.maintenance.script: ConfigMap hooks/x has no key 'run.sh'"
    views = [replace(h, state="Maintenance") if h.name == "h00" else h for h in hosts]
    state = step(state, spec(), observe(2, hosts, jobs)).state
    s = step(state, spec(), observe(3, views, jobs, missing={Stage.MAINTENANCE: message}))
    rec = s.state.host("h00").stages["Maintenance"]
    assert rec.result is StageResult.FAILED and message in rec.message
    assert ("h00", Stage.MAINTENANCE) not in runs(s)
    assert "HookScriptMissing" in reasons(s)
    assert s.state.host("h00").phase is HostPhase.FAILED
    assert s.state.stopping  # not forced: the run stops
