"""Host handlers: maintenance with a live-migration drain, hosted-engine deploy/undeploy, power
management and fencing of one Kubernetes Node (issue 7).

How it runs
    kopf event handlers keep a cache (:class:`~hosted_engine.handlers.host_mapping.World`) of
    the Hosts, Nodes, Pods' requests, VMs, VMIs, VirtualMachineInstanceMigrations, the KubeVirt
    CR and node Leases, and wake the Hosts concerned. One daemon per Host runs the reconcile
    (:meth:`HostReconciler.reconcile`, synchronous, in a thread) on every wake-up, and
    otherwise sleeps until the next time-based decision (drain timeout, silence and fence
    thresholds, a migration retry) or a long safety resync: watches, not polling. The
    decisions are :func:`hosted_engine.logic.host_lifecycle.step`'s; this module carries out
    its actions (cordon, migrations, shutdowns, fencing, taints, Events, conditions) and keeps
    everything a restarted operator needs in ``status`` (patched, never replaced).

Maintenance (``spec.maintenance.mode: local``)
    Capacity check, cordon, live migrations under the KubeVirt CR's limits (engine first),
    refusals as condition ``MaintenanceRefused`` + Warning Event, non-migratable VMs blocked
    (``status.drain.blocked``) or shut down (policy ``shutdown``), timeout as
    ``Draining=False/TimedOut`` + Warning Event; ``none`` cancels (our pending migrations are
    deleted, the Node uncordoned) or activates.

Hosted engine (``spec.hostedEngine``)
    ``deploy`` labels the Node ``hostedengine.io/engine-host=true`` (docs/decisions/0003) and
    gives the Host an oVirt-style ``status.hostedEngine.hostID``; ``undeploy`` removes the
    label, after live-migrating the engine VM away first when it runs here (refused with
    ``UndeployBlocked=True/EngineHasNoHost`` while no other engine host can take it).

Power actions (annotations, see :mod:`hosted_engine.models.host`)
    ``hostedengine.io/power-action: status|on|off|soft|reset|cycle`` (+ optional
    ``hostedengine.io/power-action-id``) runs the action once per (action, id) through Redfish
    (sushy) or IPMI (pyghmi) within ``spec.powerManagement.actionTimeout`` (60 s default); the
    result and times are in ``status.powerManagement.lastAction``, the BMC's answer in
    ``status.powerManagement.powerState`` / ``checkedAt``, and condition
    ``PowerManagementReady``. Credentials are read from the Secret for every action.

Fencing: the request interface
    Whoever needs this host fenced (the HostedEngine) annotates the Host with
    ``hostedengine.io/fence-request: <requester>/<request id>`` (e.g.
    ``engine/hostedengine-1-7``). The request stays active until it is handled:
    ``status.fencing.requestId`` = that id with ``phase`` ``Confirmed`` (powered off, confirmed
    Off, ``node.kubernetes.io/out-of-service`` taint on), or ``Failed`` (attempts exhausted).
    While the Node is Ready and heard from the request waits with ``phase: Refused`` and
    condition ``FencingBlocked=True/NodeReady`` (a live host is never fenced); other
    blocks are ``NoPowerManagement``, ``FencingDisabled`` and ``ClusterPartitioned`` (storm
    guard, counting the Hosts whose node Lease is fresh). "Ready" here means Ready AND heard
    from: a request is accepted for a Node still Ready whose Lease has missed
    ``HE_HOST_FENCE_MISSED_RENEWALS`` renewals, or whose BMC reports power Off (read after the
    Lease's last renewal), so a failover does not wait for the node-lifecycle controller's 40 s
    grace (see :mod:`hosted_engine.logic.host_lifecycle`). A new id is a new request;
    removing the annotation withdraws it. The Host fences on its own a NonResponsive host that
    runs VMs with runStrategy Always/RerunOnFailure. Only the
    Host's reconcile fences, one fence at a time per host, every step an Event. When the Node
    is Ready again the taint is removed and the Host returns to Up (or Maintenance);
    ``phase`` becomes ``Released``.

Removal
    The finalizer holds the deletion of a Host that is not in Maintenance (condition
    ``DeletionBlocked=True/NotInMaintenance`` + Warning Event; maintenance can still be entered
    while held). From Maintenance, or when its Node does not exist, the Host releases the
    Node: the engine-host label and the out-of-service taint are removed and it is uncordoned.

BMC power poll
    The power state of a Host deployed for the hosted engine is read from its BMC every
    ``HE_HOST_POWER_POLL`` seconds (5 s), in a small thread pool of its own so a slow BMC holds
    no reconcile; a change is written to ``status.powerManagement`` (``powerState``,
    ``checkedAt``) and wakes the Host and the HostedEngine, which treats a host whose BMC says
    Off as lost at once. A BMC that does not answer changes nothing: silence is not proof.

Clock skew
    Each Lease renewal in ``kube-node-lease`` is compared with the operator's clock when the
    watch event arrives (the operator's clock stands for the API server's: both are
    NTP-synchronised in production; the estimate includes the event's delivery latency);
    ``status.clockSkew`` and condition ``ClockSkewed`` (True above 2 s).

Operator-wide thresholds come from the environment (see
:class:`~hosted_engine.handlers.host_mapping.HostSettings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

import kopf
from pydantic import ValidationError

from hosted_engine import API_GROUP, API_VERSION
from hosted_engine.adapters import metrics
from hosted_engine.adapters.fencing import read_node_and_lease, release_pods
from hosted_engine.adapters.host_power import CredentialsProblem, run_power_action
from hosted_engine.adapters.kube import Kube, KubeError, NotFound
from hosted_engine.adapters.kubevirt import (
    ENGINE_HOST_LABEL,
    HOSTS,
    MIGRATION_HOST_LABEL,
    NODE_LEASE_NAMESPACE,
    OUT_OF_SERVICE_TAINT,
    VMI_NODE_LABEL,
    VMIMS,
    VMIS,
    HostKube,
    lease_renew_time,
    meta,
    migration_finished,
    node_ready,
    pod_requests,
    resource_version,
    spec_of,
    status_of,
)
from hosted_engine.adapters.power import PowerError, PowerResult
from hosted_engine.clock import get_clock
from hosted_engine.handlers import host_mapping as hm
from hosted_engine.handlers.startup import kube_client
from hosted_engine.logic import drain as dr
from hosted_engine.logic import host_lifecycle as lc
from hosted_engine.models import Host, describe_validation_error
from hosted_engine.models.base import Duration
from hosted_engine.models.conditions import (
    Condition,
    ConditionStatus,
    Reason,
    get_condition,
    set_condition,
)
from hosted_engine.models.host import (
    CLOCK_SKEW_LIMIT_SECONDS,
    FENCE_REQUEST_ANNOTATION,
    ClockSkewStatus,
    HostedEngineDeployment,
    HostedEngineHostStatus,
    HostState,
    HostStatus,
    PowerAction,
    PowerActionResult,
    PowerActionStatus,
    PowerManagement,
    PowerManagementStatus,
    PowerState,
)

log = logging.getLogger(__name__)

PLURAL: Final = "hosts"
RECONCILER_KEY: Final = "host-reconciler"
TRIGGERS_KEY: Final = "host-triggers"
#: Wait after an unexpected failure of a reconcile (seconds).
ERROR_BACKOFF: Final = 2.0
#: Smallest wait between two time-based checks (seconds).
MIN_WAIT: Final = 0.05
#: A skew estimate is rewritten only when it moved this much (seconds).
SKEW_RESOLUTION: Final = 0.5
#: A skew sample stands for this long unless a larger one comes (seconds; 6 Lease renewals).
SKEW_WINDOW: Final = 60.0
#: How a status write of a clock-skew value is rounded.
SKEW_DIGITS: Final = 2
#: The recent skew samples of all nodes that set the cluster's common delay (count, seconds).
COMMON_DELAY_SAMPLES: Final = 64
COMMON_DELAY_MAX_AGE: Final = 5.0
#: A common delay smaller than this is delivery noise: the samples are taken as they are.
COMMON_DELAY_MIN: Final = 1.0
OUT_OF_SERVICE_VALUE: Final = "nodeshutdown"
#: Re-read of a Host whose deletion is held (seconds, doubling while nothing changes).
HELD_RECHECK_MIN: Final = 0.5
HELD_RECHECK_MAX: Final = 30.0
#: Threads that read BMC power states (a slow BMC must not hold the reconciles' threads).
POWER_POLL_THREADS: Final = 4
#: How often a Host that is not polled (not deployed for the engine, or no power management)
#: is checked again for becoming one (seconds): idle operators stay idle at 1,000 Hosts.
POWER_POLL_RECHECK: Final = 30.0
#: Threads of the Host reconciles: their own, not asyncio's default executor (6 threads on 2
#: CPUs), where at 1,000 Hosts they queued every other handler's API calls behind them (the
#: HostedEngine wrote no status in 12 minutes, bench/operator_scale.py).
RECONCILE_THREADS: Final = 4
_reconcile_pool: ThreadPoolExecutor | None = None


# --------------------------------------------------------------------------------------------
# Wake-ups


class Triggers:
    """Wake-up flags of the per-Host loops (used only from kopf's event loop)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, name: str) -> asyncio.Event:
        return self._events.setdefault(name, asyncio.Event())

    def fire(self, name: str | None) -> None:
        if name:
            self.event(name).set()

    def fire_all(self) -> None:
        for event in self._events.values():
            event.set()

    def fire_some(self, names: Iterable[str]) -> None:
        """Wake the loops of ``names`` (the Hosts whose decisions read the other Hosts)."""
        for name in names:
            event = self._events.get(name)
            if event is not None:
                event.set()

    def forget(self, name: str) -> None:
        self._events.pop(name, None)

    async def wait(self, name: str, timeout: float) -> bool:
        event = self.event(name)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(timeout, 0.0)):  # not wait_for: see lab core
                await event.wait()
        fired = event.is_set()
        event.clear()
        return fired


