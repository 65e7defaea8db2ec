"""Pure mapping between the Kubernetes objects a Host watches and the Host state machine.

:mod:`hosted_engine.logic.host_lifecycle` has its own frozen dataclasses; this module builds its
:class:`~hosted_engine.logic.host_lifecycle.HostObservation` from the watched objects (Host,
Nodes, Pods' requests, VMs, VMIs, migrations, the KubeVirt CR), and translates its
:class:`~hosted_engine.logic.host_lifecycle.HostStatus` to and from the Host's
``status`` (:class:`hosted_engine.models.host.HostStatus`), so that everything a restarted
operator needs to resume is in the object. No I/O here: tests call it with plain dicts.

Lease silence is judged by the lease clock (:mod:`hosted_engine.logic.leaseclock`): every
observation built from the watch cache carries the cache's :func:`lease_horizon` (the newest
renewal over all node Leases plus its renew interval), so an operator behind its Lease watch
does not see every node silent; the fence's re-read builds its Node observation without one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hosted_engine.adapters.kubevirt import (
    ENGINE_HOST_LABEL,
    ENGINE_VM_LABEL,
    FINAL_VMI_PHASES,
    MIGRATION_HOST_LABEL,
    OUT_OF_SERVICE_TAINT,
    RESTARTABLE_RUN_STRATEGIES,
    has_taint,
    meta,
    migration_end_time,
    migration_finished,
    migration_limits_config,
    migration_phase,
    node_allocatable,
    node_ready,
    parse_time,
    spec_of,
    status_of,
    vmi_requests,
)
from hosted_engine.logic import drain as dr
from hosted_engine.logic import host_lifecycle as lc
from hosted_engine.logic import leaseclock
from hosted_engine.models.conditions import get_condition
from hosted_engine.models.host import (
    FENCE_REQUEST_ANNOTATION,
    MAINTENANCE_REQUEST_ANNOTATION,
    BlockedVm,
    DrainStatus,
    FencePhase,
    FencingStatus,
    Host,
    HostedEngineDeployment,
    HostState,
    HostStatus,
    MigratingVm,
    NodeStatus,
    VmRef,
)

Obj = Mapping[str, Any]
Key = tuple[str, str]

MAINTENANCE_STATES = frozenset({HostState.MAINTENANCE, HostState.PREPARING_FOR_MAINTENANCE})


# --------------------------------------------------------------------------------------------
# Operator-wide knobs (not per Host): environment variables, read at start


@dataclass(frozen=True)
class HostSettings:
    """Thresholds of the Host state machine that are the operator's, not the Host's.

    Environment variables (seconds unless said otherwise): ``HE_HOST_SILENT_AFTER`` (a Node not
    Ready this long makes the Host NonResponsive, default 60), ``HE_HOST_FENCE_AFTER`` (more
    silence before a Host running restartable VMs is fenced, default 0),
    ``HE_HOST_FENCE_TIMEOUT`` (power-off confirmation, default 60), ``HE_HOST_MAX_FENCE_ATTEMPTS``
    (3), ``HE_HOST_MIN_HEALTHY_RATIO`` (storm guard, 0.5), ``HE_HOST_MIGRATION_RETRY_AFTER``
    (10), ``HE_HOST_MIGRATION_MAX_ATTEMPTS`` (3), ``HE_HOST_FENCE_MISSED_RENEWALS`` (node Lease
    renewals a Ready node must miss before a fence request is accepted, 2),
    ``HE_HOST_LEASE_RENEW_INTERVAL`` (the kubelet's renew interval; unset: a quarter of the
    Lease's leaseDurationSeconds) and ``HE_HOST_POWER_POLL`` (how often the BMC power state of
    a Host deployed for the hosted engine is read, 5; 0 = never).
    """

    silent_after_s: float = 60.0
    fence_after_s: float = 0.0
    fence_timeout_s: float = 60.0
    max_fence_attempts: int = 3
    min_healthy_ratio: float = 0.5
    migration_retry_after_s: float = dr.DEFAULT_RETRY_AFTER_S
    migration_max_attempts: int = dr.DEFAULT_MAX_ATTEMPTS
    resync_s: float = 300.0
    fence_missed_renewals: float = 2.0
    lease_renew_interval_s: float | None = None
    power_poll_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HostSettings:
        source = os.environ if env is None else env
        base = cls()

        def number(name: str, default: float) -> float:
            raw = source.get(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                return default
            return value if value >= 0 else default

        return cls(
            silent_after_s=number("HE_HOST_SILENT_AFTER", base.silent_after_s),
            fence_after_s=number("HE_HOST_FENCE_AFTER", base.fence_after_s),
            fence_timeout_s=max(0.1, number("HE_HOST_FENCE_TIMEOUT", base.fence_timeout_s)),
            max_fence_attempts=max(1, int(number("HE_HOST_MAX_FENCE_ATTEMPTS",
                                                 base.max_fence_attempts))),
            min_healthy_ratio=min(1.0, number("HE_HOST_MIN_HEALTHY_RATIO",
                                              base.min_healthy_ratio)),
            migration_retry_after_s=number("HE_HOST_MIGRATION_RETRY_AFTER",
                                           base.migration_retry_after_s),
            migration_max_attempts=max(1, int(number("HE_HOST_MIGRATION_MAX_ATTEMPTS",
                                                     base.migration_max_attempts))),
            resync_s=max(1.0, number("HE_HOST_RESYNC", base.resync_s)),
            fence_missed_renewals=max(1.0, number("HE_HOST_FENCE_MISSED_RENEWALS",
                                                  base.fence_missed_renewals)),
            lease_renew_interval_s=(number("HE_HOST_LEASE_RENEW_INTERVAL", 0.0) or None),
            power_poll_s=number("HE_HOST_POWER_POLL", base.power_poll_s),
        )

    def policy_for_leases(self) -> lc.HostPolicy:
        """The part of the Host policy that judges node Leases (for the storm guard)."""
        return lc.HostPolicy(fence_missed_renewals=self.fence_missed_renewals,
                             lease_renew_interval_s=self.lease_renew_interval_s)


# --------------------------------------------------------------------------------------------
# The watched world


@dataclass
class World:
    """What the watches delivered (shared objects: never mutate them)."""

    hosts: dict[str, Obj] = field(default_factory=dict)
    nodes: dict[str, Obj] = field(default_factory=dict)
    vms: dict[Key, Obj] = field(default_factory=dict)
    vmis: dict[Key, Obj] = field(default_factory=dict)
    vmims: dict[Key, Obj] = field(default_factory=dict)
    #: pod requests (memory bytes, CPU millis) by pod key, and the node each pod is bound to
    pod_requests: dict[Key, tuple[str, int, int, str]] = field(default_factory=dict)
    kubevirt: Obj | None = None
    #: node name -> (the Lease's renewTime, its leaseDurationSeconds)
    leases: dict[str, tuple[datetime, float | None]] = field(default_factory=dict)
    #: node name -> its active VMIs (kept per VMI event by the Host reconciler; None:
    #: :func:`vmis_on` scans). Per Host a scan of every VMI was
    #: O(Hosts x VMIs) per reconcile wave: 57 % of the operator's CPU at 1,000 Hosts + 10,000 VMs
    vmis_by_node: dict[str, tuple[Obj, ...]] | None = None


def key_of(obj: Obj) -> Key:
    m = meta(obj)
    return (str(m.get("namespace") or ""), str(m.get("name") or ""))


def vmi_node(vmi: Obj) -> str:
    return str(status_of(vmi).get("nodeName") or "")


def vmi_active(vmi: Obj) -> bool:
    return str(status_of(vmi).get("phase") or "") not in FINAL_VMI_PHASES


def run_strategy(vm: Obj | None) -> str:
    spec = spec_of(vm)
    if spec.get("runStrategy"):
        return str(spec["runStrategy"])
    running = spec.get("running")
    if running is True:
        return "Always"
    if running is False:
        return "Halted"
    return ""


def is_engine_vm(vmi: Obj, vm: Obj | None) -> bool:
    for obj in (vmi, vm):
        if obj is None:
            continue
        if ENGINE_VM_LABEL in (meta(obj).get("labels") or {}):
            return True
    for ref in meta(vm).get("ownerReferences") or []:
        if ref.get("kind") == "HostedEngine" and str(ref.get("apiVersion", "")).startswith(
            "hostedengine.io/"
        ):
            return True
    return False


def migratable(vmi: Obj) -> tuple[bool, str]:
    """KubeVirt's LiveMigratable condition: (migratable, "Reason: message")."""
    for cond in status_of(vmi).get("conditions") or []:
        if cond.get("type") == "LiveMigratable":
            if cond.get("status") == "False":
                reason = str(cond.get("reason") or "NotLiveMigratable")
                message = str(cond.get("message") or "")
                return False, f"{reason}: {message}" if message else reason
            return True, ""
    return True, ""


