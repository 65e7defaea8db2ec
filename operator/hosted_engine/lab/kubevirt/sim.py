"""The simulated KubeVirt: virt-controller, virt-handler, virt-api, the migration and evacuation
controllers, snapshots, restores, exports and CDI, as one API client of the lab.

Every ``tick`` the simulator lists what it needs and reconciles each object (level-triggered, so a
missed event or a restart changes nothing); in-memory state holds only what a real cluster keeps
outside the API too: each guest's process (its HTTP endpoint and loopback IP) and each migration's
transferred bytes. Durations come from :class:`~hosted_engine.lab.sim.timings.LabTimings`; the
durations KubeVirt reads from API objects (``progressTimeout``, ``completionTimeoutPerGiB``,
``bandwidthPerMigration``, snapshot ``failureDeadline``, export ``ttlDuration``) are multiplied by
``timings.get("kubevirt_api_seconds", 1.0)`` so tests can shrink them without unrealistic specs.

Durations read from :class:`LabTimings`: ``vm_boot_time`` (virt-launcher running -> VMI Running),
``vm_shutdown_time`` (a launcher pod's stop), ``migration_bandwidth`` and ``migration_setup_time``,
``virt_handler_heartbeat`` / ``virt_handler_unresponsive``, ``snapshot_delay``,
``export_ready_delay``, ``datavolume_import_time``; and from ``LabTimings.extra``:
``kubevirt_api_seconds`` (above), ``guest_startup_time`` (an engine's default start-up time before
its health page answers ``DB Up``; 0), ``migration_unschedulable_timeout`` (a migration whose
target pod cannot be scheduled fails; 300 s) and ``evacuation_retry`` (5 s between evacuation
attempts of one VMI).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hosted_engine.clock import get_clock
from hosted_engine.lab.kubevirt import (
    APP_LABEL,
    CREATED_BY_LABEL,
    DISK_SEED_ANNOTATION,
    DOMAIN_ANNOTATION,
    EVACUATION_ANNOTATION,
    GUEST_AGENT_ANNOTATION,
    GUEST_HTTP_ANNOTATION,
    KUBEVIRT_CR_NAME,
    KUBEVIRT_NAMESPACE,
    MIGRATION_FINALIZER,
    MIGRATION_JOB_LABEL,
    NODE_NAME_LABEL,
    VM_CONTROLLER_FINALIZER,
    VM_NAME_LABEL,
    VMI_FINALIZER,
)
from hosted_engine.lab.kubevirt import decisions as d
from hosted_engine.lab.kubevirt.crds import kubevirt_cr, kubevirt_crds
from hosted_engine.lab.kubevirt.export import ExportServer
from hosted_engine.lab.kubevirt.guest import GuestService, IpAllocator
from hosted_engine.lab.kubevirt.resources import (
    CRDS,
    KUBEVIRTS,
    VMIMS,
    VMIS,
    VMS,
    deleting,
    owner_ref,
    phase,
    same_conditions,
    set_condition,
    short_hash,
    status,
    uid_of,
    without_condition,
)
from hosted_engine.lab.sim.api import (
    NAMESPACES,
    NODES,
    PODS,
    PVCS,
    Api,
    Conflict,
    Obj,
    Res,
    condition,
    meta,
    name_of,
    ns_of,
    record_event,
    rfc3339,
)
from hosted_engine.lab.sim.kubelet import Kubelet
from hosted_engine.lab.sim.nodes import SimNode
from hosted_engine.lab.sim.timings import LabTimings

log = logging.getLogger(__name__)

LAUNCHER_IMAGE = "quay.io/kubevirt/virt-launcher:v1.9.0"
#: memory virt-launcher adds to the guest's (qemu, libvirt, the pod's own processes)
LAUNCHER_OVERHEAD = 200 * 1024**2
DEFAULT_GRACE = 30  # types.go DefaultGracePeriodSeconds
UNSCHEDULABLE_TARGET_TIMEOUT = 300.0  # a migration target pod that never schedules
SCHEDULABLE_LABEL = "kubevirt.io/schedulable"
EVACUATION_RETRY = 5.0  # seconds between evacuation attempts of one VMI
RESYNC_PERIOD = 10.0  # seconds between full reconciles of settled objects
HEARTBEAT_ANNOTATION = "kubevirt.io/heartbeat"


class SubresourceError(Exception):
    """A virt-api answer other than 202: an HTTP code, a reason and a message."""

    def __init__(self, code: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or {
            400: "BadRequest",
            404: "NotFound",
            409: "Conflict",
            422: "Invalid",
            429: "TooManyRequests",
        }.get(code, "InternalError")


@dataclass
class Guest:
    """What runs for one VMI outside the API: its guest process and address."""

    uid: str
    key: tuple[str, str]
    ip: str
    node: str = ""
    pod: str = ""
    boot_at: float | None = None
    service: GuestService | None = None
    alive: bool = False  # the guest process runs (not necessarily reachable)
    lost: bool = False  # its machine lost power under it
    boots: int = 0
    hung: bool = False


@dataclass
class Migration:
    uid: str
    target_pod: str = ""
    scheduling_since: float = 0.0
    ready_at: float = 0.0
    started: float | None = None
    last_step: float = 0.0
    last_progress: float = 0.0
    transferred: float = 0.0


@dataclass
class World:
    """One tick's view of the cluster."""

    vms: dict[tuple[str, str], Obj] = field(default_factory=dict)
    vmis: dict[tuple[str, str], Obj] = field(default_factory=dict)
    pods: dict[str, list[Obj]] = field(default_factory=dict)  # by created-by VMI uid
    vmims: list[Obj] = field(default_factory=list)
    kubevirt: Obj | None = None
    pvcs: dict[tuple[str, str], Obj] = field(default_factory=dict)
    nodes: dict[str, Obj] = field(default_factory=dict)


