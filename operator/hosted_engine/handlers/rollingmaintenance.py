"""RollingMaintenance handlers: CloudStack's KVM rolling maintenance with hook stages (issue 8).

How it runs
    kopf indexes keep small records of the Hosts, Nodes, Pods (requests per node), VMIs (per
    node) and the hook Jobs (per run); kopf starts no handler before every index is filled, so a
    run that starts (or resumes after a restart) sees the whole cluster. One daemon per
    RollingMaintenance reconciles on every wake-up: a change of the run, of a Host or of one of
    its hook Jobs, the next timeout of the run, or at the latest every ``spec.pollInterval``
    (CloudStack's ping interval). The decisions are
    :func:`hosted_engine.logic.rolling.step`'s; this module carries out its actions and keeps
    the planner's state in ``status`` (:mod:`.rollingmaintenance_mapping`), written once the
    actions are carried out (so what the status says is done); all actions are idempotent: a
    restarted operator resumes where the run stopped, a stage whose result is recorded never
    runs again, and a hook whose Job was already created is found again by its deterministic
    name.

Contracts with the rest of the operator
    * Maintenance of a Host: the annotation ``hostedengine.io/maintenance-request:
      rolling/<run>``, which the Host handler honours like ``spec.maintenance.mode: local``
      (drain, progress in the Host's ``status.drain``, refusals as its ``MaintenanceRefused``
      condition). The run watches the Host's ``status.state`` (Up -> PreparingForMaintenance ->
      Maintenance; Activating -> Up). The annotations this run must carry are re-derived from
      its state on every reconcile (added or removed when they differ), so a crash between the
      status write and the annotation never strands a host in maintenance.
    * Scheduling of a group: the ``PreferNoSchedule`` taint ``hostedengine.io/rolling-
      maintenance`` on its Nodes while the group runs (a soft steer, never a cordon), also
      re-derived from the state and removed when the run ends, fails or is aborted.
    * Hooks: batch/v1 Jobs pinned to the host's Node (docs/decisions/0004-hook-jobs.md), owned
      by the run, kept until the run is deleted.

Bad input
    A spec the model rejects: ``Ready=False/InvalidSpec`` + Warning Event, the run waits (its
    last good state is kept). What the planner refuses (empty scope, a hook timeout below the
    poll interval, a host not Up, capacity) ends the run Failed with the reason in the
    ``Failed`` condition and a Warning Event.

Deletion
    Deleting a run takes back its maintenance requests and steer taints; its Jobs go with it
    (owner references).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

import kopf
from pydantic import ValidationError

from hosted_engine import API_GROUP, API_VERSION
from hosted_engine.adapters import metrics
from hosted_engine.adapters.jobs import (
    RUN_LABEL,
    JobsKube,
    hook_job_body,
    job_finished,
    job_outcome,
    operator_namespace,
)
from hosted_engine.adapters.kube import KubeError, NotFound
from hosted_engine.adapters.kubevirt import HOSTS, meta, resource_version, status_of
from hosted_engine.adapters.rolling import ROLLINGMAINTENANCES, RollingKube, request_value
from hosted_engine.clock import get_clock
from hosted_engine.handlers import rollingmaintenance_mapping as rm
from hosted_engine.handlers.host import Triggers
from hosted_engine.handlers.host_mapping import merge_patch
from hosted_engine.handlers.startup import kube_client
from hosted_engine.logic import rolling as rl
from hosted_engine.logic.drain import DrainVM
from hosted_engine.logic.host_lifecycle import EmitEvent, SetCondition
from hosted_engine.models import RollingMaintenance, describe_validation_error
from hosted_engine.models.conditions import (
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    get_condition,
    set_condition,
)
from hosted_engine.models.rollingmaintenance import CapacityCheck

log = logging.getLogger(__name__)

PLURAL: Final = "rollingmaintenances"
RECONCILER_KEY: Final = "rolling-reconciler"
TRIGGERS_KEY: Final = "rolling-triggers"
#: Wait after an unexpected failure of a reconcile (seconds).
ERROR_BACKOFF: Final = 2.0
#: Smallest wait between two reconciles (seconds).
MIN_WAIT: Final = 0.01
#: Wake this long after a deadline (a timeout, or a poll of CloudStack's timing), so that it
#: has passed when the run decides (seconds).
DEADLINE_MARGIN: Final = 0.002
#: Wait of a run whose spec is invalid (it wakes on its next change anyway).
INVALID_WAIT: Final = 300.0
#: Reason (condition and Event) of a hook script whose ConfigMap or key is missing.
HOOK_MISSING: Final = "HookScriptMissing"


@dataclass
class Outcome:
    wait: float
    done: bool = False


class RollingReconciler:
    """Reconciles RollingMaintenance runs; thread-safe (one lock per run)."""

    def __init__(self, kube: Any) -> None:
        self.kube = kube
        self.api = RollingKube(kube)
        self.jobs = JobsKube(kube)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        #: run -> the body our last status patch returned (newer than a lagging watch)
        self._written: dict[str, dict[str, Any]] = {}
        #: job name -> (resourceVersion, view): a finished Job's pod is read once
        self._views: dict[str, tuple[str, rl.JobView]] = {}
        #: job name -> (namespace, pod) of a finished hook whose log is still to be read;
        #: read after the next step's actions are carried out (off the critical path)
        self._logs: dict[str, tuple[str, str]] = {}
        self._sa_ready: set[str] = set()

    def _lock_for(self, name: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(name, threading.Lock())

    def forget(self, name: str) -> None:
        self._written.pop(name, None)

    def reconcile(self, name: str, body: Mapping[str, Any], world: rm.World) -> Outcome:
        with self._lock_for(name):
            return self._reconcile(name, body, world)

    # -- one reconcile ------------------------------------------------------------------------

    def _newest(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        written = self._written.get(name)
        if written is not None and meta(written).get("uid") == meta(body).get("uid"):
            old, new = resource_version(written), resource_version(body)
            if old is not None and new is not None and old > new:
                return written
        return dict(body)

    def _reconcile(self, name: str, live: Mapping[str, Any], world: rm.World) -> Outcome:
        body = self._newest(name, live)
        if meta(body).get("deletionTimestamp"):
            return Outcome(wait=INVALID_WAIT, done=True)
        try:
            obj = RollingMaintenance.model_validate(body)
        except ValidationError as exc:
            self._invalid(name, body, describe_validation_error(exc))
            return Outcome(wait=INVALID_WAIT)
        now = get_clock().now()
        generation = obj.metadata.generation
        spec = rm.rolling_spec(obj.spec)
        state = rm.from_status(obj.status)
        if state is not None and state.terminal:
            self._converge(name, state, world)
            return Outcome(wait=INVALID_WAIT, done=True)
        if state is None:
            world = self._fresh_hosts(world)
        poll = obj.spec.poll_interval.timedelta.total_seconds()
        namespace = obj.spec.hooks_namespace or operator_namespace()
        sources = rm.hook_sources(obj.spec)
        # hook scripts: all of them before the run starts, then each right before its stage
        missing = self._missing_scripts(namespace, rm.script_refs(sources, sources)) \
            if state is None else {}
        obs = rl.RollingObservation(
            run_name=name,
            now=now,
            hosts=rm.host_views(world, rm.group_key(obj.spec)),
            jobs=self._job_views(name, state, world),
            poll_interval_s=poll,
            missing_hooks=missing,
        )
        result = rl.step(state, spec, obs)
        if state is not None:
            starting = rm.starting_stages(state, result.actions)
            missing = self._missing_scripts(namespace, rm.script_refs(sources, starting))
            if missing:  # decide again, knowing (pure: the same inputs plus the missing ones)
                obs = replace(obs, missing_hooks=missing)
                result = rl.step(state, spec, obs)
        new = result.state

        conditions: list[Condition] = list(obj.status.conditions)
        before = get_condition(conditions, ConditionType.READY)
        if before is not None:
            conditions = set_condition(conditions, ConditionType.READY, ConditionStatus.TRUE,
                                       "ValidSpec", "", observed_generation=generation, now=now)
        # a run waiting for its scripts says so once, not on every poll
        repeat = before is not None and before.reason == HOOK_MISSING and any(
            isinstance(a, SetCondition) and a.type == ConditionType.READY
            and a.reason == HOOK_MISSING and a.message == before.message
            for a in result.actions)
        events: list[tuple[str, str, str]] = []
        for action in result.actions:
            if isinstance(action, SetCondition):
                conditions = set_condition(conditions, action.type, action.status,
                                           action.reason, action.message[:32768],
                                           observed_generation=generation, now=now)
            elif isinstance(action, EmitEvent) and not (repeat and action.reason == HOOK_MISSING):
                events.append((action.type, action.reason, action.message))
        status = rm.to_status(new).model_copy(update={
            "conditions": conditions,
            "observed_generation": generation,
            "capacity_check": obj.status.capacity_check or _capacity(new, obs, spec, now),
        })

        # carry out what was decided (all idempotent)
        for action in result.actions:
            try:
                if isinstance(action, rl.RunHook):
                    self._run_hook(body, namespace, sources, action, world)
                elif isinstance(action, rl.DeleteHook):
                    self.jobs.delete(namespace, action.job_name)
                elif isinstance(action, rl.EnterMaintenance | rl.EndMaintenance):
                    on = isinstance(action, rl.EnterMaintenance)
                    self.api.request_maintenance(action.host, name, on)
                elif isinstance(action, rl.DisableGroupScheduling | rl.EnableGroupScheduling):
                    on = isinstance(action, rl.DisableGroupScheduling)
                    for host_name in action.hosts:
                        host = world.hosts.get(host_name)
                        if host is not None and host.node:
                            self.api.steer(host.node, name, on)
            except KubeError as exc:
                log.warning("rolling %s: %s failed: %s", name, type(action).__name__, exc)
                events.append(("Warning", "HookJobFailed", f"{type(action).__name__}: {exc}"))
        self._converge(name, new, world, result.actions)
        if self._fill_logs(new):  # the logs of hooks that just ended, now the next step is out
            status = status.model_copy(update={"hosts": rm.to_status(new).hosts})
        self._write(name, body, obj.status.to_dict(), status.to_dict())
        for type_, reason, message in events:
            self.api.event(body, type_, reason, message)
        if new.terminal:
            return Outcome(wait=INVALID_WAIT, done=True)
        wait = poll
        deadline = rm.next_deadline(new, spec, get_clock().now())
        if deadline is not None:
            wait = min(wait, deadline + DEADLINE_MARGIN)
        return Outcome(wait=max(MIN_WAIT, wait))

    def _missing_scripts(self, namespace: str,
                         refs: Mapping[rl.Stage, tuple[str, str, str]]) -> dict[rl.Stage, str]:
        """Stage -> why its ConfigMap script cannot be mounted (naming the spec field); an
        API error other than "not found" is no answer: the stage is let go (its Job would
        wait for the volume, bounded by the stage timeout)."""
        missing: dict[rl.Stage, str] = {}
        seen: dict[tuple[str, str], str | None] = {}
        for stage, (configmap, key, field_path) in refs.items():
            if (configmap, key) not in seen:
                try:
                    seen[(configmap, key)] = self.jobs.script_problem(namespace, configmap, key)
                except KubeError as exc:
                    log.warning("rolling: reading ConfigMap %s/%s failed: %s",
                                namespace, configmap, exc)
                    seen[(configmap, key)] = None
            problem = seen[(configmap, key)]
            if problem is not None:
                missing[stage] = f"{field_path}: {problem}"
        return missing

    def _fresh_hosts(self, world: rm.World) -> rm.World:
        """The Hosts as the API has them now: the start of a run (whole-scope checks, hosts
        not Up) is decided once, on what the watch may not have delivered yet."""
        try:
            hosts = self.kube.list(HOSTS)
        except KubeError as exc:
            log.warning("rolling: listing Hosts failed: %s", exc)
            return world
        fresh = {str(meta(h).get("name")): rm.host_info(h) for h in hosts}
        return replace(world, hosts=fresh)

    def _job_views(self, name: str, state: rl.RunState | None,
                   world: rm.World) -> dict[str, rl.JobView]:
        views: dict[str, rl.JobView] = {}
        if state is None:
            return views
        for h in state.hosts:
            for rec in h.stages.values():
                if rec.result is not None or not rec.job_name:
                    continue
                job = world.jobs.get(rec.job_name)
                if job is None:
                    continue
                views[rec.job_name] = self._job_view(job, world.hook_pods.get(rec.job_name))
        return views

    def _job_view(self, job: Mapping[str, Any],
                  pods: Sequence[Mapping[str, Any]] | None = None) -> rl.JobView:
        if not job_finished(job):
            return rl.JobView(rl.JobState.RUNNING)
        key = str(meta(job).get("name"))
        rv = str(meta(job).get("resourceVersion") or "")
        cached = self._views.get(key)
        if cached is not None and cached[0] == rv:
            return cached[1]
        namespace = str(meta(job).get("namespace") or "")
        try:
            outcome = job_outcome(job, pods) if pods else None
            if outcome is None or outcome.exit_code is None:  # the pod watch is behind: ask
                outcome = self.jobs.outcome(namespace, job, with_log=False)[0]
        except KubeError as exc:
            log.warning("rolling: reading job %s failed: %s", key, exc)
            return rl.JobView(rl.JobState.RUNNING)
        view = rm.job_view(outcome, "")
        self._views[key] = (rv, view)
        if outcome.pod is not None and outcome.state != "Running":
            self._logs[key] = (namespace, outcome.pod)
        return view

    def _fill_logs(self, state: rl.RunState) -> bool:
        """Put the last lines of the logs of hooks whose result this step recorded into the
        state (one read per hook); True when any was filled."""
        filled = False
        for h in state.hosts:
            for rec in h.stages.values():
                where = self._logs.pop(rec.job_name, None) if rec.result is not None else None
                if where is None or rec.log_tail:
                    continue
                with contextlib.suppress(KubeError):
                    rec.log_tail = self.jobs.log_tail(*where)
                    filled = filled or bool(rec.log_tail)
        return filled

    def _run_hook(self, owner: Mapping[str, Any], namespace: str,
                  sources: Mapping[rl.Stage, Any], action: rl.RunHook, world: rm.World) -> None:
        host = world.hosts.get(action.host)
        if host is None or not host.node:
            raise NotFound(f"Host {action.host} is unknown: hook {action.job_name} not created")
        if namespace not in self._sa_ready:
            self.jobs.ensure_service_account(namespace)
            self._sa_ready.add(namespace)
        body = hook_job_body(
            name=action.job_name, namespace=namespace, node=host.node,
            run=str(meta(owner).get("name")), host=action.host, stage=action.stage.value,
            source=sources[action.stage], command=action.command, timeout_s=action.timeout_s,
        )
        self.jobs.create(body, owner)

    def _converge(self, name: str, state: rl.RunState, world: rm.World,
                  done: Iterable[rl.Action] = ()) -> None:
        """Make the Hosts' maintenance requests and the Nodes' steer taints match the state
        (after a crash between the status write and the actions); hosts an action of this
        reconcile just handled are left alone (the watched copy may not show it yet)."""
        value = request_value(name)
        requests = rm.wanted_requests(state)
        steer = rm.wanted_steer(state)
        handled = {a.host for a in done if isinstance(a, rl.EnterMaintenance | rl.EndMaintenance)}
        handled |= {h for a in done if isinstance(
            a, rl.DisableGroupScheduling | rl.EnableGroupScheduling) for h in a.hosts}
        for host_name in rm.host_names(state):
            host = world.hosts.get(host_name)
            if host is None or host_name in handled:
                continue
            try:
                want = host_name in requests
                if want != (host.request == value):
                    self.api.request_maintenance(host_name, name, want)
                node = world.nodes.get(host.node)
                steered = node is not None and node.steered_by == name
                if node is not None and (host_name in steer) != steered:
                    self.api.steer(host.node, name, host_name in steer)
            except KubeError as exc:
                log.warning("rolling %s: host %s: %s", name, host_name, exc)

    def release(self, name: str, body: Mapping[str, Any], world: rm.World) -> None:
        """On deletion: take back every maintenance request and steer taint of the run."""
        value = request_value(name)
        for host in world.hosts.values():
            with contextlib.suppress(KubeError):
                if host.request == value:
                    self.api.request_maintenance(host.name, name, False)
                node = world.nodes.get(host.node)
                if node is not None and node.steered_by == name:
                    self.api.steer(host.node, name, False)

    def _write(self, name: str, body: Mapping[str, Any], old: Mapping[str, Any],
               new: Mapping[str, Any]) -> None:
        patch = merge_patch(dict(old), dict(new))
        if not patch:
            return
        try:
            updated = self.api.patch_status(name, patch)
        except NotFound:
            return
        self._written[name] = updated

    def _invalid(self, name: str, body: Mapping[str, Any], message: str) -> None:
        current: list[Condition] = []
        for c in status_of(body).get("conditions") or []:
            with contextlib.suppress(ValidationError):
                current.append(Condition.model_validate(c))
        old = get_condition(current, ConditionType.READY)
        if old is not None and old.reason == Reason.INVALID_SPEC and old.message == message:
            return
        conditions = set_condition(current, ConditionType.READY, ConditionStatus.FALSE,
                                   Reason.INVALID_SPEC, message,
                                   observed_generation=meta(body).get("generation"),
                                   now=get_clock().now())
        with contextlib.suppress(KubeError):
            self._written[name] = self.api.patch_status(
                name, {"conditions": [c.to_dict() for c in conditions]})
        self.api.event(body, "Warning", Reason.INVALID_SPEC, message)


def _capacity(state: rl.RunState, obs: rl.RollingObservation, spec: rl.RollingSpec,
              now: datetime) -> CapacityCheck | None:
    """The whole-scope capacity check, reported once when the run starts."""
    if not state.hosts:
        return None
    problems = []
    for h in state.hosts:
        refusal = rl.capacity_refusal({h.name}, obs.hosts, spec.engine_spares)
        if refusal is not None:
            problems.append(f"{h.name}: {refusal.reason}: {refusal.message}")
    message = "; ".join(problems) if problems else (
        f"the other hosts can hold the VMs of each of the {len(state.hosts)} hosts, "
        "and the engine keeps its spares")
    return CapacityCheck(ok=not problems, checked_at=now, message=message[:32768])


# --------------------------------------------------------------------------------------------
# kopf wiring


def reconciler_of(memo: kopf.Memo) -> RollingReconciler:
    reconciler = memo.get(RECONCILER_KEY)
    if not isinstance(reconciler, RollingReconciler):
        reconciler = RollingReconciler(kube_client(memo))
        memo[RECONCILER_KEY] = reconciler
    return reconciler


def triggers_of(memo: kopf.Memo) -> Triggers:
    triggers = memo.get(TRIGGERS_KEY)
    if not isinstance(triggers, Triggers):
        triggers = Triggers()
        memo[TRIGGERS_KEY] = triggers
    return triggers


@kopf.on.startup(id="rolling-startup")
def startup(memo: kopf.Memo, **_: Any) -> None:
    reconciler_of(memo)
    triggers_of(memo)


# -- indexes: kopf fills them all before any handler runs -------------------------------------


@kopf.index(API_GROUP, API_VERSION, "hosts", id="rolling_hosts")
def rolling_hosts(name: str, body: kopf.Body, **_: Any) -> dict[str, rm.HostInfo]:
    return {name: rm.host_info(body)}


@kopf.index("", "v1", "nodes", id="rolling_nodes")
def rolling_nodes(name: str, body: kopf.Body, **_: Any) -> dict[str, rm.NodeInfo]:
    return {name: rm.node_info(body)}


@kopf.index("", "v1", "pods", id="rolling_pods")
def rolling_pods(body: kopf.Body, **_: Any) -> dict[str, tuple[int, int]] | None:
    usage = rm.pod_usage(body)
    return None if usage is None else {usage[0]: usage[1]}


@kopf.index("kubevirt.io", "v1", "virtualmachineinstances", id="rolling_vmis")
def rolling_vmis(body: kopf.Body, **_: Any) -> dict[str, DrainVM] | None:
    usage = rm.vmi_usage(body)
    return None if usage is None else {usage[0]: usage[1]}


@kopf.index("", "v1", "pods", labels={RUN_LABEL: kopf.PRESENT}, id="rolling_hook_pods")
def rolling_hook_pods(body: kopf.Body, labels: kopf.Labels,
                      **_: Any) -> dict[str, dict[str, Any]] | None:
    """Hook pods by Job name: a finished hook's exit code without a list call."""
    job = labels.get("job-name")
    if not job:
        return None
    return {str(job): copy.deepcopy({
        "metadata": {k: v for k, v in dict(body.get("metadata") or {}).items()
                     if k in ("name", "namespace", "creationTimestamp")},
        "status": {"containerStatuses": list((body.get("status") or {}).get(
            "containerStatuses") or [])}})}