def host_node(host: Obj) -> str:
    return str(spec_of(host).get("nodeName") or "")


def host_state(host: Obj | None) -> str:
    return str(status_of(host).get("state") or "")


def engine_host_node(node: Obj | None, host: Obj | None) -> bool:
    labels = meta(node).get("labels") or {}
    if labels.get(ENGINE_HOST_LABEL) == "true":
        return True
    return spec_of(host).get("hostedEngine") == HostedEngineDeployment.DEPLOY.value


def migrations_of(world: World, vmi_key: Key) -> list[Obj]:
    out = [m for (ns, _), m in world.vmims.items()
           if ns == vmi_key[0] and spec_of(m).get("vmiName") == vmi_key[1]]
    return sorted(out, key=lambda m: (str(meta(m).get("creationTimestamp") or ""),
                                      str(meta(m).get("name"))))


def ours(vmim: Obj, host: str) -> bool:
    return (meta(vmim).get("labels") or {}).get(MIGRATION_HOST_LABEL) == host


def _after(vmim: Obj, since: datetime | None) -> bool:
    if since is None:
        return True
    created = parse_time(meta(vmim).get("creationTimestamp"))
    # creation timestamps have one-second resolution
    return created is None or (since - created).total_seconds() < 1.0


def drain_vm(world: World, host: str, vmi: Obj, *, since: datetime | None,
             stopping: bool) -> dr.DrainVM:
    key = key_of(vmi)
    vm = world.vms.get(key)
    mem, cpu = vmi_requests(vmi)
    live, why = migratable(vmi)
    migrations = migrations_of(world, key)
    in_flight = any(not migration_finished(m) for m in migrations)
    mine = [m for m in migrations if ours(m, host) and _after(m, since)]
    failed = [m for m in mine if migration_phase(m) == "Failed"]
    state = dr.MigrationState.NONE
    if in_flight:
        state = dr.MigrationState.IN_FLIGHT
    elif mine and migration_phase(mine[-1]) == "Succeeded":
        state = dr.MigrationState.SUCCEEDED
    elif failed:
        state = dr.MigrationState.FAILED
    last_failure = max((t for t in (migration_end_time(m) for m in failed) if t), default=None)
    return dr.DrainVM(
        name=key[1],
        namespace=key[0],
        memory_bytes=mem,
        cpu_millis=cpu,
        live_migratable=live,
        not_migratable_reason=why,
        is_engine=is_engine_vm(vmi, vm),
        migration=state,
        failed_attempts=len(failed),
        last_failure_at=last_failure,
        stopping=stopping or bool(meta(vmi).get("deletionTimestamp")),
    )


