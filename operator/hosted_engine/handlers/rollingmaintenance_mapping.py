"""Pure mapping between a RollingMaintenance, the watched world and the rolling planner.

- :func:`rolling_spec`: the model's spec -> :class:`hosted_engine.logic.rolling.RollingSpec`
  (hook command lines, per-hook timeouts; the wait for maintenance is the stage timeout);
  :func:`hook_sources`: where each stage's program comes from (command or ConfigMap script).
- :func:`host_info`, :func:`node_info`, :func:`pod_usage`, :func:`vmi_usage`: the small
  records the handler's kopf indexes keep of Hosts, Nodes, Pods and VMIs;
  :func:`host_views`: the planner's :class:`~hosted_engine.logic.rolling.HostView` of every Host
  (its capacity as a migration target under the *Host's* name, its VMs, group, state, refusal).
- :func:`to_status` / :func:`from_status`: the planner's :class:`RunState` <-> the object's
  ``status`` (:class:`RollingMaintenanceStatus`), so that a restarted operator resumes where the
  run stopped and never reruns a stage whose result is recorded.
- :func:`job_view`: a hook Job's outcome -> :class:`~hosted_engine.logic.rolling.JobView`;
  a Job killed by its ``activeDeadlineSeconds`` stays "running" for the planner, which records
  the stage as TimedOut on its own clock.
- :func:`next_deadline`: when the next time-based decision of the run is due.

No I/O here: tests call it with plain values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hosted_engine.adapters.jobs import STEER_TAINT, HookSource, HostAccess, JobOutcome
from hosted_engine.adapters.kubevirt import (
    ENGINE_HOST_LABEL,
    FINAL_VMI_PHASES,
    OUT_OF_SERVICE_TAINT,
    meta,
    node_allocatable,
    node_ready,
    node_taints,
    pod_requests,
    spec_of,
    status_of,
    vmi_requests,
)
from hosted_engine.handlers import host_mapping as hm
from hosted_engine.logic import drain as dr
from hosted_engine.logic import rolling as rl
from hosted_engine.models.host import (
    HOST_GROUP_LABEL,
    MAINTENANCE_REQUEST_ANNOTATION,
    HostedEngineDeployment,
)
from hosted_engine.models.rollingmaintenance import (
    LOG_TAIL_MAX,
    GroupProgress,
    GroupState,
    Hook,
    HostProgress,
    HostRunState,
    RollingMaintenanceSpec,
    RollingMaintenanceStatus,
    StageName,
    StageResult,
    StageResultValue,
)
from hosted_engine.models.rollingmaintenance import RunState as RunStateValue

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAINTENANCE_HOST_STATES = ("Maintenance", "PreparingForMaintenance")

# --------------------------------------------------------------------------------------------
# Spec


def _hooks(spec: RollingMaintenanceSpec) -> dict[rl.Stage, Hook]:
    stages = spec.stages
    pairs = (
        (rl.Stage.PRE_FLIGHT, stages.pre_flight),
        (rl.Stage.PRE_MAINTENANCE, stages.pre_maintenance),
        (rl.Stage.MAINTENANCE, stages.maintenance),
        (rl.Stage.POST_MAINTENANCE, stages.post_maintenance),
    )
    return {stage: hook for stage, hook in pairs if hook is not None}


#: The spec's field of each stage's hook (for messages that name the field).
STAGE_FIELDS = {
    rl.Stage.PRE_FLIGHT: "spec.stages.preFlight",
    rl.Stage.PRE_MAINTENANCE: "spec.stages.preMaintenance",
    rl.Stage.MAINTENANCE: "spec.stages.maintenance",
    rl.Stage.POST_MAINTENANCE: "spec.stages.postMaintenance",
}


def _host_access(hook: Hook) -> HostAccess:
    access = hook.host_access
    if access is None:
        return HostAccess()
    return HostAccess(
        privileged=access.privileged,
        host_pid=access.host_pid,
        host_network=access.host_network,
        host_root=access.host_root.value if access.host_root is not None else None,
    )


def hook_sources(spec: RollingMaintenanceSpec) -> dict[rl.Stage, HookSource]:
    out: dict[rl.Stage, HookSource] = {}
    for stage, hook in _hooks(spec).items():
        if hook.script is not None:
            out[stage] = HookSource(image=hook.image, configmap=hook.script.name,
                                    key=hook.script.key, host_access=_host_access(hook))
        else:
            out[stage] = HookSource(image=hook.image, command=tuple(hook.command or ()),
                                    host_access=_host_access(hook))
    return out


def script_refs(sources: Mapping[rl.Stage, HookSource],
                stages: Iterable[rl.Stage]) -> dict[rl.Stage, tuple[str, str, str]]:
    """(ConfigMap, key, field path) of every stage in ``stages`` whose hook is a script."""
    out = {}
    for stage in stages:
        src = sources.get(stage)
        if src is not None and src.configmap is not None and src.key is not None:
            out[stage] = (src.configmap, src.key, f"{STAGE_FIELDS[stage]}.script")
    return out


def rolling_spec(spec: RollingMaintenanceSpec) -> rl.RollingSpec:
    scope = spec.scope
    if scope.hosts is not None:
        rscope = rl.Scope(host_names=tuple(scope.hosts))
    elif scope.selector is not None:
        sel = scope.selector
        rscope = rl.Scope(selector=rl.LabelSelector(
            match_labels=dict(sel.match_labels or {}),
            match_expressions=tuple(
                rl.SelectorRequirement(e.key, str(e.operator), tuple(e.values or ()))
                for e in sel.match_expressions or ()
            ),
        ))
    else:
        groups = scope.groups
        assert groups is not None
        rscope = rl.Scope(group_label_key=groups.label_key, group_values=tuple(groups.values))
    stage_timeout = spec.stage_timeout.timedelta.total_seconds()
    sources = hook_sources(spec)
    return rl.RollingSpec(
        scope=rscope,
        hooks={stage: src.argv() for stage, src in sources.items()},
        payload=tuple(spec.payload),
        forced=spec.forced,
        stage_timeout_s=stage_timeout,
        hook_timeouts_s={
            stage: hook.timeout.timedelta.total_seconds()
            for stage, hook in _hooks(spec).items() if hook.timeout is not None
        },
        maintenance_timeout_s=stage_timeout,
        max_unavailable=spec.max_unavailable,
        pre_maintenance_ahead=spec.pre_maintenance_ahead,
        paused=spec.paused,
        abort=spec.abort,
    )


def group_key(spec: RollingMaintenanceSpec) -> str:
    """The label that names a Host's group for this run."""
    groups = spec.scope.groups
    return groups.label_key if groups is not None else HOST_GROUP_LABEL


