"""HostedEngine handlers: the engine VM and its HA (issue 6).

How it runs
    kopf indexes keep what the HA machine looks at (Nodes, node Leases, Hosts, the engine VMs,
    VMIs and migrations, pods' memory per node); event handlers on those kinds wake the
    HostedEngine daemons. One daemon per HostedEngine creates what it owns (cloud-init Secret,
    Service, VirtualMachine with its disk on the StorageDomain), keeps ``runStrategy`` per
    docs/decisions/0002, runs the health prober (an asyncio task: short timeouts, never
    blocking), calls :func:`hosted_engine.logic.ha.step` on every wake-up and on a timer (the
    health interval, and the moment a host's silence would cross the threshold), carries out
    its actions through :mod:`hosted_engine.adapters.engine` in a thread, and patches
    ``status`` only when it changes. Mails go through a queue to a worker thread
    (:mod:`hosted_engine.adapters.engine_notify`).

Interfaces
    * Placement: the VM template's node affinity (docs/decisions/0003); a move is a
      VirtualMachineInstanceMigration with ``addedNodeSelector`` on the target's hostname, never
      created while another migration of the engine runs. On local maintenance the Host's drain
      migrates the engine and the machine waits (``ev.drain_moves_engine``): one actor.
    * Wake-ups: :class:`WakeRegistry` in the operator-wide kopf memo (made at startup; every
      object's memo is a shallow copy of it), set by the Node/Host/VM/VMI/migration events.
    * Fencing: ``hostedengine.io/fence-request: hostedengine.<ns>.<name>/<id>`` on the Host;
      the result is read back from the Host's ``status.fencing`` (see handlers/host.py).
    * A manual reset out of Degraded: raise ``spec.resetSeq``.
    * Health URL: ``{fqdn}`` and ``{ip}`` (the VMI's address) are substituted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import kopf
from pydantic import ValidationError

from hosted_engine import API_GROUP, API_VERSION
from hosted_engine.adapters import engine as adapter
from hosted_engine.adapters import engine_notify as notify
from hosted_engine.adapters import engine_probe, metrics
from hosted_engine.adapters import engine_upgrade as upgrade_adapter
from hosted_engine.adapters.engine_notify import SmtpConfig
from hosted_engine.adapters.kube import KubeError, NotFound
from hosted_engine.clock import get_clock
from hosted_engine.handlers.startup import kube_client
from hosted_engine.logic import engine_vm as ev
from hosted_engine.logic import ha
from hosted_engine.logic import upgrade as up
from hosted_engine.models import describe_validation_error
from hosted_engine.models.base import parse_quantity
from hosted_engine.models.hostedengine import (
    GlobalMaintenanceMode,
    HostedEngineSpec,
    Notifications,
    UpgradePhase,
    UpgradeStatus,
    random_mac,
)

log = logging.getLogger(__name__)

PLURAL: Final = "hostedengines"
WAKE_KEY: Final = "hostedengine-wake"
NOTIFIER_KEY: Final = "hostedengine-notifier"
NODE_LEASE_NAMESPACE: Final = "kube-node-lease"
#: Smallest and largest sleep between two steps (seconds).
MIN_WAIT: Final = 0.02
MAX_WAIT: Final = 30.0
#: Shortest time between the starts of two steps when woken by events (seconds): an event after
#: a quiet spell is handled at once, the rest of a burst (a storm of Node/Host status writes at
#: scale) waits and is handled by one step; at most 5 event-driven steps a second.
WAKE_SPACING: Final = 0.2
#: Probe results kept (the machine needs the newest few).
PROBES_KEPT: Final = 32
FINAL_PHASES: Final = frozenset({"Succeeded", "Failed"})
#: Heartbeat times in status.hosts are refreshed this often (other changes are written at once).
STATUS_REFRESH: Final = timedelta(seconds=10)


# --------------------------------------------------------------------------------------------
# Indexes (kopf keeps them current from watches) and wake-ups


class WakeRegistry:
    """The wake-up events of the HostedEngine daemons, one registry for the whole operator.

    kopf gives every object its own memo, a *shallow copy* of the operator-wide memo made when
    the object is first seen (``copy.copy(memobase)`` in kopf's inventory). A registry created
    by a daemon in its own memo is therefore invisible to the Node, Host, VMI and migration
    handlers; :func:`create_wake_registry` puts it in the operator-wide memo at startup, before
    any object is seen, so every per-object memo shares this one instance. Events are
    ``asyncio.Event``: only set from the operator's loop (the wake handlers are coroutines).
    """

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def register(self, key: tuple[str, str], event: asyncio.Event) -> None:
        self._events[key] = event

    def unregister(self, key: tuple[str, str], event: asyncio.Event) -> None:
        if self._events.get(key) is event:
            del self._events[key]

    def wake(self, key: tuple[str, str]) -> bool:
        event = self._events.get(key)
        if event is None:
            return False
        event.set()
        return True

    def wake_all(self) -> int:
        events = list(self._events.values())
        for event in events:
            event.set()
        return len(events)

    def __len__(self) -> int:
        return len(self._events)


def wake_registry(memo: kopf.Memo) -> WakeRegistry:
    """The operator-wide registry (made in this memo if startup did not run: then only this
    object's handlers see it, which is logged, never silent)."""
    registry = memo.get(WAKE_KEY)
    if isinstance(registry, WakeRegistry):
        return registry
    log.error("HostedEngine wake-up registry missing from the operator memo: "
              "event wake-ups will not reach the daemons (startup handler not run?)")
    registry = WakeRegistry()
    memo[WAKE_KEY] = registry
    return registry


@kopf.on.startup(id="hostedengine-wake-registry")
async def create_wake_registry(memo: kopf.Memo, **_: Any) -> None:
    """One registry in the operator-wide memo, before any object's memo is copied from it."""
    if not isinstance(memo.get(WAKE_KEY), WakeRegistry):
        memo[WAKE_KEY] = WakeRegistry()


def _wake_all(memo: kopf.Memo) -> None:
    registry = memo.get(WAKE_KEY)
    if isinstance(registry, WakeRegistry):
        registry.wake_all()


@kopf.index("", "v1", "nodes")
def he_nodes(name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    return {
        name: {
            "metadata": {"name": name, "labels": dict(body.metadata.labels)},
            "status": {
                "conditions": list(body.status.get("conditions") or []),
                "allocatable": dict(body.status.get("allocatable") or {}),
                "capacity": dict(body.status.get("capacity") or {}),
            },
        }
    }


@kopf.index(
    "coordination.k8s.io",
    "v1",
    "leases",
    when=lambda namespace, **_: namespace == NODE_LEASE_NAMESPACE,
)
def he_leases(name: str, spec: kopf.Spec, **_: Any) -> dict[str, Any] | None:
    """Every node's Lease: (renewTime, leaseDurationSeconds or None); the renewals are the
    heartbeats, and all of them together set the lease clock (logic/leaseclock.py)."""
    renewed = ev.parse_time(spec.get("renewTime"))
    raw = spec.get("leaseDurationSeconds")
    duration = float(raw) if isinstance(raw, int | float) and raw > 0 else None
    return {name: (renewed, duration)} if renewed is not None else None


@kopf.index(API_GROUP, API_VERSION, "hosts")
def he_hosts(name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    return {name: dict(body)}


@kopf.index(
    "kubevirt.io", "v1", "virtualmachines", labels={ev.ENGINE_VM_LABEL: kopf.PRESENT}
)
def he_vms(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): dict(body)}


@kopf.index(
    "kubevirt.io",
    "v1",
    "virtualmachineinstances",
    labels={ev.ENGINE_VM_LABEL: kopf.PRESENT},
)
def he_vmis(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): dict(body)}


@kopf.index("kubevirt.io", "v1", "virtualmachineinstancemigrations")
def he_vmims(
    namespace: str | None, body: kopf.Body, spec: kopf.Spec, **_: Any
) -> dict[Any, Any]:
    return {(namespace, str(spec.get("vmiName") or "")): dict(body)}


def _memory_request(spec: Mapping[str, Any]) -> int:
    total = 0
    for container in spec.get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        if "memory" in requests:
            with contextlib.suppress(ValueError):
                total += int(parse_quantity(str(requests["memory"])))
    return total


@kopf.index("", "v1", "pods")
def he_pods(spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict[str, int] | None:
    node = spec.get("nodeName")
    if not node or status.get("phase") in FINAL_PHASES:
        return None
    return {str(node): _memory_request(spec)}


def _cpu_request(spec: Mapping[str, Any]) -> int:
    """Millicores the pod's containers request."""
    total = 0.0
    for container in spec.get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        if "cpu" in requests:
            with contextlib.suppress(ValueError):
                total += float(parse_quantity(str(requests["cpu"]))) * 1000
    return int(total)


@kopf.index("", "v1", "pods")
def he_pod_cpu(
    spec: kopf.Spec, status: kopf.Status, labels: kopf.Labels, **_: Any
) -> dict[str, int] | None:
    """CPU requested per node by pods other than an engine's (its virt-launcher carries the
    engine VM label): the scoring's CPU-pressure input."""
    node = spec.get("nodeName")
    if not node or status.get("phase") in FINAL_PHASES or ev.ENGINE_VM_LABEL in labels:
        return None
    return {str(node): _cpu_request(spec)}


@kopf.on.event("", "v1", "nodes", id="he-wake-nodes")
@kopf.on.event(API_GROUP, API_VERSION, "hosts", id="he-wake-hosts")
@kopf.on.event(
    "kubevirt.io",
    "v1",
    "virtualmachines",
    id="he-wake-vms",
    labels={ev.ENGINE_VM_LABEL: kopf.PRESENT},
)
@kopf.on.event(
    "kubevirt.io",
    "v1",
    "virtualmachineinstances",
    id="he-wake-vmis",
    labels={ev.ENGINE_VM_LABEL: kopf.PRESENT},
)
@kopf.on.event("kubevirt.io", "v1", "virtualmachineinstancemigrations", id="he-wake-vmims")
async def he_wake(memo: kopf.Memo, **_: Any) -> None:
    # a coroutine, so it runs in the loop: asyncio.Event.set() is not thread-safe
    _wake_all(memo)


@kopf.on.event(API_GROUP, API_VERSION, PLURAL, id="he-wake-self")
async def he_wake_self(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    registry = memo.get(WAKE_KEY)
    if isinstance(registry, WakeRegistry):
        registry.wake((namespace or "default", name))


def _one(index: Any, key: Any) -> Any:
    if index is None:
        return None
    try:
        store = index[key]
    except KeyError:
        return None
    for value in store:
        return value
    return None


# --------------------------------------------------------------------------------------------
# The daemon


class EngineRunner:
    """The state of one HostedEngine's daemon (in memory; everything durable is in status)."""

    def __init__(self, namespace: str, name: str, memo: kopf.Memo) -> None:
        self.namespace = namespace
        self.name = name
        self.memo = memo
        self.api = adapter.EngineKube(kube_client(memo))
        self.wake = asyncio.Event()
        self.probes: collections.deque[ha.Probe] = collections.deque(maxlen=PROBES_KEPT)
        self.probe_detail = ""
        self.vmi_uid: str | None = None
        self.last_vmi: dict[str, Any] | None = None
        self.ended_vmi: dict[str, Any] | None = None
        self.pending_conditions: list[ha.SetCondition] = []
        self.dead_hosts: set[str] = set()
        self.vmi_first_seen: dict[str, datetime] = {}
        self.memory: ha.Memory | None = None
        self.spec: HostedEngineSpec | None = None
        self.bad_generation: int | None = None
        self.spec_problem: str | None = None
        self.last_status: dict[str, Any] | None = None
        self.last_write: datetime | None = None
        self.objects_ready = False
        self.waiting_notice: str | None = None
        self.migration_after: datetime | None = None
        self.maintenance_since: datetime | None = None
        self.notifier: notify.Notifier = memo.setdefault(NOTIFIER_KEY, notify.Notifier())
        self.vm_info: dict[str, Any] = {}
        # engine upgrade (issue 10): status.upgrade once read, conditions, image the VM runs
        self.upgrade_api = upgrade_adapter.UpgradeKube(self.api.kube)
        self.upgrade: UpgradeStatus | None = None
        self.upgrade_read = False
        self.upgrade_conditions: tuple[tuple[str, bool, str, str], ...] = ()
        self.upgrade_gm = False
        self.running_image: up.ImageRef | None = None

    # -- helpers ---------------------------------------------------------------------------

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def now(self) -> datetime:
        return get_clock().now()

    def world(self, idx: Mapping[str, Any]) -> ev.World:
        key = (self.namespace, ev.vm_name(self.name))
        vm = _one(idx.get("he_vms"), key)
        vmi = _one(idx.get("he_vmis"), key)
        since = None
        if vmi is not None:
            uid = str((vmi.get("metadata") or {}).get("uid") or "")
            if uid != self.vmi_uid:
                self.note_replaced(self.last_vmi)
                self.vmi_uid = uid
                self.probes.clear()
            since = self.vmi_first_seen.setdefault(uid, self.now())
            self.last_vmi = dict(vmi)
        migrations: list[Any] = []
        vmims = idx.get("he_vmims")
        if vmims is not None:
            with contextlib.suppress(KeyError):
                migrations = list(vmims[(self.namespace, ev.vm_name(self.name))])
        hosts = [
            _one(idx.get("he_hosts"), k) for k in list(idx.get("he_hosts") or {})
        ]
        nodes = {k: _one(idx.get("he_nodes"), k) for k in list(idx.get("he_nodes") or {})}
        leases = {k: _one(idx.get("he_leases"), k) for k in list(idx.get("he_leases") or {})}
        used: dict[str, int] = {}
        pods: Any = idx.get("he_pods")
        for node in list(pods or {}):
            with contextlib.suppress(KeyError):
                used[node] = sum(int(v) for v in pods[node])
        cpu: dict[str, int] = {}
        pod_cpu: Any = idx.get("he_pod_cpu")
        for node in list(pod_cpu or {}):
            with contextlib.suppress(KeyError):
                cpu[node] = sum(int(v) for v in pod_cpu[node])
        return ev.World(
            vm=vm,
            vmi=vmi,
            vmi_since=since,
            migrations=tuple(migrations),
            hosts=tuple(h for h in hosts if h is not None),
            nodes={k: v for k, v in nodes.items() if v is not None},
            leases={k: v[0] for k, v in leases.items() if v is not None},
            lease_durations={k: v[1] for k, v in leases.items()
                             if v is not None and v[1] is not None},
            used_memory=used,
            used_cpu=cpu,
            probes=tuple(self.probes),
            failed_migration_after=self.migration_after,
        )

    def note_replaced(self, previous: dict[str, Any] | None) -> None:
        """KubeVirt replaced the VMI between two steps (runStrategy Always restarts a crashed
        engine at once): the machine must still see that the one it watched ended."""
        if previous is None:
            return
        phase = str((previous.get("status") or {}).get("phase") or "")
        if phase in FINAL_PHASES:
            return
        ended = dict(previous)
        ended["status"] = {**(previous.get("status") or {}), "phase": "Failed"}
        self.ended_vmi = ended

    # -- spec ------------------------------------------------------------------------------

    async def parse_spec(self, body: kopf.Body) -> HostedEngineSpec | None:
        """The spec as a model; on bad input the last good one (None before the first), with
        condition SpecValid=False and one Warning Event per generation."""
        generation = body.metadata.get("generation")
        try:
            spec = HostedEngineSpec.model_validate(dict(body.spec))
        except ValidationError as exc:
            message = describe_validation_error(exc)[:32768]
            if self.bad_generation != generation:
                self.bad_generation = generation
                self.spec_problem = message
                await self.call(self.api.event, dict(body), "Warning", "InvalidSpec", message)
            shown: Mapping[str, Any] = next((c for c in body.status.get("conditions") or []
                                             if c.get("type") == "SpecValid"), {})
            # nothing else will write status: say it now, and again after a failed write
            if self.spec is None and (shown.get("status"), shown.get("message")) != (
                    "False", message):
                conditions = ev.merge_conditions(
                    body.status.get("conditions") or [],
                    (),
                    generation=generation,
                    now=self.now(),
                    extra=[("SpecValid", False, "InvalidSpec", message)],
                )
                await self.call(
                    self.api.patch_status, self.namespace, self.name,
                    {"conditions": conditions},
                )
            return self.spec
        self.bad_generation = None
        self.spec_problem = None
        self.spec = spec
        return spec

    # -- owned objects ---------------------------------------------------------------------

    async def notice(self, body: kopf.Body, reason: str, message: str) -> None:
        if self.waiting_notice != message:
            self.waiting_notice = message
            await self.call(self.api.event, dict(body), "Warning", reason, message)

    def mac_for(self, spec: HostedEngineSpec, body: kopf.Body, vm: Any) -> str:
        if vm is not None:
            ifaces = (
                ((((vm.get("spec") or {}).get("template") or {}).get("spec") or {}).get("domain")
                 or {}).get("devices") or {}
            ).get("interfaces") or []
            for iface in ifaces:
                if iface.get("macAddress"):
                    return str(iface["macAddress"])
        if spec.vm.network.mac_address:
            return str(spec.vm.network.mac_address)
        known = (body.status.get("vm") or {}).get("macAddress")
        if known:
            return str(known)
        return random_mac(random.Random())

    async def ensure_objects(
        self, body: kopf.Body, spec: HostedEngineSpec, world: ev.World, now: datetime
    ) -> bool:
        """Create the Secret, the Service and the VM (each once); True when the VM exists."""
        if world.vm is not None:
            self.objects_ready = True
            return True
        owner = dict(body)
        disk, why = await self.call(self.api.disk_target, spec.vm.disk.storage_domain)
        if disk is None:
            await self.notice(body, "StorageNotReady", f"engine disk not created yet: {why}")
            return False
        ci = spec.vm.cloud_init
        passwords: dict[str, str | None] = {"root": None, "admin": None}
        for key, ref in (("root", ci.root_password_secret_ref),
                         ("admin", ci.admin_password_secret_ref)):
            if ref is None:
                continue
            try:
                passwords[key] = await self.call(
                    self.api.read_secret_key, ref.namespace or self.namespace, ref.name, ref.key
                )
            except KubeError as exc:  # the message names the Secret and key, never a value
                await self.notice(body, "SecretNotFound", f"cloud-init: {exc}")
                return False
        mac = self.mac_for(spec, body, None)
        self.vm_info["macAddress"] = mac
        user_data = ev.cloud_init_user_data(spec, passwords["root"], passwords["admin"])
        secret = ev.render_secret(
            self.namespace, self.name, user_data, ev.network_data(spec, mac)
        )
        await self.call(self.api.ensure, adapter.SECRETS, secret, owner)
        await self.call(
            self.api.ensure, adapter.SERVICES, ev.render_service(self.namespace, self.name), owner
        )
        vm = ev.render_vm(
            self.namespace,
            self.name,
            spec,
            mac=mac,
            disk=disk,
            strategy=ev.run_strategy(spec, now),
            placement=self.placement_nodes(self.memory.placement if self.memory else (), {}),
            annotations=dict(body.metadata.annotations),
        )
        created = await self.call(self.api.ensure, adapter.VMS, vm, owner)
        if created:
            await self.call(
                self.api.event, owner, "Normal", "EngineVmCreated",
                f"created VirtualMachine {self.namespace}/{ev.vm_name(self.name)} with its disk "
                f"on StorageDomain {spec.vm.disk.storage_domain}",
            )
        self.waiting_notice = None
        self.objects_ready = True
        return True

    def placement_nodes(
        self, placement: tuple[tuple[str, int], ...], host_to_node: Mapping[str, str]
    ) -> list[tuple[str, int]]:
        return [(host_to_node.get(h, h), s) for h, s in placement]

    # -- actions ---------------------------------------------------------------------------

    async def carry_out(
        self,
        body: kopf.Body,
        spec: HostedEngineSpec,
        decision: ha.Decision,
        world: ev.World,
        host_to_node: Mapping[str, str],
        now: datetime,
    ) -> None:
        owner = dict(body)
        ns, vm = self.namespace, ev.vm_name(self.name)
        vmi_name = str(((world.vmi or {}).get("metadata") or {}).get("name") or vm)
        placement = decision.memory.placement
        requester = ev.fence_requester(self.namespace, self.name)
        for action in decision.actions:
            try:
                await self._one_action(
                    action, body, owner, spec, ns, vm, vmi_name, placement, host_to_node,
                    requester, world, now,
                )
            except (KubeError, OSError) as exc:
                log.warning("HostedEngine %s/%s: %s failed: %s", ns, self.name, action, exc)
                await self.call(
                    self.api.event, owner, "Warning", "ActionFailed",
                    f"{type(action).__name__} failed: {exc}",
                )

    async def _one_action(
        self,
        action: ha.Action,
        body: kopf.Body,
        owner: dict[str, Any],
        spec: HostedEngineSpec,
        ns: str,
        vm: str,
        vmi_name: str,
        placement: tuple[tuple[str, int], ...],
        host_to_node: Mapping[str, str],
        requester: str,
        world: ev.World,
        now: datetime,
    ) -> None:
        gm = ev.global_maintenance(spec, now)
        dead_hosts = set(self.dead_hosts)
        if isinstance(action, ha.StartEngine):
            node = host_to_node.get(action.host, action.host)
            await self.call(
                self.api.set_affinity, ns, vm,
                ev.affinity(self.placement_nodes(placement, host_to_node), prefer=node),
            )
            vmi = world.vmi
            bound = str(((vmi or {}).get("status") or {}).get("nodeName") or "")
            dead = {host_to_node.get(h, h) for h in dead_hosts}
            if vmi is not None and bound in dead and (
                (vmi.get("status") or {}).get("phase") not in FINAL_PHASES
            ):
                # a VMI still bound to a fenced (confirmed off) or abandoned node: release it
                await self.call(self.api.delete_vmi, ns, vmi_name, grace=0)
            if gm:
                await self.call(self.api.start, ns, vm)
        elif isinstance(action, ha.StopEngine):
            await self.call(self.api.delete_vmi, ns, vmi_name)
        elif isinstance(action, ha.PowerOffEngine):
            await self.call(self.api.delete_vmi, ns, vmi_name, grace=0)
        elif isinstance(action, ha.MigrateEngine):
            node = host_to_node.get(action.target, action.target)
            self.migration_after = now
            await self.call(self.api.migrate, ns, self.name, vmi_name, node, owner)
        elif isinstance(action, ha.RequestFence):
            request_id = f"{self.name}-{int(now.timestamp() * 1000)}"
            await self.call(self.api.request_fence, action.host, requester, request_id)
        elif isinstance(action, ha.ClearFenceRequest):
            await self.call(self.api.clear_fence, action.host, requester)
        elif isinstance(action, ha.SetPlacement):
            await self.call(
                self.api.set_affinity, ns, vm,
                ev.affinity(self.placement_nodes(action.scores, host_to_node)),
            )
        elif isinstance(action, ha.Notify):
            await self.notify(spec, action, now)
        elif isinstance(action, ha.EmitEvent):
            await self.call(self.api.event, owner, action.type.value, action.reason,
                            action.message)

    async def notify(self, spec: HostedEngineSpec, note: ha.Notify, now: datetime) -> None:
        cfg = spec.notifications
        if cfg is None or not cfg.enabled:
            return
        if not ev.notification_matches(cfg.state_transition, note.old, note.new):
            return
        subject, text = ev.notification_text(
            self.name, self.namespace, spec.vm.network.fqdn, note, now
        )
        config = await self.smtp_config(cfg, now)
        if config is not None:
            self.notifier.send(notify.Mail(config, subject, text))

    async def smtp_config(self, cfg: Notifications, now: datetime) -> SmtpConfig | None:
        """The SMTP settings with the credentials read from their Secrets (None: not readable,
        recorded in status.notifications)."""
        username = password = ca_pem = None
        try:
            if cfg.credentials_secret_ref is not None:
                ref = cfg.credentials_secret_ref
                ns = ref.namespace or self.namespace
                username = await self.call(self.api.read_secret_key, ns, ref.name, "username")
                password = await self.call(self.api.read_secret_key, ns, ref.name, "password")
            if cfg.ca_bundle_secret_ref is not None:
                ref = cfg.ca_bundle_secret_ref
                ca_pem = await self.call(
                    self.api.read_secret_key, ref.namespace or self.namespace, ref.name, ref.key
                )
        except KubeError as exc:
            self.notifier.report.last_error = f"notification not sent: {exc}"[:1024]
            self.notifier.report.last_error_at = now
            return None
        return notify.SmtpConfig(
            server=cfg.smtp_server,
            port=cfg.smtp_port,
            start_tls=cfg.start_tls,
            verify_tls=not cfg.insecure_skip_tls_verify,
            ca_pem=ca_pem,
            username=username,
            password=password,
            sender=str(cfg.source_email),
            recipients=tuple(str(r) for r in cfg.destination_emails),
            timeout=cfg.smtp_timeout.timedelta.total_seconds(),
        )

    # -- engine upgrade (issue 10) ---------------------------------------------------------

    async def upgrade_step(
        self, body: kopf.Body, spec: HostedEngineSpec, world: ev.World, now: datetime
    ) -> HostedEngineSpec:
        """Advance the engine upgrade (hosted_engine.logic.upgrade): status.upgrade is written
        before its actions run. Returns the spec the HA machine works with: while the upgrade
        holds its own global maintenance, the user's spec with mode global (never written)."""
        if not self.upgrade_read:
            self.upgrade = up.status_from_dict(body.status.get("upgrade"))
            self.upgrade_read = True
        assert world.vm is not None
        found = up.current_image(world.vm)
        current, current_disk = found if found is not None else (None, None)
        self.running_image = current
        obs = await self.upgrade_observation(body, spec, world, current, current_disk, now)
        plan = up.advance(self.upgrade, obs, self.name, now)
        if plan.status != self.upgrade:
            await self.call(
                self.api.patch_status, self.namespace, self.name,
                {"upgrade": up.status_to_dict(plan.status)},
            )
            self.upgrade = plan.status
        self.upgrade_conditions = plan.conditions
        for action in plan.actions:
            try:
                await self.upgrade_action(action, body, spec, world, now)
            except (KubeError, OSError) as exc:
                log.warning("HostedEngine %s/%s: upgrade %s failed: %s",
                            self.namespace, self.name, action, exc)
                await self.call(self.api.event, dict(body), "Warning", "UpgradeActionFailed",
                                f"{type(action).__name__} failed: {exc}")
        self.upgrade_gm = up.owns_global_maintenance(self.upgrade) and not ev.global_maintenance(
            spec, now
        )
        if not self.upgrade_gm:
            return spec
        maintenance = spec.maintenance.model_copy(
            update={"mode": GlobalMaintenanceMode.GLOBAL, "until": None}
        )
        return spec.model_copy(update={"maintenance": maintenance})

    async def upgrade_observation(
        self,
        body: kopf.Body,
        spec: HostedEngineSpec,
        world: ev.World,
        current: up.ImageRef | None,
        current_disk: str | None,
        now: datetime,
    ) -> up.Observation:
        desired = up.image_of_spec(spec.vm.image)
        policy = spec.upgrade_policy
        vmi = world.vmi
        vmi_status = (vmi or {}).get("status") or {}
        deleting = bool(((vmi or {}).get("metadata") or {}).get("deletionTimestamp"))
        active = vmi is not None and not deleting and vmi_status.get("phase") not in FINAL_PHASES
        running = active and vmi_status.get("phase") == "Running"
        healthy = running and bool(world.probes) and (
            world.probes[-1].result is ha.ProbeResult.OK
        )
        st = self.upgrade
        busy = st is not None and st.phase is UpgradePhase.RUNNING
        extra: dict[str, Any] = {}
        if current is not None and (busy or desired != current):
            spares = (self.last_status or {}).get("spares") or body.status.get("spares") or {}
            required, available = int(spares.get("required", 0)), int(spares.get("available", 0))
            disk, why = await self.call(self.api.disk_target, spec.vm.disk.storage_domain)
            extra.update(
                spares_ok=required <= available,
                spares_message=f"{available} of {required} spare hosts have room",
                storage_ok=disk is not None,
                storage_message=why,
            )
            if policy.pre_upgrade_backup:
                backups = await self.call(self.upgrade_api.backups, self.namespace)
                source, problem = up.pick_backup_source(backups, self.name, policy.backup_name)
                extra.update(backup_source=source, backup_source_problem=problem)
            if st is not None and st.backup_run and busy:
                phase, message = await self.call(
                    self.upgrade_api.backup_state, self.namespace, st.backup_run
                )
                extra.update(backup_phase=phase, backup_message=message)
        return up.Observation(
            generation=int(body.metadata.get("generation") or 0),
            desired=desired,
            current=current,
            current_disk=current_disk,
            policy=policy,
            vmi_disk=up.vmi_root_disk(vmi) if active else None,
            healthy=healthy,
            run_strategy=str(((world.vm or {}).get("spec") or {}).get("runStrategy") or ""),
            start_pending=bool(((world.vm or {}).get("status") or {}).get("stateChangeRequests")),
            user_global_maintenance=ev.global_maintenance(spec, now),
            **extra,
        )

    async def upgrade_action(
        self,
        action: up.Action,
        body: kopf.Body,
        spec: HostedEngineSpec,
        world: ev.World,
        now: datetime,
    ) -> None:
        ns, vm_name = self.namespace, ev.vm_name(self.name)
        owner = dict(body)
        if isinstance(action, up.CreateBackup):
            await self.call(self.upgrade_api.create_backup, ns, action.name, action.source,
                            self.name, owner)
        elif isinstance(action, up.SwitchDisk):
            vm = await self.call(self.api.find_vm, ns, vm_name)
            if vm is None:
                return
            template = None
            if action.from_spec:
                template = up.new_template(vm, action.root, up.data_volume_source(spec, ns))
            patch = up.switch_patch(vm, root=action.root, keep=action.keep,
                                    new_template=template, version=action.version)
            await self.call(self.upgrade_api.patch_vm, ns, vm_name, patch)
        elif isinstance(action, up.RestartEngine):
            vmi_name = str(((world.vmi or {}).get("metadata") or {}).get("name") or vm_name)
            await self.call(self.api.delete_vmi, ns, vmi_name)
        elif isinstance(action, up.StartEngine):
            await self.call(self.api.start, ns, vm_name)
        elif isinstance(action, up.DeleteDisk):
            await self.call(self.upgrade_api.delete_disk, ns, action.name)
        elif isinstance(action, up.EmitEvent):
            await self.call(self.api.event, owner, "Warning" if action.warning else "Normal",
                            action.reason, action.message)
        elif isinstance(action, up.Notify):
            cfg = spec.notifications
            if cfg is None or not cfg.enabled or not up.notification_matches(
                cfg.state_transition, action.phase
            ):
                return
            config = await self.smtp_config(cfg, now)
            if config is not None:
                subject, text = up.notification_text(
                    self.name, self.namespace, spec.vm.network.fqdn, action, now
                )
                self.notifier.send(notify.Mail(config, subject, text))

    # -- status ----------------------------------------------------------------------------

    def vm_status(self, spec: HostedEngineSpec, world: ev.World) -> dict[str, Any]:
        image = spec.vm.image
        source = (
            image.container_disk.image if image.container_disk is not None
            else str(image.url.url) if image.url is not None
            else f"pvc:{image.pvc.claim_name}" if image.pvc is not None else None
        )
        vmi_status = (world.vmi or {}).get("status") or {}
        mac = self.vm_info.get("macAddress") or self.mac_for(spec, _EMPTY_BODY, world.vm)
        self.vm_info["macAddress"] = mac
        return {
            "name": ev.vm_name(self.name) if world.vm is not None else None,
            "macAddress": mac,
            "image": source,
            "version": image.version,
            "nodeName": vmi_status.get("nodeName"),
            "phase": vmi_status.get("phase"),
        }

    async def write_status(
        self,
        body: kopf.Body,
        spec: HostedEngineSpec,
        decision: ha.Decision,
        world: ev.World,
        now: datetime,
    ) -> None:
        generation = body.metadata.get("generation")
        updates = [*self.pending_conditions]
        updates += [a for a in decision.actions if isinstance(a, ha.SetCondition)]
        self.pending_conditions = []
        current = (self.last_status or {}).get("conditions") or body.status.get("conditions") or []
        extra = [
            ("SpecValid", False, "InvalidSpec", self.spec_problem)
            if self.spec_problem is not None
            else ("SpecValid", True, "Valid", ""),
            *self.upgrade_conditions,
        ]
        conditions = ev.merge_conditions(
            current, updates, generation=generation, now=now, extra=extra
        )
        gm = ev.global_maintenance(spec, now)
        if gm and self.maintenance_since is None:
            known = (body.status.get("maintenance") or {}).get("since")
            self.maintenance_since = ev.parse_time(known) or now
        elif not gm:
            self.maintenance_since = None
        status = ev.status_body(
            decision,
            conditions=conditions,
            generation=generation,
            spec=spec,
            now=now,
            vm_info=self.vm_status(spec, world),
            maintenance_since=self.maintenance_since,
        )
        if up.changing(self.upgrade):  # status.ha.state keeps the HA machine's own state
            status["state"] = "Upgrading"
        if self.upgrade_gm and "maintenance" in status:  # the upgrade's own, not the user's
            status["maintenance"]["source"] = "Upgrade"
        if self.running_image is not None:  # what runs (the spec may ask for another image)
            status["vm"]["image"] = self.running_image.source
            status["vm"]["version"] = self.running_image.version
            if status["vm"]["version"] is None:
                del status["vm"]["version"]
        report = self.notifier.report
        status["notifications"] = {
            k: v
            for k, v in {
                "sent": report.sent,
                "lastSentAt": report.last_sent_at.isoformat() if report.last_sent_at else None,
                "lastError": report.last_error,
                "lastErrorAt": report.last_error_at.isoformat() if report.last_error_at
                else None,
            }.items()
            if v is not None
        }
        if self.probe_detail:
            status["engine"]["detail"] = status["engine"].get("detail") or self.probe_detail[:256]
        fresh = self.last_write is not None and now - self.last_write < STATUS_REFRESH
        if fresh and _without_last_seen(status) == _without_last_seen(self.last_status):
            return  # only heartbeats moved: refreshed every STATUS_REFRESH, not every step
        # keys we no longer set are removed explicitly (merge patch), also inside status.ha
        patch = ev.status_patch(status)
        try:
            await self.call(self.api.patch_status, self.namespace, self.name, patch)
        except BaseException:
            # not written: the conditions this step set (the HA machine sets one once, on a
            # transition) go into the next step's write, or Available=True could be lost
            self.pending_conditions = [*updates, *self.pending_conditions]
            raise
        metrics.record_engine_status(self.namespace, self.name, status)
        self.last_status = status
        self.last_write = now

    # -- the loop --------------------------------------------------------------------------

    def next_wait(self, settings: ha.Settings, obs: ha.Observation, now: datetime) -> float:
        wait = settings.health_interval.total_seconds()
        for host in obs.hosts:
            if host.last_heartbeat is None:
                continue
            deadline = host.last_heartbeat + settings.host_silence - now
            if deadline > timedelta(0):
                wait = min(wait, deadline.total_seconds() + 0.01)
        return max(MIN_WAIT, min(MAX_WAIT, wait))

    async def step(self, body: kopf.Body, idx: Mapping[str, Any]) -> float:
        spec = await self.parse_spec(body)
        if spec is None:
            return MAX_WAIT
        now = self.now()
        if self.memory is None:
            self.memory = ha.memory_from_dict(body.status.get("ha"))
        world = self.world(idx)
        if not await self.ensure_objects(body, spec, world, now):
            world = ev.World(**{**world.__dict__, "vm": None})
        elif world.vm is not None:
            spec = await self.upgrade_step(body, spec, world, now)  # issue 10 (own maintenance)
            strategy = ev.run_strategy(spec, now)
            if (world.vm.get("spec") or {}).get("runStrategy") != strategy:
                await self.call(
                    self.api.set_run_strategy, self.namespace, ev.vm_name(self.name), strategy
                )
        settings = ev.settings_from_spec(spec)
        if self.ended_vmi is not None:
            ended, self.ended_vmi = self.ended_vmi, None
            uid = str((ended.get("metadata") or {}).get("uid") or "")
            past = ev.World(**{**world.__dict__, "vmi": ended,
                               "vmi_since": self.vmi_first_seen.get(uid)})
            obs, host_to_node = ev.observe(spec, past, self.namespace, self.name)
            decision = ha.step(settings, self.memory, obs, now)
            await self.carry_out(body, spec, decision, past, host_to_node, now)
            self.memory = decision.memory
            self.pending_conditions.extend(
                a for a in decision.actions if isinstance(a, ha.SetCondition)
            )
        obs, host_to_node = ev.observe(spec, world, self.namespace, self.name)
        self.dead_hosts = {h.name for h in obs.hosts if h.fence is ha.FenceStatus.CONFIRMED}
        if self.memory.abandoned_host:
            self.dead_hosts.add(self.memory.abandoned_host)
        decision = ha.step(settings, self.memory, obs, now)
        await self.carry_out(body, spec, decision, world, host_to_node, now)
        self.memory = decision.memory
        await self.write_status(body, spec, decision, world, now)
        return self.next_wait(settings, obs, now)

    async def probe_loop(self, body: kopf.Body, idx: Mapping[str, Any]) -> None:
        """Probe the engine's health page while its VMI runs; wake the machine on news."""
        async with engine_probe.new_session() as session:
            while True:
                spec = self.spec
                interval = spec.health.interval.timedelta.total_seconds() if spec else 1.0
                vmi = _one(idx.get("he_vmis"), (self.namespace, ev.vm_name(self.name)))
                status = (vmi or {}).get("status") or {}
                ip = next(
                    (i.get("ipAddress") for i in status.get("interfaces") or []
                     if i.get("ipAddress")),
                    None,
                )
                url = ev.health_url(spec, ip) if spec is not None else None
                if spec is not None and url and status.get("phase") == "Running":
                    started = time.monotonic()
                    result, detail = await engine_probe.probe(
                        session,
                        url,
                        expect=spec.health.expect,
                        timeout=spec.health.timeout.timedelta.total_seconds(),
                        verify_tls=not spec.health.insecure_skip_tls_verify,
                    )
                    previous = self.probes[-1].result if self.probes else None
                    self.probes.append(ha.Probe(self.now(), result))
                    self.probe_detail = "" if result is ha.ProbeResult.OK else detail
                    if result is not previous or result is not ha.ProbeResult.OK:
                        self.wake.set()
                    interval = max(0.0, interval - (time.monotonic() - started))
                await asyncio.sleep(max(MIN_WAIT, interval))


def _without_last_seen(status: Mapping[str, Any] | None) -> Any:
    if status is None:
        return None
    rows = [{k: v for k, v in row.items() if k != "lastSeen"} for row in status.get("hosts", [])]
    return {**status, "hosts": rows}


_EMPTY_BODY: Any = kopf.Body({"metadata": {}, "status": {}})


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, id="hostedengine", cancellation_timeout=5.0)
async def engine_daemon(
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    **kwargs: Any,
) -> None:
    namespace = namespace or "default"
    runner = EngineRunner(namespace, name, memo)
    wakes = wake_registry(memo)
    wakes.register((namespace, name), runner.wake)
    idx = {k: kwargs.get(k) for k in (
        "he_nodes", "he_leases", "he_hosts", "he_vms", "he_vmis", "he_vmims", "he_pods",
        "he_pod_cpu")}
    prober = asyncio.create_task(runner.probe_loop(body, idx), name=f"he-probe-{name}")
    try:
        loop = asyncio.get_running_loop()
        while not stopped:
            runner.wake.clear()
            started = loop.time()
            try:
                wait = await runner.step(body, idx)
            except NotFound:
                metrics.forget_engine(namespace, name)
                return  # deleted under us
            except (KubeError, OSError) as exc:
                log.warning("HostedEngine %s/%s: step failed: %s", namespace, name, exc)
                metrics.record_reconcile_error("HostedEngine")
                wait = 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for: it can swallow a cancel (3.11)
                    await runner.wake.wait()
                # woken by an event: never step more often than WAKE_SPACING (a burst of
                # events, e.g. a VMI's status writes or a Node and its Host, is one step)
                await asyncio.sleep(max(0.0, WAKE_SPACING - (loop.time() - started)))
    finally:
        prober.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await prober
        wakes.unregister((namespace, name), runner.wake)
        close_notifier(memo)


def close_notifier(memo: kopf.Memo) -> None:
    """Stop this HostedEngine's mail thread (its memo is kopf's per-object copy, so the
    notifier is this object's own) and forget it: a respawned daemon starts a new one."""
    notifier = memo.pop(NOTIFIER_KEY, None)
    if isinstance(notifier, notify.Notifier):
        notifier.close(wait=None)  # queued mails still go out; the loop is not blocked