def migrated_away(world: World, host: str, node: str) -> tuple[dr.VMRef, ...]:
    """VMs moved off ``node`` by a Succeeded migration of this Host's (labelled for it) that is
    still kept (the Host deletes its finished migrations once it is Up again): facts, not the
    drain's bookkeeping, which a killed operator may not have written."""
    away: set[tuple[str, str]] = set()
    for m in world.vmims.values():
        if not ours(m, host) or migration_phase(m) != "Succeeded" \
                or meta(m).get("deletionTimestamp"):
            continue
        key = (key_of(m)[0], str(spec_of(m).get("vmiName") or ""))
        vmi = world.vmis.get(key)
        if vmi is not None and vmi_active(vmi) and vmi_node(vmi) not in ("", node):
            away.add(key)
    return tuple(dr.VMRef(ns, name) for ns, name in sorted(away))


def vmis_on(world: World, node: str) -> list[Obj]:
    """The active VMIs on ``node``."""
    if world.vmis_by_node is not None:
        return list(world.vmis_by_node.get(node, ()))
    return [v for v in world.vmis.values() if vmi_node(v) == node and vmi_active(v)]


def allocated_on(world: World, node: str) -> tuple[int, int]:
    return allocated_by_node(world).get(node, (0, 0))


def allocated_by_node(world: World) -> dict[str, tuple[int, int]]:
    """(memory bytes, CPU millis) requested by the live pods of each node, in one pass over the
    pods (per node it would be nodes x pods per reconcile: 10^7 at 1,000 nodes)."""
    out: dict[str, tuple[int, int]] = {}
    for bound, m, c, phase in world.pod_requests.values():
        if bound and phase not in ("Succeeded", "Failed"):
            mem, cpu = out.get(bound, (0, 0))
            out[bound] = (mem + m, cpu + c)
    return out