class KubeVirtSim:
    """KubeVirt's controllers on the lab; see the module docstring."""

    def __init__(
        self,
        api: Api,
        timings: LabTimings,
        *,
        machines: Mapping[str, SimNode] | None = None,
        wall: Callable[[], datetime] | None = None,
        guest_port: int = 8080,
        guest_network: str = "127.77.0.0/16",
        export_host: str = "127.0.0.1",
        cache: Callable[[Res], list[Obj] | None] | None = None,
        kubelets: Mapping[str, Kubelet] | None = None,
    ) -> None:
        self.api = _CountingApi(api)
        #: the nodes' kubelets (a guest's end ends its virt-launcher's compute container)
        self.kubelets: Mapping[str, Kubelet] = kubelets if kubelets is not None else {}
        #: cached objects per resource (the lab's informers); None: list through the API
        self.cache = cache
        self.timings = timings
        self.machines: Mapping[str, SimNode] = machines if machines is not None else {}
        self.wall = wall or (lambda: get_clock().now())
        self.guest_port = guest_port
        self.ips = IpAllocator(guest_network)
        self.exports = ExportServer(export_host)
        self.guests: dict[str, Guest] = {}
        #: guests still running on a partitioned machine after the cluster let go of them
        self.orphans: dict[str, list[Guest]] = {}
        self.migrations: dict[str, Migration] = {}
        self.link_bandwidth: float | None = None  # set_migration_bandwidth (None: timings)
        self.world = World()
        self._listening: set[str] = set()
        self._heartbeats: dict[str, float] = {}
        #: settled objects: (fingerprint, time of the next resync)
        self._settled: dict[tuple[str, tuple[str, str]], tuple[tuple[Any, ...], float]] = {}
        #: the pass in which each object was last reconciled (oldest first under the budget)
        self._attempted: dict[tuple[str, tuple[str, str]], int] = {}
        self._passes = 0
        self._indexes: dict[str, tuple[list[Obj], Any]] = {}
        #: per VMI uid: (VMI, its pods list, the PVC index, the API part of its fingerprint)
        self._vmi_memo: dict[str, tuple[Obj, list[Obj] | None, Any, tuple[Any, ...]]] = {}
        #: the (VM, VMI) objects a settled VM was last checked with (held, compared by identity)
        self._same_inputs: dict[tuple[str, tuple[str, str]], tuple[Obj, Obj | None]] = {}
        self._retry_at: dict[tuple[str, str], float] = {}
        self._evacuation_next: dict[str, float] = {}
        from hosted_engine.lab.kubevirt.storage import StorageControllers

        self.storage = StorageControllers(self)

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def api_seconds(self) -> float:
        """Real seconds per second written in an API object (1.0 outside tests)."""
        return self.timings.get("kubevirt_api_seconds", 1.0)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def stamp(self) -> str:
        return rfc3339(self.wall())

    async def install(self, migrations: dict[str, Any] | None = None) -> None:
        """Install the CRDs, the ``kubevirt`` namespace and the ``kubevirt/kubevirt`` CR."""
        for crd in kubevirt_crds():
            await self.api.create(CRDS, crd)
        await self.api.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": KUBEVIRT_NAMESPACE}}
        )
        last: Exception | None = None
        for _ in range(50):
            try:
                await self.api.create(KUBEVIRTS, kubevirt_cr(migrations), KUBEVIRT_NAMESPACE)
                break
            except Exception as exc:  # the CRD may take a moment to be served
                last = exc
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"cannot create the KubeVirt CR: {last}")
        await self.api.patch(
            KUBEVIRTS,
            KUBEVIRT_CR_NAME,
            {"status": {"phase": "Deployed", "conditions": [
                {"type": "Available", "status": "True", "reason": "AllComponentsReady",
                 "message": "All components are ready."}]}},
            KUBEVIRT_NAMESPACE,
            subresource="status",
        )

    async def start(self, certificates: tuple[bytes, bytes, bytes] | None = None) -> None:
        """Start the export proxy (with the lab CA's certificate when given) and follow the
        machines' power."""
        await self.exports.start(certificates)
        for node in self.machines.values():
            self._listen(node)

    async def stop(self) -> None:
        orphans = [g for guests in self.orphans.values() for g in guests]
        self.orphans.clear()
        for guest in [*self.guests.values(), *orphans]:
            await self._kill_guest(guest)
        await self.exports.stop()

    def _listen(self, node: SimNode) -> None:
        if node.name in self._listening:
            return
        self._listening.add(node.name)
        node.add_listener(self._on_machine_event)

    def _on_machine_event(self, node: SimNode, event: str) -> None:
        if event in ("power-off", "heal"):
            # Guests the cluster already gave up on (split brain behind a partition) die with
            # the machine, or when its kubelet reconnects and kills what it should not run.
            for guest in self.orphans.pop(node.name, []):
                guest.alive = False
                self.ips.release(guest.uid)
                service, guest.service = guest.service, None
                if service is not None:
                    asyncio.get_running_loop().create_task(service.stop())
        if event != "power-off":
            return
        for guest in self.guests.values():
            if guest.node == node.name and guest.alive:
                guest.lost = True
                guest.alive = False
                service, guest.service = guest.service, None
                if service is not None:
                    asyncio.get_running_loop().create_task(service.stop())

    def machine_running(self, node: str) -> bool:
        """The node's machine runs (its guests live), reachable from the API or not."""
        machine = self.machines.get(node)
        return machine.running() if machine is not None else True

    def machine_connected(self, node: str) -> bool:
        """The node's kubelet and virt-handler reach the API server."""
        machine = self.machines.get(node)
        return machine.connected() if machine is not None else True

    # -- one pass ---------------------------------------------------------------------------

    async def objects(self, res: Res) -> list[Obj]:
        """Every object of ``res``: from the cache when there is one, else a LIST."""
        if self.cache is not None:
            cached = self.cache(res)
            if cached is not None:
                return cached
        return await self.api.list(res)

    def _indexed(self, name: str, objects: list[Obj], build: Callable[[list[Obj]], Any]) -> Any:
        """``build(objects)``, reused while the cache hands out the same list (unchanged)."""
        last = self._indexes.get(name)
        if last is not None and last[0] is objects:
            return last[1]
        index = build(objects)
        self._indexes[name] = (objects, index)
        return index

    @staticmethod
    def _by_key(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
        known = getattr(objects, "by_key", None)  # the lab's informers index them already
        if isinstance(known, dict):
            return known
        return {(ns_of(o), name_of(o)): o for o in objects}

    def _launchers(self, pods: list[Obj]) -> dict[str, list[Obj]]:
        """virt-launcher pods by VMI uid; a VMI whose pods are the very same objects as in the
        last index keeps its list object (so that its fingerprint is reused)."""
        by_vmi: dict[str, list[Obj]] = {}
        for pod in pods:
            labels = meta(pod).get("labels") or {}
            if labels.get(APP_LABEL) == "virt-launcher":
                by_vmi.setdefault(str(labels.get(CREATED_BY_LABEL, "")), []).append(pod)
        last = self._indexes.get("pods")
        if last is not None:
            previous: dict[str, list[Obj]] = last[1]
            for uid, current in by_vmi.items():
                old = previous.get(uid)
                if old is not None and len(old) == len(current) and \
                        all(a is b for a, b in zip(old, current, strict=True)):
                    by_vmi[uid] = old
        return by_vmi

    async def observe(self) -> World:
        """The pass's view; the indexes of a resource that did not change since the last pass
        are reused (so treat the World's dicts as read-only)."""
        world = World()
        world.vms = dict(self._indexed("vms", await self.objects(VMS), self._by_key))
        world.vmis = dict(self._indexed("vmis", await self.objects(VMIS), self._by_key))
        world.pods = self._indexed("pods", await self.objects(PODS), self._launchers)
        world.vmims = sorted(
            await self.objects(VMIMS),
            key=lambda m: (str(meta(m).get("creationTimestamp", "")), name_of(m)),
        )
        for kv in await self.objects(KUBEVIRTS):
            if (ns_of(kv), name_of(kv)) == (KUBEVIRT_NAMESPACE, KUBEVIRT_CR_NAME):
                world.kubevirt = kv
        world.pvcs = self._indexed("pvcs", await self.objects(PVCS), self._by_key)
        for node in await self.objects(NODES):
            world.nodes[name_of(node)] = node
        return world

    async def sync(self) -> None:
        """One reconcile pass of every controller."""
        for name, machine in self.machines.items():
            if name not in self._listening:
                self._listen(machine)
        world = self.world = await self.observe()
        await self._sync_objects(world)
        await self._sync_migrations()
        await self._sync_handlers(world)
        alive = {uid_of(v) for v in world.vmis.values()}
        for uid in [u for u in self.guests if u not in alive]:
            await self._forget_guest(uid)
        for uid in [u for u in self._vmi_memo if u not in alive]:
            self._vmi_memo.pop(uid, None)
        await self.storage.sync()

    async def _sync_objects(self, world: World) -> None:
        """virt-controller's VM and VMI loops over the dirty objects only.

        An object is dirty when something it depends on changed (its fingerprint: the
        resourceVersions it reads, its guest, its machine) since a reconcile that wrote nothing,
        when its state is time-driven (fingerprint None), or when its own resync period ran out.
        At most ``kubevirt_pass_budget`` seconds per pass; the rest waits for the next pass,
        the longest-waiting first (a mass start then never starves the nodes' heartbeats)."""
        now = self.now()
        resync = self.timings.get("kubevirt_resync_period", RESYNC_PERIOD)
        work: list[tuple[int, tuple[str, tuple[str, str]], tuple[Any, ...] | None,
                         Callable[..., Any], tuple[Any, ...]]] = []
        settled = self._settled
        same = self._same_inputs
        for key, vm in world.vms.items():
            vmi = world.vmis.get(key)
            wkey = ("vm", key)
            seen = settled.get(wkey)
            # the informers replace an object on every change: the very same objects as when
            # it settled mean the same fingerprint (cheaper than computing it for 10,000 VMs)
            inputs = same.get(wkey)
            if seen is not None and now < seen[1] and inputs is not None \
                    and inputs[0] is vm and inputs[1] is vmi:
                continue
            fingerprint = self._vm_fingerprint(vm, vmi)
            if fingerprint is not None and seen is not None and seen[0] == fingerprint \
                    and now < seen[1]:
                same[wkey] = (vm, vmi)
                continue
            work.append((self._attempted.get(wkey, 0), wkey, fingerprint, self._sync_vm,
                         (vm, vmi)))
        for key, vmi in world.vmis.items():
            fingerprint = self._vmi_fingerprint(vmi)
            wkey = ("vmi", key)
            seen = settled.get(wkey)
            if fingerprint is not None and seen is not None and seen[0] == fingerprint \
                    and now < seen[1]:
                continue
            work.append((self._attempted.get(wkey, 0), wkey, fingerprint, self._sync_vmi,
                         (vmi,)))
        # The VM and the VMI controllers have a work queue each and run side by side: take
        # from both in turn, each longest-waiting first, so that VMIs progress while new VMs
        # are still being started (a pipeline, not one stage after the other).
        vm_work = sorted((w for w in work if w[1][0] == "vm"), key=lambda item: item[0])
        vmi_work = sorted((w for w in work if w[1][0] == "vmi"), key=lambda item: item[0])
        work = [w for pair in itertools.zip_longest(vm_work, vmi_work) for w in pair
                if w is not None]
        self._passes += 1
        deadline = asyncio.get_running_loop().time() + self.timings.get(
            "kubevirt_pass_budget", 0.4)
        for done, (_, wkey, fingerprint, fn, args) in enumerate(work):
            if done and asyncio.get_running_loop().time() > deadline:
                break  # at least one per pass, whatever the budget
            self._attempted[wkey] = self._passes
            before = self.api.writes
            await self._guard(fn, *args)
            if fingerprint is not None and self.api.writes == before:
                # each object resyncs on its own schedule (spread by a little jitter)
                settled[wkey] = (fingerprint, now + resync * (1.0 + random.random() / 10))
                if wkey[0] == "vm":
                    same[wkey] = (args[0], args[1])
            else:
                settled.pop(wkey, None)
                same.pop(wkey, None)
        if len(self._attempted) > 2 * (len(world.vms) + len(world.vmis)) + 1000:
            live = {("vm", k) for k in world.vms} | {("vmi", k) for k in world.vmis}
            for stale in [k for k in self._attempted if k not in live]:
                self._attempted.pop(stale, None)
                settled.pop(stale, None)
                same.pop(stale, None)

    def _vm_fingerprint(self, vm: Obj, vmi: Obj | None) -> tuple[Any, ...] | None:
        if deleting(vm) or (vm.get("spec") or {}).get("dataVolumeTemplates") or \
                status(vm).get("startFailure"):
            return None
        return (_rv(vm), _rv(vmi) if vmi is not None else None)

    def _vmi_fingerprint(self, vmi: Obj) -> tuple[Any, ...] | None:
        """Everything ``_sync_vmi`` reads besides the clock: the VMI, its launcher pods, its
        claims, its guest, its machine; a booting guest adds "boot time reached" (so a VMI
        waiting for the scheduler, its pod or its boot is not reconciled on every pass).
        None (always reconcile): deleting, or evacuating (retried on a timer)."""
        if deleting(vmi) or status(vmi).get("evacuationNodeName"):
            return None
        guest = self.guests.get(uid_of(vmi))
        if guest is None:
            return None
        node = str(status(vmi).get("nodeName") or guest.node or "")
        booted = guest.boot_at is None or self.now() >= guest.boot_at
        return (self._vmi_api_inputs(vmi, guest.uid), guest.alive, guest.lost, guest.boots,
                guest.node, guest.pod, booted, self.machine_running(node),
                self.machine_connected(node))

    def _vmi_api_inputs(self, vmi: Obj, uid: str) -> tuple[Any, ...]:
        """The API objects' part of a VMI's fingerprint, reused while the VMI, its pods and the
        PVCs are the very same objects (the informers replace an object on every change)."""
        pods_list = self.world.pods.get(uid)
        memo = self._vmi_memo.get(uid)
        if memo is not None and memo[0] is vmi and memo[1] is pods_list \
                and memo[2] is self.world.pvcs:
            return memo[3]
        pods = tuple(sorted(_rv(p) for p in pods_list or ()))
        claims = tuple(
            _rv(self.world.pvcs.get((ns_of(vmi), claim)))
            for _, claim in d.claim_names(vmi.get("spec") or {})
        )
        part = (_rv(vmi), pods, claims)
        self._vmi_memo[uid] = (vmi, pods_list, self.world.pvcs, part)
        return part

    async def _guard(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            await fn(*args)
        except Conflict:
            obj = args[0] if args else {}
            log.debug("kubevirt: %s/%s changed meanwhile; next pass", ns_of(obj), name_of(obj))
        except Exception:
            obj = args[0] if args else {}
            log.exception("kubevirt: reconciling %s/%s failed", ns_of(obj), name_of(obj))

    # -- helpers ----------------------------------------------------------------------------

    def limits(self) -> d.MigrationLimits:
        return d.MigrationLimits.from_kubevirt(self.world.kubevirt)

    def eviction_strategy(self, vmi: Obj) -> str:
        own = (vmi.get("spec") or {}).get("evictionStrategy")
        if own:
            return str(own)
        config = ((self.world.kubevirt or {}).get("spec") or {}).get("configuration") or {}
        return str(config.get("evictionStrategy") or "None")

    def migratability(self, vmi: Obj) -> d.Migratability:
        namespace = ns_of(vmi)
        modes: dict[str, list[str]] = {}
        for _, claim in d.claim_names(vmi.get("spec") or {}):
            pvc = self.world.pvcs.get((namespace, claim))
            if pvc is not None:
                modes[claim] = list(
                    (status(pvc).get("accessModes") or (pvc.get("spec") or {}).get("accessModes"))
                    or []
                )
        return d.live_migratable(vmi.get("spec") or {}, modes, meta(vmi).get("annotations"))

    def _annotation(self, vmi: Obj, name: str) -> str | None:
        value = (meta(vmi).get("annotations") or {}).get(name)
        if value is None:
            vm = self.world.vms.get((ns_of(vmi), name_of(vmi)))
            value = (meta(vm).get("annotations") or {}).get(name) if vm else None
        return None if value is None else str(value)

    def current_pod(self, vmi: Obj) -> Obj | None:
        """The launcher pod the guest runs in (not a migration target in flight)."""
        pods = self.world.pods.get(uid_of(vmi), [])
        guest = self.guests.get(uid_of(vmi))
        if guest is not None and guest.pod:
            for pod in pods:
                if name_of(pod) == guest.pod:
                    return pod
        node = status(vmi).get("nodeName")
        for pod in pods:
            labels = meta(pod).get("labels") or {}
            if MIGRATION_JOB_LABEL in labels:
                continue
            if not node or (pod.get("spec") or {}).get("nodeName") == node:
                return pod
        return None

    def _guest(self, vmi: Obj) -> Guest:
        uid = uid_of(vmi)
        guest = self.guests.get(uid)
        if guest is None:
            guest = Guest(uid, (ns_of(vmi), name_of(vmi)), self.ips.allocate(uid))
            self.guests[uid] = guest
        return guest

    async def _kill_guest(self, guest: Guest) -> None:
        guest.alive = False
        service, guest.service = guest.service, None
        if service is not None:
            await service.stop()

    async def _forget_guest(self, uid: str) -> None:
        guest = self.guests.pop(uid, None)
        if guest is None:
            return
        if guest.alive and self._cut_off(guest.node):
            self.orphans.setdefault(guest.node, []).append(guest)
            return
        await self._kill_guest(guest)
        self.ips.release(uid)

    def _cut_off(self, node: str) -> bool:
        """The machine runs but nothing from the API reaches it (its guests keep running)."""
        return bool(node) and self.machine_running(node) and not self.machine_connected(node)

    async def _start_guest(self, vmi: Obj, guest: Guest) -> None:
        if guest.alive:  # already started (a transition that lost a Conflict is retried)
            return
        guest.alive = True
        guest.lost = False
        guest.boots += 1
        kind = self._annotation(vmi, GUEST_HTTP_ANNOTATION)
        if not kind:
            return
        port = int(self._annotation(vmi, "lab.hostedengine.io/guest-port") or self.guest_port)
        startup = self._annotation(vmi, "lab.hostedengine.io/guest-startup-seconds")
        startup_s = (
            float(startup) * self.api_seconds
            if startup is not None
            else self.timings.get("guest_startup_time", 0.0)
        )
        images = [
            str((v.get("containerDisk") or {}).get("image", ""))
            for v in (vmi.get("spec") or {}).get("volumes") or []
        ]
        images.append(self._annotation(vmi, "lab.hostedengine.io/guest-image") or "")
        for _, claim in d.claim_names(vmi.get("spec") or {}):
            pvc = self.world.pvcs.get((ns_of(vmi), claim))
            notes = meta(pvc).get("annotations") or {} if pvc is not None else {}
            images.append(str(notes.get(DISK_SEED_ANNOTATION, "")))
            images.append(str(notes.get("cdi.kubevirt.io/storage.import.endpoint", "")))
        service = GuestService(
            vm=f"{ns_of(vmi)}/{name_of(vmi)}",
            kind=kind,
            ip=guest.ip,
            port=port,
            node=guest.node,
            startup_time=startup_s,
            broken=any("broken" in image for image in images),
            boot=guest.boots,
        )
        if guest.hung:
            service.hang()
        for _ in range(8):
            try:
                await service.start()
                break
            except OSError as exc:
                # Another lab on this machine holds the address: take another one (the new
                # address is what the VMI reports once Running).
                log.warning("guest endpoint %s:%s: %s; moving", guest.ip, port, exc)
                self.ips.release(guest.uid, reuse=False)
                guest.ip = service.ip = self.ips.allocate(guest.uid)
        else:
            log.error("guest endpoint of %s/%s cannot listen", ns_of(vmi), name_of(vmi))
            return
        guest.service = service

    async def _patch_status(self, res: Any, obj: Obj, body: Obj,
                            guard: bool = False) -> Obj | None:
        """Patch ``status``; ``guard`` makes it conditional on the observed resourceVersion
        (a transition decided on a stale view then fails with Conflict, like in Go)."""
        patch: Obj = {"status": body}
        if guard:
            patch["metadata"] = {"resourceVersion": _rv(obj)}
        return await self.api.patch(res, name_of(obj), patch, ns_of(obj), "status")

    async def _event(self, obj: Obj, res: Any, etype: str, reason: str, message: str) -> None:
        with contextlib.suppress(Exception):
            await record_event(
                self.api, obj, res, etype, reason, message, "virt-controller", self.wall()
            )

    # -- virt-controller: VirtualMachine ----------------------------------------------------

    async def _sync_vm(self, vm: Obj, vmi: Obj | None) -> None:
        m = meta(vm)
        finalizers = list(m.get("finalizers") or [])
        if deleting(vm):
            if vmi is not None and not deleting(vmi):
                await self.api.delete(VMIS, name_of(vmi), ns_of(vmi))
            if vmi is None and VM_CONTROLLER_FINALIZER in finalizers:
                finalizers.remove(VM_CONTROLLER_FINALIZER)
                await self.api.patch(VMS, name_of(vm), {"metadata": {"finalizers": finalizers}},
                                     ns_of(vm))
                return
            await self._write_vm_status(vm, vmi, provisioning=False)
            return
        if VM_CONTROLLER_FINALIZER not in finalizers:
            await self.api.patch(
                VMS, name_of(vm),
                {"metadata": {"finalizers": [*finalizers, VM_CONTROLLER_FINALIZER]}}, ns_of(vm),
            )
        strategy = d.run_strategy(vm)
        decision = d.sync_run_strategy(strategy, vm, vmi)
        provisioning = False
        requests = list(status(vm).get("stateChangeRequests") or [])
        if decision.set_run_strategy:
            field_name = "runStrategy" if (vm.get("spec") or {}).get("runStrategy") else "running"
            value: Any = decision.set_run_strategy if field_name == "runStrategy" else True
            await self.api.patch(VMS, name_of(vm), {"spec": {field_name: value}}, ns_of(vm))
        key = (ns_of(vm), name_of(vm))
        start_failure = status(vm).get("startFailure") or None
        if decision.delete_vmi and vmi is not None:
            if d.phase_of(vmi) == "Failed" and not d.reached_running(vmi) and \
                    (start_failure or {}).get("lastFailedVMIUID") != uid_of(vmi):
                count = int((start_failure or {}).get("consecutiveFailCount", 0)) + 1
                delay = d.crash_loop_delay(count, random.random() / 2) * self.api_seconds
                self._retry_at[key] = self.now() + delay
                retry = self.wall() + timedelta(seconds=delay)
                start_failure = {"consecutiveFailCount": count,
                                 "lastFailedVMIUID": uid_of(vmi),
                                 "retryAfterTimestamp": rfc3339(retry)}
                await self._patch_status(VMS, vm, {"startFailure": start_failure})
            await self.api.delete(VMIS, name_of(vmi), ns_of(vmi))
            await self._event(vm, VMS, "Normal", "SuccessfulDelete",
                              f"Stopped the virtual machine by deleting the virtual machine "
                              f"instance {uid_of(vmi)}")
        backoff = bool(start_failure) and self.now() < self._retry_at.get(key, 0.0)
        if decision.create_vmi and not backoff:
            ready = await self.storage.ensure_data_volumes(vm)
            if ready:
                await self._create_vmi(vm)
            else:
                provisioning = True
        if decision.add_start_request:
            requests.append({"action": "Start"})
        probe = dict(vm)
        probe["status"] = {**status(vm), "stateChangeRequests": requests}
        remaining = d.remaining_requests(probe, vmi)
        await self._write_vm_status(vm, vmi, provisioning, remaining,
                                    crash_loop=bool(start_failure) and backoff)

    async def _create_vmi(self, vm: Obj) -> None:
        template = (vm.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        annotations = dict(tmeta.get("annotations") or {})
        for key, value in (meta(vm).get("annotations") or {}).items():
            if key.startswith("lab.hostedengine.io/"):
                annotations.setdefault(key, value)
        annotations["kubevirt.io/vm-generation"] = str(meta(vm).get("generation", 1))
        body: Obj = {
            "apiVersion": VMIS.api_version,
            "kind": VMIS.kind,
            "metadata": {
                "name": name_of(vm),
                "namespace": ns_of(vm),
                "labels": {**(tmeta.get("labels") or {}), VM_NAME_LABEL: name_of(vm)},
                "annotations": annotations,
                "ownerReferences": [owner_ref(vm, VMS)],
                "finalizers": [VMI_FINALIZER, VM_CONTROLLER_FINALIZER],
            },
            "spec": template.get("spec") or {"domain": {}},
        }
        created = await self.api.create(VMIS, body, ns_of(vm))
        if created is not None:
            await self._event(vm, VMS, "Normal", "SuccessfulCreate",
                              f"Started the virtual machine by creating the new virtual machine "
                              f"instance {name_of(vm)}")

    async def _write_vm_status(
        self,
        vm: Obj,
        vmi: Obj | None,
        provisioning: bool,
        requests: list[Obj] | None = None,
        crash_loop: bool = False,
    ) -> None:
        old = status(vm)
        strategy = d.run_strategy(vm)
        ready_cond = condition(vmi, "Ready") if vmi is not None else None
        unschedulable = False
        if vmi is not None:
            sched = condition(vmi, "PodScheduled")
            unschedulable = bool(sched and sched.get("status") == "False"
                                 and sched.get("reason") == "Unschedulable")
        now = self.stamp()
        conds = list(old.get("conditions") or [])
        if ready_cond is not None and d.phase_of(vmi) not in d.FINAL_PHASES:
            conds = set_condition(conds, "Ready", str(ready_cond.get("status")),
                                  str(ready_cond.get("reason") or ""),
                                  str(ready_cond.get("message") or ""), now)
        elif vmi is None:
            conds = set_condition(conds, "Ready", "False", "VMINotExists",
                                  "VMI does not exist", now)
        else:
            conds = set_condition(conds, "Ready", "False", "VMIFinal",
                                  "VMI is in a final phase", now)
        for ctype in ("LiveMigratable", "AgentConnected"):
            copied = condition(vmi, ctype) if vmi is not None else None
            if copied is not None and d.phase_of(vmi) not in d.FINAL_PHASES:
                conds = set_condition(conds, ctype, str(copied.get("status")),
                                      str(copied.get("reason") or ""),
                                      str(copied.get("message") or ""), now)
            else:
                conds = without_condition(conds, ctype)
        if unschedulable:
            sched = condition(vmi or {}, "PodScheduled") or {}
            conds = set_condition(conds, "Failure", "True", "Unschedulable",
                                  str(sched.get("message") or ""), now)
        else:
            conds = without_condition(conds, "Failure")
        printable = d.printable_status(vm, vmi, provisioning=provisioning,
                                       unschedulable=unschedulable, crash_loop=crash_loop)
        ready = bool(ready_cond and ready_cond.get("status") == "True"
                     and d.phase_of(vmi) == "Running")
        body: Obj = {
            "printableStatus": printable,
            "runStrategy": strategy,
            "created": vmi is not None and d.phase_of(vmi) not in d.FINAL_PHASES,
            "ready": ready,
            "observedGeneration": meta(vm).get("generation", 1),
            "desiredGeneration": meta(vm).get("generation", 1),
        }
        changed = any(old.get(k) != v for k, v in body.items())
        changed = changed or not same_conditions(old.get("conditions"), conds)
        if old.get("startFailure") and d.phase_of(vmi) == "Running":
            body["startFailure"] = None  # it started: the backoff is over
            changed = True
        if requests is not None and requests != list(old.get("stateChangeRequests") or []):
            body["stateChangeRequests"] = requests or None
            changed = True
        if changed:
            body["conditions"] = conds
            await self._patch_status(VMS, vm, body)

    # -- virt-controller + virt-handler: VirtualMachineInstance -----------------------------

    def _vmi_conditions_running(self, vmi: Obj, now: str) -> list[Obj]:
        conds = list(status(vmi).get("conditions") or [])
        conds = set_condition(conds, "Ready", "True", "", "", now)
        conds = without_condition(conds, "PodScheduled")
        mig = self.migratability(vmi)
        conds = set_condition(conds, "LiveMigratable", "True" if mig.migratable else "False",
                              mig.reason, mig.message, now)
        agent = self._annotation(vmi, GUEST_AGENT_ANNOTATION)
        if agent == "true" or (agent is None and self._annotation(vmi, GUEST_HTTP_ANNOTATION)):
            conds = set_condition(conds, "AgentConnected", "True", "", "", now)
        return conds

    async def _set_phase(self, vmi: Obj, new_phase: str, extra: Obj | None = None,
                         reason: str = "") -> None:
        now = self.stamp()
        stamps = list(status(vmi).get("phaseTransitionTimestamps") or [])
        stamps.append({"phase": new_phase, "phaseTransitionTimestamp": now})
        body: Obj = {"phase": new_phase, "phaseTransitionTimestamps": stamps[-10:]}
        if reason:
            body["reason"] = reason
        if new_phase in d.FINAL_PHASES:
            conds = set_condition(status(vmi).get("conditions"), "Ready", "False",
                                  "PodTerminating" if new_phase == "Succeeded" else "PodFailed",
                                  "", now)
            body["conditions"] = conds
        body.update(extra or {})
        await self._patch_status(VMIS, vmi, body, guard=True)

    def _launcher_pod(self, vmi: Obj, suffix_key: str, extra_labels: Obj | None = None,
                      added_selector: Mapping[str, str] | None = None,
                      avoid_node: str | None = None) -> Obj:
        spec = vmi.get("spec") or {}
        memory = d.vmi_memory_bytes(spec) + LAUNCHER_OVERHEAD
        labels = {
            **(meta(vmi).get("labels") or {}),
            APP_LABEL: "virt-launcher",
            CREATED_BY_LABEL: uid_of(vmi),
            VM_NAME_LABEL: name_of(vmi),
            **(extra_labels or {}),
        }
        node_selector = {
            **(spec.get("nodeSelector") or {}),
            **(added_selector or {}),
            SCHEDULABLE_LABEL: "true",
        }
        affinity = copy.deepcopy(spec.get("affinity") or {})
        if avoid_node:
            not_source = {"key": "kubernetes.io/hostname", "operator": "NotIn",
                          "values": [avoid_node]}
            node_aff = affinity.setdefault("nodeAffinity", {})
            required = node_aff.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
            terms = required.get("nodeSelectorTerms") or [{}]
            for term in terms:
                term.setdefault("matchExpressions", []).append(dict(not_source))
            required["nodeSelectorTerms"] = terms
        volumes = [
            {"name": vol, "persistentVolumeClaim": {"claimName": claim}}
            for vol, claim in d.claim_names(spec)
        ]
        grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE)
        pod_spec: Obj = {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": int(grace) + 15,
            "containers": [
                {
                    "name": "compute",
                    "image": LAUNCHER_IMAGE,
                    "command": ["/usr/bin/virt-launcher-monitor"],
                    "resources": {
                        "requests": {
                            "cpu": d.vmi_cpu_request(spec),
                            "memory": str(memory),
                            "devices.kubevirt.io/kvm": "1",
                            "devices.kubevirt.io/tun": "1",
                            "devices.kubevirt.io/vhost-net": "1",
                        },
                        "limits": {
                            "devices.kubevirt.io/kvm": "1",
                            "devices.kubevirt.io/tun": "1",
                            "devices.kubevirt.io/vhost-net": "1",
                        },
                    },
                }
            ],
            "volumes": volumes,
        }
        if node_selector:
            pod_spec["nodeSelector"] = node_selector
        if affinity:
            pod_spec["affinity"] = affinity
        if spec.get("tolerations"):
            pod_spec["tolerations"] = spec["tolerations"]
        if spec.get("priorityClassName"):
            pod_spec["priorityClassName"] = spec["priorityClassName"]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"virt-launcher-{name_of(vmi)}-{short_hash(suffix_key)}",
                "namespace": ns_of(vmi),
                "labels": labels,
                "annotations": {DOMAIN_ANNOTATION: name_of(vmi),
                                "kubectl.kubernetes.io/default-container": "compute"},
                "ownerReferences": [owner_ref(vmi, VMIS)],
            },
            "spec": pod_spec,
        }

    async def _sync_vmi(self, vmi: Obj) -> None:
        guest = self._guest(vmi)
        pods = self.world.pods.get(uid_of(vmi), [])
        vmi_phase = d.phase_of(vmi)
        if deleting(vmi):
            await self._finish_vmi_deletion(vmi, guest, pods)
            return
        if vmi_phase in d.FINAL_PHASES:
            if guest.alive and not self._cut_off(guest.node):
                await self._kill_guest(guest)
            for stale in pods:
                if not deleting(stale):
                    await self.api.delete(PODS, name_of(stale), ns_of(stale))
            return
        if vmi_phase == "":
            conds = set_condition(None, "Ready", "False", "GuestNotRunning",
                                  "Guest VM is not reported as running", self.stamp())
            await self._set_phase(vmi, "Pending", {
                "conditions": conds,
                "interfaces": [{"name": "default", "ipAddress": guest.ip,
                                "ipAddresses": [guest.ip]}],
                "guestOSInfo": {},
                "launcherContainerImageVersion": LAUNCHER_IMAGE,
            })
            return
        if vmi_phase == "Pending":
            if not pods:
                await self.api.create(PODS, self._launcher_pod(vmi, uid_of(vmi)), ns_of(vmi))
            await self._set_phase(vmi, "Scheduling")
            return
        pod = self.current_pod(vmi)
        if vmi_phase == "Scheduling":
            await self._sync_scheduling(vmi, guest, pod)
            return
        if pod is None or d.phase_of(pod) in d.FINAL_PHASES:
            if not self._cut_off(guest.node):
                await self._kill_guest(guest)
            reason = "PodNotExists" if pod is None else "PodFailed"
            await self._set_phase(vmi, "Failed", reason=reason)
            await self._event(vmi, VMIS, "Warning", "Stopped",
                              "The VirtualMachineInstance crashed." if pod is not None
                              else "setting VMI to failed while running because pod does not "
                                   "exist")
            return
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        if deleting(pod) and self.machine_connected(node) and guest.alive:
            await self._kill_guest(guest)  # the launcher got SIGTERM: the guest shuts down
        if vmi_phase == "Scheduled":
            if guest.boot_at is None:  # the simulator restarted while the guest booted
                guest.node, guest.pod = node, name_of(pod)
                guest.boot_at = self.now() + self.timings.vm_boot_time
            if self.now() >= guest.boot_at \
                    and self.machine_running(node) and not deleting(pod):
                await self._start_guest(vmi, guest)
                await self._set_phase(vmi, "Running", {
                    "conditions": self._vmi_conditions_running(vmi, self.stamp()),
                    "interfaces": [{"name": "default", "ipAddress": guest.ip,
                                    "ipAddresses": [guest.ip]}],
                    "guestOSInfo": {"id": "lab", "name": "Lab Guest OS"},
                    "migrationMethod": "LiveMigration",
                })
            return
        if vmi_phase == "Running":
            await self._sync_running(vmi, guest, pod, node)

    async def _sync_scheduling(self, vmi: Obj, guest: Guest, pod: Obj | None) -> None:
        if pod is None:
            await self._set_phase(vmi, "Failed", reason="PodNotExists")
            return
        if d.phase_of(pod) in d.FINAL_PHASES:
            await self._set_phase(vmi, "Failed", reason="PodFailed")
            return
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        sched = condition(pod, "PodScheduled")
        conds = list(status(vmi).get("conditions") or [])
        if not node and sched and sched.get("status") == "False":
            new = set_condition(conds, "PodScheduled", "False", str(sched.get("reason") or ""),
                                str(sched.get("message") or ""), self.stamp())
            if not same_conditions(conds, new):
                await self._patch_status(VMIS, vmi, {"conditions": new})
            return
        if node and d.phase_of(pod) == "Running":
            guest.node = node
            guest.pod = name_of(pod)
            guest.boot_at = self.now() + self.timings.vm_boot_time
            await self._set_phase(vmi, "Scheduled", {
                "nodeName": node,
                "activePods": {uid_of(pod): node},
                "conditions": without_condition(conds, "PodScheduled"),
            })
            await self.api.patch(VMIS, name_of(vmi),
                                 {"metadata": {"labels": {NODE_NAME_LABEL: node}}}, ns_of(vmi))

    async def _sync_running(self, vmi: Obj, guest: Guest, pod: Obj, node: str) -> None:
        if not guest.node:  # the simulator restarted: adopt the running guest
            guest.node, guest.pod = node, name_of(pod)
        if not guest.alive and not guest.lost and self.machine_running(node) \
                and not deleting(pod) and guest.boots == 0:
            await self._start_guest(vmi, guest)
        reported = (status(vmi).get("interfaces") or [{}])[0].get("ipAddress")
        if reported != guest.ip:
            await self._patch_status(VMIS, vmi, {"interfaces": [
                {"name": "default", "ipAddress": guest.ip, "ipAddresses": [guest.ip]}]})
        if guest.lost and self.machine_running(node) and not deleting(pod):
            # The machine rebooted under a running guest: virt-handler finds no domain.
            await self._set_phase(vmi, "Failed", reason="NodeUnresponsive")
            await self._event(vmi, VMIS, "Warning", "Stopped",
                              "The VirtualMachineInstance's node rebooted")
            return
        now = self.stamp()
        conds = list(status(vmi).get("conditions") or [])
        mig = self.migratability(vmi)
        new = set_condition(conds, "LiveMigratable", "True" if mig.migratable else "False",
                            mig.reason, mig.message, now)
        if not same_conditions(conds, new):
            await self._patch_status(VMIS, vmi, {"conditions": new})
        evacuate = status(vmi).get("evacuationNodeName")
        if evacuate and evacuate == status(vmi).get("nodeName"):
            await self._ensure_evacuation(vmi, str(evacuate))

    async def _finish_vmi_deletion(self, vmi: Obj, guest: Guest, pods: list[Obj]) -> None:
        for pod in pods:
            if not deleting(pod):
                await self.api.delete(PODS, name_of(pod), ns_of(pod))
        if guest.alive and self.machine_connected(guest.node):
            # The kubelet sees the deletion: the guest shuts down with its launcher (a
            # partitioned node never hears of it and its guest keeps running).
            await self._kill_guest(guest)
        if pods:
            return
        if d.phase_of(vmi) not in d.FINAL_PHASES:
            await self._set_phase(vmi, "Succeeded" if not guest.lost else "Failed")
        finalizers = [f for f in meta(vmi).get("finalizers") or []
                      if f not in (VMI_FINALIZER, VM_CONTROLLER_FINALIZER)]
        await self.api.patch(VMIS, name_of(vmi), {"metadata": {"finalizers": finalizers}},
                             ns_of(vmi))

    # -- virt-handler heartbeats and virt-controller's node controller ---------------------

    async def _sync_handlers(self, world: World) -> None:
        """virt-handler labels its node schedulable and writes a heartbeat while it reaches the
        API; virt-controller marks a node whose heartbeat is older than the unresponsive
        threshold ``kubevirt.io/schedulable=false`` (k8s-anchors §1.10 step 3)."""
        now = self.now()
        for name, node in world.nodes.items():
            machine = self.machines.get(name)
            connected = machine.connected() if machine is not None else True
            labels = meta(node).get("labels") or {}
            last = self._heartbeats.get(name)
            if connected:
                if last is None or now - last >= self.timings.virt_handler_heartbeat or \
                        labels.get(SCHEDULABLE_LABEL) != "true":
                    await self.api.patch(NODES, name, {"metadata": {
                        "labels": {SCHEDULABLE_LABEL: "true"},
                        "annotations": {HEARTBEAT_ANNOTATION: self.stamp()}}})
                    self._heartbeats[name] = now
                continue
            if last is None:
                self._heartbeats[name] = last = now
            if now - last > self.timings.virt_handler_unresponsive and \
                    labels.get(SCHEDULABLE_LABEL) != "false":
                await self.api.patch(NODES, name,
                                     {"metadata": {"labels": {SCHEDULABLE_LABEL: "false"}}})

    # -- migrations -------------------------------------------------------------------------

    def _vmim_vmi(self, vmim: Obj) -> Obj | None:
        return self.world.vmis.get((ns_of(vmim), str((vmim.get("spec") or {}).get("vmiName"))))

    async def _ensure_evacuation(self, vmi: Obj, node: str) -> None:
        """The evacuation controller: one migration at a time for a VMI asked to leave."""
        attempts = 0
        for vmim in self.world.vmims:
            if ns_of(vmim) != ns_of(vmi) or (vmim.get("spec") or {}).get("vmiName") != \
                    name_of(vmi):
                continue
            if d.phase_of(vmim) not in d.FINAL_PHASES:
                return
            attempts += 1
        # A failed evacuation is retried, not at once (the controller's rate limiting).
        now = self.now()
        if now < self._evacuation_next.get(uid_of(vmi), 0.0):
            return
        self._evacuation_next[uid_of(vmi)] = now + self.timings.get(
            "evacuation_retry", EVACUATION_RETRY)
        # A stable name per attempt: a stale view cannot start the same evacuation twice.
        suffix = short_hash(f"{uid_of(vmi)}/{node}/{attempts}")
        body: Obj = {
            "apiVersion": VMIMS.api_version,
            "kind": VMIMS.kind,
            "metadata": {
                "name": f"kubevirt-evacuation-{suffix}",
                "namespace": ns_of(vmi),
                "annotations": {EVACUATION_ANNOTATION: node},
            },
            "spec": {"vmiName": name_of(vmi), "priority": "system-critical"},
        }
        with contextlib.suppress(Exception):  # refused while a migration is in flight
            created = await self.api.create(VMIMS, body, ns_of(vmi))
            if created is not None:
                self.world.vmims.append(created)

    async def _sync_migrations(self) -> None:
        limits = self.limits()
        candidates = []
        for vmim in self.world.vmims:
            vmim_phase = d.phase_of(vmim)
            vmi = self._vmim_vmi(vmim)
            source = str(status(vmi).get("nodeName") or "") if vmi else ""
            if vmim_phase == "Pending" and not deleting(vmim):
                candidates.append(d.MigrationCandidate(_key(vmim), source, False))
            elif vmim_phase in d.ACTIVE_MIGRATION_PHASES:
                candidates.append(d.MigrationCandidate(_key(vmim), source, True))
        admission = d.admit_migrations(candidates, limits)
        admitted = set(admission.admitted)
        busy = {
            (ns_of(m), (m.get("spec") or {}).get("vmiName"))
            for m in self.world.vmims
            if d.phase_of(m) in d.ACTIVE_MIGRATION_PHASES
        }
        for vmim in list(self.world.vmims):
            key = (ns_of(vmim), (vmim.get("spec") or {}).get("vmiName"))
            may_start = _key(vmim) in admitted and key not in busy
            if may_start:
                busy.add(key)
            await self._guard(self._sync_vmim, vmim, may_start, limits)
        live = {uid_of(m) for m in self.world.vmims}
        for uid in [u for u in self.migrations if u not in live]:
            self.migrations.pop(uid, None)

    def _bandwidth(self, limits: d.MigrationLimits) -> float:
        link = self.link_bandwidth
        if link is None:
            link = self.timings.migration_bandwidth
        if limits.bandwidth > 0:
            link = min(link, limits.bandwidth / self.api_seconds)
        return max(0.0, link)

    async def _vmim_phase(self, vmim: Obj, new_phase: str, extra: Obj | None = None) -> None:
        stamps = list(status(vmim).get("phaseTransitionTimestamps") or [])
        stamps.append({"phase": new_phase, "phaseTransitionTimestamp": self.stamp()})
        body: Obj = {"phase": new_phase, "phaseTransitionTimestamps": stamps}
        body.update(extra or {})
        await self._patch_status(VMIMS, vmim, body, guard=True)

    async def _sync_vmim(self, vmim: Obj, may_start: bool, limits: d.MigrationLimits) -> None:
        uid = uid_of(vmim)
        run = self.migrations.setdefault(uid, Migration(uid))
        vmim_phase = d.phase_of(vmim)
        vmi = self._vmim_vmi(vmim)
        finalizers = list(meta(vmim).get("finalizers") or [])
        if deleting(vmim):
            if vmim_phase not in d.FINAL_PHASES:
                await self._fail_migration(vmim, vmi, run, "Migration aborted", abort=True)
            if MIGRATION_FINALIZER in finalizers:
                finalizers.remove(MIGRATION_FINALIZER)
                await self.api.patch(VMIMS, name_of(vmim),
                                     {"metadata": {"finalizers": finalizers}}, ns_of(vmim))
            return
        if vmim_phase in d.FINAL_PHASES:
            return
        if vmim_phase == "":
            if MIGRATION_FINALIZER not in finalizers:
                updated = await self.api.patch(
                    VMIMS, name_of(vmim),
                    {"metadata": {"finalizers": [*finalizers, MIGRATION_FINALIZER],
                                  "labels": {"kubevirt.io/vmi-name":
                                             str((vmim.get("spec") or {}).get("vmiName"))}}},
                    ns_of(vmim),
                )
                if updated is None:
                    return
                vmim = updated
            await self._vmim_phase(vmim, "Pending")
            return
        if vmi is None or d.phase_of(vmi) != "Running" or deleting(vmi):
            await self._fail_migration(vmim, vmi, run, "VMI is not running")
            return
        source_node = str(status(vmi).get("nodeName") or "")
        source_pod = self.current_pod(vmi)
        if vmim_phase == "Pending":
            if not may_start:
                return
            if not self.migratability(vmi).migratable:
                await self._fail_migration(vmim, vmi, run, "VMI is not live migratable")
                return
            if source_pod is None:
                return
            added = (vmim.get("spec") or {}).get("addedNodeSelector") or {}
            pod = self._launcher_pod(vmi, uid, {MIGRATION_JOB_LABEL: uid}, added, source_node)
            run.target_pod = name_of(pod)
            run.scheduling_since = self.now()
            await self.api.create(PODS, pod, ns_of(vmi))
            state = {
                "migrationUid": uid,
                "sourceNode": source_node,
                "sourcePod": name_of(source_pod),
                "targetPod": run.target_pod,
                "mode": "PreCopy",
                "completed": False,
                "failed": False,
            }
            await self._patch_status(VMIS, vmi, {"migrationState": state})
            await self._vmim_phase(vmim, "Scheduling", {"migrationState": state})
            return
        if not run.target_pod:  # the simulator restarted mid-migration
            run.target_pod = str((status(vmim).get("migrationState") or {}).get("targetPod", ""))
            run.scheduling_since = self.now()
        target: Obj | None = next((p for p in self.world.pods.get(uid_of(vmi), [])
                       if name_of(p) == run.target_pod), None)
        if target is None and run.target_pod:
            # The informer may not have seen the pod created a moment ago: ask the API server
            # before declaring it gone (a stale cache must never fail a migration).
            target = await self.api.get(PODS, run.target_pod, ns_of(vmi))
        if target is None or d.phase_of(target) in d.FINAL_PHASES or deleting(target):
            await self._fail_migration(vmim, vmi, run, "target pod is gone")
            return
        target_node = str((target.get("spec") or {}).get("nodeName") or "")
        if not self.machine_running(source_node):
            await self._fail_migration(vmim, vmi, run, "source node is not running")
            return
        if target_node and not self.machine_running(target_node):
            await self._fail_migration(vmim, vmi, run, "target node is not running")
            return
        now = self.now()
        state = dict(status(vmim).get("migrationState") or {})
        if vmim_phase == "Scheduling":
            if target_node and d.phase_of(target) == "Running":
                state.update({"targetNode": target_node,
                              "targetNodeAddress": target_node})
                run.ready_at = now + self.timings.migration_setup_time
                await self._vmim_phase(vmim, "Scheduled", {"migrationState": state})
            elif now - run.scheduling_since > self.timings.get(
                "migration_unschedulable_timeout", UNSCHEDULABLE_TARGET_TIMEOUT
            ):
                await self._fail_migration(vmim, vmi, run, "target pod could not be scheduled")
            return
        if vmim_phase == "Scheduled":
            await self._vmim_phase(vmim, "PreparingTarget")
            return
        if vmim_phase == "PreparingTarget":
            if now >= run.ready_at:
                state["targetNodeDomainDetected"] = True
                await self._vmim_phase(vmim, "TargetReady", {"migrationState": state})
            return
        if vmim_phase == "TargetReady":
            run.started = run.last_step = run.last_progress = now
            run.transferred = 0.0
            state["startTimestamp"] = self.stamp()
            await self._patch_status(VMIS, vmi, {"migrationState": state})
            await self._vmim_phase(vmim, "Running", {"migrationState": state})
            return
        if vmim_phase == "Running":
            if run.started is None:
                run.started = run.last_step = run.last_progress = now
            bandwidth = self._bandwidth(limits)
            run.transferred += bandwidth * max(0.0, now - run.last_step)
            run.last_step = now
            if bandwidth > 0:
                run.last_progress = now
            memory = d.vmi_memory_bytes(vmi.get("spec") or {})
            if run.transferred >= memory:
                await self._complete_migration(vmim, vmi, run, target, state, source_pod)
            elif now - run.last_progress > limits.progress_timeout * self.api_seconds:
                await self._fail_migration(vmim, vmi, run, "migration progress timeout")
            elif now - run.started > limits.completion_timeout(memory) * self.api_seconds:
                await self._fail_migration(vmim, vmi, run, "migration completion timeout")

    async def _complete_migration(self, vmim: Obj, vmi: Obj, run: Migration, target: Obj,
                                  state: Obj, source_pod: Obj | None) -> None:
        target_node = str((target.get("spec") or {}).get("nodeName") or "")
        source_node = str(status(vmi).get("nodeName") or "")
        state.update({"completed": True, "failed": False, "endTimestamp": self.stamp(),
                      "targetNodeDomainReadyTimestamp": self.stamp()})
        body: Obj = {
            "nodeName": target_node,
            "activePods": {uid_of(target): target_node},
            "migrationState": state,
        }
        if status(vmi).get("evacuationNodeName") == source_node:
            body["evacuationNodeName"] = None
        guest = self._guest(vmi)
        guest.node, guest.pod = target_node, name_of(target)
        if guest.service is not None:
            guest.service.node = target_node
        await self.api.patch(VMIS, name_of(vmi),
                             {"metadata": {"labels": {NODE_NAME_LABEL: target_node}}}, ns_of(vmi))
        await self._patch_status(VMIS, vmi, body)
        await self._vmim_phase(vmim, "Succeeded", {"migrationState": state})
        if source_pod is not None:
            await self.api.delete(PODS, name_of(source_pod), ns_of(source_pod))
        await self._event(vmi, VMIS, "Normal", "Migrated",
                          f"The VirtualMachineInstance migrated to node {target_node}.")

    async def _fail_migration(self, vmim: Obj, vmi: Obj | None, run: Migration, reason: str,
                              abort: bool = False) -> None:
        if run.target_pod and vmi is not None:
            with contextlib.suppress(Exception):
                await self.api.delete(PODS, run.target_pod, ns_of(vmi))
        state = dict(status(vmim).get("migrationState") or {})
        state.update({"completed": True, "failed": True, "failureReason": reason,
                      "endTimestamp": self.stamp()})
        if abort:
            state.update({"abortRequested": True, "abortStatus": "Succeeded"})
        if vmi is not None:
            # Read the VMI afresh: the view at hand may predate the migrationState this
            # migration wrote, and a VMI left with an unfinished state refuses every retry.
            vmi = await self.api.get(VMIS, name_of(vmi), ns_of(vmi)) or vmi
        if vmi is not None and (status(vmi).get("migrationState") or {}).get(
                "migrationUid") == uid_of(vmim):
            await self._patch_status(VMIS, vmi, {"migrationState": state})
        extra: Obj = {"migrationState": state}
        if abort:
            extra["conditions"] = set_condition(
                status(vmim).get("conditions"), "migrationAbortRequested", "True",
                "AbortRequested", "migration abort requested", self.stamp())
        await self._vmim_phase(vmim, "Failed", extra)
        if vmi is not None:
            await self._event(vmi, VMIS, "Warning", "MigrationFailed",
                              f"VirtualMachineInstance migration uid {uid_of(vmim)} failed. "
                              f"reason: {reason}")

    # -- faults -----------------------------------------------------------------------------

    async def _vmi_named(self, namespace: str, name: str) -> Obj:
        vmi = await self.api.get(VMIS, name, namespace)
        if vmi is None:
            raise LookupError(f"no VirtualMachineInstance {namespace}/{name}")
        return vmi

    async def _guest_ends(self, namespace: str, name: str, phase: str, reason: str) -> Obj:
        """The guest's process ends: kill it and move the VMI to ``phase`` (retrying when the
        controllers wrote the VMI meanwhile)."""
        for _ in range(20):
            vmi = await self._vmi_named(namespace, name)
            guest = self.guests.get(uid_of(vmi))
            if guest is not None:
                await self._kill_guest(guest)
            try:
                await self._set_phase(vmi, phase, reason=reason)
            except Conflict:
                await asyncio.sleep(0)
                continue
            if guest is not None:
                self._launcher_exits(vmi, guest, 0 if phase == "Succeeded" else 1)
            return vmi
        raise RuntimeError(f"{namespace}/{name}: the VMI keeps changing")

    def _launcher_exits(self, vmi: Obj, guest: Guest, exit_code: int) -> None:
        """With its qemu gone, virt-launcher exits: the launcher pod's compute container
        terminates (the pod turns Succeeded or Failed), so that deleting the pod afterwards
        waits for no grace period (nothing is left to stop). A machine that is off or a pod the
        kubelet does not run (the simulator restarted) leaves the pod as it is."""
        node = guest.node or str(status(vmi).get("nodeName") or "")
        kubelet = self.kubelets.get(node)
        if kubelet is None or not guest.pod:
            return
        if not kubelet.exit_containers(ns_of(vmi), guest.pod, exit_code):
            log.debug("kubevirt: launcher %s/%s not running on %s", ns_of(vmi), guest.pod, node)

    async def crash_vm(self, namespace: str, name: str) -> None:
        """The guest's process dies: the VMI fails and its runStrategy decides what follows."""
        vmi = await self._guest_ends(namespace, name, "Failed", "GuestCrashed")
        await self._event(vmi, VMIS, "Warning", "Stopped", "The VirtualMachineInstance crashed.")

    async def shutdown_guest(self, namespace: str, name: str) -> None:
        """The guest powers itself off (``poweroff`` inside the VM): the VMI Succeeds."""
        vmi = await self._guest_ends(namespace, name, "Succeeded", "GuestShutdown")
        await self._event(vmi, VMIS, "Normal", "Stopped",
                          "The VirtualMachineInstance was shut down.")

    async def hang_guest(self, namespace: str, name: str) -> None:
        """The guest stops answering (connections are accepted, never answered)."""
        vmi = await self._vmi_named(namespace, name)
        guest = self._guest(vmi)
        guest.hung = True
        if guest.service is not None:
            guest.service.hang()

    async def heal_guest(self, namespace: str, name: str) -> None:
        vmi = await self._vmi_named(namespace, name)
        guest = self._guest(vmi)
        guest.hung = False
        if guest.service is not None:
            guest.service.heal()

    def set_migration_bandwidth(self, bytes_per_second: float | None) -> None:
        """The migration network's speed (None: back to the timings' default; 0: stalled)."""
        self.link_bandwidth = None if bytes_per_second is None else float(bytes_per_second)

    def guest_url(self, namespace: str, name: str) -> str | None:
        """The guest endpoint's base URL while it exists (for tests and `lab status`)."""
        for guest in self.guests.values():
            if guest.key == (namespace, name) and guest.service is not None:
                return guest.service.url
        return None

    def status(self) -> dict[str, Any]:
        """VMs and migrations for `lab status`."""
        vms = []
        for (namespace, name), vm in sorted(self.world.vms.items()):
            vmi = self.world.vmis.get((namespace, name))
            vms.append({
                "namespace": namespace,
                "name": name,
                "status": status(vm).get("printableStatus", ""),
                "runStrategy": d.run_strategy(vm),
                "phase": phase(vmi),
                "node": status(vmi).get("nodeName", ""),
                "ip": self.ips.get(uid_of(vmi)) if vmi else None,
            })
        migrations = [
            {
                "namespace": ns_of(m),
                "name": name_of(m),
                "vmi": (m.get("spec") or {}).get("vmiName"),
                "phase": phase(m),
                "source": (status(m).get("migrationState") or {}).get("sourceNode"),
                "target": (status(m).get("migrationState") or {}).get("targetNode"),
            }
            for m in self.world.vmims
        ]
        bandwidth = self._bandwidth(self.limits())
        return {"vms": vms, "migrations": migrations,
                "migrationBandwidth": None if math.isinf(bandwidth) else bandwidth}


