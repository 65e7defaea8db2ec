"""The HostedEngine's objects and its HA inputs/outputs, in pure code.

* Rendering: the engine's VirtualMachine (disk on the StorageDomain through a DataVolume
  template, cloud-init from a Secret, placement by node affinity per docs/decisions/0003,
  runStrategy per docs/decisions/0002), the cloud-init Secret and the Service.
* :func:`settings_from_spec`: the CRD -> :class:`hosted_engine.logic.ha.Settings` mapping.
* :func:`observe`: the watched objects (VM, VMI, migrations, Hosts, Nodes, Leases, pods'
  memory) plus the probe results -> :class:`hosted_engine.logic.ha.Observation`. The heartbeats
  are the node Leases' renewals as seen; the observation also carries the lease clock's limit
  over every node Lease (:func:`lease_horizon`), which the machine judges them against.
* :func:`status_body`: a :class:`hosted_engine.logic.ha.Decision` -> the ``status`` patch that
  mirrors ``hosted-engine --vm-status``.

Nothing here reads the clock, the API or the network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Final

import yaml

from hosted_engine import API_GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from hosted_engine.logic import ha, leaseclock
from hosted_engine.logic.backoff import Backoff
from hosted_engine.models.base import parse_quantity
from hosted_engine.models.conditions import Condition, set_condition
from hosted_engine.models.host import HOSTED_ENGINE_NODE_LABEL, MAINTENANCE_REQUEST_ANNOTATION
from hosted_engine.models.hostedengine import (
    BootProtocol,
    GlobalMaintenanceMode,
    HostedEngineSpec,
    StopMode,
)

Obj = Mapping[str, Any]

#: Label on the engine VM and its VMI (the Host's drain moves a VM carrying it first).
ENGINE_VM_LABEL: Final = f"{API_GROUP}/hostedengine"
#: Node label of the Hosts deployed for the hosted engine (docs/decisions/0003).
ENGINE_HOST_LABEL: Final = HOSTED_ENGINE_NODE_LABEL
HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
ROOT_DISK: Final = "root"
CLOUD_INIT_DISK: Final = "cloudinit"
MAX_SCORE: Final = 3400
#: HostedEngine annotations never copied onto the VM (ours, kopf's, kubectl's).
_RESERVED_ANNOTATION_PREFIXES: Final = (
    f"{API_GROUP}/",
    "kopf.zalando.org/",
    "kubectl.kubernetes.io/",
)


# --------------------------------------------------------------------------------------------
# Names


def vm_name(he: str) -> str:
    return he


def secret_name(he: str) -> str:
    return f"{he}-cloudinit"


def service_name(he: str) -> str:
    return he


def disk_name(he: str) -> str:
    return f"{he}-disk"


# --------------------------------------------------------------------------------------------
# Settings


def settings_from_spec(spec: HostedEngineSpec) -> ha.Settings:
    """``spec.health``, ``spec.failover``, ``spec.maintenance``, ``spec.sparesCount`` and
    ``spec.shutdownTimeout`` -> the machine's settings; anything the CRD does not carry keeps
    the code default of :class:`~hosted_engine.logic.ha.Settings`."""
    h, f = spec.health, spec.failover
    retries = f.start_retries
    cap = max(retries.max_backoff.timedelta, retries.initial_backoff.timedelta)
    return ha.Settings(
        health_interval=h.interval.timedelta,
        health_timeout=h.timeout.timedelta,
        failures_before_bad=h.failure_threshold,
        startup_grace=h.startup_grace.timedelta,
        restart_grace=h.restart_grace.timedelta,
        stop_timeout=spec.shutdown_timeout.timedelta,
        host_silence=f.silence_threshold.timedelta,
        fencing_required=f.require_fencing,
        backoff=Backoff(retries.initial_backoff.timedelta, 2.0, cap),
        max_start_attempts=retries.limit,
        move_hysteresis=f.move_threshold,
        spares=spec.spares_count,
        maintenance_reminder=spec.maintenance.reminder_interval.timedelta,
    )


def user_request(spec: HostedEngineSpec) -> ha.UserRequest:
    return ha.UserRequest(
        running=spec.running,
        power_off=not spec.running and spec.stop_mode is StopMode.POWER_OFF,
        reset_seq=spec.reset_seq,
    )


def global_maintenance(spec: HostedEngineSpec, now: datetime) -> bool:
    m = spec.maintenance
    return m.mode is GlobalMaintenanceMode.GLOBAL and (m.until is None or now < m.until)


def run_strategy(spec: HostedEngineSpec, now: datetime) -> str:
    """docs/decisions/0002: Manual in global maintenance, else Always (a stop outside global
    maintenance is refused, so the engine always runs then)."""
    return "Manual" if global_maintenance(spec, now) else "Always"


def health_url(spec: HostedEngineSpec, ip: str | None) -> str | None:
    """The liveliness URL; ``{fqdn}`` and ``{ip}`` (the VMI's address) are filled in."""
    url = spec.health.url_for(spec.vm.network.fqdn)
    if "{ip}" in url:
        if not ip:
            return None
        url = url.replace("{ip}", ip)
    return url


# --------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class DiskTarget:
    """Where the engine's disk goes: what the StorageDomain's status says claims must ask."""

    storage_class: str
    volume_mode: str | None = None
    access_modes: tuple[str, ...] = ()


def cloud_init_user_data(
    spec: HostedEngineSpec, root_password: str | None, admin_password: str | None
) -> str:
    """cloud-config for the engine VM (a Secret, since it may carry passwords)."""
    ci = spec.vm.cloud_init
    net = spec.vm.network
    config: dict[str, Any] = {
        "hostname": net.fqdn.split(".", 1)[0],
        "fqdn": net.fqdn,
        "manage_etc_hosts": False,
        "ssh_pwauth": root_password is not None,
        "disable_root": ci.root_ssh_access.value == "no",
    }
    if ci.root_ssh_keys:
        config["ssh_authorized_keys"] = list(ci.root_ssh_keys)
    if root_password is not None:
        config["chpasswd"] = {"expire": False, "users": [
            {"name": "root", "password": root_password, "type": "text"}]}
    permit = {"yes": "yes", "no": "no", "without-password": "prohibit-password"}[
        ci.root_ssh_access.value
    ]
    files: list[dict[str, Any]] = [
        {
            "path": "/etc/ssh/sshd_config.d/50-hosted-engine.conf",
            "content": f"PermitRootLogin {permit}\n",
            "permissions": "0600",
        }
    ]
    if ci.etc_hosts:
        files.append(
            {"path": "/etc/hosts", "append": True, "content": "\n".join(ci.etc_hosts) + "\n"}
        )
    if admin_password is not None:
        files.append(
            {
                "path": "/root/ovirt-engine-answers.d/admin-password",
                "content": admin_password,
                "permissions": "0600",
            }
        )
    config["write_files"] = files
    if ci.extra_user_data:
        extra = yaml.safe_load(ci.extra_user_data)
        if isinstance(extra, dict):
            for key, value in extra.items():
                if isinstance(value, list) and isinstance(config.get(key), list):
                    config[key] = [*config[key], *value]
                else:
                    config[key] = value
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=True)