def targets(world: World, node: str) -> list[dr.TargetHost]:
    host_by_node = {host_node(h): h for h in world.hosts.values()}
    allocated = allocated_by_node(world)
    out: list[dr.TargetHost] = []
    for name, obj in sorted(world.nodes.items()):
        if name == node:
            continue
        host = host_by_node.get(name)
        alloc_mem, alloc_cpu = node_allocatable(obj)
        used_mem, used_cpu = allocated.get(name, (0, 0))
        ready, _ = node_ready(obj)
        out.append(dr.TargetHost(
            name=name,
            allocatable_memory_bytes=alloc_mem,
            allocatable_cpu_millis=alloc_cpu,
            allocated_memory_bytes=used_mem,
            allocated_cpu_millis=used_cpu,
            schedulable=ready is True and not spec_of(obj).get("unschedulable")
            and not has_taint(obj, OUT_OF_SERVICE_TAINT),
            in_maintenance=host is not None and (
                host_state(host) in {s.value for s in MAINTENANCE_STATES}
                or (spec_of(host).get("maintenance") or {}).get("mode") == "local"
                or bool((meta(host).get("annotations") or {}).get(MAINTENANCE_REQUEST_ANNOTATION))
            ),
            may_run_engine=engine_host_node(obj, host),
        ))
    return out


def in_flight_by_source(world: World, node: str, host: str) -> dict[str, int]:
    """Unfinished migrations per source node, with this host's node keyed by ``host``."""
    counts: dict[str, int] = {}
    for vmim in world.vmims.values():
        if migration_finished(vmim):
            continue
        state = status_of(vmim).get("migrationState") or {}
        source = str(state.get("sourceNode") or "")
        if not source:
            vmi = world.vmis.get((key_of(vmim)[0], str(spec_of(vmim).get("vmiName") or "")))
            source = vmi_node(vmi) if vmi is not None else ""
        if not source:
            continue
        label = host if source == node else source
        counts[label] = counts.get(label, 0) + 1
    return counts


def lease_horizon(world: World, configured_s: float | None = None) -> datetime | None:
    """The lease clock's limit over every node Lease in the cache
    (:mod:`hosted_engine.logic.leaseclock`): the newest renewal seen plus its renew interval
    (``configured_s``, else a quarter of the Lease's duration). A Host's Lease silence is
    judged at min(now, this), so an operator behind its Lease watch does not see every node
    silent."""
    return leaseclock.horizon(
        (renewed, leaseclock.renew_interval_s(duration, configured_s))
        for renewed, duration in world.leases.values())


def node_observation(world: World, node_name: str,
                     horizon: datetime | None = None) -> lc.NodeObservation:
    """The Node and its Lease as the state machine sees them. ``horizon``: the lease clock's
    limit (:func:`lease_horizon` of the watch cache); None judges the Lease against the wall
    clock (the fence's re-read, a fresh GET right before a power-off)."""
    node = world.nodes.get(node_name)
    ready, since = node_ready(node)
    unusable = unusable_reason(node)
    renewed, duration = world.leases.get(node_name, (None, None))
    return lc.NodeObservation(
        exists=node is not None,
        ready=ready,
        not_ready_since=since if ready is not True else None,
        cordoned=bool(spec_of(node).get("unschedulable")),
        out_of_service_taint=has_taint(node, OUT_OF_SERVICE_TAINT),
        usable=not unusable,
        unusable_reason=unusable,
        lease_renewed_at=renewed,
        lease_duration_s=duration,
        lease_horizon=horizon,
    )


