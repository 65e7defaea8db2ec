"""A deterministic discrete-event simulation of partitions and races around the REAL pure logic.

What is real: :func:`hosted_engine.logic.ha.step` (the HostedEngine's HA machine, with its
scoring) and :func:`hosted_engine.logic.host_lifecycle.step` (the Host's fencing decisions),
fed through the same translations the handlers use (``engine_vm.fence_status``-like mapping of
the Host's fencing to the machine's :class:`~hosted_engine.logic.ha.FenceStatus`, the stale-BMC
rule of ``engine_vm.observe``, the Host's ``fence_request_active``, ``host_mapping.to_logic``'s
new attempt budget for a new request id, and the Host's fresh re-read before a power-off).

What is simulated (simplified on purpose, documented here so a reader can judge a result):

* Nodes: powered or not; a *partition* cuts the node (kubelet, virt-handler, the engine's
  network) from the API and from the operator while its VMs keep running; a *lease stall* stops
  the kubelet's Lease renewals while the node is otherwise fine. The node-lifecycle controller
  marks a Node NotReady ``node_grace`` after its last renewal.
* KubeVirt: one VirtualMachine with runStrategy Always and at most one VMI. A missing or final
  VMI is replaced by a new one; the scheduler binds it to a Ready, untainted node (the HA's
  preferred host first); the guest boots on a reachable, powered node. The *truth* (where an
  engine guest really runs) is kept apart from the API: a partitioned node keeps its guest even
  when the API deletes its VMI with grace 0, until it is powered off or reconnects (then its
  kubelet kills what the API no longer has). The out-of-service taint fails the node's VMIs.
* BMCs: power-off after ``bmc_delay``; a BMC that is *down* answers nothing.
* Operator replicas (1 or 2): each has its own lagged view of the API (``view_lag``), its own
  in-process state (HA memory, last written Host statuses, probe results), writes that land after
  ``write_delay``, and kopf-like peering: the higher priority replica acts while its peering
  record is fresh in the other's view; a replica that (re)starts or resumes reads its state back
  from status. An *API partition* of a replica drops its reads and writes (it keeps deciding on
  its frozen view: exactly what a partitioned kopf process does).

Invariants checked on every tick (``Sim.violations``):

* never two engines: at most one node really runs an engine guest;
* never a fence without need: a BMC power-off is never decided for a powered node whose Lease is
  fresh (renewed within ``node_grace``) while the API shows it Ready;
  the Host re-reads the Node and its Lease (a GET, the API as it is, not the replica's lagged
  view) right before the power-off and asks the logic again (``confirm_fence``), as the handler
  does; an unreachable API calls the fence off;
* liveness (end of a scenario whose faults all healed, with time to settle): exactly one engine
  runs and the machine reports EngineUp.

A scenario is a seed: ``Scenario.from_seed(seed)`` draws everything from ``random.Random(seed)``
so a failure is reproduced with ``run_seed(seed)`` (the tests print the seed and the trace).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hosted_engine.logic import ha, leaseclock
from hosted_engine.logic import host_lifecycle as lc
from hosted_engine.logic.backoff import Backoff

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TICK = 0.5
GiB = 1024**3
REQUESTER = "hostedengine.engine.he"


def at(t: float) -> datetime:
    return T0 + timedelta(seconds=t)


def view_horizon(view: Any) -> datetime | None:
    """The lease clock's limit over every node Lease of a replica's view (logic/leaseclock)."""
    return leaseclock.horizon((at(n.lease), LEASE_RENEW) for n in view.nodes.values())


SETTINGS = ha.Settings(
    health_interval=timedelta(seconds=1),
    health_timeout=timedelta(seconds=1),
    failures_before_bad=3,
    startup_grace=timedelta(seconds=30),
    restart_grace=timedelta(seconds=4),
    stop_timeout=timedelta(seconds=4),
    host_silence=timedelta(seconds=6),
    fence_timeout=timedelta(seconds=20),
    fence_retry=timedelta(seconds=5),
    backoff=Backoff(timedelta(seconds=1), 2.0, timedelta(seconds=8)),
    max_start_attempts=6,
    stable_period=timedelta(seconds=30),
)
LEASE_RENEW = 2.0
_POLICY_FIELDS = {f.name for f in fields(lc.HostPolicy)}
_NODE_FIELDS = {f.name for f in fields(lc.NodeObservation)}
POLICY = lc.HostPolicy(
    silent_after_s=20.0, fence_after_s=0.0, fence_timeout_s=6.0, max_fence_attempts=3,
    min_healthy_ratio=0.5,
    # Lease-silence fencing (when the Host logic has it): the simulated kubelet renews every 2 s
    **({"lease_renew_interval_s": LEASE_RENEW} if "lease_renew_interval_s" in _POLICY_FIELDS
       else {}),
)
NODE_GRACE = 5.0
BOOT = 2.0
SCHEDULE = 0.5
PEERING_LIFETIME = 4.0
POWER_POLL = 2.0


# ------------------------------------------------------------------------------ faults


@dataclass(frozen=True)
class Fault:
    kind: str  # power_loss | node_partition | lease_stall | bmc_down | operator_partition |
    #            watch_stall (reads frozen, writes land) | replica_kill | crash | hang
    target: str  # node name, replica name or "engine"
    start: float
    end: float | None  # None: permanent (power_loss: the node stays off)

    def active(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True)
class Scenario:
    seed: int
    nodes: tuple[str, ...]
    replicas: int
    view_lag: float
    write_delay: float
    bmc_delay: dict[str, float]
    faults: tuple[Fault, ...]
    duration: float

    @classmethod
    def from_seed(cls, seed: int) -> Scenario:
        rng = random.Random(seed)
        n = rng.choice((2, 3, 3, 4))
        nodes = tuple(f"node-{i}" for i in range(n))
        replicas = rng.choice((1, 2, 2))
        view_lag = rng.choice((0.0, 0.5, 1.0, 2.0))
        write_delay = rng.choice((0.0, 0.0, 0.5, 1.5))
        bmc_delay = {name: rng.choice((0.0, 0.5, 2.0, 5.0)) for name in nodes}
        faults: list[Fault] = []
        kinds = ["power_loss", "node_partition", "lease_stall", "bmc_down", "crash", "hang",
                 "operator_partition", "watch_stall", "replica_kill"]
        horizon = 50.0
        for _ in range(rng.randint(1, 3)):
            kind = rng.choice(kinds)
            start = round(rng.uniform(15.0, horizon), 1)
            length = round(rng.uniform(2.0, 25.0), 1)
            if kind in ("crash", "hang", "operator_partition", "watch_stall", "replica_kill"):
                target = "engine" if kind in ("crash", "hang") else rng.choice(
                    ("replica-a", "replica-b")[:replicas])
            else:
                target = rng.choice(nodes)
            end: float | None = start + length
            if kind == "power_loss" and rng.random() < 0.6:
                end = None  # the node stays off (a dead host)
            if kind == "crash":
                end = start + TICK
            faults.append(Fault(kind, target, start, end))
        last = max((f.end or f.start) for f in faults)
        return cls(seed, nodes, replicas, view_lag, write_delay, bmc_delay, tuple(faults),
                   duration=last + 50.0)

    @property
    def stale_views(self) -> bool:
        """The operator decides on a view older than the truth (informer lag, a stalled watch
        or an API partition): the Host guards its power-offs with a fresh read of the Node and
        its Lease (``confirm_fence``)."""
        return self.view_lag > 0 or any(
            f.kind in ("watch_stall", "operator_partition") for f in self.faults)

    def describe(self) -> str:
        faults = ", ".join(
            f"{f.kind}({f.target} {f.start:g}-{'never' if f.end is None else f'{f.end:g}'})"
            for f in self.faults)
        return (f"seed={self.seed} nodes={len(self.nodes)} replicas={self.replicas} "
                f"view_lag={self.view_lag} write_delay={self.write_delay} "
                f"bmc_delay={self.bmc_delay} faults=[{faults}]")


# ------------------------------------------------------------------------------ the API


@dataclass(frozen=True)
class Vmi:
    uid: int
    node: str | None
    phase: str  # Pending, Scheduled, Running, Succeeded, Failed
    created: float
    deleting: bool = False


@dataclass(frozen=True)
class NodeApi:
    lease: float
    ready: bool
    not_ready_since: float | None
    oos_taint: bool = False


@dataclass(frozen=True)
class HostApi:
    fence_annotation: str | None = None
    status: lc.HostStatus | None = None
    request_id: str | None = None  # the request the status handles
    power_state: str = "Unknown"
    power_checked: float | None = None
    rv: int = 0


@dataclass(frozen=True)
class Api:
    """One immutable snapshot of what the API server holds."""

    vmi: Vmi | None
    prefer: str | None
    nodes: dict[str, NodeApi]
    hosts: dict[str, HostApi]
    memory: dict[str, object] | None
    memory_rv: int
    peering: dict[str, float]  # replica -> last heartbeat


# ------------------------------------------------------------------------------ replicas


@dataclass
class Replica:
    name: str
    priority: int
    up: bool = True
    acting: bool = False
    memory: ha.Memory | None = None
    memory_rv: int = -1
    hosts: dict[str, HostApi] = field(default_factory=dict)  # own last writes
    probes: deque[ha.Probe] = field(default_factory=lambda: deque(maxlen=8))
    readings: dict[str, tuple[str, float]] = field(default_factory=dict)
    next_probe: float = 0.0
    next_poll: float = 0.0
    last_vmi: Vmi | None = None

    def reset(self) -> None:
        self.last_vmi = None
        self.memory = None
        self.memory_rv = -1
        self.hosts.clear()
        self.probes.clear()
        self.readings.clear()


# ------------------------------------------------------------------------------ the simulation


class Sim:
    def __init__(self, scenario: Scenario) -> None:
        self.sc = scenario
        self.t = 0.0
        self.rng = random.Random(scenario.seed * 7919 + 1)
        nodes = {n: NodeApi(lease=0.0, ready=True, not_ready_since=None) for n in scenario.nodes}
        self.api = Api(vmi=None, prefer=None, nodes=nodes,
                       hosts={n: HostApi() for n in scenario.nodes}, memory=None, memory_rv=0,
                       peering={})
        self.history: deque[tuple[float, Api]] = deque()
        self.powered = {n: True for n in scenario.nodes}
        self.power_off_at: dict[str, float] = {}
        self.guests: dict[str, int] = {}  # node -> VMI uid whose guest really runs there
        self.boot_at: dict[int, float] = {}
        self.uid = 0
        self.writes: list[tuple[float, int, str, Callable[[], None]]] = []
        self.seq = 0
        self.replicas = [Replica("replica-a", 2), Replica("replica-b", 1)][: scenario.replicas]
        self.violations: list[str] = []
        self.kinds: set[str] = set()  # two-engines | needless-fence | not-converged
        self.trace: deque[str] = deque(maxlen=60)
        self.fences: list[tuple[float, str]] = []
        self.aborted_fences: list[tuple[float, str]] = []  # called off by the fresh re-read
        self.last_state: dict[str, str] = {}

    # -- helpers -------------------------------------------------------------------------

    def fault(self, kind: str, target: str) -> bool:
        return any(f.kind == kind and f.target == target and f.active(self.t)
                   for f in self.sc.faults)

    def connected(self, node: str) -> bool:
        return self.powered[node] and not self.fault("node_partition", node)

    def log(self, text: str) -> None:
        self.trace.append(f"t={self.t:6.1f} {text}")

    def update(self, **changes: Any) -> None:
        self.api = replace(self.api, **changes)

    def set_node(self, node: str, **changes: Any) -> None:
        nodes = dict(self.api.nodes)
        nodes[node] = replace(nodes[node], **changes)
        self.update(nodes=nodes)

    def set_host(self, host: str, **changes: Any) -> HostApi:
        hosts = dict(self.api.hosts)
        hosts[host] = replace(hosts[host], rv=hosts[host].rv + 1, **changes)
        self.update(hosts=hosts)
        return hosts[host]

    def view(self, replica: Replica) -> Api:
        """What the replica's informers show: the API as of ``view_lag`` ago; frozen at the
        start of an API partition."""
        cutoff = self.t - self.sc.view_lag
        part = [f for f in self.sc.faults
                if f.kind in ("operator_partition", "watch_stall") and f.target == replica.name
                and f.active(self.t)]
        if part:
            cutoff = min(cutoff, part[0].start)
        if not self.history:
            return self.api
        chosen = self.history[0][1]
        for when, snap in self.history:
            if when > cutoff:
                break
            chosen = snap
        return chosen

    def reachable(self, replica: Replica) -> bool:
        return replica.up and not self.fault("operator_partition", replica.name)

    def write(self, replica: Replica, what: str, apply: Callable[[], None]) -> None:
        """A write: dropped when the replica cannot reach the API, else lands later."""
        if not self.reachable(replica):
            return
        self.seq += 1
        self.writes.append((self.t + self.sc.write_delay, self.seq, what, apply))

    # -- the world -----------------------------------------------------------------------

    def world_step(self) -> None:
        t = self.t
        for f in self.sc.faults:
            if f.kind == "replica_kill":
                rep = next((r for r in self.replicas if r.name == f.target), None)
                if rep is not None:
                    alive = not f.active(t)
                    if rep.up and not alive:
                        self.log(f"{rep.name} killed")
                        rep.up = False
                        rep.acting = False
                        rep.reset()
                    elif not rep.up and alive:
                        self.log(f"{rep.name} restarted")
                        rep.up = True
        for node in self.sc.nodes:
            off = any(f.kind == "power_loss" and f.target == node and f.active(t)
                      for f in self.sc.faults)
            fenced_off = node in self.power_off_at and self.power_off_at[node] <= t
            want = not off and not fenced_off
            if self.powered[node] and not want:
                self.log(f"{node} powered off")
                self.guests.pop(node, None)
            elif not self.powered[node] and want:
                self.log(f"{node} powered on")
            self.powered[node] = want
        # leases and Ready
        for node in self.sc.nodes:
            n = self.api.nodes[node]
            if self.connected(node) and not self.fault("lease_stall", node) \
                    and t - n.lease >= LEASE_RENEW - 1e-9:
                n = replace(n, lease=t)
            ready = t - n.lease <= NODE_GRACE
            if ready != n.ready:
                n = replace(n, ready=ready, not_ready_since=None if ready else n.lease + NODE_GRACE)
                self.log(f"{node} Ready={ready}")
            if n != self.api.nodes[node]:
                self.set_node(node, **{k: getattr(n, k) for k in ("lease", "ready",
                                                                  "not_ready_since")})
        # a reconnected node's kubelet kills a guest the API no longer gives it
        for node, uid in list(self.guests.items()):
            vmi = self.api.vmi
            if self.connected(node) and (vmi is None or vmi.uid != uid or vmi.node != node
                                         or vmi.phase in ("Succeeded", "Failed")):
                self.log(f"kubelet on {node} kills stale guest {uid}")
                del self.guests[node]
        # hangs and crashes
        for f in self.sc.faults:
            if f.kind == "crash" and f.active(t):
                for node in list(self.guests):
                    self.log(f"engine guest on {node} crashed")
                    del self.guests[node]
        self.kubevirt()

    def kubevirt(self) -> None:
        t, vmi = self.t, self.api.vmi
        if vmi is not None and vmi.node is not None and self.connected(vmi.node):
            if vmi.deleting:
                self.guests.pop(vmi.node, None)
                vmi = replace(vmi, phase="Succeeded", deleting=False)
            elif vmi.phase == "Running" and self.guests.get(vmi.node) != vmi.uid:
                vmi = replace(vmi, phase="Failed")
                self.log(f"VMI {vmi.uid} Failed on {vmi.node}")
        if vmi is not None and vmi.node is not None and self.api.nodes[vmi.node].oos_taint \
                and vmi.phase not in ("Succeeded", "Failed"):
            vmi = replace(vmi, phase="Failed")
            self.log(f"VMI {vmi.uid} released by the out-of-service taint")
        if vmi is not None and vmi.node is None and vmi.deleting:
            vmi = None
        if vmi is None or (vmi.phase in ("Succeeded", "Failed") and t - vmi.created > 1.0):
            self.uid += 1
            vmi = Vmi(self.uid, None, "Pending", t)
        if vmi.phase == "Pending" and t - vmi.created >= SCHEDULE:
            node = self.schedule()
            if node is not None:
                vmi = replace(vmi, node=node, phase="Scheduled")
                self.boot_at[vmi.uid] = t + BOOT
                self.log(f"VMI {vmi.uid} scheduled on {node}")
        if vmi.phase == "Scheduled" and vmi.node is not None and self.connected(vmi.node) \
                and t >= self.boot_at.get(vmi.uid, t):
            self.guests[vmi.node] = vmi.uid
            vmi = replace(vmi, phase="Running")
            self.log(f"VMI {vmi.uid} Running on {vmi.node}")
        if vmi != self.api.vmi:
            self.update(vmi=vmi)

    def schedule(self) -> str | None:
        usable = [n for n in self.sc.nodes
                  if self.api.nodes[n].ready and not self.api.nodes[n].oos_taint]
        if not usable:
            return None
        if self.api.prefer in usable:
            return self.api.prefer
        return usable[0]

    def invariants(self) -> None:
        if len(self.guests) > 1:
            self.kinds.add("two-engines")
            self.violations.append(
                f"t={self.t:g}: two engines running: {sorted(self.guests.items())}")

    # -- the operator --------------------------------------------------------------------

    def peering(self) -> None:
        for rep in self.replicas:
            if self.reachable(rep):
                peering = dict(self.api.peering)
                peering[rep.name] = self.t
                self.update(peering=peering)
        for rep in self.replicas:
            if not rep.up:
                continue
            view = self.view(rep)
            higher = [o for o in self.replicas if o.priority > rep.priority
                      and self.t - view.peering.get(o.name, -1e9)
                      < PEERING_LIFETIME]
            acting = not higher
            if acting != rep.acting:
                self.log(f"{rep.name} {'acts' if acting else 'pauses'}")
                if not acting:
                    rep.reset()  # kopf stops the daemons: in-process state is lost
            rep.acting = acting

    def host_view(self, rep: Replica, view: Api, host: str) -> HostApi:
        own = rep.hosts.get(host)
        seen = view.hosts[host]
        return own if own is not None and own.rv >= seen.rv else seen

    def operator_step(self, rep: Replica) -> None:
        view = self.view(rep)
        reach = self.reachable(rep)
        # BMC polls (the BMC network is not the API's: a partitioned replica still reads them)
        if self.t >= rep.next_poll:
            rep.next_poll = self.t + POWER_POLL
            for node in self.sc.nodes:
                if not self.fault("bmc_down", node):
                    rep.readings[node] = ("On" if self.powered[node] else "Off", self.t)
        # probes
        if self.t >= rep.next_probe:
            rep.next_probe = self.t + SETTINGS.health_interval.total_seconds()
            vmi = view.vmi
            ok = (vmi is not None and vmi.node is not None and self.connected(vmi.node)
                  and self.guests.get(vmi.node) == vmi.uid
                  and not self.fault("hang", "engine"))
            if vmi is not None and vmi.phase == "Running":
                rep.probes.append(ha.Probe(at(self.t),
                                           ha.ProbeResult.OK if ok else ha.ProbeResult.TIMEOUT))
        for host in self.sc.nodes:
            self.host_step(rep, view, host, reach)
        self.engine_step(rep, view)

    def host_step(self, rep: Replica, view: Api, host: str, reach: bool) -> None:
        h = self.host_view(rep, view, host)
        node = view.nodes[host]
        annotation = h.fence_annotation
        active_request = annotation is not None and (
            h.request_id != annotation
            or h.status is None
            or not (h.status.fence is not None and (
                h.status.fence.confirmed_off_at is not None or h.status.fence.gave_up)))
        reading = rep.readings.get(host)
        power_state, checked = (reading if reading is not None
                                else (h.power_state, h.power_checked))
        vmi = view.vmi
        obs = lc.HostObservation(
            host=host,
            now=at(self.t),
            # the lease clock, as handlers/host_mapping.observe: every Lease in this view
            node=replace(self.node_observation(node), lease_horizon=view_horizon(view)),
            power=lc.PowerObservation(
                configured=True, fencing_allowed=True, power_state=power_state,
                observed_at=at(checked) if checked is not None else None),
            cluster=lc.ClusterHealth(len(view.nodes), sum(n.ready for n in view.nodes.values())),
            policy=POLICY,
            fence_requested=active_request,
            runs_restartable_vms=vmi is not None and vmi.node == host
            and vmi.phase not in ("Succeeded", "Failed"),
        )
        status = h.status
        if active_request and h.request_id != annotation and status is not None \
                and status.fence is not None and status.fence.gave_up:
            # host_mapping.to_logic: a new request id starts a new attempt budget
            status = replace(status, fence=None)
        result = lc.step(status, obs)
        if lc.requests_fence(result):
            result = self.confirm_fence(rep, status, obs, host, reach, result)
        new_status = result.status
        for action in result.actions:
            if isinstance(action, lc.RequestFence):
                self.fence(rep, host, reach)
            elif isinstance(action, lc.TaintOutOfService):
                self.write(rep, f"taint {host}", lambda host=host: self.set_node(
                    host, oos_taint=True))
            elif isinstance(action, lc.RemoveOutOfServiceTaint):
                self.write(rep, f"untaint {host}", lambda host=host: self.set_node(
                    host, oos_taint=False))
        request_id = annotation if active_request else h.request_id
        if new_status != h.status or request_id != h.request_id or (
                reading is not None and reading != (h.power_state, h.power_checked)):
            if new_status.state != (h.status.state if h.status else None):
                self.log(f"{rep.name}: Host {host} {new_status.state}")
            written = replace(h, status=new_status, request_id=request_id,
                              power_state=power_state, power_checked=checked,
                              rv=max(h.rv, view.hosts[host].rv) + 1)
            if reach:
                rep.hosts[host] = written

                def land(host: str = host, written: HostApi = written) -> None:
                    # a status patch: the annotation belongs to metadata, kept from the server
                    self.set_host(host, status=written.status, request_id=written.request_id,
                                  power_state=written.power_state,
                                  power_checked=written.power_checked)

                self.write(rep, f"host {host} status", land)

    def confirm_fence(self, rep: Replica, status: lc.HostStatus | None,
                      obs: lc.HostObservation, host: str, reach: bool, result: lc.Step
                      ) -> lc.Step:
        """The Host handler's check right before the BMC power-off: the Node and its Lease
        re-read with a GET (the API as it is now, not the replica's lagged view) and the pure
        logic asked again; a replica that cannot reach the API does not fence (the handler's
        GET fails: it aborts)."""
        if not reach:
            self.aborted_fences.append((self.t, host))
            self.log(f"{rep.name}: fence of {host} aborted (cannot re-read the Node)")
            return lc.without_fence(result)
        fresh = self.api.nodes[host]
        again = lc.step(status, replace(obs, node=self.node_observation(fresh)))
        if not lc.requests_fence(again):
            self.aborted_fences.append((self.t, host))
            self.log(f"{rep.name}: fence of {host} aborted (fresh Lease {self.t - fresh.lease:g}s"
                     f" old, ready={fresh.ready})")
        return again

    @staticmethod
    def node_observation(node: NodeApi) -> lc.NodeObservation:
        return lc.NodeObservation(
            ready=True if node.ready else None,
            not_ready_since=at(node.not_ready_since) if node.not_ready_since is not None
            else None,
            out_of_service_taint=node.oos_taint,
            **({"lease_renewed_at": at(node.lease)} if "lease_renewed_at" in _NODE_FIELDS
               else {}),
        )

    def fence(self, rep: Replica, host: str, reach: bool) -> None:
        """The Host adapter's power-off through the BMC (a BMC call, not an API write: a
        partitioned replica can still make it)."""
        truth = self.api.nodes[host]
        fresh = self.powered[host] and self.t - truth.lease <= NODE_GRACE
        self.fences.append((self.t, host))
        self.log(f"{rep.name}: FENCE {host} (lease age {self.t - truth.lease:g}s, "
                 f"ready={truth.ready})")
        if fresh and truth.ready:
            self.kinds.add("needless-fence")
            self.violations.append(
                f"t={self.t:g}: {rep.name} fenced {host} whose Lease is fresh "
                f"({self.t - truth.lease:g}s) and Node Ready")
        if self.fault("bmc_down", host):
            return
        when = self.t + self.sc.bmc_delay[host]
        self.power_off_at[host] = min(self.power_off_at.get(host, when), when)

    def engine_step(self, rep: Replica, view: Api) -> None:
        if rep.memory is None:
            rep.memory = ha.memory_from_dict(view.memory or {})
        before = rep.memory
        previous, rep.last_vmi = rep.last_vmi, view.vmi
        if previous is not None and previous.node is not None and (
                view.vmi is None or view.vmi.uid != previous.uid) \
                and previous.phase not in ("Succeeded", "Failed"):
            # the handler's note_replaced: KubeVirt replaced the VMI between two steps; the
            # machine first sees the one it watched end
            ended = replace(view, vmi=replace(previous, phase="Failed"))
            self.decide(rep, ended)
        self.decide(rep, view)
        if rep.memory != before:  # the handler patches status when something changed
            assert rep.memory is not None
            data = ha.memory_to_dict(rep.memory)
            self.write(rep, "he status", lambda data=data: self.update(
                memory=data, memory_rv=self.api.memory_rv + 1))

    def decide(self, rep: Replica, view: Api) -> None:
        assert rep.memory is not None
        obs = self.ha_observation(rep, view)
        decision = ha.step(SETTINGS, rep.memory, obs, at(self.t))
        rep.memory = decision.memory
        if decision.state.value != self.last_state.get(rep.name):
            self.last_state[rep.name] = decision.state.value
            self.log(f"{rep.name}: HA {decision.state.value}: {decision.memory.reason}")
        dead = {h.name for h in obs.hosts if h.fence is ha.FenceStatus.CONFIRMED}
        if decision.memory.abandoned_host:
            dead.add(decision.memory.abandoned_host)
        for action in decision.actions:
            if isinstance(action, ha.StartEngine):
                vmi = view.vmi
                self.write(rep, f"prefer {action.host}",
                           lambda host=action.host: self.update(prefer=host))
                if vmi is not None and vmi.node in dead and vmi.phase not in (
                        "Succeeded", "Failed"):
                    self.write(rep, "delete vmi grace 0",
                               lambda uid=vmi.uid: self.force_delete(uid))
            elif isinstance(action, ha.StopEngine):
                self.write(rep, "delete vmi", self.graceful_delete)
            elif isinstance(action, ha.PowerOffEngine):
                # a hard stop: KubeVirt deletes the launcher pod, whose object stays until the
                # node's kubelet confirms (a partitioned node keeps it Terminating): only the
                # release of a VMI bound to a fenced node removes the object at once
                self.write(rep, "delete vmi (hard)", self.graceful_delete)
            elif isinstance(action, ha.RequestFence):
                annotation = f"{REQUESTER}-{self.t:g}"
                self.write(rep, f"fence-request {action.host}",
                           lambda host=action.host, a=annotation: self.set_host(
                               host, fence_annotation=a))
            elif isinstance(action, ha.ClearFenceRequest):
                self.write(rep, f"clear fence-request {action.host}",
                           lambda host=action.host: self.set_host(host, fence_annotation=None))

    def force_delete(self, uid: int) -> None:
        vmi = self.api.vmi
        if vmi is not None and vmi.uid == uid:
            self.log(f"VMI {uid} force-deleted")
            self.update(vmi=None)

    def graceful_delete(self) -> None:
        vmi = self.api.vmi
        if vmi is not None and vmi.phase not in ("Succeeded", "Failed"):
            self.update(vmi=replace(vmi, deleting=True))

    def ha_observation(self, rep: Replica, view: Api) -> ha.Observation:
        hosts = []
        fenced: set[str] = set()
        for name in self.sc.nodes:
            h = self.host_view(rep, view, name)
            node = view.nodes[name]
            fence = self.fence_status(h)
            if fence is ha.FenceStatus.CONFIRMED:
                fenced.add(name)
            bmc = ha.PowerState.UNKNOWN
            if h.power_state in ("On", "Off"):
                bmc = ha.PowerState(h.power_state)
            if bmc is ha.PowerState.OFF and (h.power_checked is None
                                             or node.lease > h.power_checked):
                bmc = ha.PowerState.UNKNOWN
            hosts.append(ha.HostObservation(
                name=name, ready=node.ready, last_heartbeat=at(node.lease),
                free_memory=8 * GiB, bmc_power=bmc, can_fence=True, fence=fence))
        vmi = view.vmi
        if vmi is None or vmi.node is None:
            vm = ha.EngineVm(exists=True, desired_running=True)
        else:
            phase = ha.VmiPhase(vmi.phase)
            if phase in (ha.VmiPhase.FAILED, ha.VmiPhase.SUCCEEDED) and vmi.node in fenced:
                phase = ha.VmiPhase.RUNNING
            vm = ha.EngineVm(exists=True, desired_running=True, phase=phase, node=vmi.node,
                             since=at(vmi.created), live_migratable=False)
        return ha.Observation(vm=vm, probes=tuple(rep.probes), hosts=tuple(hosts),
                              engine_memory=GiB, lease_horizon=view_horizon(view))

    @staticmethod
    def fence_status(h: HostApi) -> ha.FenceStatus:
        status = h.status
        if status is not None and status.state is lc.HostState.FENCED:
            return ha.FenceStatus.CONFIRMED
        annotation = h.fence_annotation
        if annotation is None or not annotation.startswith(REQUESTER):
            return ha.FenceStatus.NONE
        if h.request_id != annotation or status is None:
            return ha.FenceStatus.REQUESTED
        fence = status.fence
        if status.state is lc.HostState.NON_RESPONSIVE and fence is not None:
            if fence.gave_up:
                return ha.FenceStatus.FAILED
            if fence.confirmed_off_at is not None:
                return ha.FenceStatus.CONFIRMED
            if fence.requested_at is not None:
                return ha.FenceStatus.IN_PROGRESS
        return ha.FenceStatus.REQUESTED

    # -- the loop ------------------------------------------------------------------------

    def land_writes(self) -> None:
        due = sorted(w for w in self.writes if w[0] <= self.t)
        self.writes = [w for w in self.writes if w[0] > self.t]
        for _, _, _, apply in due:
            apply()

    def run(self) -> Sim:
        end = self.sc.duration
        while self.t <= end:
            self.land_writes()
            self.world_step()
            self.peering()
            self.history.append((self.t, self.api))
            while len(self.history) > 2 and self.history[1][0] < self.t - 40.0:
                self.history.popleft()
            if int(self.t * 2) % 2 == 0:  # the operator decides every second
                for rep in self.replicas:
                    if rep.up and rep.acting:
                        self.operator_step(rep)
            self.land_writes()
            self.invariants()
            if len(self.violations) > 20:
                break
            self.t = round(self.t + TICK, 3)
        self.liveness()
        return self

    def settled_scenario(self) -> bool:
        """Every fault healed with time to settle, and no node that stays dark runs nothing we
        need (a node off for good is fine: it gets fenced)."""
        last = max((f.end if f.end is not None else f.start) for f in self.sc.faults)
        return self.sc.duration - last >= 45.0

    def liveness(self) -> None:
        if not self.settled_scenario() or "two-engines" in self.kinds:
            return
        alive = [n for n in self.sc.nodes if self.powered[n]]
        if len(alive) / len(self.sc.nodes) < POLICY.min_healthy_ratio:
            return  # the fence storm guard (ClusterPartitioned) holds every fence: by design
        acting = [r for r in self.replicas if r.up and r.acting and r.memory is not None]
        states = {r.name: r.memory.state.value for r in acting if r.memory is not None}
        if len(self.guests) != 1 or not any(s == "EngineUp" for s in states.values()):
            self.kinds.add("not-converged")
            self.violations.append(
                f"t={self.t:g}: not converged after every fault healed: guests="
                f"{sorted(self.guests.items())} states={states} "
                f"reasons={[r.memory.reason for r in acting if r.memory is not None]}")


def run_seed(seed: int) -> Sim:
    return Sim(Scenario.from_seed(seed)).run()


def report(sim: Sim) -> str:
    lines = [sim.sc.describe(), *sim.violations, "last events:", *sim.trace]
    return "\n".join(lines)


__all__ = ["Fault", "Scenario", "Sim", "report", "run_seed"]