def network_data(spec: HostedEngineSpec, mac: str) -> str | None:
    """cloud-init network config v2 for a static address (DHCP needs none)."""
    net = spec.vm.network
    if net.boot_protocol is not BootProtocol.STATIC:
        return None
    eth: dict[str, Any] = {
        "match": {"macaddress": mac},
        "set-name": "eth0",
        "addresses": [f"{net.address}/{net.prefix}"],
        "routes": [{"to": "0.0.0.0/0", "via": str(net.gateway)}],
    }
    if net.dns_servers:
        eth["nameservers"] = {"addresses": [str(d) for d in net.dns_servers]}
    return yaml.safe_dump({"version": 2, "ethernets": {"eth0": eth}}, sort_keys=True)


def _labels(he: str) -> dict[str, str]:
    return {
        ENGINE_VM_LABEL: he,
        "app.kubernetes.io/name": "hosted-engine",
        "app.kubernetes.io/instance": he,
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
    }


def render_secret(
    namespace: str, he: str, user_data: str, net_data: str | None
) -> dict[str, Any]:
    data = {"userdata": user_data}
    if net_data is not None:
        data["networkdata"] = net_data
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(he), "namespace": namespace, "labels": _labels(he)},
        "type": "Opaque",
        "stringData": data,
    }