# --------------------------------------------------------------------------------------------
# The watched world (what the kopf indexes keep)


@dataclass(frozen=True)
class HostInfo:
    name: str
    node: str
    labels: Mapping[str, str]
    state: str
    engine: bool = False
    spec_local: bool = False
    request: str | None = None  # the maintenance-request annotation's value
    refused: str | None = None  # MaintenanceRefused=True message


@dataclass(frozen=True)
class NodeInfo:
    name: str
    memory: int
    cpu: int
    ready: bool
    unschedulable: bool
    out_of_service: bool
    engine_label: bool
    steered_by: str | None = None  # value of our PreferNoSchedule taint


@dataclass(frozen=True)
class World:
    hosts: Mapping[str, HostInfo] = field(default_factory=dict)
    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)
    pods: Mapping[str, Sequence[tuple[int, int]]] = field(default_factory=dict)  # by node
    vmis: Mapping[str, Sequence[dr.DrainVM]] = field(default_factory=dict)  # by node
    jobs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # job name -> Job
    hook_pods: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)  # by Job


def host_info(body: Mapping[str, Any]) -> HostInfo:
    m = meta(body)
    spec = spec_of(body)
    labels = {str(k): str(v) for k, v in (m.get("labels") or {}).items()}
    if HOST_GROUP_LABEL not in labels and spec.get("group"):
        labels[HOST_GROUP_LABEL] = str(spec["group"])  # the model's documented fallback
    refused = None
    for cond in status_of(body).get("conditions") or []:
        if cond.get("type") == "MaintenanceRefused" and cond.get("status") == "True":
            refused = str(cond.get("message") or cond.get("reason") or "refused")
    request = (m.get("annotations") or {}).get(MAINTENANCE_REQUEST_ANNOTATION)
    return HostInfo(
        name=str(m.get("name") or ""),
        node=str(spec.get("nodeName") or ""),
        labels=labels,
        state=str(status_of(body).get("state") or "Pending"),
        engine=spec.get("hostedEngine") == HostedEngineDeployment.DEPLOY.value,
        spec_local=(spec.get("maintenance") or {}).get("mode") == "local",
        request=str(request) if request else None,
        refused=refused,
    )