def _rv(obj: Obj | None) -> str:
    return str(meta(obj or {}).get("resourceVersion", ""))


class _CountingApi:
    """The simulators' API, counting writes (a reconcile that wrote nothing is settled)."""

    def __init__(self, api: Api) -> None:
        self.inner = api
        self.writes = 0

    async def get(self, res: Res, name: str, namespace: str | None = None) -> Obj | None:
        return await self.inner.get(res, name, namespace)

    async def list(self, res: Res, namespace: str | None = None,
                   label_selector: str | None = None,
                   field_selector: str | None = None) -> list[Obj]:
        return await self.inner.list(res, namespace, label_selector, field_selector)

    async def create(self, res: Res, body: Obj, namespace: str | None = None) -> Obj | None:
        self.writes += 1
        return await self.inner.create(res, body, namespace)

    async def patch(self, res: Res, name: str, body: Obj, namespace: str | None = None,
                    subresource: str | None = None,
                    patch_type: str | None = None) -> Obj | None:
        self.writes += 1
        return await self.inner.patch(res, name, body, namespace, subresource, patch_type)

    async def delete(self, res: Res, name: str, namespace: str | None = None,
                     grace_period_seconds: int | None = None, uid: str | None = None,
                     propagation: str | None = None) -> bool:
        self.writes += 1
        return await self.inner.delete(res, name, namespace, grace_period_seconds, uid,
                                       propagation)


def _key(obj: Obj) -> str:
    return f"{ns_of(obj)}/{name_of(obj)}"