def render_service(namespace: str, he: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(he), "namespace": namespace, "labels": _labels(he)},
        "spec": {
            "selector": {ENGINE_VM_LABEL: he},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": 443, "protocol": "TCP"},
            ],
        },
    }


def affinity(
    placement: Sequence[tuple[str, int]], prefer: str | None = None
) -> dict[str, Any]:
    """docs/decisions/0003: required = an engine host not scored 0; preferred = the scores
    scaled to 1..100 (``prefer``, the host the machine chose to start on, weighs 100).

    An exclusion that would cover every scored host is never written: a VMI created with it
    can never be scheduled, and it keeps the affinity it was created with when the scores
    recover (at 200 Hosts an operator lagging behind its Lease events saw every engine host
    silent, scored them all 0 and wrote ``NotIn [node-1, node-2, node-3]``; the engine then
    failed to start on every host, which kept every score at 0). With no eligible host the
    required term is the engine-host label alone: the scheduler places the engine on any
    engine host it can, and the machine's own decisions wait for a host with a score."""
    excluded = sorted(node for node, score in placement if score <= 0)
    if len(excluded) >= len({node for node, _ in placement}):
        excluded = []  # nothing would be left: exclude nothing rather than everything
    required: list[dict[str, Any]] = [
        {"key": ENGINE_HOST_LABEL, "operator": "In", "values": ["true"]}
    ]
    if excluded:
        required.append({"key": HOSTNAME_LABEL, "operator": "NotIn", "values": excluded})
    preferred = []
    for node, score in sorted(placement):
        if score <= 0:
            continue
        weight = max(1, min(99, round(score * 99 / MAX_SCORE)))
        if node == prefer:
            weight = 100
        preferred.append(
            {
                "weight": weight,
                "preference": {
                    "matchExpressions": [
                        {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}
                    ]
                },
            }
        )
    node_affinity: dict[str, Any] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": required}]
        }
    }
    if preferred:
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    return {"nodeAffinity": node_affinity}


def passthrough_annotations(annotations: Mapping[str, str] | None) -> dict[str, str]:
    """The HostedEngine's own annotations that go onto the VM (not ours, kopf's, kubectl's)."""
    return {
        k: str(v)
        for k, v in (annotations or {}).items()
        if not k.startswith(_RESERVED_ANNOTATION_PREFIXES)
    }


def _data_volume_source(spec: HostedEngineSpec, namespace: str) -> dict[str, Any]:
    image = spec.vm.image
    if image.container_disk is not None:
        return {"registry": {"url": f"docker://{image.container_disk.image}"}}
    if image.url is not None:
        http: dict[str, Any] = {"url": str(image.url.url)}
        if image.url.secret_ref is not None:
            http["secretRef"] = image.url.secret_ref.name
        if image.url.cert_config_map is not None:
            http["certConfigMap"] = image.url.cert_config_map
        return {"http": http}
    assert image.pvc is not None
    return {"pvc": {"name": image.pvc.claim_name, "namespace": namespace}}