def node_info(body: Mapping[str, Any]) -> NodeInfo:
    mem, cpu = node_allocatable(body)
    ready, _ = node_ready(body)
    steer = [t for t in node_taints(body) if t.get("key") == STEER_TAINT]
    return NodeInfo(
        name=str(meta(body).get("name") or ""),
        memory=mem,
        cpu=cpu,
        ready=ready is True,
        unschedulable=bool(spec_of(body).get("unschedulable")),
        out_of_service=any(t.get("key") == OUT_OF_SERVICE_TAINT for t in node_taints(body)),
        engine_label=(meta(body).get("labels") or {}).get(ENGINE_HOST_LABEL) == "true",
        steered_by=str(steer[0].get("value") or "") if steer else None,
    )


def pod_usage(body: Mapping[str, Any]) -> tuple[str, tuple[int, int]] | None:
    """(node, (memory, cpu)) of a pod that holds resources on a node, else None."""
    node = str(spec_of(body).get("nodeName") or "")
    if not node or status_of(body).get("phase") in ("Succeeded", "Failed"):
        return None
    return node, pod_requests(body)


def vmi_usage(body: Mapping[str, Any]) -> tuple[str, dr.DrainVM] | None:
    """(node, the VM as the drain sees it) of a VMI that runs somewhere, else None."""
    node = hm.vmi_node(body)
    if not node or str(status_of(body).get("phase") or "") in FINAL_VMI_PHASES:
        return None
    mem, cpu = vmi_requests(body)
    live, why = hm.migratable(body)
    key = hm.key_of(body)
    return node, dr.DrainVM(name=key[1], namespace=key[0], memory_bytes=mem, cpu_millis=cpu,
                            live_migratable=live, not_migratable_reason=why,
                            is_engine=hm.is_engine_vm(body, None))


def in_maintenance(host: HostInfo) -> bool:
    return host.state in MAINTENANCE_HOST_STATES or host.spec_local or bool(host.request)


def host_views(world: World, key: str) -> list[rl.HostView]:
    """Every Host as the planner sees it; its capacity is named after the Host."""
    views = []
    for name, host in sorted(world.hosts.items()):
        node = world.nodes.get(host.node)
        used = world.pods.get(host.node, ())
        capacity = dr.TargetHost(
            name=name,
            allocatable_memory_bytes=node.memory if node else 0,
            allocatable_cpu_millis=node.cpu if node else 0,
            allocated_memory_bytes=sum(m for m, _ in used),
            allocated_cpu_millis=sum(c for _, c in used),
            schedulable=node is not None and node.ready and not node.unschedulable
            and not node.out_of_service,
            in_maintenance=in_maintenance(host),
            may_run_engine=host.engine or (node is not None and node.engine_label),
        )
        views.append(rl.HostView(
            name=name,
            capacity=capacity,
            labels=dict(host.labels),
            group=host.labels.get(key, ""),
            state=host.state,
            maintenance_refused=host.refused if host.request else None,
            vms=tuple(world.vmis.get(host.node, ())),
        ))
    return views


def job_view(outcome: JobOutcome, log_tail: str) -> rl.JobView:
    if outcome.state == "Succeeded":
        return rl.JobView(rl.JobState.SUCCEEDED, outcome.exit_code, log_tail, outcome.finished_at)
    if outcome.state == "Failed":
        return rl.JobView(rl.JobState.FAILED, outcome.exit_code, log_tail, outcome.finished_at)
    return rl.JobView(rl.JobState.RUNNING, None, log_tail)  # running, or killed by its deadline


# --------------------------------------------------------------------------------------------
# Status <-> RunState