def cluster_health(world: World, now: datetime | None = None,
                   policy: lc.HostPolicy | None = None,
                   horizon: datetime | None = None) -> lc.ClusterHealth:
    """Hosts heard from (fresh Lease; Ready when no Lease is known) out of all Hosts: the storm
    guard counts what the operator hears, not what the node-lifecycle controller concluded
    (a partitioned operator sees many silent Leases at once, still Ready for 40 s).

    Exactly :func:`~hosted_engine.logic.host_lifecycle.lease_fresh` of each Host's node, by
    the lease clock (``horizon``, computed from the Leases when not given), but reading only
    the Lease table (and the Node when there is no Lease): with a full
    :func:`node_observation` per Host it was 52 % of the idle CPU at 1,000 Hosts."""
    nodes = [host_node(h) for h in world.hosts.values()]
    if now is None:
        ready = sum(1 for n in nodes if node_ready(world.nodes.get(n))[0] is True)
    else:
        rules = policy or lc.HostPolicy()
        if horizon is None:
            horizon = lease_horizon(world, rules.lease_renew_interval_s)
        now = leaseclock.lease_now(now, horizon)
        thresholds: dict[float | None, float] = {}
        ready = 0
        for n in nodes:
            lease = world.leases.get(n)
            if lease is None:
                node = world.nodes.get(n)
                ready += node is not None and node_ready(node)[0] is True
                continue
            renewed, duration = lease
            limit = thresholds.get(duration)
            if limit is None:
                limit = thresholds[duration] = lc.lease_threshold_s(
                    lc.NodeObservation(lease_duration_s=duration), rules)
            ready += (now - renewed).total_seconds() < limit
    return lc.ClusterHealth(total_hosts=max(1, len(nodes)), ready_hosts=ready)


#: Host states whose decisions read the other Hosts (drain targets, storm guard).
_STATES_READING_OTHERS = frozenset({
    "", HostState.PENDING.value, HostState.PREPARING_FOR_MAINTENANCE.value,
    HostState.MAINTENANCE.value, HostState.ACTIVATING.value, HostState.NON_RESPONSIVE.value,
    HostState.FENCED.value})


def reads_other_hosts(host: Obj) -> bool:
    """Whether this Host's next decision can change when another Host's state or spec, or
    another Node or Lease, changes: maintenance asked for or under way (the drain's targets,
    the cluster-wide migration slots), a fence to decide (the storm guard counts the Hosts
    heard from), a hosted-engine deployment (host ids, the engine's next host). The other
    Hosts' decisions read only their own Node, Lease, VMs and spec: an Up Host is not woken
    by its 999 neighbours."""
    if host_state(host) in _STATES_READING_OTHERS:
        return True
    spec = spec_of(host)
    if (spec.get("maintenance") or {}).get("mode") == "local" or spec.get("hostedEngine"):
        return True
    annotations = meta(host).get("annotations") or {}
    if annotations.get(MAINTENANCE_REQUEST_ANNOTATION) or annotations.get(
            FENCE_REQUEST_ANNOTATION):
        return True
    deployment = status_of(host).get("hostedEngine") or {}
    return bool(deployment.get("deployed") or deployment.get("hostID") is not None)


def maintenance_mode(host: Host) -> lc.MaintenanceMode:
    """``local`` when the spec asks for it or the operator does (the maintenance-request
    annotation of a rolling maintenance run), else ``none``."""
    if host.metadata.annotations.get(MAINTENANCE_REQUEST_ANNOTATION, "").strip():
        return lc.MaintenanceMode.LOCAL
    return lc.MaintenanceMode(host.spec.maintenance.mode.value)


#: Node conditions that make a Ready node unusable for VMs (NonOperational), True = bad.
UNUSABLE_CONDITIONS = ("NetworkUnavailable",)


def unusable_reason(node: Obj | None) -> str:
    """Why a Node that may be Ready cannot run VMs ("" when it can): a bad Node condition."""
    for cond in status_of(node).get("conditions") or []:
        if cond.get("type") in UNUSABLE_CONDITIONS and cond.get("status") == "True":
            return str(cond.get("type"))
    return ""