def render_vm(
    namespace: str,
    he: str,
    spec: HostedEngineSpec,
    *,
    mac: str,
    disk: DiskTarget,
    strategy: str,
    placement: Sequence[tuple[str, int]] = (),
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    vm = spec.vm
    net = vm.network
    storage: dict[str, Any] = {
        "storageClassName": disk.storage_class,
        "resources": {"requests": {"storage": str(vm.disk.size)}},
    }
    if disk.access_modes:
        storage["accessModes"] = [disk.access_modes[0]]
    if disk.volume_mode:
        storage["volumeMode"] = disk.volume_mode
    interface: dict[str, Any] = {"name": "default", "macAddress": mac}
    if net.network_name:
        interface["bridge"] = {}
        network: dict[str, Any] = {"name": "default", "multus": {"networkName": net.network_name}}
    else:
        interface["masquerade"] = {}
        network = {"name": "default", "pod": {}}
    cloud_init: dict[str, Any] = {"secretRef": {"name": secret_name(he)}}
    if net.boot_protocol is BootProtocol.STATIC:
        cloud_init["networkDataSecretRef"] = {"name": secret_name(he)}
    passthrough = passthrough_annotations(annotations)
    template_meta: dict[str, Any] = {"labels": _labels(he)}
    if passthrough:
        template_meta["annotations"] = dict(passthrough)
    meta: dict[str, Any] = {"name": vm_name(he), "namespace": namespace, "labels": _labels(he)}
    if passthrough:
        meta["annotations"] = dict(passthrough)
    if vm.image.version:
        meta.setdefault("annotations", {})[f"{API_GROUP}/engine-version"] = vm.image.version
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": meta,
        "spec": {
            "runStrategy": strategy,
            "dataVolumeTemplates": [
                {
                    "metadata": {"name": disk_name(he), "labels": _labels(he)},
                    "spec": {"source": _data_volume_source(spec, namespace), "storage": storage},
                }
            ],
            "template": {
                "metadata": template_meta,
                "spec": {
                    "domain": {
                        "cpu": {"cores": vm.cpu},
                        "memory": {"guest": str(vm.memory)},
                        "devices": {
                            "disks": [
                                {"name": ROOT_DISK, "disk": {"bus": "virtio"}, "bootOrder": 1},
                                {"name": CLOUD_INIT_DISK, "disk": {"bus": "virtio"}},
                            ],
                            "interfaces": [interface],
                        },
                    },
                    "networks": [network],
                    "volumes": [
                        {"name": ROOT_DISK, "dataVolume": {"name": disk_name(he)}},
                        {"name": CLOUD_INIT_DISK, "cloudInitNoCloud": cloud_init},
                    ],
                    "evictionStrategy": "LiveMigrate",
                    "terminationGracePeriodSeconds": int(
                        spec.shutdown_timeout.timedelta.total_seconds()
                    ),
                    "affinity": affinity(placement),
                },
            },
        },
    }


# --------------------------------------------------------------------------------------------
# Observation


def _meta(obj: Obj | None) -> Obj:
    return (obj or {}).get("metadata") or {}


def _spec(obj: Obj | None) -> Obj:
    return (obj or {}).get("spec") or {}


def _status(obj: Obj | None) -> Obj:
    return (obj or {}).get("status") or {}


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _condition(obj: Obj | None, type_: str) -> Obj | None:
    for cond in _status(obj).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return None


def node_ready(node: Obj | None) -> bool:
    cond = _condition(node, "Ready")
    return cond is not None and cond.get("status") == "True"


