"""The drain planner: which VMs leave a host now, which are blocked, which are shut down.

Pure: no I/O, no clock (``now`` is an argument). The handler observes the world (VMIs on the
host, the other hosts' capacity, every VirtualMachineInstanceMigration in the cluster, the
KubeVirt CR's migration limits), calls :func:`plan_drain` and carries the result out.

Algorithm of :func:`plan_drain`
-------------------------------
1. Every VM on the host is classified:

   - moved (its migration succeeded: it is no longer the host's business);
   - in flight (a migration object exists and has not finished);
   - stopping (the ``shutdown`` policy already asked it to stop);
   - not live-migratable: ``block`` policy -> blocked with KubeVirt's reason, ``shutdown``
     policy -> a shutdown order (the VM stays off, like Harvester's forced maintenance; nothing
     restarts it on this host because the host is cordoned). The engine VM is never shut down
     by policy: it blocks, and the HostedEngine cold-moves it;
   - the engine VM when no usable host may run it -> blocked (never migrated "anywhere");
   - failed too often (``max_attempts`` migrations failed) -> blocked with the reason;
   - failed recently (less than ``retry_after_s`` ago) -> waiting, retried later;
   - otherwise queued.

2. Free slots = ``min(perNode - inFlightFromThisHost, perCluster - inFlightInTheCluster)``,
   never below zero. The in-flight counts are the larger of what the cluster reports for this
   source node and what the VMs themselves say, so a migration just created and not yet seen by
   the watch is never forgotten (limits are never exceeded, even with stale observations). All
   free slots are used at once: the limits are kept full.

3. The queue order is: the engine VM first (it must reach a host allowed to run it before
   anything else can disturb it; its migration carries the list of those hosts as its allowed
   targets), then largest memory first (then CPU, then name for determinism).

   Why largest first: a live migration's duration is dominated by the memory it copies (RAM over
   bandwidth plus re-copying dirtied pages), so with ``c`` concurrent slots the drain is the
   classic ``P||Cmax`` problem on ``c`` identical machines. Greedy list scheduling that refills a
   slot as soon as it frees (what step 2 does on every observation) in *Longest Processing Time
   first* order is within ``4/3 - 1/(3c)`` of the optimal makespan (Graham, 1969) and in practice
   much closer: the small VMs at the tail fill the gaps left by the big ones, while
   smallest-first leaves one big migration running alone at the end. :func:`ideal_makespan`
   computes that schedule with zero reaction latency; the benchmark measures the real drain
   against it.

Capacity (:func:`check_capacity`)
---------------------------------
Before a host enters maintenance (and before each host of a rolling maintenance) the VMs that
must move (live-migratable ones not yet moved or in flight) have to fit in the free capacity
(allocatable minus allocated, memory and CPU requests) of the hosts that stay schedulable. Three
checks, the cheapest first: the engine VM needs a host allowed to run it that can hold it; the
totals must fit; then a two-dimensional bin packing, placing the engine first on an allowed
host, then the VMs in decreasing size by best fit and, if that fails, by worst fit (either
placement proving feasibility is enough). Bin packing is NP-hard, so the check may refuse a
placement that exists in rare tight cases; it never accepts one that does not exist.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

DEFAULT_PARALLEL_MIGRATIONS_PER_CLUSTER = 5
DEFAULT_PARALLEL_OUTBOUND_MIGRATIONS_PER_NODE = 2
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_RETRY_AFTER_S = 10.0


class MigrationState(StrEnum):
    """Where a VM's migration stands, as the handler maps it from the VMIM's phase."""

    NONE = "None"  # on the host, no migration object
    IN_FLIGHT = "InFlight"  # Pending, Scheduling, Scheduled, PreparingTarget, TargetReady, Running
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class NonMigratablePolicy(StrEnum):
    BLOCK = "block"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class VMRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class DrainVM:
    """One VM (VMI) running on the host to drain."""

    name: str
    namespace: str
    memory_bytes: int
    cpu_millis: int
    live_migratable: bool = True
    not_migratable_reason: str = ""
    is_engine: bool = False
    migration: MigrationState = MigrationState.NONE
    failed_attempts: int = 0
    last_failure_at: datetime | None = None
    stopping: bool = False

    @property
    def ref(self) -> VMRef:
        return VMRef(self.namespace, self.name)


@dataclass(frozen=True)
class TargetHost:
    """Another host, as a possible destination."""

    name: str
    allocatable_memory_bytes: int
    allocatable_cpu_millis: int
    allocated_memory_bytes: int = 0
    allocated_cpu_millis: int = 0
    schedulable: bool = True
    in_maintenance: bool = False
    may_run_engine: bool = False

    @property
    def free_memory_bytes(self) -> int:
        return max(0, self.allocatable_memory_bytes - self.allocated_memory_bytes)

    @property
    def free_cpu_millis(self) -> int:
        return max(0, self.allocatable_cpu_millis - self.allocated_cpu_millis)

    @property
    def usable(self) -> bool:
        return self.schedulable and not self.in_maintenance


@dataclass(frozen=True)
class MigrationLimits:
    """KubeVirt's ``spec.configuration.migrations`` limits (defaults as in KubeVirt's code)."""

    per_cluster: int = DEFAULT_PARALLEL_MIGRATIONS_PER_CLUSTER
    per_node_outbound: int = DEFAULT_PARALLEL_OUTBOUND_MIGRATIONS_PER_NODE

    def __post_init__(self) -> None:
        if self.per_cluster < 1 or self.per_node_outbound < 1:
            raise ValueError(
                f"migration limits must be >= 1, got perCluster={self.per_cluster} "
                f"perNodeOutbound={self.per_node_outbound}"
            )

    @property
    def slots(self) -> int:
        """Concurrent migrations one host can have out when nothing else migrates."""
        return min(self.per_cluster, self.per_node_outbound)

    @classmethod
    def from_kubevirt_config(cls, migrations: Mapping[str, Any] | None) -> MigrationLimits:
        """Read ``spec.configuration.migrations`` of the KubeVirt CR; absent or bad -> default."""
        cfg = migrations or {}

        def pick(key: str, default: int) -> int:
            value = cfg.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return value
            return default

        return cls(
            per_cluster=pick(
                "parallelMigrationsPerCluster", DEFAULT_PARALLEL_MIGRATIONS_PER_CLUSTER
            ),
            per_node_outbound=pick(
                "parallelOutboundMigrationsPerNode", DEFAULT_PARALLEL_OUTBOUND_MIGRATIONS_PER_NODE
            ),
        )


@dataclass(frozen=True)
class MigrationStart:
    """Create a VirtualMachineInstanceMigration for this VMI."""

    vm: VMRef
    migration_name: str
    is_engine: bool
    memory_bytes: int
    allowed_nodes: tuple[str, ...] = ()  # empty: any node; else an addedNodeSelector on these


@dataclass(frozen=True)
class BlockedVM:
    vm: VMRef
    reason: str


@dataclass(frozen=True)
class Refusal:
    """Why a host may not enter maintenance now. ``reason`` is CamelCase."""

    reason: str
    message: str


@dataclass(frozen=True)
class DrainPlan:
    start: tuple[MigrationStart, ...]
    shutdown: tuple[VMRef, ...]  # to stop now (shutdown policy)
    stopping: tuple[VMRef, ...]  # already asked to stop, not gone yet
    blocked: tuple[BlockedVM, ...]
    in_flight: tuple[VMRef, ...]  # migrating before this plan (``start`` comes on top)
    waiting: tuple[VMRef, ...]  # migratable, waiting for a slot or a retry
    moved: tuple[VMRef, ...]
    free_slots_after: int

    @property
    def complete(self) -> bool:
        """Nothing is left on the host: maintenance is reached."""
        return not (
            self.start
            or self.shutdown
            or self.stopping
            or self.blocked
            or self.in_flight
            or self.waiting
        )

    @property
    def only_blocked_left(self) -> bool:
        return bool(self.blocked) and not (
            self.start or self.shutdown or self.stopping or self.in_flight or self.waiting
        )


def migration_name(host: str, vm: VMRef, attempt: int = 1) -> str:
    """A deterministic VMIM name (DNS-1123, <= 63 chars): creation is idempotent.

    One name per (host, VM, attempt): a failed migration object stays (it is the record of the
    failure, counted into ``failed_attempts``) and the retry gets a new name.
    """
    key = f"{host}/{vm.namespace}/{vm.name}/{attempt}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    base = f"he-drain-{vm.name}".lower()[:50]
    safe = "".join(c if c.isalnum() or c == "-" else "-" for c in base).strip("-")
    return f"{safe}-{digest}"


def current_attempt(vm: DrainVM) -> int:
    """The attempt a new or in-flight migration of ``vm`` is: one after the failed ones."""
    return vm.failed_attempts + 1


def queue_order(vms: Iterable[DrainVM]) -> list[DrainVM]:
    """The engine first, then largest memory first, then CPU, then name (deterministic)."""
    return sorted(
        vms,
        key=lambda v: (not v.is_engine, -v.memory_bytes, -v.cpu_millis, v.namespace, v.name),
    )


def free_slots(
    host: str,
    vms: Sequence[DrainVM],
    in_flight_by_source: Mapping[str, int],
    limits: MigrationLimits,
) -> int:
    own_seen = sum(1 for v in vms if v.migration is MigrationState.IN_FLIGHT)
    own = max(own_seen, in_flight_by_source.get(host, 0))
    others = sum(n for node, n in in_flight_by_source.items() if node != host)
    return max(0, min(limits.per_node_outbound - own, limits.per_cluster - others - own))


def plan_drain(
    host: str,
    vms: Sequence[DrainVM],
    targets: Sequence[TargetHost],
    in_flight_by_source: Mapping[str, int],
    limits: MigrationLimits,
    policy: NonMigratablePolicy,
    now: datetime,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    retry_after_s: float = DEFAULT_RETRY_AFTER_S,
) -> DrainPlan:
    """Decide the next step of draining ``host`` (see the module docstring)."""
    moved: list[VMRef] = []
    in_flight: list[VMRef] = []
    stopping: list[VMRef] = []
    shutdown: list[VMRef] = []
    blocked: list[BlockedVM] = []
    candidates: list[DrainVM] = []
    retry_later: list[VMRef] = []
    for vm in vms:
        if vm.migration is MigrationState.SUCCEEDED:
            moved.append(vm.ref)
        elif vm.migration is MigrationState.IN_FLIGHT:
            in_flight.append(vm.ref)
        elif vm.stopping:
            stopping.append(vm.ref)
        elif not vm.live_migratable and vm.is_engine:
            # never shut the engine down by policy: the HostedEngine cold-moves it
            why = vm.not_migratable_reason or "NotLiveMigratable"
            blocked.append(BlockedVM(vm.ref, f"EngineNotLiveMigratable: {why}"))
        elif not vm.live_migratable:
            if policy is NonMigratablePolicy.SHUTDOWN:
                shutdown.append(vm.ref)
            else:
                reason = vm.not_migratable_reason or "NotLiveMigratable"
                blocked.append(BlockedVM(vm.ref, reason))
        elif vm.migration is MigrationState.FAILED and vm.failed_attempts >= max_attempts:
            blocked.append(BlockedVM(vm.ref, f"MigrationFailed: {vm.failed_attempts} attempts"))
        elif (
            vm.migration is MigrationState.FAILED
            and vm.last_failure_at is not None
            and (now - vm.last_failure_at).total_seconds() < retry_after_s
        ):
            retry_later.append(vm.ref)
        else:
            candidates.append(vm)

    slots = free_slots(host, vms, in_flight_by_source, limits)
    engine_nodes = tuple(sorted(t.name for t in targets if t.usable and t.may_run_engine))
    start: list[MigrationStart] = []
    waiting: list[VMRef] = list(retry_later)
    for vm in queue_order(candidates):
        if vm.is_engine and not engine_nodes:
            blocked.append(BlockedVM(vm.ref, "EngineHasNoHost: no other host may run the engine"))
        elif len(start) < slots:
            start.append(
                MigrationStart(
                    vm=vm.ref,
                    migration_name=migration_name(host, vm.ref, current_attempt(vm)),
                    is_engine=vm.is_engine,
                    memory_bytes=vm.memory_bytes,
                    allowed_nodes=engine_nodes if vm.is_engine else (),
                )
            )
        else:
            waiting.append(vm.ref)
    return DrainPlan(
        start=tuple(start),
        shutdown=tuple(shutdown),
        stopping=tuple(stopping),
        blocked=tuple(blocked),
        in_flight=tuple(in_flight),
        waiting=tuple(waiting),
        moved=tuple(moved),
        free_slots_after=slots - len(start),
    )


# --------------------------------------------------------------------------- capacity


def _movers(vms: Iterable[DrainVM]) -> list[DrainVM]:
    return [
        v
        for v in vms
        if v.live_migratable
        and not v.stopping
        and v.migration in (MigrationState.NONE, MigrationState.FAILED)
    ]


def _pack(vms: Sequence[DrainVM], hosts: Sequence[TargetHost], best_fit: bool) -> DrainVM | None:
    """Place ``vms`` (engine first, then decreasing); return the first VM that does not fit."""
    free = {h.name: [h.free_memory_bytes, h.free_cpu_millis] for h in hosts}
    engine_ok = {h.name for h in hosts if h.may_run_engine}
    for vm in queue_order(vms):
        fits = [
            name
            for name, (mem, cpu) in free.items()
            if mem >= vm.memory_bytes
            and cpu >= vm.cpu_millis
            and (not vm.is_engine or name in engine_ok)
        ]
        if not fits:
            return vm
        chosen = (min if best_fit else max)(fits, key=lambda n: (free[n][0], free[n][1], n))
        free[chosen][0] -= vm.memory_bytes
        free[chosen][1] -= vm.cpu_millis
    return None


def check_capacity(
    vms: Sequence[DrainVM],
    targets: Sequence[TargetHost],
    *,
    leaving: Iterable[str] = (),
) -> Refusal | None:
    """Can the usable targets (not in ``leaving``) hold the VMs that must move? None = yes.

    Non-migratable VMs are left out: they block or are shut down, they never need room.
    """
    gone = set(leaving)
    hosts = [t for t in targets if t.usable and t.name not in gone]
    movers = _movers(vms)
    if not movers:
        return None
    for engine in (v for v in movers if v.is_engine):
        allowed = [h for h in hosts if h.may_run_engine]
        if not allowed:
            return Refusal(
                "EngineHasNoHost",
                f"the engine VM {engine.ref} runs here and no other schedulable host may run it",
            )
        if not any(
            h.free_memory_bytes >= engine.memory_bytes and h.free_cpu_millis >= engine.cpu_millis
            for h in allowed
        ):
            return Refusal(
                "EngineHasNoHost",
                f"the engine VM {engine.ref} runs here and no host allowed to run it has room "
                f"for {engine.memory_bytes} bytes and {engine.cpu_millis}m CPU",
            )
    need_mem = sum(v.memory_bytes for v in movers)
    need_cpu = sum(v.cpu_millis for v in movers)
    have_mem = sum(h.free_memory_bytes for h in hosts)
    have_cpu = sum(h.free_cpu_millis for h in hosts)
    if need_mem > have_mem:
        return Refusal(
            "InsufficientMemory",
            f"{len(movers)} VMs request {need_mem} bytes of memory; the other hosts have "
            f"{have_mem} bytes free",
        )
    if need_cpu > have_cpu:
        return Refusal(
            "InsufficientCPU",
            f"{len(movers)} VMs request {need_cpu}m CPU; the other hosts have {have_cpu}m free",
        )
    misfit = _pack(movers, hosts, best_fit=True)
    if misfit is not None and _pack(movers, hosts, best_fit=False) is not None:
        return Refusal(
            "InsufficientCapacity",
            f"the other hosts cannot hold every VM: no room left for {misfit.ref} "
            f"({misfit.memory_bytes} bytes, {misfit.cpu_millis}m CPU)",
        )
    return None


# --------------------------------------------------------------------------- makespan


def pipelined_makespan(durations: Sequence[float], slots: int) -> float:
    """List schedule in the given order on ``slots`` slots, refilled with zero latency."""
    if slots < 1:
        raise ValueError("slots must be >= 1")
    ends: list[float] = []
    for d in durations:
        start = heapq.heappop(ends) if len(ends) >= slots else 0.0
        heapq.heappush(ends, start + d)
    return max(ends, default=0.0)


def ideal_makespan(
    durations: Sequence[float],
    limits: MigrationLimits,
    *,
    engine_duration: float | None = None,
    other_in_flight: int = 0,
) -> float:
    """The ideal pipelined drain: engine first, then longest first, every slot always busy.

    ``other_in_flight`` migrations of other hosts hold cluster slots for the whole drain.
    """
    slots = min(limits.per_node_outbound, limits.per_cluster - other_in_flight)
    if slots < 1:
        raise ValueError("no migration slot is free")
    order = ([engine_duration] if engine_duration is not None else []) + sorted(
        durations, reverse=True
    )
    return pipelined_makespan(order, slots)


def makespan_lower_bound(durations: Sequence[float], slots: int) -> float:
    """No schedule on ``slots`` slots beats this."""
    if not durations:
        return 0.0
    return max(max(durations), sum(durations) / slots)
