"""The RollingMaintenance handler's pure mapping: spec -> planner spec, watched objects -> host
views, planner state <-> status (the whole planner run through the status at every step gives
the same run), hook Jobs (body and outcome), the Host's maintenance-request annotation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hosted_engine.adapters.jobs import (
    HookSource,
    JobOutcome,
    hook_job_body,
    job_outcome,
    tail,
)
from hosted_engine.handlers import host_mapping as hm
from hosted_engine.handlers import rollingmaintenance_mapping as rm
from hosted_engine.logic import rolling as rl
from hosted_engine.logic.drain import DrainVM, TargetHost
from hosted_engine.logic.host_lifecycle import MaintenanceMode
from hosted_engine.models import Host
from hosted_engine.models.host import LocalMaintenanceMode
from hosted_engine.models.rollingmaintenance import (
    HostRunState,
    RollingMaintenanceSpec,
    RollingMaintenanceStatus,
)
from hosted_engine.models.rollingmaintenance import RunState as RunStateValue

GiB = 1 << 30
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def spec(**extra: Any) -> RollingMaintenanceSpec:
    body: dict[str, Any] = {
        "scope": {"groups": {}},
        "stages": {
            "preFlight": {"image": "img", "command": ["/check", "-v"]},
            "maintenance": {"image": "img", "script": {"name": "hooks", "key": "upgrade.sh"},
                            "timeout": "2m"},
        },
        "payload": ["--dry-run"],
        "stageTimeout": "10m",
        "maxUnavailable": 2,
    }
    body.update(extra)
    return RollingMaintenanceSpec.model_validate(body)


# --------------------------------------------------------------------------------------------
# spec


def test_spec_maps_hooks_timeouts_and_scope() -> None:
    rs = rm.rolling_spec(spec())
    assert rs.scope.group_label_key == "hostedengine.io/group" and rs.scope.forms() == 1
    assert rs.hooks == {rl.Stage.PRE_FLIGHT: ("/check", "-v"),
                        rl.Stage.MAINTENANCE: ("/bin/sh", "/hooks/upgrade.sh")}
    assert rs.payload == ("--dry-run",)
    assert rs.stage_timeout_s == 600 and rs.maintenance_timeout_s == 600
    assert rs.hook_timeouts_s == {rl.Stage.MAINTENANCE: 120}
    assert rs.max_unavailable == 2 and not rs.forced and not rs.paused and not rs.abort


def test_selector_scope_matches_like_kubernetes() -> None:
    s = spec(scope={"selector": {"matchExpressions": [
        {"key": "rack", "operator": "In", "values": ["a", "b"]}]}})
    selector = rm.rolling_spec(s).scope.selector
    assert selector is not None
    assert selector.matches({"rack": "a"}) and not selector.matches({"rack": "c"})


def test_hook_job_is_pinned_without_retries_and_carries_the_payload() -> None:
    source = rm.hook_sources(spec())[rl.Stage.MAINTENANCE]
    body = hook_job_body(name="run-h1-maintenance-x", namespace="ops", node="node-7", run="run",
                         host="h1", stage="Maintenance", source=source,
                         command=(*source.argv(), "--dry-run"), timeout_s=119.5)
    job = body["spec"]
    pod = job["template"]["spec"]
    assert job["backoffLimit"] == 0 and job["activeDeadlineSeconds"] == 120
    assert "ttlSecondsAfterFinished" not in job
    assert pod["nodeName"] == "node-7" and pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "hosted-engine-hooks"
    container = pod["containers"][0]
    assert container["command"] == ["/bin/sh", "/hooks/upgrade.sh", "--dry-run"]
    assert container["volumeMounts"][0]["mountPath"] == "/hooks"
    assert pod["volumes"][0]["configMap"]["items"] == [{"key": "upgrade.sh",
                                                        "path": "upgrade.sh"}]
    keys = {t["key"] for t in pod["tolerations"]}
    assert keys == {"node.kubernetes.io/unschedulable", "hostedengine.io/rolling-maintenance",
                    "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    # pinned to its node, the hook is never evicted from it (no tolerationSeconds)
    assert all("tolerationSeconds" not in t for t in pod["tolerations"])
    assert {t["effect"] for t in pod["tolerations"] if t["key"].endswith(("ready", "reachable"))
            } == {"NoExecute"}
    assert body["metadata"]["labels"]["hostedengine.io/rolling-run"] == "run"
    image = hook_job_body(name="j", namespace="ops", node="n", run="r", host="h",
                          stage="PreFlight", source=HookSource(image="i", command=("/c",)),
                          command=("/c", "x"), timeout_s=5)
    assert "volumes" not in image["spec"]["template"]["spec"]


def _job(*conds: tuple[str, str], **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "j"}, "status": {
        "conditions": [{"type": t, "status": "True", "reason": r,
                        "lastTransitionTime": "2026-03-01T12:00:05Z"} for t, r in conds],
        **status}}


def _pod(code: int | None) -> dict[str, Any]:
    state = {"terminated": {"exitCode": code}} if code is not None else {"running": {}}
    return {"metadata": {"name": "j-abc", "creationTimestamp": "2026-03-01T12:00:00Z"},
            "status": {"containerStatuses": [{"name": "hook", "state": state}]}}


def test_job_outcome_exit_codes_and_deadline() -> None:
    done = job_outcome(_job(("Complete", "CompletionsReached"),
                            completionTime="2026-03-01T12:00:04Z"), [_pod(0)])
    assert done == JobOutcome("Succeeded", 0, T0 + timedelta(seconds=4), "j-abc")
    failed = job_outcome(_job(("Failed", "BackoffLimitExceeded")), [_pod(70)])
    assert failed.state == "Failed" and failed.exit_code == 70
    killed = job_outcome(_job(("Failed", "DeadlineExceeded")), [_pod(137)])
    assert killed.state == "DeadlineExceeded"
    assert job_outcome(_job(), [_pod(None)]).state == "Running"
    # a deadline kill stays "running" for the planner: it records TimedOut on its own clock
    assert rm.job_view(killed, "").state is rl.JobState.RUNNING
    view = rm.job_view(failed, "last line")
    assert view.state is rl.JobState.FAILED and view.exit_code == 70
    assert view.log_tail == "last line"


def test_log_tail_keeps_the_last_lines() -> None:
    text = "".join(f"line {i}\n" for i in range(100))
    assert tail(text, 3) == "line 97\nline 98\nline 99"
    assert len(tail("x" * 10000, 5, 4096)) == 4096


# --------------------------------------------------------------------------------------------
# the watched world


def host_body(name: str, *, group: str | None = None, state: str = "Up",
              labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    spec_: dict[str, Any] = {"nodeName": f"node-{name}"}
    if group:
        spec_["group"] = group
    return {"metadata": {"name": name, "labels": labels or {},
                         "annotations": extra.pop("annotations", {})},
            "spec": {**spec_, **extra}, "status": {"state": state}}


def node_body(name: str, memory: str = "16Gi", cpu: str = "8") -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {},
            "status": {"allocatable": {"memory": memory, "cpu": cpu},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def vmi_body(name: str, node: str, memory: str = "2Gi") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "vms"},
            "spec": {"domain": {"memory": {"guest": memory}}},
            "status": {"nodeName": node, "phase": "Running"}}


def world(*hosts: dict[str, Any]) -> rm.World:
    infos = {h["metadata"]["name"]: rm.host_info(h) for h in hosts}
    nodes = {i.node: rm.node_info(node_body(i.node)) for i in infos.values()}
    return rm.World(hosts=infos, nodes=nodes)


def test_host_views_group_fallback_capacity_and_refusal() -> None:
    refused = host_body("c", labels={"hostedengine.io/group": "g2"},
                        annotations={"hostedengine.io/maintenance-request": "rolling/r"})
    refused["status"]["conditions"] = [{"type": "MaintenanceRefused", "status": "True",
                                        "reason": "InsufficientMemory", "message": "no room"}]
    w = world(host_body("a", group="g1"), host_body("b", group="g1", hostedEngine="deploy"),
              refused)
    usage = rm.vmi_usage(vmi_body("vm1", "node-a"))
    assert usage is not None and usage[0] == "node-a"
    pod = rm.pod_usage({"spec": {"nodeName": "node-a", "containers": [
        {"resources": {"requests": {"memory": "1Gi", "cpu": "500m"}}}]},
        "status": {"phase": "Running"}})
    assert pod == ("node-a", (GiB, 500))
    w = replace(w, vmis={"node-a": [usage[1]]}, pods={"node-a": [pod[1]]})
    views = {v.name: v for v in rm.host_views(w, "hostedengine.io/group")}
    a = views["a"]
    assert a.group == "g1"  # spec.group stands in for the missing label
    assert a.capacity.name == "a"  # capacity named after the Host, as the planner checks it
    assert a.capacity.allocatable_memory_bytes == 16 * GiB
    assert a.capacity.allocated_memory_bytes == GiB and a.capacity.allocated_cpu_millis == 500
    assert [vm.name for vm in a.vms] == ["vm1"]
    assert views["b"].capacity.may_run_engine and not a.capacity.may_run_engine
    assert views["c"].group == "g2" and views["c"].maintenance_refused == "no room"
    assert views["c"].capacity.in_maintenance and not a.capacity.in_maintenance
    # a refusal without this run's request is the user's business, not the run's
    del refused["metadata"]["annotations"]["hostedengine.io/maintenance-request"]
    w2 = replace(w, hosts={**w.hosts, "c": rm.host_info(refused)})
    assert {v.name: v for v in rm.host_views(w2, "hostedengine.io/group")}[
        "c"].maintenance_refused is None
    assert rm.pod_usage({"spec": {"nodeName": "n"}, "status": {"phase": "Succeeded"}}) is None


def test_the_host_honours_the_maintenance_request_like_mode_local() -> None:
    body = host_body("a")
    host = Host.model_validate({"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
                                **body, "status": {}})
    assert hm.maintenance_mode(host) is MaintenanceMode.NONE
    body["metadata"]["annotations"] = {"hostedengine.io/maintenance-request": "rolling/r"}
    requested = Host.model_validate({"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
                                     **body, "status": {}})
    assert hm.maintenance_mode(requested) is MaintenanceMode.LOCAL
    local = host.model_copy(update={"spec": host.spec.model_copy(update={
        "maintenance": host.spec.maintenance.model_copy(
            update={"mode": LocalMaintenanceMode.LOCAL})})})
    assert hm.maintenance_mode(local) is MaintenanceMode.LOCAL
    # other hosts count a requested host out as a migration target
    w = hm.World(hosts={"a": body, "b": host_body("b")},
                 nodes={"node-a": node_body("node-a"), "node-b": node_body("node-b")})
    targets = {t.name: t for t in hm.targets(w, "node-b")}
    assert targets["node-a"].in_maintenance


# --------------------------------------------------------------------------------------------
# status <-> state: the planner through the status at every step gives the same run


def _views(n: int, groups: int) -> list[rl.HostView]:
    return [
        rl.HostView(
            name=f"h{i:02d}", group=f"g{i % groups}",
            labels={"hostedengine.io/group": f"g{i % groups}"},
            capacity=TargetHost(f"h{i:02d}", 64 * GiB, 32000, 8 * GiB, 4000),
            vms=(DrainVM(f"vm{i}", "vms", 8 * GiB, 4000),),
        )
        for i in range(n)
    ]


DUR = rl.SimDurations(
    hook_s={rl.Stage.PRE_FLIGHT: 5, rl.Stage.PRE_MAINTENANCE: 10, rl.Stage.MAINTENANCE: 60,
            rl.Stage.POST_MAINTENANCE: 10},
    drain_s=lambda _h: 30, activate_s=5,
)
HOOKS = {stage: ("/hook", stage.value) for stage in rl.Stage}


def _through_status(monkeypatch: pytest.MonkeyPatch) -> None:
    def to_dict(self: rl.RunState) -> dict[str, Any]:
        status = rm.to_status(self)
        wire = status.to_dict()
        RollingMaintenanceStatus.model_validate(wire)  # what the API would store
        return wire

    def from_dict(cls: type[rl.RunState], data: dict[str, Any]) -> rl.RunState:
        state = rm.from_status(RollingMaintenanceStatus.model_validate(data))
        assert state is not None
        return state

    monkeypatch.setattr(rl.RunState, "to_dict", to_dict)
    monkeypatch.setattr(rl.RunState, "from_dict", classmethod(from_dict))


@pytest.mark.parametrize("case", ["plain", "skips", "fail", "forced", "timeout", "cloudstack"])
def test_runs_through_the_status_are_the_same_runs(monkeypatch: pytest.MonkeyPatch,
                                                   case: str) -> None:
    rspec = rl.RollingSpec(scope=rl.Scope(group_label_key="hostedengine.io/group"),
                           hooks=HOOKS, payload=("x",), max_unavailable=2,
                           forced=case == "forced", hook_timeouts_s={})
    codes: dict[tuple[str, rl.Stage], int] = {}
    durations = DUR
    if case == "skips":
        codes = {("h01", rl.Stage.PRE_FLIGHT): 70, ("h04", rl.Stage.PRE_MAINTENANCE): 70}
    elif case in ("fail", "forced"):
        codes = {("h02", rl.Stage.MAINTENANCE): 3, ("h05", rl.Stage.POST_MAINTENANCE): 1}
    elif case == "timeout":
        rspec = replace(rspec, hook_timeouts_s={rl.Stage.MAINTENANCE: 20})
    elif case == "cloudstack":
        rspec = rl.cloudstack_order(rspec)
    durations = replace(durations, exit_codes=codes)
    views = _views(8, 3)
    direct = rl.simulate(rspec, views, durations, start=T0)
    _through_status(monkeypatch)
    mapped = rl.simulate(rspec, views, durations, start=T0, through_status=True)
    assert mapped.total_s == direct.total_s
    assert mapped.jobs_created == direct.jobs_created  # no stage ran twice
    assert mapped.state.phase is direct.state.phase
    assert [(h.name, h.phase) for h in mapped.state.hosts] == \
        [(h.name, h.phase) for h in direct.state.hosts]
    status = rm.to_status(mapped.state)
    assert status.hosts_total == 8 and status.hosts_done == 8
    assert status.state.value == direct.state.phase.value


def test_paused_status_round_trip_keeps_the_phase() -> None:
    rspec = rl.RollingSpec(scope=rl.Scope(host_names=("h00", "h01")), hooks=HOOKS,
                           paused=True)
    views = _views(2, 1)
    first = rl.step(None, rspec, rl.RollingObservation("r", T0, views))
    status = rm.to_status(first.state)
    assert status.state is RunStateValue.PAUSED
    assert [h.state for h in status.hosts] == [HostRunState.PENDING, HostRunState.PENDING]
    back = rm.from_status(RollingMaintenanceStatus.model_validate(status.to_dict()))
    assert back is not None and back.phase is rl.RunPhase.PRE_FLIGHT and back.paused
    # nothing was started while paused, and resuming starts the PreFlights
    assert not any(isinstance(a, rl.RunHook) for a in first.actions)
    resumed = rl.step(back, replace(rspec, paused=False), rl.RollingObservation("r", T0, views))
    assert sum(isinstance(a, rl.RunHook) for a in resumed.actions) == 2
    assert rm.from_status(RollingMaintenanceStatus()) is None


def test_next_deadline_and_wanted_annotations() -> None:
    rspec = rl.RollingSpec(scope=rl.Scope(host_names=("h00",)), hooks=HOOKS,
                           stage_timeout_s=100, maintenance_timeout_s=100,
                           hook_timeouts_s={rl.Stage.PRE_FLIGHT: 30})
    views = _views(2, 1)
    first = rl.step(None, rspec, rl.RollingObservation("r", T0, views))
    assert rm.next_deadline(first.state, rspec, T0 + timedelta(seconds=10)) == 20
    state = first.state
    host = state.hosts[0]
    host.phase = rl.HostPhase.ENTERING_MAINTENANCE
    host.stages = {}
    host.maintenance_requested_at = T0
    state.disabled_groups = ["g0"]
    assert rm.wanted_requests(state) == {"h00"} and rm.wanted_steer(state) == {"h00"}
    assert rm.next_deadline(state, rspec, T0) == 100
    host.maintenance_ended = True
    state.disabled_groups = []
    assert rm.wanted_requests(state) == set() and rm.wanted_steer(state) == set()