def selector_matches(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels and matchExpressions) against ``labels``."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key"), expr.get("operator")
        values = set(expr.get("values") or [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def allowed_hosts(spec: HostedEngineSpec, hosts: Iterable[Obj]) -> list[Obj]:
    """Hosts deployed for the hosted engine, narrowed by ``spec.hosts`` (names, selector)."""
    names = set(spec.hosts.names)
    selector = spec.hosts.selector.to_dict() if spec.hosts.selector is not None else None
    out = []
    for host in hosts:
        name = str(_meta(host).get("name") or "")
        if _spec(host).get("hostedEngine") != "deploy" or _meta(host).get("deletionTimestamp"):
            continue
        if names and name not in names:
            continue
        if not selector_matches(selector, _meta(host).get("labels") or {}):
            continue
        out.append(host)
    return sorted(out, key=lambda h: str(_meta(h).get("name")))


@dataclass(frozen=True)
class FenceRef:
    """The fence request the HostedEngine put on a Host (annotation value ``requester/id``)."""

    requester: str
    request_id: str

    @property
    def value(self) -> str:
        return f"{self.requester}/{self.request_id}"


FENCE_REQUEST_ANNOTATION: Final = f"{API_GROUP}/fence-request"


def fence_requester(namespace: str, he: str) -> str:
    return f"hostedengine.{namespace}.{he}"


def fence_status(host: Obj, requester: str) -> tuple[ha.FenceStatus, datetime | None, str]:
    """The HA machine's view of a Host's fencing (status.fencing, see handlers/host.py)."""
    fencing = _status(host).get("fencing") or {}
    phase = str(fencing.get("phase") or "")
    state = str(_status(host).get("state") or "")
    since = parse_time(fencing.get("confirmedAt")) or parse_time(fencing.get("requestedAt"))
    message = str(fencing.get("message") or "")
    if phase == "Confirmed" or state == "Fenced":
        return ha.FenceStatus.CONFIRMED, since, message
    annotation = str(_meta(host).get("annotations", {}).get(FENCE_REQUEST_ANNOTATION) or "")
    mine = annotation.startswith(f"{requester}/")
    if not mine:
        return ha.FenceStatus.NONE, None, ""
    request_id = annotation.split("/", 1)[1]
    if str(fencing.get("requestID") or "") != request_id:
        return ha.FenceStatus.REQUESTED, None, ""
    mapping = {
        "Requested": ha.FenceStatus.REQUESTED,
        "Refused": ha.FenceStatus.REQUESTED,
        "PoweringOff": ha.FenceStatus.IN_PROGRESS,
        "Failed": ha.FenceStatus.FAILED,
        "Released": ha.FenceStatus.NONE,
    }
    return mapping.get(phase, ha.FenceStatus.REQUESTED), since, message


def can_fence(host: Obj) -> bool:
    pm = _spec(host).get("powerManagement")
    return isinstance(pm, Mapping) and pm.get("fencingEnabled", True) is not False


def host_local_maintenance(host: Obj) -> bool:
    mode = (_spec(host).get("maintenance") or {}).get("mode")
    state = _status(host).get("state")
    return mode == "local" or state in ("PreparingForMaintenance", "Maintenance")


#: Host states from which its drain never runs (handlers/host.py, logic/host_lifecycle.py).
_NO_DRAIN_STATES: Final = frozenset({"Maintenance", "NonResponsive", "Fenced"})


def drain_moves_engine(host: Obj, vmi_namespace: str, vmi_name: str) -> bool:
    """Whether the Host's own drain is the actor that live-migrates the engine VMI off this host
    (logic/drain.py: the engine first): its maintenance is asked for (mode local, a maintenance
    request annotation) or under way, the Host has not refused it, the drain has not timed out,
    and it has not given up on the engine (``status.drain.blocked``). While true, the
    HostedEngine never creates a migration of its own: one actor, never two migrations of one
    VMI. Before the Host has reacted to a new request it is already true (the drain is coming)."""
    state = str(_status(host).get("state") or "")
    annotations = _meta(host).get("annotations") or {}
    wanted = (
        (_spec(host).get("maintenance") or {}).get("mode") == "local"
        or bool(annotations.get(MAINTENANCE_REQUEST_ANNOTATION))
        or state == "PreparingForMaintenance"
    )
    if not wanted or state in _NO_DRAIN_STATES:
        return False
    refused = _condition(host, "MaintenanceRefused")
    if refused is not None and refused.get("status") == "True":
        return False
    drain = _status(host).get("drain") or {}
    if drain.get("timedOut"):
        return False
    return not any(
        b.get("namespace") == vmi_namespace and b.get("name") == vmi_name
        for b in drain.get("blocked") or []
        if isinstance(b, Mapping)
    )


@dataclass(frozen=True)
class World:
    """What the handler has cached from its watches (all plain API objects)."""

    vm: Obj | None = None
    vmi: Obj | None = None
    vmi_since: datetime | None = None
    migrations: tuple[Obj, ...] = ()
    hosts: tuple[Obj, ...] = ()
    nodes: Mapping[str, Obj] = field(default_factory=dict)
    #: every node Lease's renewTime (kube-node-lease), by node: the heartbeats
    leases: Mapping[str, datetime] = field(default_factory=dict)
    #: their leaseDurationSeconds (a missing one: the kubelet's 10 s renew interval)
    lease_durations: Mapping[str, float] = field(default_factory=dict)
    used_memory: Mapping[str, int] = field(default_factory=dict)
    #: CPU requested on each node by pods other than the engine's, in millicores
    used_cpu: Mapping[str, int] = field(default_factory=dict)
    probes: tuple[ha.Probe, ...] = ()
    failed_migration_after: datetime | None = None


def _phase(obj: Obj | None) -> str:
    return str(_status(obj).get("phase") or "")


def engine_vm(
    world: World, node_to_host: Mapping[str, str], fenced: frozenset[str] = frozenset()
) -> ha.EngineVm:
    """The machine's view of the VM and its VMI. Two translations: a VMI not bound to a node
    yet is not reported (KubeVirt's own restart, placed by the affinity; the machine starts
    it), and a VMI that ended on a host whose fence is confirmed is reported as still bound
    there (the engine was lost with its host, a failover, not an engine failure)."""
    vm, vmi = world.vm, world.vmi
    if vm is None or _meta(vm).get("deletionTimestamp"):
        return ha.EngineVm(exists=False)
    strategy = str(_spec(vm).get("runStrategy") or "")
    desired = strategy in ("Always", "RerunOnFailure") or _spec(vm).get("running") is True
    if vmi is None:
        return ha.EngineVm(exists=True, desired_running=desired)
    try:
        phase: ha.VmiPhase | None = ha.VmiPhase(_phase(vmi) or "Pending")
    except ValueError:
        phase = ha.VmiPhase.UNKNOWN
    if _meta(vmi).get("deletionTimestamp") and phase is ha.VmiPhase.PENDING:
        phase = ha.VmiPhase.SUCCEEDED
    node = str(_status(vmi).get("nodeName") or "") or None
    host = node_to_host.get(node, node) if node else None
    if node is None and phase in (ha.VmiPhase.PENDING, ha.VmiPhase.SCHEDULING):
        return ha.EngineVm(exists=True, desired_running=desired)
    if phase in (ha.VmiPhase.FAILED, ha.VmiPhase.SUCCEEDED) and host in fenced:
        phase = ha.VmiPhase.RUNNING
    paused = (_condition(vmi, "Paused") or {}).get("status") == "True"
    migratable = (_condition(vmi, "LiveMigratable") or {}).get("status") != "False"
    state = _status(vmi).get("migrationState") or {}
    vmi_name = str(_meta(vmi).get("name") or "")
    unfinished = [
        m
        for m in world.migrations
        if _spec(m).get("vmiName") == vmi_name and _phase(m) not in ("Succeeded", "Failed")
    ]
    migrating = bool(unfinished) or (bool(state) and not state.get("completed", True))
    failed = False
    if world.failed_migration_after is not None:
        failed = any(
            _spec(m).get("vmiName") == vmi_name
            and _phase(m) == "Failed"
            and (parse_time(_meta(m).get("creationTimestamp")) or world.failed_migration_after)
            >= world.failed_migration_after - timedelta(seconds=1)
            for m in world.migrations
        )
    return ha.EngineVm(
        exists=True,
        desired_running=desired,
        phase=phase,
        node=host,
        since=world.vmi_since,
        paused=paused,
        live_migratable=migratable,
        migrating=migrating,
        migration_failed=failed,
    )


def node_memory(node: Obj | None) -> int:
    alloc = _status(node).get("allocatable") or _status(node).get("capacity") or {}
    try:
        return int(parse_quantity(str(alloc.get("memory") or "0")))
    except ValueError:
        return 0


def node_cpu_millis(node: Obj | None) -> int:
    alloc = _status(node).get("allocatable") or _status(node).get("capacity") or {}
    try:
        return int(parse_quantity(str(alloc.get("cpu") or "0")) * 1000)
    except ValueError:
        return 0


def cpu_load(node: Obj | None, requested_millis: int | None) -> float:
    """The scoring's CPU pressure input (0..1): the CPU that pods other than the engine request
    on the node, over its allocatable CPU -- what the scheduler can still give, the same on
    every cluster (metrics-server is optional). No allocatable CPU or no pod data: 0, no
    penalty (a missing input never costs a host its score)."""
    allocatable = node_cpu_millis(node)
    if allocatable <= 0 or not requested_millis:
        return 0.0
    return max(0.0, min(1.0, requested_millis / allocatable))


def observe(
    spec: HostedEngineSpec, world: World, namespace: str, he: str
) -> tuple[ha.Observation, dict[str, str]]:
    """The machine's observation and the Host -> Node map (the machine speaks Host names)."""
    requester = fence_requester(namespace, he)
    hosts = allowed_hosts(spec, world.hosts)
    host_to_node: dict[str, str] = {}
    observed: list[ha.HostObservation] = []
    for host in hosts:
        name = str(_meta(host).get("name"))
        node_name = str(_spec(host).get("nodeName") or name)
        host_to_node[name] = node_name
        node = world.nodes.get(node_name)
        fence, fence_since, fence_message = fence_status(host, requester)
        network = 1.0
        net_cond = _condition(node, "NetworkUnavailable")
        if net_cond is not None and net_cond.get("status") == "True":
            network = 0.0
        power = str((_status(host).get("powerManagement") or {}).get("powerState") or "")
        try:
            bmc = ha.PowerState(power)
        except ValueError:
            bmc = ha.PowerState.UNKNOWN
        heartbeat = world.leases.get(node_name)
        if heartbeat is None and node is not None:
            heartbeat = parse_time((_condition(node, "Ready") or {}).get("lastHeartbeatTime"))
        checked = parse_time((_status(host).get("powerManagement") or {}).get("checkedAt"))
        if bmc is ha.PowerState.OFF and heartbeat is not None and (
            checked is None or heartbeat > checked
        ):
            bmc = ha.PowerState.UNKNOWN  # the node spoke after the BMC said Off: stale reading
        free = max(0, node_memory(node) - world.used_memory.get(node_name, 0))
        observed.append(
            ha.HostObservation(
                name=name,
                ready=node is not None and node_ready(node),
                last_heartbeat=heartbeat,
                local_maintenance=host_local_maintenance(host),
                drain_moves_engine=drain_moves_engine(host, namespace, vm_name(he)),
                network=network,
                cpu_load=cpu_load(node, world.used_cpu.get(node_name)),
                free_memory=free,
                bmc_power=bmc,
                can_fence=can_fence(host),
                fence=fence,
                fence_since=fence_since,
                fence_message=fence_message,
            )
        )
    node_to_host = {n: h for h, n in host_to_node.items()}
    fenced = frozenset(h.name for h in observed if h.fence is ha.FenceStatus.CONFIRMED)
    m = spec.maintenance
    obs = ha.Observation(
        vm=engine_vm(world, node_to_host, fenced),
        probes=world.probes,
        hosts=tuple(observed),
        engine_memory=int(parse_quantity(str(spec.vm.memory))),
        maintenance=ha.MaintenanceMode(m.mode.value),
        maintenance_until=m.until,
        request=user_request(spec),
        lease_horizon=lease_horizon(world),
    )
    return obs, host_to_node


def lease_horizon(world: World) -> datetime | None:
    """The lease clock's limit over every node Lease watched (not only the engine hosts'): the
    newest renewal plus its renew interval (:mod:`hosted_engine.logic.leaseclock`). The HA
    machine judges heartbeats at min(now, this): behind its Lease watch, the operator does not
    see every host silent."""
    return leaseclock.horizon(
        (renewed, leaseclock.renew_interval_s(world.lease_durations.get(node)))
        for node, renewed in world.leases.items())


# --------------------------------------------------------------------------------------------
# Status


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _record(record: ha.FailoverRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    out = {
        "fromHost": record.from_host,
        "toHost": record.to_host,
        "lostAt": _iso(record.lost_at),
        "detectedAt": _iso(record.detected_at),
        "fencedAt": _iso(record.fenced_at),
        "startedAt": _iso(record.started_at),
        "healthyAt": _iso(record.healthy_at),
    }
    return {k: v for k, v in out.items() if v is not None}


_CONDITION_REASON = re.compile(r"[^A-Za-z0-9]")


def merge_conditions(
    current: Sequence[Obj],
    updates: Iterable[ha.SetCondition],
    *,
    generation: int | None,
    now: datetime,
    extra: Iterable[tuple[str, bool, str, str]] = (),
) -> list[dict[str, Any]]:
    """Apply the machine's SetCondition actions (and ``extra`` ones) to the current list."""
    conds: list[Condition] = []
    for raw in current:
        try:
            conds.append(Condition.model_validate(raw))
        except ValueError:
            continue
    for c in updates:
        reason = _CONDITION_REASON.sub("", c.reason) or "Unknown"
        conds = set_condition(
            conds, c.type, c.status, reason, c.message[:32768],
            observed_generation=generation, now=now,
        )
    for type_, status, reason, message in extra:
        conds = set_condition(
            conds, type_, status, reason, message, observed_generation=generation, now=now
        )
    return [c.to_dict() for c in conds]


def status_body(
    decision: ha.Decision,
    *,
    conditions: list[dict[str, Any]],
    generation: int | None,
    spec: HostedEngineSpec,
    now: datetime,
    vm_info: Mapping[str, Any],
    maintenance_since: datetime | None,
) -> dict[str, Any]:
    """The status patch: ``hosted-engine --vm-status`` as a Kubernetes status."""
    mem = decision.memory
    engine = decision.engine
    hosts = [
        {
            "host": row.host,
            "score": row.score,
            "state": row.state,
            "upToDate": row.up_to_date,
            "lastSeen": _iso(row.last_seen),
            "localMaintenance": row.local_maintenance,
            "engineRunning": row.engine_running,
            "ready": row.ready,
            "failedStarts": row.failed_starts,
            "hasRoom": row.has_room,
            "penalties": list(row.penalties)[:16],
        }
        for row in decision.hosts
    ]
    running_host = next((row.host for row in decision.hosts if row.engine_running), None)
    gm = global_maintenance(spec, now)
    m = spec.maintenance
    body: dict[str, Any] = {
        "observedGeneration": generation,
        "state": mem.state.value,
        "engine": {
            "vm": engine.vm,
            "health": engine.health,
            "detail": engine.detail[:256] or None,
            "reason": engine.reason[:1024] or None,
        },
        "host": running_host,
        "vm": {k: v for k, v in vm_info.items() if v is not None},
        "hosts": [{k: v for k, v in h.items() if v is not None} for h in hosts],
        "maintenance": {
            "mode": "global" if gm else "none",
            "source": "User" if gm else None,
            "since": _iso(maintenance_since) if gm else None,
            "until": _iso(m.until) if gm else None,
            "lastReminderAt": _iso(mem.reminder_at) if gm else None,
        },
        "ha": ha.memory_to_dict(mem),
        "spares": {
            "required": decision.spares.required,
            "available": decision.spares.available,
            "hosts": list(decision.spares.hosts),
        },
        "failovers": mem.failovers,
        "lastFailover": _record(mem.last_failover),
        "conditions": conditions,
    }
    body["maintenance"] = {k: v for k, v in body["maintenance"].items() if v is not None}
    return body


#: Every key :func:`ha.memory_to_dict` may write under ``status.ha``.
HA_MEMORY_KEYS: Final = tuple(
    name.split("_")[0] + "".join(part.title() for part in name.split("_")[1:])
    for name in (f.name for f in fields(ha.Memory))
)


def status_patch(status: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that writes ``status`` (from :func:`status_body`): a merge patch
    keeps every key it does not name, so keys no longer set are named with null, also inside
    ``ha``: a restarted operator reads its memory back from there, and a field left over from
    an earlier episode (a finished failover, a lost or fenced host) must not come back."""
    patch = dict(status)
    for key in ("host", "lastFailover"):
        if patch.get(key) is None:
            patch[key] = None
    memory = status.get("ha")
    if isinstance(memory, Mapping):
        patch["ha"] = {**dict.fromkeys(HA_MEMORY_KEYS), **memory}
    return patch


def notification_matches(pattern: str, old: ha.State, new: ha.State) -> bool:
    """oVirt's ``state_transition`` filter: a case-insensitive search in ``Old-New``."""
    try:
        return re.search(pattern, f"{old.value}-{new.value}", re.IGNORECASE) is not None
    except re.error:
        return False


def notification_text(
    he: str, namespace: str, fqdn: str, note: ha.Notify, now: datetime
) -> tuple[str, str]:
    """(subject, body) of a state-transition mail, as oVirt's broker writes them."""
    subject = f"ovirt-hosted-engine state transition {note.old.value}-{note.new.value}"
    body = json.dumps(
        {
            "hostedEngine": f"{namespace}/{he}",
            "fqdn": fqdn,
            "host": note.host,
            "from": note.old.value,
            "to": note.new.value,
            "reason": note.reason,
            "time": now.isoformat(),
        },
        indent=2,
    )
    text = (
        f"The state machine of the hosted engine {namespace}/{he} ({fqdn}) changed state "
        f"from {note.old.value} to {note.new.value}"
        + (f" on host {note.host}" if note.host else "")
        + f".\nReason: {note.reason}\n\n{body}\n"
    )
    return subject, text