def fence_request(host: Host) -> tuple[str, str] | None:
    """(requester, request id) of the annotation, or None."""
    raw = host.metadata.annotations.get(FENCE_REQUEST_ANNOTATION)
    if raw is None or not raw.strip():
        return None
    requester, _, request_id = raw.strip().partition("/")
    return (requester or "unknown", request_id or requester or "request")


def fence_request_active(host: Host) -> bool:
    """A request that is not handled yet (confirmed, failed for good or released)."""
    request = fence_request(host)
    if request is None:
        return False
    fencing = host.status.fencing
    if fencing is None or fencing.request_id != request[1]:
        return True
    return fencing.phase not in (FencePhase.CONFIRMED, FencePhase.FAILED, FencePhase.RELEASED)


def observe(host: Host, world: World, now: datetime, settings: HostSettings,
            progress: lc.MaintenanceProgress | None) -> lc.HostObservation:
    name = host.metadata.name
    node_name = host.spec.node_name
    shut_down = set(progress.shut_down) if progress else set()
    started = progress.started_at if progress else None
    vmis = vmis_on(world, node_name)
    vms = [
        drain_vm(world, name, v, since=started,
                 stopping=f"{key_of(v)[0]}/{key_of(v)[1]}" in shut_down)
        for v in vmis
    ]
    restartable = any(
        run_strategy(world.vms.get(key_of(v))) in RESTARTABLE_RUN_STRATEGIES for v in vmis
    )
    pm = host.spec.power_management
    power = host.status.power_management
    maintenance = host.spec.maintenance
    lease_rules = settings.policy_for_leases()
    horizon = lease_horizon(world, settings.lease_renew_interval_s)
    return lc.HostObservation(
        host=name,
        now=now,
        mode=maintenance_mode(host),
        node=node_observation(world, node_name, horizon),
        power=lc.PowerObservation(
            configured=pm is not None,
            fencing_allowed=pm is not None and pm.fencing_enabled,
            power_state=power.power_state.value,
            observed_at=power.checked_at,
        ),
        cluster=cluster_health(world, now, lease_rules, horizon),
        vms=tuple(vms),
        # the drain's targets (every node's capacity): only while maintenance is asked for or
        # under way -- the only decisions that read them (O(nodes + pods) per reconcile)
        targets=tuple(targets(world, node_name))
        if progress is not None or maintenance_mode(host) is lc.MaintenanceMode.LOCAL else (),
        in_flight_by_source=in_flight_by_source(world, node_name, name),
        limits=dr.MigrationLimits.from_kubevirt_config(migration_limits_config(world.kubevirt)),
        policy=lc.HostPolicy(
            maintenance_timeout_s=maintenance.timeout.total_seconds(),
            non_migratable=dr.NonMigratablePolicy(maintenance.non_migratable_policy.value),
            silent_after_s=settings.silent_after_s,
            fence_after_s=settings.fence_after_s,
            fence_timeout_s=settings.fence_timeout_s,
            max_fence_attempts=settings.max_fence_attempts,
            min_healthy_ratio=settings.min_healthy_ratio,
            migration_max_attempts=settings.migration_max_attempts,
            migration_retry_after_s=settings.migration_retry_after_s,
            fence_missed_renewals=settings.fence_missed_renewals,
            lease_renew_interval_s=settings.lease_renew_interval_s,
        ),
        fence_requested=fence_request_active(host),
        runs_restartable_vms=restartable,
        migrated_away=migrated_away(world, name, node_name)
        if progress is not None or maintenance_mode(host) is lc.MaintenanceMode.LOCAL else (),
    )


# --------------------------------------------------------------------------------------------
# Status: model <-> logic


def _ref_key(ref: VmRef) -> str:
    return f"{ref.namespace}/{ref.name}"


def _vm_ref(key: str) -> VmRef:
    namespace, _, name = key.partition("/")
    return VmRef(namespace=namespace, name=name)