@kopf.index("batch", "v1", "jobs", labels={RUN_LABEL: kopf.PRESENT}, id="rolling_jobs")
def rolling_jobs(name: str, body: kopf.Body, labels: kopf.Labels,
                 **_: Any) -> dict[str, dict[str, Any]]:
    return {str(labels.get(RUN_LABEL)): copy.deepcopy(
        {"metadata": dict(body.get("metadata") or {}), "status": dict(body.get("status") or {})})}


def _world(run: str, indexes: Mapping[str, Any]) -> rm.World:
    """A plain snapshot of the indexes (taken in the event loop, read in a thread)."""
    def single(index: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in list(index):
            for value in index[key]:
                out[key] = value
        return out

    def multi(index: Any) -> dict[str, list[Any]]:
        return {key: list(index[key]) for key in list(index)}

    jobs_index = indexes["rolling_jobs"]
    pods_index = indexes["rolling_hook_pods"]
    jobs = {}
    hook_pods: dict[str, list[dict[str, Any]]] = {}
    if run in jobs_index:
        for job in jobs_index[run]:
            name = str(job["metadata"].get("name"))
            jobs[name] = job
            if name in pods_index:
                hook_pods[name] = list(pods_index[name])
    return rm.World(
        hosts=single(indexes["rolling_hosts"]),
        nodes=single(indexes["rolling_nodes"]),
        pods=multi(indexes["rolling_pods"]),
        vmis=multi(indexes["rolling_vmis"]),
        jobs=jobs,
        hook_pods=hook_pods,
    )


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, id="rolling", cancellation_timeout=10.0)
async def run_rolling(name: str, body: kopf.Body, memo: kopf.Memo,
                      stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
    """Reconcile on every wake-up, else at the next deadline or poll; stop once finished."""
    reconciler = reconciler_of(memo)
    triggers = triggers_of(memo)
    while not stopped:
        world = _world(name, kwargs)
        snapshot = copy.deepcopy(dict(body))
        try:
            outcome = await asyncio.to_thread(reconciler.reconcile, name, snapshot, world)
        except Exception:  # the API went away, a bug: log, back off, try again
            log.exception("rolling %s: reconcile failed", name)
            metrics.record_reconcile_error("RollingMaintenance")
            await triggers.wait(name, ERROR_BACKOFF)
            continue
        if outcome.done:
            return
        await triggers.wait(name, outcome.wait)


@kopf.on.event(API_GROUP, API_VERSION, PLURAL, id="rolling-watch")
async def rolling_event(name: str, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    triggers_of(memo).fire(name)


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, id="rolling-delete")
async def delete_rolling(name: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    reconciler = reconciler_of(memo)
    world = _world(name, kwargs)
    await asyncio.to_thread(reconciler.release, name, dict(body), world)
    reconciler.forget(name)
    triggers_of(memo).forget(name)


@kopf.on.event(API_GROUP, API_VERSION, "hosts", id="rolling-hosts-watch")
async def host_event(memo: kopf.Memo, **_: Any) -> None:
    triggers_of(memo).fire_all()  # a Host's state, request or labels moved: runs decide again


@kopf.on.event("batch", "v1", "jobs", labels={RUN_LABEL: kopf.PRESENT}, id="rolling-jobs-watch")
async def job_event(labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    triggers_of(memo).fire(str(labels.get(RUN_LABEL)))


__all__ = ["ROLLINGMAINTENANCES", "RollingReconciler", "reconciler_of"]