# --------------------------------------------------------------------------------------------
# The reconciler


@dataclass
class Outcome:
    """What one reconcile found: the next time-based check, and the state reached."""

    wait: float
    state: HostState | None = None
    node_exists: bool = True


@dataclass
class _Pending:
    """Things decided during one reconcile, carried out after the status patch."""

    events: list[tuple[str, str, str]] = field(default_factory=list)
    #: an action failed: decide again after :data:`ERROR_BACKOFF`
    failed: bool = False
    #: the powerManagement fingerprint checked with the BMC in this reconcile: remembered
    #: only once the status that carries the answer is written
    pm_checked: str | None = None
    #: a power action run in this reconcile: (action, request id, the BMC's answer)
    action_result: tuple[PowerAction, str | None, PowerResult | CredentialsProblem] | None = None


def skew_seconds(renew: datetime, received: datetime) -> float:
    """Node clock minus the reference clock, from a Lease renewTime seen at ``received``."""
    return (renew - received).total_seconds()


class HostReconciler:
    """Reconciles Hosts from the watched world; thread-safe (one lock per Host)."""

    def __init__(self, kube: Kube, settings: hm.HostSettings | None = None) -> None:
        self.kube = kube
        self.api = HostKube(kube)
        self.settings = settings or hm.HostSettings.from_env()
        self.world = hm.World()
        self._world_lock = threading.Lock()
        self.rebuild_index()
        # from the start until a first prompt echo: a starting operator works through its
        # listings and every Host's first reconcile, and handles the first Lease events
        # seconds late (each Host wrote one false ClockSkewed=True after every start)
        self.behind_until: datetime | None = get_clock().now() + timedelta(seconds=SKEW_WINDOW)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        #: node -> (skew seconds, measured at)
        self.skew: dict[str, tuple[float, datetime]] = {}
        #: host -> fingerprint of the powerManagement spec last checked with the BMC (and
        #: written to status: a check whose status write failed is done again)
        self._pm_checked: dict[str, str] = {}
        #: host -> a power action run whose result never reached status (the write failed):
        #: the next reconcile records this answer instead of running the action again
        self._unwritten_actions: dict[
            str, tuple[PowerAction, str | None, PowerResult | CredentialsProblem]] = {}
        self._actions_running: set[str] = set()
        #: hosted-engine host ids given out (status writes lag behind parallel reconciles)
        self._host_ids: dict[str, int] = {}
        self._ids_lock = threading.Lock()
        #: host -> (power state, read at) from the BMC power poll, merged by the reconcile
        self.polled_power: dict[str, tuple[PowerState, datetime]] = {}
        self._power_pool: ThreadPoolExecutor | None = None
        self._bmc_locks: dict[str, threading.Lock] = {}

    # -- the cache (called from kopf's event loop) -------------------------------------------

    def _table(self, kind: str) -> dict[Any, Any]:
        table: dict[Any, Any] = getattr(self.world, kind)
        return table

    def put(self, kind: str, key: Any, obj: Mapping[str, Any] | None, *,
            deleted: bool = False) -> Mapping[str, Any] | None:
        """Store an object, or with ``deleted`` drop it; returns the previous one.

        Watches of one kind deliver events per object, not strictly in order across objects
        that share a name (a VMI deleted and recreated by its VM): an older resourceVersion
        never replaces a newer one, and a deletion drops only the object it is about (same
        uid)."""
        with self._world_lock:
            table = self._table(kind)
            previous = table.get(key)
            if obj is None:
                return previous
            old_rv, new_rv = resource_version(previous), resource_version(obj)
            newer = old_rv is None or new_rv is None or new_rv >= old_rv
            if deleted:
                same = previous is not None and meta(previous).get("uid") == meta(obj).get("uid")
                if same and newer:
                    table.pop(key, None)
                    self._version += 1
                    if kind == "hosts":
                        self._index_host(str(key), None)
                    elif kind == "vmis":
                        self._index_vmi(key, None)
                return previous
            if newer:
                table[key] = obj
                self._version += 1
                if kind == "hosts":
                    self._index_host(str(key), obj)
                elif kind == "vmis":
                    self._index_vmi(key, obj)
            return previous

    def rebuild_index(self) -> None:
        """(Re)build the indexes from ``world`` (at start, or after replacing it)."""
        #: node -> its Hosts (in arrival order) and host -> node: ``host_for_node`` by index
        self._hosts_by_node: dict[str, dict[str, None]] = {}
        self._node_of_host: dict[str, str] = {}
        #: the Hosts whose decisions read the other Hosts, Nodes or Leases (storm guard,
        #: drain targets, engine host ids): the only ones a change of another Host wakes
        self._dependents: set[str] = set()
        #: bumped on every change of the cache but the Leases: reconciles share one snapshot
        #: of the big tables while nothing changed (a copy per reconcile was O(objects))
        self._version = 0
        self._snapshot: tuple[int, hm.World] | None = None
        #: host -> (resourceVersion of our last status write, when it was written): its watch
        #: event coming back late means the operator is behind its watches
        self._echoes: dict[str, tuple[int, datetime]] = {}
        #: no clock-skew sample before this time (our writes came back late, see note_echo)
        self.behind_until = None
        #: (received, raw skew sample) of the last Lease events of every node: common_delay
        self._recent_samples: deque[tuple[datetime, float]] = deque(maxlen=COMMON_DELAY_SAMPLES)
        #: node -> its skew samples of the last SKEW_WINDOW (filtered_skew)
        self._skew_history: dict[str, deque[tuple[datetime, float]]] = {}
        #: the active VMIs by node, kept per VMI event (a snapshot copies the small outer dict:
        #: rebuilding it per snapshot was O(VMIs) on every Host status echo, 37 % of the CPU
        #: at 1,000 Hosts + 10,000 VMs)
        self._vmi_node_of: dict[Any, str] = {}
        self._vmi_keys_by_node: dict[str, dict[Any, None]] = {}
        self._vmis_by_node: dict[str, tuple[Mapping[str, Any], ...]] = {}
        for name, obj in self.world.hosts.items():
            self._index_host(name, obj)
        for key, obj in self.world.vmis.items():
            self._index_vmi(key, obj)

    def _index_vmi(self, key: Any, obj: Mapping[str, Any] | None) -> None:
        """Keep the VMIs-by-node index in step with the VMIs (under the lock)."""
        old = self._vmi_node_of.pop(key, None)
        new = hm.vmi_node(obj) if obj is not None and hm.vmi_active(obj) else None
        if old is not None:
            self._vmi_keys_by_node.get(old, {}).pop(key, None)
        if new is not None:
            self._vmi_node_of[key] = new
            self._vmi_keys_by_node.setdefault(new, {})[key] = None
        for node in {n for n in (old, new) if n is not None}:
            keys = self._vmi_keys_by_node.get(node)
            if keys:
                self._vmis_by_node[node] = tuple(self.world.vmis[k] for k in keys)
            else:
                self._vmi_keys_by_node.pop(node, None)
                self._vmis_by_node.pop(node, None)

    def _index_host(self, name: str, obj: Mapping[str, Any] | None) -> None:
        """Keep the node index and the dependents in step with the Hosts (under the lock)."""
        old = self._node_of_host.pop(name, None)
        if old is not None:
            names = self._hosts_by_node.get(old, {})
            names.pop(name, None)
            if not names:
                self._hosts_by_node.pop(old, None)
        self._dependents.discard(name)
        if obj is None:
            return
        node = hm.host_node(obj)
        self._node_of_host[name] = node
        self._hosts_by_node.setdefault(node, {})[name] = None
        if hm.reads_other_hosts(obj):
            self._dependents.add(name)

    def dependents(self) -> list[str]:
        """The Hosts to wake when another Host's state, spec, Node or Lease changes."""
        with self._world_lock:
            return list(self._dependents)

    def put_pod(self, key: tuple[str, str], pod: Mapping[str, Any], deleted: bool) -> None:
        with self._world_lock:
            self._version += 1
            if deleted:
                self.world.pod_requests.pop(key, None)
                return
            mem, cpu = pod_requests(pod)
            node = str(spec_of(pod).get("nodeName") or "")
            phase = str(status_of(pod).get("phase") or "")
            self.world.pod_requests[key] = (node, mem, cpu, phase)

    def set_kubevirt(self, obj: Mapping[str, Any] | None) -> None:
        with self._world_lock:
            self.world.kubevirt = obj
            self._version += 1

    def snapshot(self) -> hm.World:
        """A consistent copy of the cache (read-only: shared by the reconciles that take it
        while nothing but the Leases changed; the Leases are copied every time)."""
        with self._world_lock:
            w = self.world
            cached = self._snapshot
            if cached is None or cached[0] != self._version:
                cached = (self._version, hm.World(
                    hosts=dict(w.hosts), nodes=dict(w.nodes), vms=dict(w.vms),
                    vmis=dict(w.vmis), vmims=dict(w.vmims), pod_requests=dict(w.pod_requests),
                    kubevirt=w.kubevirt, vmis_by_node=dict(self._vmis_by_node)))
                self._snapshot = cached
            return replace(cached[1], leases=dict(w.leases))

    def host_for_node(self, node: str) -> str | None:
        """The (first) Host of ``node``, by index: each Lease, Node and VMI event asks."""
        with self._world_lock:
            names = self._hosts_by_node.get(node)
            return next(iter(names), None) if names else None

    def host_names(self) -> list[str]:
        with self._world_lock:
            return list(self.world.hosts)

    def observe_lease(self, lease: Mapping[str, Any], received: datetime, *,
                      listed: bool = False) -> tuple[str | None, bool]:
        """Record a node's Lease renewal and clock skew: (the Host to wake when its reported
        state must change, whether the node is heard from again after a silence -- the storm
        guard of the other Hosts changes then). ``listed``: the Lease comes from the watch's
        initial listing, its renewal up to a period old: no skew sample (at every operator
        start each Host showed ClockSkewed=True for one period, 7 s "behind")."""
        renew = lease_renew_time(lease)
        node = str(meta(lease).get("name") or "")
        if renew is None or not node:
            return None, False
        raw = spec_of(lease).get("leaseDurationSeconds")
        duration = float(raw) if isinstance(raw, int | float) and raw > 0 else None
        rules = self.settings.policy_for_leases()
        with self._world_lock:
            previous = self.world.leases.get(node)
            if previous is None or renew >= previous[0]:
                self.world.leases[node] = (renew, duration)
        # heard from again: the gap between two renewals, not the time this event arrived (an
        # operator behind its watch saw every renewal as a comeback and woke the dependents on
        # each one: at 1,000 nodes that kept it behind for good)
        came_back = previous is not None and not lc.lease_fresh(
            lc.NodeObservation(lease_renewed_at=previous[0], lease_duration_s=previous[1]),
            rules, renew)
        behind = self.behind_until is not None and received < self.behind_until
        if not listed:
            sample = skew_seconds(renew, received)
            self._recent_samples.append((received, sample))
            if not behind and self.common_delay(received) == 0.0:
                history = self._skew_history.setdefault(node, deque())
                self.skew[node] = filtered_skew(history, sample, received)
        measured = self.skew.get(node)
        host = self.host_for_node(node)
        if host is None:
            return None, came_back
        with self._world_lock:
            body = self.world.hosts.get(host)
        written = (status_of(body).get("clockSkew") or {}).get("seconds")
        state = str(status_of(body).get("state") or "")
        watching = came_back or state in (HostState.NON_RESPONSIVE.value,
                                          HostState.FENCED.value) or bool(
            (meta(body).get("annotations") or {}).get(FENCE_REQUEST_ANNOTATION))
        if watching or (measured is not None and (
                written is None or _skew_changed(float(written), measured[0]))):
            return host, came_back
        return None, came_back

    def common_delay(self, now: datetime) -> float:
        """The delay every node's renewals share now (<= 0 s): the upper median of the recent
        skew samples of all nodes, when it is below -:data:`COMMON_DELAY_MIN`, else 0. While
        it is not 0 no skew sample is taken.

        An operator behind its Lease watch by X s sees every node X s behind, give or take the
        seconds its backlog varies by from one event to the next: such a sample measures the
        backlog, not the node's clock (an operator whose own clock is ahead of every node's
        looks the same; the nodes agree with each other then). At 1,000 nodes the operator
        fell 5 to 20 s behind after its start and rewrote the clock skew of every Host every
        few seconds (300 to 1,290 Host status patches a minute), which kept it behind; taking
        the samples relative to the median still wrote 470 a minute (the backlog's jitter).
        The upper median keeps one skewed node out of the reference (of two, the later one)."""
        samples = sorted(s for t, s in self._recent_samples
                         if (now - t).total_seconds() <= COMMON_DELAY_MAX_AGE)
        if len(samples) < 3:
            return 0.0
        median = samples[len(samples) // 2]
        return median if median < -COMMON_DELAY_MIN else 0.0

    # -- BMC power poll (its own threads) ---------------------------------------------------

    def power_poll_due(self, name: str) -> bool:
        """Whether ``name`` is polled: deployed for the hosted engine, with power management."""
        if self.settings.power_poll_s <= 0:
            return False
        with self._world_lock:
            body = self.world.hosts.get(name)
        spec = spec_of(body)
        return bool(spec.get("powerManagement")) and \
            spec.get("hostedEngine") == HostedEngineDeployment.DEPLOY.value

    def poll_power(self, name: str) -> bool:
        """Read the BMC's power state once (synchronous); True when it differs from what the
        Host's status says, i.e. the Host must be reconciled. An unanswered read, or one the
        BMC could not tell, is no news."""
        with self._world_lock:
            body = self.world.hosts.get(name)
        if body is None:
            return False
        try:
            host = self._parse(body)
        except ValidationError:
            return False
        pm = host.spec.power_management
        if pm is None:
            return False
        limit = max(1.0, min(pm.action_timeout.total_seconds(), 2 * self.settings.power_poll_s))
        quick = pm.model_copy(update={"action_timeout": Duration(f"{limit:g}s")})
        lock = self._bmc_lock(name)
        if not lock.acquire(blocking=False):
            return False  # an action or check is talking to this BMC: it reports the power
        try:
            answer = run_power_action(self.kube, quick, PowerAction.STATUS)
        finally:
            lock.release()
        if isinstance(answer, CredentialsProblem) or answer.power_state is PowerState.UNKNOWN:
            return False
        at = answer.finished_at or get_clock().now()
        self.polled_power[name] = (answer.power_state, at)
        written = host.status.power_management
        return answer.power_state is not written.power_state or self._stale_off(name, written)

    def _stale_off(self, name: str, power: PowerManagementStatus) -> bool:
        """Status says Off, but read before the node's last Lease renewal (it was powered on
        since, and a poll's On never made it to status): an Off read now must be written, with
        its new time, or it would be dismissed as stale."""
        if power.power_state is not PowerState.OFF or power.checked_at is None:
            return False
        with self._world_lock:
            body = self.world.hosts.get(name)
            lease = self.world.leases.get(str(spec_of(body).get("nodeName") or ""))
        return lease is not None and lease[0] > power.checked_at

    def _bmc_lock(self, name: str) -> threading.Lock:
        with self._locks_lock:
            return self._bmc_locks.setdefault(name, threading.Lock())

    def _bmc(self, name: str, pm: PowerManagement, action: PowerAction
             ) -> PowerResult | CredentialsProblem:
        """One BMC call of the reconcile, never at the same time as the poll's (a BMC may
        allow one session at a time: IPMI)."""
        with self._bmc_lock(name):
            return run_power_action(self.kube, pm, action)

    def power_pool(self) -> ThreadPoolExecutor:
        if self._power_pool is None:
            self._power_pool = ThreadPoolExecutor(POWER_POLL_THREADS,
                                                  thread_name_prefix="bmc-poll")
        return self._power_pool

    def _merge_polled_power(self, name: str, status: HostStatus) -> HostStatus:
        polled = self.polled_power.get(name)
        power = status.power_management
        if polled is None:
            return status
        if polled[0] is power.power_state and not (
                self._stale_off(name, power) and power.checked_at is not None
                and polled[1] > power.checked_at):
            return status
        if power.checked_at is not None and polled[1] <= power.checked_at:
            return status  # an action's answer is newer
        return status.model_copy(update={"power_management": power.model_copy(
            update={"power_state": polled[0], "checked_at": polled[1]})})

    def _lock_for(self, name: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(name, threading.Lock())

    # -- one reconcile ----------------------------------------------------------------------

    def reconcile(self, name: str) -> Outcome:
        with self._lock_for(name):
            pending = _Pending()
            try:
                return self._reconcile(name, pending)
            except BaseException:
                # nothing of this reconcile is taken as written: the next one checks the BMC
                # again, and records (never reruns) a power action that already ran
                if pending.action_result is not None:
                    self._unwritten_actions[name] = pending.action_result
                raise

    def _parse(self, body: Mapping[str, Any]) -> Host:
        try:
            return Host.model_validate(dict(body))
        except ValidationError:
            # a status we cannot read (an older operator, a hand edit): start from a fresh one
            return Host.model_validate({**dict(body), "status": {}})

    def _reconcile(self, name: str, pending: _Pending) -> Outcome:
        world = self.snapshot()
        body = world.hosts.get(name)
        if body is None:
            return Outcome(wait=self.settings.resync_s)
        try:
            host = self._parse(body)
        except ValidationError as exc:
            self._invalid(body, describe_validation_error(exc))
            return Outcome(wait=self.settings.resync_s)
        now = get_clock().now()
        generation = host.metadata.generation
        status = host.status.model_copy(deep=True)
        conditions: list[Condition] = list(status.conditions)

        def cond(type_: str, value: str | bool, reason: str, message: str = "") -> None:
            nonlocal conditions
            conditions = set_condition(conditions, type_, value, reason, message[:32768],
                                       observed_generation=generation, now=get_clock().now())

        # 1. power management: a requested action, one check per spec change, the poll
        status = self._power(host, body, status, cond, pending)
        status = self._merge_polled_power(name, status)

        # 2. the state machine
        started = {
            f"{hm.key_of(m)[0]}/{spec_of(m).get('vmiName')}"
            for m in world.vmims.values()
            if hm.ours(m, name) and not migration_finished(m)
        }
        request = hm.fence_request(host)
        current = hm.to_logic(status, started, request_id=request[1] if request else None)
        obs = hm.observe(host, world, now, self.settings,
                         current.maintenance if current else None)
        result = lc.step(current, obs)
        new = result.status
        actions = list(result.actions)
        if new.state is lc.HostState.MAINTENANCE and (
                current is None or current.state is not lc.HostState.MAINTENANCE) \
                and self._vmis_missed(host.spec.node_name, obs):
            # never declare a host drained on a cache that missed a VMI: re-decide on the
            # objects just read
            world = self.snapshot()
            obs = hm.observe(host, world, now, self.settings,
                             current.maintenance if current else None)
            result = lc.step(current, obs)
            new = result.status
            actions = list(result.actions)
        if lc.requests_fence(result):
            # never power a host off on the cache alone (informer lag, a stalled watch)
            obs, result = self._confirm_loss(host, current, obs, result, pending)
            new = result.status
            actions = list(result.actions)
        for _ in range(3):
            fenced = self._carry_out(host, body, world, actions, cond, pending)
            if fenced is None:
                break
            status = status.model_copy(update={"power_management": fenced})
            obs = replace(obs, now=get_clock().now(), power=replace(
                obs.power, power_state=fenced.power_state.value, observed_at=fenced.checked_at))
            result = lc.step(new, obs)
            new = result.status
            actions = list(result.actions)

        # a host that just fell silent: what does its BMC say? (the HostedEngine reads it)
        pm = host.spec.power_management
        if (pm is not None and new.state is lc.HostState.NON_RESPONSIVE
                and (current is None or current.state is not lc.HostState.NON_RESPONSIVE)
                and new.fence is None):
            answer = self._bmc(host.metadata.name, pm, PowerAction.STATUS)
            power = self._record(host, status.power_management, answer, None, cond, pending,
                                 keep_last=True)
            status = status.model_copy(update={"power_management": power})

        # 3. the hosted engine's label and host table
        engine = self._hosted_engine(host, body, world, status, cond)

        # 4. our finished migrations are forgotten once the host is Up again
        if new.state is lc.HostState.UP and new.maintenance is None:
            for key, vmim in world.vmims.items():
                if hm.ours(vmim, name) and migration_finished(vmim) \
                        and not meta(vmim).get("deletionTimestamp"):
                    with contextlib.suppress(KubeError):
                        self.api.delete_migration(key[0], key[1])

        # 5. clock skew
        skew = self._clock_skew(host, status, cond)

        # 6. compose and patch the status
        state = HostState(new.state.value)
        ready = state in (HostState.UP, HostState.MAINTENANCE)
        cond("Ready", ready, state.value, _state_message(state, new))
        node = world.nodes.get(host.spec.node_name)
        new_status = status.model_copy(update={
            "state": state,
            "state_since": new.since,
            "node": hm.node_status(node, status.node),
            "hosted_engine": engine,
            "drain": hm.drain_status(new.maintenance, self.snapshot(), name, status.drain),
            "fencing": hm.fencing_status(new, host, status.fencing, now),
            "clock_skew": skew,
            "conditions": conditions,
            "observed_generation": generation,
            "message": _state_message(state, new),
        })
        self._write(name, host.status, new_status)
        self._unwritten_actions.pop(name, None)
        if pending.pm_checked is not None:
            self._pm_checked[name] = pending.pm_checked
        for type_, reason, message in pending.events:
            self.api.host_event(body, type_, reason, message)
        wait = self._next_wait(new, obs)
        if pending.failed:
            wait = min(wait, ERROR_BACKOFF)
        return Outcome(wait=wait, state=state, node_exists=node is not None)

    def _confirm_loss(self, host: Host, current: lc.HostStatus | None, obs: lc.HostObservation,
                      result: lc.Step, pending: _Pending
                      ) -> tuple[lc.HostObservation, lc.Step]:
        """Right before a BMC power-off: the Node and its Lease read again from the API (GET,
        not the watch cache, which lags behind or stalls) and the decision taken again on them;
        a node heard from again is not fenced. No answer from the API: no power-off (the next
        reconcile tries again)."""
        name, node_name = host.metadata.name, host.spec.node_name
        try:
            node, lease = read_node_and_lease(self.kube, node_name)
        except KubeError as exc:
            pending.failed = True
            pending.events.append((
                "Warning", "FenceAborted",
                f"{name}: power-off called off: cannot read the Node and its Lease again from "
                f"the API to confirm the host is lost ({exc})"))
            return obs, lc.without_fence(result)
        now = get_clock().now()
        fresh = hm.World()
        if node is not None:
            self.put("nodes", node_name, node)
            fresh.nodes[node_name] = node
        renew = lease_renew_time(lease)
        if lease is not None and renew is not None:
            self.observe_lease(lease, now, listed=True)
            raw = spec_of(lease).get("leaseDurationSeconds")
            fresh.leases[node_name] = (
                renew, float(raw) if isinstance(raw, int | float) and raw > 0 else None)
        again_obs = replace(obs, now=now, node=hm.node_observation(fresh, node_name))
        again = lc.step(current, again_obs)
        if not lc.requests_fence(again):
            silent = lc.lease_silent_for(again_obs)
            seen = ("the Node is Ready" if silent is None else
                    f"the Node is Ready and its Lease was renewed {silent:.1f}s ago")
            why = lc.lost_reason(again_obs)
            pending.events.append((
                "Warning", "FenceAborted",
                f"{name}: power-off called off: read again from the API, "
                + (seen if why is None else f"the fence is no longer due ({why})")))
            log.warning("host %s: fence called off: the cache was stale", name)
        return again_obs, again

    def _vmis_missed(self, node: str, obs: lc.HostObservation) -> bool:
        """Read the VMIs on ``node`` from the API; True when the cache had missed one (the
        cache is refreshed with what was read)."""
        try:
            listed = self.kube.list(VMIS, label_selector=f"{VMI_NODE_LABEL}={node}")
        except KubeError as exc:
            log.warning("cannot confirm the VMIs on %s: %s", node, exc)
            return True
        seen = {(v.namespace, v.name) for v in obs.vms}
        missed = False
        for vmi in listed:
            if hm.vmi_node(vmi) == node and hm.vmi_active(vmi) \
                    and hm.key_of(vmi) not in seen:
                missed = True
                self.put("vmis", hm.key_of(vmi), vmi)
        return missed

    def _write(self, name: str, old: HostStatus, new: HostStatus) -> None:
        patch = hm.merge_patch(old.to_dict(), new.to_dict())
        if not patch:
            return
        log.debug("host %s: status patch %s", name, patch)
        try:
            updated = self.api.patch_host_status(name, patch)
        except NotFound:
            return
        metrics.record_host_status(name, old.to_dict(), new.to_dict())
        written = resource_version(updated)
        if written is not None:
            self._echoes[name] = (written, get_clock().now())
        self.put("hosts", name, updated)

    def note_echo(self, name: str, body: Mapping[str, Any], received: datetime) -> None:
        """The watch event of a Host: when it is the echo of our own status write, how late it
        came tells whether the operator is behind its watches. While it is (by more than
        :data:`SKEW_RESOLUTION`), Lease events are handled late too and their skew samples
        measure the backlog, not the node's clock: none is taken for :data:`SKEW_WINDOW`
        (or until an echo comes back in time). At 200 Hosts after a restart the samples of
        an operator 8-15 s behind were written as ``ClockSkewed=True`` at every renewal, each
        write an event that kept it behind: 1,500 Host status patches a minute. kopf hands
        over only the newest body of a burst of events: any version from ours on is the echo."""
        sent = self._echoes.get(name)
        seen = resource_version(body)
        if sent is None or seen is None or seen < sent[0]:
            return
        self._echoes.pop(name, None)
        late = (received - sent[1]).total_seconds()
        if late > SKEW_RESOLUTION:
            self.behind_until = received + timedelta(seconds=SKEW_WINDOW)
        else:
            self.behind_until = None

    def _invalid(self, body: Mapping[str, Any], message: str) -> None:
        name = str(meta(body).get("name"))
        raw = [c for c in (status_of(body).get("conditions") or []) if isinstance(c, Mapping)]
        current = []
        for c in raw:
            with contextlib.suppress(ValidationError):
                current.append(Condition.model_validate(c))
        old = get_condition(current, "Ready")
        if old is not None and old.reason == Reason.INVALID_SPEC and old.message == message:
            return
        conditions = set_condition(current, "Ready", ConditionStatus.FALSE, Reason.INVALID_SPEC,
                                   message, observed_generation=meta(body).get("generation"),
                                   now=get_clock().now())
        with contextlib.suppress(NotFound):  # any other failure: the reconcile is retried
            self.put("hosts", name, self.api.patch_host_status(
                name, {"conditions": [c.to_dict() for c in conditions]}))
        self.api.host_event(body, "Warning", Reason.INVALID_SPEC, message)

    # -- actions ------------------------------------------------------------------------------

    def _carry_out(self, host: Host, body: Mapping[str, Any], world: hm.World,
                   actions: list[lc.Action], cond: Any, pending: _Pending
                   ) -> PowerManagementStatus | None:
        """Carry out the state machine's actions; after a fence, the power observed."""
        node = host.spec.node_name
        fenced: PowerManagementStatus | None = None
        for action in actions:
            try:
                if isinstance(action, lc.Cordon):
                    self.api.cordon(node, True)
                elif isinstance(action, lc.Uncordon):
                    self.api.cordon(node, False)
                elif isinstance(action, lc.CreateMigration):
                    self._migrate(body, action.migration)
                elif isinstance(action, lc.DeleteMigration):
                    self.api.delete_migration(action.vm.namespace, action.migration_name)
                elif isinstance(action, lc.ShutdownVM):
                    key = (action.vm.namespace, action.vm.name)
                    self.api.stop_vm(key[0], key[1], has_vm=key in world.vms)
                elif isinstance(action, lc.RequestFence):
                    fenced = self._fence(host, body, action.attempt, pending)
                elif isinstance(action, lc.TaintOutOfService):
                    self.api.set_taint(node, OUT_OF_SERVICE_TAINT, "NoExecute", True,
                                       OUT_OF_SERVICE_VALUE)
                elif isinstance(action, lc.RemoveOutOfServiceTaint):
                    self.api.set_taint(node, OUT_OF_SERVICE_TAINT, "NoExecute", False)
                elif isinstance(action, lc.ReleasePods):
                    released = release_pods(self.kube, node)
                    if released:
                        pending.events.append((
                            "Normal", "PodsReleased",
                            f"{host.metadata.name}: powered off, Node still Ready: "
                            f"force-deleted {len(released)} pods ({', '.join(released[:5])}"
                            f"{', ...' if len(released) > 5 else ''})"))
                elif isinstance(action, lc.EmitEvent):
                    pending.events.append((action.type, action.reason, action.message))
                elif isinstance(action, lc.SetCondition):
                    cond(action.type, action.status, action.reason, action.message)
            except KubeError as exc:
                pending.failed = True
                log.warning("host %s: %s failed: %s", host.metadata.name,
                            type(action).__name__, exc)
        return fenced

    def _migrate(self, body: Mapping[str, Any], start: dr.MigrationStart) -> None:
        if start.is_engine and self._migration_running(start.vm):
            return  # another actor's migration of the engine (seen fresh): never a second one
        selector = {ENGINE_HOST_LABEL: "true"} if start.allowed_nodes else None
        created = self.api.create_migration(
            name=start.migration_name, namespace=start.vm.namespace, vmi=start.vm.name,
            host=body, added_node_selector=selector,
        )
        # write-through: the next reconcile must count it even before the watch delivers it
        self.put("vmims", (start.vm.namespace, start.migration_name), created)

    def _migration_running(self, vm: dr.VMRef) -> bool:
        """Read the VMI's migrations from the API (the cache may not have one created an instant
        ago by the HostedEngine); an unfinished one is cached so the next plan counts it."""
        running = False
        for m in self.kube.list(VMIMS, vm.namespace):
            if spec_of(m).get("vmiName") == vm.name and not migration_finished(m):
                self.put("vmims", (vm.namespace, str(meta(m).get("name"))), m)
                running = True
        return running

    def _fence(self, host: Host, body: Mapping[str, Any], attempt: int, pending: _Pending
               ) -> PowerManagementStatus | None:
        pm = host.spec.power_management
        if pm is None:
            return None
        result = self._bmc(host.metadata.name, pm, PowerAction.OFF)
        power = host.status.power_management
        if isinstance(result, CredentialsProblem):
            pending.events.append(("Warning", "FenceFailed",
                                   f"{host.metadata.name}: {result.message}"))
            return None
        action = _action_status(result, f"fence-{attempt}")
        if not result.succeeded:
            pending.events.append(("Warning", "FenceFailed",
                                   f"{host.metadata.name}: power off: {result.message}"))
        return power.model_copy(update={
            "power_state": result.power_state if result.succeeded else power.power_state,
            "checked_at": result.finished_at if result.succeeded else power.checked_at,
            "last_action": action,
        })

    # -- power management --------------------------------------------------------------------

    def _power(self, host: Host, body: Mapping[str, Any], status: HostStatus, cond: Any,
               pending: _Pending) -> HostStatus:
        name = host.metadata.name
        pm = host.spec.power_management
        power = status.power_management
        try:
            request = host.requested_power_action()
        except ValueError as exc:
            request = None
            old = get_condition(status.conditions, "PowerActionValid")
            if old is None or old.status is not ConditionStatus.FALSE:
                pending.events.append(("Warning", "PowerActionRejected", str(exc)))
            cond("PowerActionValid", False, "InvalidPowerAction", str(exc))
        else:
            if get_condition(status.conditions, "PowerActionValid") is not None:
                cond("PowerActionValid", True, "Valid")
        last = power.last_action
        stale = (last is not None and last.result is PowerActionResult.IN_PROGRESS
                 and name not in self._actions_running)
        if request is not None and (host.power_action_pending() or stale):
            action, request_id = request
            if pm is None:
                power = power.model_copy(update={"last_action": PowerActionStatus(
                    id=request_id, action=action, result=PowerActionResult.REJECTED,
                    message="no powerManagement configured", started_at=get_clock().now(),
                    finished_at=get_clock().now())})
                pending.events.append(("Warning", "PowerActionRejected",
                                       f"{name}: {action.value}: no powerManagement configured"))
            else:
                ran = self._unwritten_actions.pop(name, None)
                if ran is not None and ran[:2] == (action, request_id) and stale \
                        and last is not None and (last.action, last.id) == ran[:2]:
                    result = ran[2]  # it ran, only its status write failed: never twice
                else:
                    started = PowerActionStatus(id=request_id, action=action,
                                                result=PowerActionResult.IN_PROGRESS,
                                                started_at=get_clock().now())
                    progress = status.model_copy(update={
                        "power_management": power.model_copy(update={"last_action": started})})
                    self._write(name, status, progress)
                    self._actions_running.add(name)
                    try:
                        result = self._bmc(host.metadata.name, pm, action)
                    finally:
                        self._actions_running.discard(name)
                pending.action_result = (action, request_id, result)
                power = self._record(host, power, result, request_id, cond, pending)
                pending.pm_checked = _fingerprint(host)
            status = status.model_copy(update={"power_management": power})
        if pm is None:
            self._pm_checked.pop(name, None)
            if get_condition(status.conditions, "PowerManagementReady") is None \
                    or power.power_state is not PowerState.DISABLED:
                cond("PowerManagementReady", False, Reason.NO_POWER_MANAGEMENT,
                     "spec.powerManagement is not set: no power actions, no fencing")
            return status.model_copy(update={"power_management": power.model_copy(
                update={"power_state": PowerState.DISABLED})})
        fingerprint = _fingerprint(host)
        if self._pm_checked.get(name) != fingerprint and pending.pm_checked != fingerprint:
            pending.pm_checked = fingerprint
            result = self._bmc(host.metadata.name, pm, PowerAction.STATUS)
            power = self._record(host, power, result, None, cond, pending, keep_last=True)
            status = status.model_copy(update={"power_management": power})
        return status

    def _record(self, host: Host, power: PowerManagementStatus,
                result: PowerResult | CredentialsProblem, request_id: str | None, cond: Any,
                pending: _Pending, keep_last: bool = False) -> PowerManagementStatus:
        name = host.metadata.name
        now = get_clock().now()
        if isinstance(result, CredentialsProblem):
            cond("PowerManagementReady", False, "CredentialsUnavailable", result.message)
            if keep_last:
                return power
            pending.events.append(("Warning", "PowerActionFailed", f"{name}: {result.message}"))
            return power.model_copy(update={"last_action": PowerActionStatus(
                id=request_id, action=PowerAction.STATUS if keep_last else _requested(host),
                result=PowerActionResult.FAILED, message=result.message, started_at=now,
                finished_at=now)})
        if result.error in (PowerError.UNREACHABLE, PowerError.TIMEOUT, PowerError.TLS):
            cond("PowerManagementReady", False, Reason.BMC_UNREACHABLE, result.message)
        elif result.error is PowerError.AUTH:
            cond("PowerManagementReady", False, Reason.BMC_AUTH_FAILED, result.message)
        elif result.error is None or result.error in (PowerError.REJECTED,
                                                       PowerError.NOT_CONFIRMED):
            cond("PowerManagementReady", True, "BmcAnswered", f"power is {result.power_state}")
        else:
            cond("PowerManagementReady", False, str(result.error.value), result.message)
        update: dict[str, Any] = {}
        if result.power_state is not PowerState.UNKNOWN:
            update["power_state"] = result.power_state
            update["checked_at"] = result.finished_at
        if not keep_last:
            update["last_action"] = _action_status(result, request_id)
            kind = "Normal" if result.succeeded else "Warning"
            reason = "PowerActionSucceeded" if result.succeeded else "PowerActionFailed"
            pending.events.append((kind, reason,
                                   f"{name}: {result.action.value}: {result.message}"))
        return power.model_copy(update=update)

    # -- hosted engine -----------------------------------------------------------------------

    def _hosted_engine(self, host: Host, body: Mapping[str, Any], world: hm.World,
                       status: HostStatus, cond: Any) -> HostedEngineHostStatus:
        name = host.metadata.name
        node_name = host.spec.node_name
        node = world.nodes.get(node_name)
        labelled = (meta(node).get("labels") or {}).get(ENGINE_HOST_LABEL) == "true"
        want = host.spec.hosted_engine is HostedEngineDeployment.DEPLOY
        engines = [v for v in hm.vmis_on(world, node_name)
                   if hm.is_engine_vm(v, world.vms.get(hm.key_of(v)))]
        current = status.hosted_engine
        if node is not None and want and not labelled:
            labelled = self.api.set_label(node_name, ENGINE_HOST_LABEL, "true") is not None
        elif node is not None and not want and labelled:
            if engines:
                labelled = True
                self._move_engine(host, body, world, engines[0], cond)
            else:
                labelled = self.api.set_label(node_name, ENGINE_HOST_LABEL, None) is None
                if get_condition(status.conditions, "UndeployBlocked") is not None:
                    cond("UndeployBlocked", False, "EngineMoved")
        deployed = want and labelled
        host_id = self._host_id(name, current.host_id, world) if deployed else None
        if not deployed:
            with self._ids_lock:
                self._host_ids.pop(name, None)
        return current.model_copy(update={
            "deployed": deployed, "host_id": host_id, "engine_running": bool(engines)})

    def _host_id(self, name: str, current: int | None, world: hm.World) -> int:
        """The Host's oVirt-style id in the engine's host table: kept once given, else the
        smallest one no other Host holds or was just given (reconciles run in parallel)."""
        with self._ids_lock:
            taken = {n: i for n, i in self._host_ids.items() if n != name}
            for other, body in world.hosts.items():
                value = (status_of(body).get("hostedEngine") or {}).get("hostID")
                if other != name and isinstance(value, int) and other not in taken:
                    taken[other] = value
            used = set(taken.values())
            if current is not None and current not in used:
                chosen = current
            else:
                chosen = self._host_ids.get(name) or next(
                    i for i in range(1, len(used) + 2) if i not in used)
                if chosen in used:
                    chosen = next(i for i in range(1, len(used) + 2) if i not in used)
            self._host_ids[name] = chosen
            return chosen

    def _move_engine(self, host: Host, body: Mapping[str, Any], world: hm.World,
                     vmi: Mapping[str, Any], cond: Any) -> None:
        key = hm.key_of(vmi)
        if any(not migration_finished(m) for m in hm.migrations_of(world, key)):
            return
        others = [
            n for n, obj in world.nodes.items()
            if n != host.spec.node_name
            and (meta(obj).get("labels") or {}).get(ENGINE_HOST_LABEL) == "true"
            and node_ready(obj)[0] is True and not spec_of(obj).get("unschedulable")
        ]
        if not others:
            cond("UndeployBlocked", True, "EngineHasNoHost",
                 f"the engine VM {key[0]}/{key[1]} runs here and no other host may run it")
            return
        cond("UndeployBlocked", False, "MovingEngine", f"migrating the engine VM to {others}")
        attempts = sum(1 for m in hm.migrations_of(world, key)
                       if hm.ours(m, host.metadata.name) and migration_finished(m))
        name = dr.migration_name(f"{host.metadata.name}-undeploy",
                                 dr.VMRef(key[0], key[1]), attempts + 1)
        created = self.api.create_migration(name=name, namespace=key[0], vmi=key[1], host=body,
                                            added_node_selector={ENGINE_HOST_LABEL: "true"})
        self.put("vmims", (key[0], name), created)

    # -- clock skew ---------------------------------------------------------------------------

    def _clock_skew(self, host: Host, status: HostStatus, cond: Any) -> ClockSkewStatus:
        measured = self.skew.get(host.spec.node_name)
        current = status.clock_skew
        if measured is None:
            return current
        seconds, at = measured
        if current.seconds is not None and not _skew_changed(current.seconds, seconds):
            return current
        if abs(seconds) > CLOCK_SKEW_LIMIT_SECONDS:
            cond("ClockSkewed", True, Reason.CLOCK_SKEW,
                 f"the node's clock is {seconds:+.2f}s off (limit {CLOCK_SKEW_LIMIT_SECONDS:g}s)")
        else:
            cond("ClockSkewed", False, Reason.CLOCK_IN_SYNC, f"{seconds:+.2f}s")
        return ClockSkewStatus(seconds=round(seconds, SKEW_DIGITS), measured_at=at)

    # -- timers -------------------------------------------------------------------------------

    def _next_wait(self, new: lc.HostStatus, obs: lc.HostObservation) -> float:
        policy = obs.policy
        now = obs.now
        waits = [self.settings.resync_s]
        progress = new.maintenance
        if (new.state is lc.HostState.PREPARING_FOR_MAINTENANCE and progress is not None
                and not progress.timed_out and policy.maintenance_timeout_s is not None):
            waits.append(policy.maintenance_timeout_s
                         - (now - progress.started_at).total_seconds())
        if new.state is lc.HostState.PREPARING_FOR_MAINTENANCE:
            for vm in obs.vms:
                if vm.migration is dr.MigrationState.FAILED and vm.last_failure_at is not None:
                    waits.append(policy.migration_retry_after_s
                                 - (now - vm.last_failure_at).total_seconds())
        silent = None
        if obs.node.ready is not True and obs.node.not_ready_since is not None:
            silent = (now - obs.node.not_ready_since).total_seconds()
        if silent is not None and new.state not in (lc.HostState.NON_RESPONSIVE,
                                                    lc.HostState.FENCED):
            waits.append(policy.silent_after_s - silent)
        lease_silence = lc.lease_silent_for(obs)
        if lease_silence is not None and (obs.fence_requested or new.state in (
                lc.HostState.NON_RESPONSIVE, lc.HostState.FENCED)):
            left = lc.lease_threshold_s(obs.node, policy) - lease_silence
            if left > 0:  # a request waiting for the Lease to cross the threshold
                waits.append(left + MIN_WAIT)
        if new.state is lc.HostState.NON_RESPONSIVE:
            fence = new.fence
            if fence is not None and fence.in_flight and fence.requested_at is not None:
                waits.append(policy.fence_timeout_s
                             - (now - fence.requested_at).total_seconds())
            elif silent is not None and obs.runs_restartable_vms:
                waits.append(policy.silent_after_s + policy.fence_after_s - silent)
        return max(MIN_WAIT, min(waits))

    # -- deletion ----------------------------------------------------------------------------

    def reconcile_deletion(self, name: str) -> tuple[bool, HostState | None]:
        """(whether the Host may go -- its Node released --, the state it is in)."""
        fresh = self.kube.find(HOSTS, name)  # kopf holds this Host's events back meanwhile
        if fresh is None:
            return True, None
        self.put("hosts", name, fresh)
        outcome = self.reconcile(name)
        with self._lock_for(name):
            with self._world_lock:
                body = self.world.hosts.get(name)
            if body is None:
                return True, None
            host = self._parse(body)
            if outcome.state is HostState.MAINTENANCE or not outcome.node_exists:
                node = host.spec.node_name
                try:
                    self.api.set_label(node, ENGINE_HOST_LABEL, None)
                    self.api.set_taint(node, OUT_OF_SERVICE_TAINT, "NoExecute", False)
                    self.api.cordon(node, False)
                except NotFound:
                    pass
                self.api.host_event(body, "Normal", "HostRemoved",
                                    f"{name}: Node {node} released")
                return True, outcome.state
            old = get_condition(host.status.conditions, "DeletionBlocked")
            message = (f"the Host is {outcome.state.value if outcome.state else 'Pending'}: "
                       "set spec.maintenance.mode to local and wait for Maintenance")
            if old is None or old.status is not ConditionStatus.TRUE:
                conditions = set_condition(
                    host.status.conditions, "DeletionBlocked", True, Reason.NOT_IN_MAINTENANCE,
                    message, observed_generation=host.metadata.generation,
                    now=get_clock().now())
                with contextlib.suppress(KubeError):
                    self.put("hosts", name, self.api.patch_host_status(
                        name, {"conditions": [c.to_dict() for c in conditions]}))
                self.api.host_event(body, "Warning", "DeletionBlocked", f"{name}: {message}")
            return False, outcome.state


def filtered_skew(history: deque[tuple[datetime, float]], sample: float, received: datetime
                  ) -> tuple[float, datetime]:
    """The skew estimate after one more sample: the largest of the node's samples of the last
    :data:`SKEW_WINDOW` (``history``, updated here). Each sample is the true skew minus the
    event's delivery delay, so the largest is the least delayed. Without it, every renewal
    delivered a little late on a busy cluster moved the estimate by more than
    :data:`SKEW_RESOLUTION` and rewrote the status: hundreds of Host status patches per minute
    at 200 Hosts on a loaded machine. A sliding maximum, not the last largest sample kept until
    it ages out: then the first sample after it, delayed or not, replaced it, and at 1,000
    Hosts with deliveries 0.3 s late at the median and 5 s at the 99th percentile every Host
    rewrote its skew about once a minute (611 Host status patches a minute)."""
    history.append((received, sample))
    while (received - history[0][0]).total_seconds() >= SKEW_WINDOW:
        history.popleft()
    return max(s for _, s in history), received


def _skew_changed(written: float, measured: float) -> bool:
    """Whether a measured skew is news: it crosses the limit, or beyond the limit it moved by
    :data:`SKEW_RESOLUTION`. Within the limit the node is in sync and the value written stays
    (at 1,000 Hosts the delivery jitter of the Lease events, 0.2 s at p50 but 8 s at p99,
    still rewrote about 100 Host statuses a minute with in-sync values)."""
    limit = CLOCK_SKEW_LIMIT_SECONDS
    if (abs(written) > limit) != (abs(measured) > limit):
        return True
    return abs(measured) > limit and abs(written - measured) >= SKEW_RESOLUTION


def _fingerprint(host: Host) -> str:
    pm = host.spec.power_management
    return json.dumps(pm.to_dict() if pm else None, sort_keys=True)


def _requested(host: Host) -> PowerAction:
    with contextlib.suppress(ValueError):
        request = host.requested_power_action()
        if request is not None:
            return request[0]
    return PowerAction.STATUS


def _action_status(result: PowerResult, request_id: str | None) -> PowerActionStatus:
    return PowerActionStatus(
        id=request_id,
        action=result.action,
        result=result.result,
        message=result.message[:1024],
        started_at=result.started_at,
        finished_at=result.finished_at,
    )


def _state_message(state: HostState, new: lc.HostStatus) -> str:
    if state is HostState.PREPARING_FOR_MAINTENANCE and new.maintenance is not None:
        m = new.maintenance
        if m.timed_out:
            return "drain timed out; the host stays cordoned until maintenance is cancelled"
        return (f"draining: {len(m.moved)}/{len(m.to_move)} moved, {len(m.in_flight)} in "
                f"flight, {len(m.blocked)} blocked")
    if new.refusal is not None:
        return f"maintenance refused: {new.refusal.message}"
    return {
        HostState.UP: "the host runs VMs",
        HostState.MAINTENANCE: "in maintenance: no VM runs here",
        HostState.ACTIVATING: "leaving maintenance",
        HostState.NON_RESPONSIVE: "the Node is not Ready",
        HostState.FENCED: "powered off by fencing; the Node is out of service",
        HostState.NON_OPERATIONAL: "the Node is Ready but cannot be used",
    }.get(state, state.value)


# --------------------------------------------------------------------------------------------
# kopf wiring


def reconciler_of(memo: kopf.Memo) -> HostReconciler:
    reconciler = memo.get(RECONCILER_KEY)
    if not isinstance(reconciler, HostReconciler):
        raise RuntimeError("host startup handler did not run")
    return reconciler


def triggers_of(memo: kopf.Memo) -> Triggers:
    triggers = memo.get(TRIGGERS_KEY)
    if not isinstance(triggers, Triggers):
        raise RuntimeError("host startup handler did not run")
    return triggers


@kopf.on.startup(id="host-startup")
def startup(memo: kopf.Memo, **_: Any) -> None:
    memo[RECONCILER_KEY] = HostReconciler(kube_client(memo))
    memo[TRIGGERS_KEY] = Triggers()


@kopf.on.cleanup(id="host-power-poll-cleanup")
def stop_power_polls(memo: kopf.Memo, **_: Any) -> None:
    reconciler = memo.get(RECONCILER_KEY)
    if isinstance(reconciler, HostReconciler) and reconciler._power_pool is not None:
        reconciler._power_pool.shutdown(wait=False, cancel_futures=True)


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, id="host", cancellation_timeout=10.0)
async def run_host(name: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Reconcile on every wake-up; otherwise sleep until the next time-based decision."""
    reconciler = reconciler_of(memo)
    triggers = triggers_of(memo)
    poller = asyncio.create_task(_poll_power(name, reconciler, triggers, stopped),
                                 name=f"host-power-poll-{name}")
    try:
        while not stopped:
            try:
                outcome = await _in_reconcile_pool(reconciler.reconcile, name)
            except Exception:  # the API went away, a bug: log, back off, try again
                log.exception("host %s: reconcile failed", name)
                metrics.record_reconcile_error("Host")
                await triggers.wait(name, ERROR_BACKOFF)
                continue
            await triggers.wait(name, outcome.wait)
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await poller


async def _poll_power(name: str, reconciler: HostReconciler, triggers: Triggers,
                      stopped: kopf.DaemonStopped) -> None:
    """Read the BMC power state of an engine Host every ``power_poll_s``; wake the Host when
    it changed (its reconcile writes it to status, where the HostedEngine reads it)."""
    interval = reconciler.settings.power_poll_s
    if interval <= 0:
        return
    loop = asyncio.get_running_loop()
    while not stopped:
        if reconciler.power_poll_due(name):
            started = loop.time()
            try:
                changed = await loop.run_in_executor(reconciler.power_pool(),
                                                     reconciler.poll_power, name)
            except Exception:  # a driver bug: log it, keep polling
                log.exception("host %s: BMC power poll failed", name)
                changed = False
            if changed:
                triggers.fire(name)
            await asyncio.sleep(max(MIN_WAIT, interval - (loop.time() - started)))
        else:  # not an engine host (yet): look again now and then, not every interval
            await asyncio.sleep(max(interval, POWER_POLL_RECHECK))


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, id="host-delete")
async def delete_host(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Hold the finalizer until the Host is in Maintenance, then release its Node.

    kopf stops the Host's daemon when the deletion starts and, while this handler runs, does
    not deliver the Host's own events; so this loop reconciles the Host itself (maintenance may
    still be entered while the deletion is held), re-reads it from the API, and wakes on the
    Nodes', VMIs' and migrations' events or after a re-check delay that backs off from
    :data:`HELD_RECHECK_MIN` to :data:`HELD_RECHECK_MAX` while nothing changes.
    """
    reconciler = reconciler_of(memo)
    triggers = triggers_of(memo)
    recheck = HELD_RECHECK_MIN
    last_state: HostState | None = None
    while True:
        try:
            released, state = await asyncio.to_thread(reconciler.reconcile_deletion, name)
        except Exception as exc:
            raise kopf.TemporaryError(f"deletion check failed: {exc}", delay=ERROR_BACKOFF) \
                from exc
        if released:
            triggers.forget(name)
            return
        recheck = HELD_RECHECK_MIN if state != last_state else min(recheck * 2, HELD_RECHECK_MAX)
        last_state = state
        if await triggers.wait(name, recheck):
            recheck = HELD_RECHECK_MIN


async def _in_reconcile_pool(fn: Any, *args: Any) -> Any:
    """``asyncio.to_thread`` on the Host reconciles' own threads."""
    global _reconcile_pool
    if _reconcile_pool is None:
        _reconcile_pool = ThreadPoolExecutor(RECONCILE_THREADS, thread_name_prefix="host")
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(_reconcile_pool, call)


def _deleted(type_: str | None) -> bool:
    return type_ == "DELETED"


@kopf.on.event(API_GROUP, API_VERSION, PLURAL, id="host-watch")
async def host_event(name: str, body: kopf.Body, type: str | None, memo: kopf.Memo,
                     **_: Any) -> None:
    reconciler = reconciler_of(memo)
    triggers = triggers_of(memo)
    obj = dict(body)
    reconciler.note_echo(name, obj, get_clock().now())
    previous = reconciler.put("hosts", name, obj, deleted=_deleted(type))
    triggers.fire(name)
    if _deleted(type) or status_of(previous).get("state") != status_of(obj).get("state") \
            or spec_of(previous) != spec_of(obj):
        # targets, storm guard and host ids of the others change: wake the Hosts that read
        # them (waking all of them was O(Hosts^2) per change: 2 s per reaction at 200 Hosts)
        triggers.fire_some(reconciler.dependents())


@kopf.on.event("", "v1", "nodes", id="host-nodes")
async def node_event(name: str, body: kopf.Body, type: str | None, memo: kopf.Memo,
                     **_: Any) -> None:
    reconciler = reconciler_of(memo)
    obj = dict(body)
    previous = reconciler.put("nodes", name, obj, deleted=_deleted(type))
    triggers = triggers_of(memo)
    triggers.fire(reconciler.host_for_node(name))
    if _deleted(type) or previous is None or node_ready(previous)[0] != node_ready(obj)[0] \
            or bool(spec_of(previous).get("unschedulable")) != bool(spec_of(obj).get(
                "unschedulable")):
        triggers.fire_some(reconciler.dependents())


@kopf.on.event("", "v1", "pods", id="host-pods")
async def pod_event(name: str, namespace: str | None, body: kopf.Body, type: str | None,
                    memo: kopf.Memo, **_: Any) -> None:
    reconciler_of(memo).put_pod((namespace or "", name), body, _deleted(type))


@kopf.on.event("kubevirt.io", "v1", "virtualmachineinstances", id="host-vmis")
async def vmi_event(name: str, namespace: str | None, body: kopf.Body, type: str | None,
                    memo: kopf.Memo, **_: Any) -> None:
    reconciler = reconciler_of(memo)
    triggers = triggers_of(memo)
    obj = dict(body)
    previous = reconciler.put("vmis", (namespace or "", name), obj, deleted=_deleted(type))
    for node in {hm.vmi_node(previous or {}), hm.vmi_node(obj)}:
        triggers.fire(reconciler.host_for_node(node))


@kopf.on.event("kubevirt.io", "v1", "virtualmachines", id="host-vms")
async def vm_event(name: str, namespace: str | None, body: kopf.Body, type: str | None,
                   memo: kopf.Memo, **_: Any) -> None:
    reconciler_of(memo).put("vms", (namespace or "", name), dict(body), deleted=_deleted(type))


@kopf.on.event("kubevirt.io", "v1", "virtualmachineinstancemigrations", id="host-migrations")
async def migration_event(name: str, namespace: str | None, body: kopf.Body, type: str | None,
                          memo: kopf.Memo, **_: Any) -> None:
    reconciler = reconciler_of(memo)
    reconciler.put("vmims", (namespace or "", name), dict(body), deleted=_deleted(type))
    host = (meta(body).get("labels") or {}).get(MIGRATION_HOST_LABEL)
    triggers = triggers_of(memo)
    triggers.fire(host)
    if _deleted(type) or migration_finished(body):
        triggers.fire_some(reconciler.dependents())  # a cluster-wide slot is free


@kopf.on.event("kubevirt.io", "v1", "kubevirts", id="host-kubevirt")
async def kubevirt_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    reconciler_of(memo).set_kubevirt(None if _deleted(type) else dict(body))
    triggers_of(memo).fire_all()


@kopf.on.event("coordination.k8s.io", "v1", "leases", id="host-leases")
async def lease_event(namespace: str | None, body: kopf.Body, type: str | None,
                      memo: kopf.Memo, **_: Any) -> None:
    if namespace != NODE_LEASE_NAMESPACE or _deleted(type):
        return
    now = get_clock().now()
    # how far behind the Lease watch the operator is (renewal to handling; MODIFIED only)
    metrics.record_watch_lag("Lease", type, lease_renew_time(body), now)
    host, came_back = reconciler_of(memo).observe_lease(body, now, listed=type is None)
    triggers = triggers_of(memo)
    triggers.fire(host)
    if came_back:
        # the storm guard of the Hosts that may fence counts this one again
        triggers.fire_some(reconciler_of(memo).dependents())