def to_logic(status: HostStatus, started_migrations: Iterable[str] = (),
             request_id: str | None = None) -> lc.HostStatus | None:
    """The state machine's status from the Host's (None for a Host never handled).

    ``request_id``: the fence request annotated now. A fence that gave up belongs to the
    request it handled: a new request (a new id) starts a new attempt budget (a BMC outage
    longer than the retries must not leave the host unfenceable for good)."""
    if status.state is HostState.PENDING:
        return None
    state = lc.HostState(status.state.value)
    fencing = status.fencing
    return_to: lc.HostState | None = None
    fence: lc.FenceProgress | None = None
    if fencing is not None:
        if fencing.previous_state is not None and fencing.previous_state is not HostState.PENDING:
            return_to = lc.HostState(fencing.previous_state.value)
        new_request = (request_id is not None and fencing.request_id != request_id
                       and fencing.phase is FencePhase.FAILED)
        if fencing.count > 0 and state in (lc.HostState.NON_RESPONSIVE, lc.HostState.FENCED) \
                and not new_request:
            fence = lc.FenceProgress(
                requested_at=fencing.started_at,
                attempts=fencing.count,
                confirmed_off_at=fencing.confirmed_at,
                gave_up=fencing.phase is FencePhase.FAILED,
            )
    maintenance: lc.MaintenanceProgress | None = None
    drain = status.drain
    if drain is not None and drain.started_at is not None:
        maintenance = lc.MaintenanceProgress(
            started_at=drain.started_at,
            finished_at=drain.finished_at,
            to_move=tuple(sorted(_ref_key(r) for r in drain.to_move)),
            moved=tuple(sorted(_ref_key(r) for r in drain.moved)),
            in_flight=tuple(sorted(_ref_key(r) for r in drain.in_flight)),
            blocked=tuple(dr.BlockedVM(dr.VMRef(b.namespace, b.name), b.reason)
                          for b in drain.blocked),
            shut_down=tuple(sorted(_ref_key(r) for r in drain.shut_down)),
            started_migrations=tuple(sorted(
                set(started_migrations) | {_ref_key(r) for r in drain.in_flight})),
            timed_out=drain.timed_out,
        )
    refused = get_condition(status.conditions, "MaintenanceRefused")
    refusal = (dr.Refusal(refused.reason, refused.message)
               if refused is not None and refused.status.value == "True" else None)
    blocked = get_condition(status.conditions, "FencingBlocked")
    return lc.HostStatus(
        state=state,
        since=status.state_since,
        return_to=return_to,
        maintenance=maintenance,
        fence=fence,
        refusal=refusal,
        fence_blocked_reason=(blocked.reason if blocked is not None
                              and blocked.status.value == "True" else None),
    )


def drain_status(progress: lc.MaintenanceProgress | None, world: World, host: str,
                 previous: DrainStatus | None) -> DrainStatus | None:
    if progress is None:
        return None
    in_flight: list[MigratingVm] = []
    for key in progress.in_flight:
        ref = _vm_ref(key)
        live = [m for m in migrations_of(world, (ref.namespace, ref.name))
                if not migration_finished(m)]
        mig = live[-1] if live else None
        state = status_of(mig).get("migrationState") or {} if mig is not None else {}
        in_flight.append(MigratingVm(
            namespace=ref.namespace, name=ref.name,
            migration=str(meta(mig).get("name")) if mig is not None else None,
            target_node=str(state.get("targetNode")) if state.get("targetNode") else None,
            started_at=parse_time(meta(mig).get("creationTimestamp")) if mig is not None
            else None,
        ))
    failed = []
    for key in progress.to_move:
        ref = _vm_ref(key)
        bad = [m for m in migrations_of(world, (ref.namespace, ref.name))
               if ours(m, host) and migration_phase(m) == "Failed"
               and _after(m, progress.started_at)]
        if bad:
            reason = str((status_of(bad[-1]).get("migrationState") or {}).get("failureReason")
                         or "migration failed")
            failed.append(BlockedVm(namespace=ref.namespace, name=ref.name,
                                    reason=f"{len(bad)} failed: {reason}"[:1024]))
    message = None
    if progress.timed_out:
        message = "timed out: migrations stopped, the host stays cordoned"
    elif progress.finished_at is not None:
        message = f"{len(progress.moved)} VMs moved"
    return DrainStatus(
        started_at=progress.started_at,
        finished_at=progress.finished_at,
        total=len(progress.to_move),
        to_move=[_vm_ref(k) for k in progress.to_move],
        in_flight=in_flight,
        moved=[_vm_ref(k) for k in progress.moved],
        blocked=[BlockedVm(namespace=b.vm.namespace, name=b.vm.name, reason=b.reason[:1024])
                 for b in progress.blocked],
        shut_down=[_vm_ref(k) for k in progress.shut_down],
        failed=failed,
        timed_out=progress.timed_out,
        message=message,
    )