_HOST_PHASE = {
    rl.HostPhase.PENDING: HostRunState.PENDING,
    rl.HostPhase.PRE_FLIGHT: HostRunState.PRE_FLIGHT,
    rl.HostPhase.READY: HostRunState.READY,
    rl.HostPhase.PRE_MAINTENANCE: HostRunState.PRE_MAINTENANCE,
    rl.HostPhase.ENTERING_MAINTENANCE: HostRunState.ENTERING_MAINTENANCE,
    rl.HostPhase.MAINTENANCE: HostRunState.MAINTENANCE,
    rl.HostPhase.ENDING_MAINTENANCE: HostRunState.ENDING_MAINTENANCE,
    rl.HostPhase.POST_MAINTENANCE: HostRunState.POST_MAINTENANCE,
    rl.HostPhase.DONE: HostRunState.SUCCEEDED,
    rl.HostPhase.SKIPPED: HostRunState.SKIPPED,
    rl.HostPhase.FAILED: HostRunState.FAILED,
    rl.HostPhase.CANCELLED: HostRunState.CANCELLED,
}
_HOST_PHASE_BACK = {v: k for k, v in _HOST_PHASE.items()}
_RESULT = {
    rl.StageResult.SUCCEEDED: StageResultValue.SUCCEEDED,
    rl.StageResult.SKIPPED: StageResultValue.SKIPPED,
    rl.StageResult.FAILED: StageResultValue.FAILED,
    rl.StageResult.TIMED_OUT: StageResultValue.TIMED_OUT,
}
_RESULT_BACK = {v: k for k, v in _RESULT.items()}
_RUN_PHASE = {
    rl.RunPhase.PENDING: RunStateValue.PENDING,
    rl.RunPhase.PRE_FLIGHT: RunStateValue.PRE_FLIGHT,
    rl.RunPhase.RUNNING: RunStateValue.RUNNING,
    rl.RunPhase.SUCCEEDED: RunStateValue.SUCCEEDED,
    rl.RunPhase.FAILED: RunStateValue.FAILED,
    rl.RunPhase.ABORTED: RunStateValue.ABORTED,
}
_RUN_PHASE_BACK = {v: k for k, v in _RUN_PHASE.items()}
UNDER_WAY = (
    rl.HostPhase.PRE_FLIGHT,
    *rl.HOLDS_SLOT,
    rl.HostPhase.POST_MAINTENANCE,
)


def _exit_code(code: int | None) -> int | None:
    if code is None:
        return None
    return code if 0 <= code <= 255 else 255


def _stage_result(stage: str, rec: rl.StageRecord) -> StageResult:
    return StageResult(
        stage=StageName(stage),
        result=_RESULT[rec.result] if rec.result is not None else StageResultValue.RUNNING,
        exit_code=_exit_code(rec.exit_code),
        job_name=rec.job_name or None,
        started_at=rec.started_at if rec.started_at != datetime.min else None,
        finished_at=rec.finished_at,
        log_tail=rec.log_tail[-LOG_TAIL_MAX:] or None,
        message=rec.message or None,
        end_seen_at=rec.end_seen_at,
    )


def _group_state(state: rl.RunState, index: int, name: str) -> GroupState:
    if index < state.group_index:
        return GroupState.DONE
    if index > state.group_index:
        return GroupState.PENDING
    if state.phase is rl.RunPhase.RUNNING:
        return GroupState.RUNNING
    if state.phase in (rl.RunPhase.FAILED, rl.RunPhase.ABORTED) and any(
        h.group == name and h.phase is rl.HostPhase.FAILED for h in state.hosts
    ):
        return GroupState.FAILED
    return GroupState.PENDING


def to_status(state: rl.RunState) -> RollingMaintenanceStatus:
    """The status fields the run owns (conditions and observedGeneration are the handler's)."""
    finished = [h for h in state.hosts if h.phase in rl.HOST_FINISHED]
    phase = _RUN_PHASE[state.phase]
    if state.paused and state.phase in (rl.RunPhase.PRE_FLIGHT, rl.RunPhase.RUNNING):
        phase = RunStateValue.PAUSED
    current_group = None
    if state.phase is rl.RunPhase.RUNNING and state.group_index < len(state.groups):
        current_group = state.groups[state.group_index]
    order = [s.value for s in rl.Stage]
    return RollingMaintenanceStatus(
        state=phase,
        started_at=state.started_at,
        finished_at=state.finished_at,
        progress=f"{len(finished)}/{len(state.hosts)}",
        hosts_total=len(state.hosts),
        hosts_done=len(finished),
        current_group=current_group,
        current_hosts=[h.name for h in state.hosts if h.phase in UNDER_WAY][:100],
        groups=[
            GroupProgress(
                name=name,
                hosts=[h.name for h in state.hosts if h.group == name],
                state=_group_state(state, i, name),
                scheduling_disabled=name in state.disabled_groups,
            )
            for i, name in enumerate(state.groups)
        ],
        hosts=[
            HostProgress(
                host=h.name,
                group=h.group or None,
                state=_HOST_PHASE[h.phase],
                stages=[_stage_result(s, h.stages[s])
                        for s in sorted(h.stages, key=order.index)],
                maintenance_started_at=h.maintenance_requested_at,
                maintenance_finished_at=h.maintenance_ending_at,
                maintenance_seen_at=h.maintenance_seen_at,
                message=h.message or None,
            )
            for h in state.hosts
        ],
        stopping=state.stopping,
        message=state.message or None,
    )