def fencing_status(new: lc.HostStatus, host: Host, previous: FencingStatus | None,
                   now: datetime) -> FencingStatus | None:
    request = fence_request(host)
    active = fence_request_active(host)
    base = previous or FencingStatus()
    if request is not None and active and base.request_id != request[1]:
        base = FencingStatus(request_id=request[1], requested_by=request[0], requested_at=now,
                             phase=FencePhase.REQUESTED, previous_state=base.previous_state)
    fence = new.fence
    in_fence_states = new.state in (lc.HostState.NON_RESPONSIVE, lc.HostState.FENCED)
    previous_state = (HostState(new.return_to.value)
                      if new.return_to is not None and in_fence_states else None)
    phase: FencePhase | None
    if fence is not None and in_fence_states:
        if fence.gave_up:
            phase = FencePhase.FAILED
        elif fence.confirmed_off_at is not None:
            phase = FencePhase.CONFIRMED
        elif fence.requested_at is not None:
            phase = FencePhase.POWERING_OFF
        else:
            phase = FencePhase.REQUESTED
        return replace_fencing(
            base,
            phase=phase,
            started_at=fence.requested_at or base.started_at,
            confirmed_at=fence.confirmed_off_at,
            finished_at=fence.confirmed_off_at if phase is FencePhase.CONFIRMED else None,
            count=fence.attempts,
            out_of_service_taint=new.state is lc.HostState.FENCED,
            previous_state=previous_state,
            message=None,
        )
    if new.fence_blocked_reason is not None and (active or in_fence_states):
        return replace_fencing(base, phase=FencePhase.REFUSED if active else base.phase,
                               message=f"fencing blocked: {new.fence_blocked_reason}",
                               previous_state=previous_state)
    if previous is None and request is None and previous_state is None:
        return None
    phase = base.phase
    if not in_fence_states and phase in (FencePhase.CONFIRMED, FencePhase.POWERING_OFF):
        phase = FencePhase.RELEASED
    if active and phase is FencePhase.REFUSED and new.fence_blocked_reason is None:
        phase = FencePhase.REQUESTED
    return replace_fencing(
        base,
        phase=phase,
        finished_at=now if phase is FencePhase.RELEASED and base.finished_at is None
        else base.finished_at,
        count=0 if not in_fence_states else base.count,
        out_of_service_taint=False if not in_fence_states else base.out_of_service_taint,
        previous_state=previous_state,
        message=None if phase is not FencePhase.REFUSED else base.message,
    )


def replace_fencing(base: FencingStatus, **changes: Any) -> FencingStatus:
    return base.model_copy(update=changes)


def node_status(node: Obj | None, previous: NodeStatus | None = None) -> NodeStatus:
    """The Node as the Host reports it. ``lastHeartbeat`` is refreshed only when Ready changes
    (a heartbeat every few seconds is not worth a status write each)."""
    ready, _ = node_ready(node)
    heartbeat = previous.last_heartbeat if previous is not None else None
    if previous is None or previous.ready != (ready is True) or heartbeat is None:
        for cond in status_of(node).get("conditions") or []:
            if cond.get("type") == "Ready":
                heartbeat = parse_time(cond.get("lastHeartbeatTime"))
    return NodeStatus(
        ready=ready is True,
        last_heartbeat=heartbeat,
        unschedulable=bool(spec_of(node).get("unschedulable")),
        out_of_service=has_taint(node, OUT_OF_SERVICE_TAINT),
    )


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (None: nothing to change)."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return None if old == new else new
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
            continue
        sub = merge_patch(old[key], value)
        if isinstance(old[key], Mapping) and isinstance(value, Mapping):
            if sub:
                patch[key] = sub
        elif old[key] != value:
            patch[key] = value
    return patch


__all__ = [
    "HostSettings",
    "World",
    "drain_status",
    "fencing_status",
    "maintenance_mode",
    "merge_patch",
    "node_status",
    "observe",
    "to_logic",
]