def from_status(status: RollingMaintenanceStatus) -> rl.RunState | None:
    """The planner's state back from the status (None: the run has not started)."""
    if status.state is RunStateValue.PENDING and not status.hosts and not status.groups:
        return None
    hosts: list[rl.HostRun] = []
    for hp in status.hosts:
        phase = _HOST_PHASE_BACK[hp.state]
        stages = {
            sr.stage.value: rl.StageRecord(
                job_name=sr.job_name or "",
                started_at=sr.started_at or EPOCH,
                finished_at=sr.finished_at,
                result=_RESULT_BACK.get(sr.result),
                exit_code=sr.exit_code,
                log_tail=sr.log_tail or "",
                message=sr.message or "",
                end_seen_at=sr.end_seen_at,
            )
            for sr in hp.stages
        }
        hosts.append(rl.HostRun(
            name=hp.host,
            group=hp.group or "",
            phase=phase,
            stages=stages,
            maintenance_requested_at=hp.maintenance_started_at,
            maintenance_ending_at=hp.maintenance_finished_at,
            maintenance_ended=hp.maintenance_finished_at is not None
            or phase in rl.HOST_FINISHED,
            message=hp.message or "",
            maintenance_seen_at=hp.maintenance_seen_at,
        ))
    paused = status.state is RunStateValue.PAUSED
    if paused:
        early = any(h.phase in (rl.HostPhase.PENDING, rl.HostPhase.PRE_FLIGHT) for h in hosts)
        phase_value = rl.RunPhase.PRE_FLIGHT if early else rl.RunPhase.RUNNING
    else:
        phase_value = _RUN_PHASE_BACK[status.state]
    index = 0
    for group in status.groups:
        if group.state is not GroupState.DONE:
            break
        index += 1
    return rl.RunState(
        phase=phase_value,
        hosts=hosts,
        groups=[g.name for g in status.groups],
        group_index=index,
        disabled_groups=[g.name for g in status.groups if g.scheduling_disabled],
        stopping=status.stopping,
        paused=paused,
        started_at=status.started_at,
        finished_at=status.finished_at,
        reason="StageFailed" if status.stopping else "",
        message=(status.message or "") if status.stopping else "",
    )


def starting_stages(state: rl.RunState, actions: Iterable[rl.Action]) -> set[rl.Stage]:
    """Stages whose hook a step starts now (a RunHook with no record in the state before)."""
    recorded = {(h.name, stage) for h in state.hosts for stage in h.stages}
    return {a.stage for a in actions
            if isinstance(a, rl.RunHook) and (a.host, a.stage.value) not in recorded}


# --------------------------------------------------------------------------------------------
# Time


def next_deadline(state: rl.RunState, spec: rl.RollingSpec, now: datetime) -> float | None:
    """Seconds until the next timeout the planner must see (None: none pending)."""
    due: list[datetime] = []
    for h in state.hosts:
        for stage, rec in h.stages.items():
            if rec.result is None:
                timeout = spec.hook_timeouts_s.get(rl.Stage(stage), spec.stage_timeout_s)
                due.append(rec.started_at + timedelta(seconds=timeout))
        if h.phase is rl.HostPhase.ENTERING_MAINTENANCE and h.maintenance_requested_at:
            due.append(h.maintenance_requested_at
                       + timedelta(seconds=spec.maintenance_timeout_s))
        if h.phase is rl.HostPhase.ENDING_MAINTENANCE and h.maintenance_ending_at:
            due.append(h.maintenance_ending_at + timedelta(seconds=spec.stage_timeout_s))
    poll = rl.poll_deadline(state, spec, now)  # CloudStack's timing (its bench order) only
    if poll is not None:
        due.append(poll)
    if not due:
        return None
    return max(0.0, (min(due) - now).total_seconds())


def wanted_requests(state: rl.RunState) -> set[str]:
    """Hosts that must carry this run's maintenance request right now."""
    return {h.name for h in state.hosts
            if h.maintenance_requested_at is not None and not h.maintenance_ended}


def wanted_steer(state: rl.RunState) -> set[str]:
    """Hosts whose Nodes this run steers new VMs away from right now."""
    groups = set(state.disabled_groups)
    return {h.name for h in state.hosts if h.group in groups}


def host_names(state: rl.RunState | None) -> Iterable[str]:
    return [h.name for h in state.hosts] if state is not None else []


__all__ = [
    "STAGE_FIELDS",
    "HostInfo",
    "NodeInfo",
    "World",
    "from_status",
    "group_key",
    "hook_sources",
    "host_info",
    "host_views",
    "job_view",
    "next_deadline",
    "node_info",
    "pod_usage",
    "rolling_spec",
    "script_refs",
    "starting_stages",
    "to_status",
    "vmi_usage",
    "wanted_requests",
    "wanted_steer",
]
