"""StorageDomain decisions (pure): validation, the objects a domain materialises, its status.

What a domain becomes in Kubernetes:

- ``nfs``, ``iscsi``, ``fc``: statically provisioned PersistentVolumes with the matching volume
  source and a StorageClass dedicated to the domain (provisioner
  ``kubernetes.io/no-provisioner``), so a claim naming that class binds only to the domain's
  volumes. One PV per domain for nfs and iscsi (the export, the LUN), one per WWID for fc (the
  domain's capacity is split evenly between its LUNs).
- ``glusterfs``: the in-tree plugin is gone, so the PV has a ``csi`` source served by the
  Gluster CSI driver (``gluster.csi.k8s.io`` unless ``spec.glusterfs.csiDriver`` names another),
  with ``server``/``share`` volume attributes and the backup volfile servers as a mount option.
- ``csi``: nothing is created; claims use the named StorageClass.

Children are cluster-scoped, owned by the (cluster-scoped) domain, labelled
``app.kubernetes.io/managed-by`` and ``hostedengine.io/storage-domain``.

Maintenance (no new disks): every volume of the domain that no claim holds is *pre-bound* to a
claim that does not exist (``claimRef`` without uid, annotated as a reservation), which is how
Kubernetes reserves a PV: the PV controller never binds it to another claim. Leaving
maintenance removes the reservation. Entering maintenance is refused while a HostedEngine's disk
is on the domain and that engine runs outside global maintenance. For ``csi`` domains the
operator owns no volume: maintenance is recorded and reported, but the CSI driver still
provisions claims of its class (stated in the condition).

Every function here is pure: observed objects and ``now`` in, decisions out.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from pydantic import ValidationError

from hosted_engine import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from hosted_engine.models.base import (
    Quantity,
    describe_validation_error,
    format_bytes,
    parse_quantity,
)
from hosted_engine.models.conditions import (
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    get_condition,
    remove_condition,
    set_condition,
)
from hosted_engine.models.storagedomain import (
    HOSTED_ENGINE_MIN_CAPACITY,
    STORAGE_DOMAIN_LABEL,
    ClaimRef,
    NfsVersion,
    ProbeStatus,
    StorageDomain,
    StorageDomainSpec,
    StorageDomainState,
    StorageDomainStatus,
    StorageRole,
    StorageType,
)

Body = dict[str, Any]

NO_PROVISIONER: Final = "kubernetes.io/no-provisioner"
DEFAULT_GLUSTER_CSI_DRIVER: Final = "gluster.csi.k8s.io"
NFS_PORT: Final = 2049
GLUSTERD_PORT: Final = 24007
#: PV annotation: the domain's name (the label value may be shortened to 63 characters).
DOMAIN_ANNOTATION: Final = "hostedengine.io/storage-domain-name"
#: PV annotation: hash of the rendered volume spec, to notice a changed domain spec.
SPEC_HASH_ANNOTATION: Final = "hostedengine.io/volume-spec-hash"
#: PV annotation: the volume is pre-bound to a placeholder claim while the domain is in
#: maintenance.
RESERVED_ANNOTATION: Final = "hostedengine.io/reserved"
RESERVED_VALUE: Final = "maintenance"
#: Namespace of the placeholder claim maintenance pre-binds volumes to (a claim that never
#: exists there: kube-system is not where users create disks).
RESERVATION_NAMESPACE: Final = "kube-system"
CHILD_PREFIX: Final = "sd-"
ACCESS_MODE_ORDER: Final = ("ReadWriteMany", "ReadWriteOnce", "ReadOnlyMany")

# Condition reasons of the StorageDomain (one CamelCase word each).
REASON_ACTIVE: Final = "DomainActive"
REASON_INVALID_CONNECTION: Final = "InvalidConnection"
REASON_CAPACITY_TOO_SMALL: Final = "CapacityTooSmall"
REASON_SHARED_TARGET: Final = "SharedIscsiTarget"
REASON_REPLICA_REQUIRED: Final = "GlusterReplicaRequired"
REASON_CHAP_SECRETS_DIFFER: Final = "ChapSecretsDiffer"
REASON_SECRET_MISSING: Final = "SecretMissing"
REASON_CLASS_NOT_FOUND: Final = "StorageClassNotFound"
REASON_APPLY_FAILED: Final = "ApplyFailed"
REASON_SPEC_CHANGE_PENDING: Final = "SpecChangePending"
REASON_PARTIALLY_REACHABLE: Final = "PartiallyReachable"
REASON_NOT_PROBED: Final = "NotProbed"
REASON_SOLE_DATA_DOMAIN: Final = "OnlyDataDomain"
REASON_OTHER_DATA_DOMAINS: Final = "OtherDataDomains"
REASON_IN_MAINTENANCE: Final = "InMaintenance"
REASON_MAINTENANCE_ADVISORY: Final = "InMaintenanceAdvisory"
REASON_DELETION_PENDING: Final = "DeletionPending"

_RUNNING_ENGINE_STATES: Final = frozenset(
    {"EngineStart", "EngineStarting", "EngineUp", "EngineUpBadHealth", "EngineMigrating"}
)
_RUNNING_VMI_PHASES: Final = frozenset({"Pending", "Scheduling", "Scheduled", "Running"})


# --------------------------------------------------------------------------------------------
# Names and labels


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{text[: limit - 11].rstrip('-.')}-{digest}"


def label_value(domain_name: str) -> str:
    """The ``hostedengine.io/storage-domain`` label value (label values stop at 63)."""
    return _shorten(domain_name, 63)


def storage_class_name(domain: StorageDomain) -> str:
    """The class disk claims name: the domain's own, or the named one for ``csi``."""
    if domain.spec.type == StorageType.CSI and domain.spec.csi is not None:
        return domain.spec.csi.storage_class_name
    return _shorten(f"{CHILD_PREFIX}{domain.metadata.name}", 253)


def owns_storage_class(domain: StorageDomain) -> bool:
    return domain.spec.type != StorageType.CSI


def _volume_name(domain_name: str, suffix: str = "") -> str:
    base = f"{CHILD_PREFIX}{domain_name}"
    return _shorten(f"{base}-{suffix}" if suffix else base, 253)


def child_labels(domain_name: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, STORAGE_DOMAIN_LABEL: label_value(domain_name)}


def domain_selector(domain_name: str) -> str:
    """Label selector of the domain's volumes."""
    return f"{STORAGE_DOMAIN_LABEL}={label_value(domain_name)}"


# --------------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class Problem:
    """Why a domain cannot be materialised as asked: a condition reason and a clear message."""

    reason: str
    message: str


def parse(body: Mapping[str, Any]) -> StorageDomain | str:
    """The domain, or the schema's complaint (fields named) as one line."""
    try:
        return StorageDomain.model_validate(dict(body))
    except ValidationError as exc:
        return describe_validation_error(exc, prefix="")


_LABEL_RE: Final = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$")
_NUMERIC_DOTTED: Final = re.compile(r"^[0-9.]+$")
_IQN_DATE: Final = re.compile(r"^iqn\.([0-9]{4})-([0-9]{2})\.")


def host_problem(value: str, path: str) -> str | None:
    """Why ``value`` is not a usable host name or IP address (None when it is)."""
    if value.startswith("[") or value.endswith("]") or ":" in value:
        inner = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return f"{path}: {value!r} is not a valid IPv6 address"
        return None
    if _NUMERIC_DOTTED.fullmatch(value):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return f"{path}: {value!r} is not a valid IPv4 address"
        return None
    if len(value) > 253:
        return f"{path}: host name longer than 253 characters"
    for label in value.rstrip(".").split("."):
        if not _LABEL_RE.fullmatch(label):
            return (
                f"{path}: {value!r} is not a valid host name (labels of 1-63 letters, digits "
                "and inner hyphens)"
            )
    return None


def nfs_path_problem(path: str) -> str | None:
    if any(c.isspace() for c in path):
        return f"spec.nfs.path: {path!r} contains whitespace"
    if "//" in path:
        return f"spec.nfs.path: {path!r} contains an empty segment ('//')"
    if path != "/" and path.endswith("/"):
        return f"spec.nfs.path: {path!r} ends with '/' (write {path.rstrip('/')!r})"
    if any(seg in (".", "..") for seg in path.split("/")):
        return f"spec.nfs.path: {path!r} contains '.' or '..' segments"
    return None


def _dupes(values: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for v in values:
        key = v.lower()
        if key in seen and v not in out:
            out.append(v)
        seen.add(key)
    return out


def connection_problems(spec: StorageDomainSpec) -> list[str]:
    """Connection strings that the schema's patterns let through but that cannot work."""
    out: list[str] = []
    if spec.nfs is not None:
        nfs = spec.nfs
        if (p := host_problem(nfs.server, "spec.nfs.server")) is not None:
            out.append(p)
        if (p := nfs_path_problem(nfs.path)) is not None:
            out.append(p)
        version_opts = [
            o for o in nfs.mount_options if o.split("=", 1)[0] in ("vers", "nfsvers")
        ]
        if version_opts and nfs.version != NfsVersion.AUTO:
            out.append(
                f"spec.nfs.mountOptions: {version_opts[0]!r} conflicts with "
                f"version {nfs.version.value}; set the version in one place"
            )
        if dupes := _dupes(nfs.mount_options):
            out.append(f"spec.nfs.mountOptions: {', '.join(dupes)} given twice")
    if spec.iscsi is not None:
        iscsi = spec.iscsi
        for i, portal in enumerate(iscsi.portals):
            if (p := host_problem(portal.address, f"spec.iscsi.portals[{i}].address")) is not None:
                out.append(p)
        if dupes := _dupes([p.endpoint() for p in iscsi.portals]):
            out.append(f"spec.iscsi.portals: {', '.join(dupes)} listed twice")
        for path, iqn in (("target", iscsi.target), ("initiatorName", iscsi.initiator_name)):
            m = _IQN_DATE.match(iqn or "")
            if m and not 1 <= int(m.group(2)) <= 12:
                out.append(f"spec.iscsi.{path}: {iqn!r} has month {m.group(2)} (01-12)")
    if spec.fc is not None and (dupes := _dupes(spec.fc.wwids)):
        out.append(f"spec.fc.wwids: {', '.join(dupes)} listed twice")
    if spec.glusterfs is not None:
        g = spec.glusterfs
        servers = [g.server, *g.backup_servers]
        for i, server in enumerate(servers):
            path = "spec.glusterfs.server" if i == 0 else f"spec.glusterfs.backupServers[{i - 1}]"
            if (p := host_problem(server, path)) is not None:
                out.append(p)
        if dupes := _dupes(servers):
            out.append(
                f"spec.glusterfs.backupServers: {', '.join(dupes)} repeats a server already listed"
            )
    return out


def capacity_problem(spec: StorageDomainSpec) -> str | None:
    """The seeds' minimum for the hosted-engine domain (74Gi)."""
    if spec.role != StorageRole.HOSTED_ENGINE:
        return None
    minimum = parse_quantity(HOSTED_ENGINE_MIN_CAPACITY)
    if spec.capacity is None or spec.capacity.value < minimum:
        return (
            f"spec.capacity: a hostedEngine domain needs at least {HOSTED_ENGINE_MIN_CAPACITY} "
            f"(got {spec.capacity or 'none'})"
        )
    return None


def replica_problem(spec: StorageDomainSpec) -> str | None:
    if spec.glusterfs is not None and spec.glusterfs.replica != 3:
        return (
            f"spec.glusterfs.replica: {spec.glusterfs.replica}; a Gluster volume for VM disks "
            "must be replica 3 (seed 002)"
        )
    return None


def chap_problem(spec: StorageDomainSpec) -> str | None:
    """Kubernetes' iSCSI volume source takes one Secret for session and discovery CHAP."""
    iscsi = spec.iscsi
    if iscsi is None or iscsi.chap_secret_ref is None or iscsi.discovery_chap_secret_ref is None:
        return None
    a, b = iscsi.chap_secret_ref, iscsi.discovery_chap_secret_ref
    if (a.namespace, a.name) != (b.namespace, b.name):
        return (
            "spec.iscsi: chapSecretRef and discoveryChapSecretRef must name the same Secret "
            f"({a.namespace}/{a.name} vs {b.namespace}/{b.name}): a Kubernetes iSCSI volume "
            "takes one Secret holding both key sets"
        )
    return None


def chap_secret_keys(spec: StorageDomainSpec) -> list[tuple[str, str, list[str]]]:
    """(namespace, name, required keys) of the CHAP Secrets the iSCSI volume will read."""
    iscsi = spec.iscsi
    if iscsi is None:
        return []
    wanted: dict[tuple[str, str], list[str]] = {}
    if iscsi.chap_secret_ref is not None:
        ref = iscsi.chap_secret_ref
        wanted.setdefault((ref.namespace, ref.name), []).extend(
            ["node.session.auth.username", "node.session.auth.password"]
        )
    if iscsi.discovery_chap_secret_ref is not None:
        ref = iscsi.discovery_chap_secret_ref
        wanted.setdefault((ref.namespace, ref.name), []).extend(
            ["discovery.sendtargets.auth.username", "discovery.sendtargets.auth.password"]
        )
    return [(ns, name, keys) for (ns, name), keys in wanted.items()]


def _seniority(domain: StorageDomain) -> tuple[str, int, int, str]:
    """Who keeps a contested resource: the domain created first; within the same second
    (timestamps have one-second resolution) the one already materialised, then the
    hosted-engine domain, then by name."""
    ts = domain.metadata.creation_timestamp
    materialised = domain.status.storage_class_name is not None and domain.status.state not in (
        StorageDomainState.PENDING,
        StorageDomainState.UNATTACHED,
    )
    return (
        ts.isoformat() if ts else "",
        0 if materialised else 1,
        0 if domain.spec.role == StorageRole.HOSTED_ENGINE else 1,
        domain.metadata.name,
    )


def _live(peers: Sequence[StorageDomain], own: str) -> list[StorageDomain]:
    return [
        p for p in peers if p.metadata.name != own and p.metadata.deletion_timestamp is None
    ]


def shared_target_problem(domain: StorageDomain, peers: Sequence[StorageDomain]) -> str | None:
    """The hosted-engine domain's iSCSI target is used by no other domain.

    Of two domains sharing a target where one is the hosted-engine domain, the junior one is
    refused (see :func:`_seniority`: the one created first keeps working), whichever role it
    has.
    """
    if domain.spec.iscsi is None:
        return None
    target = domain.spec.iscsi.target.lower()
    mine = _seniority(domain)
    for peer in _live(peers, domain.metadata.name):
        if peer.spec.iscsi is None or peer.spec.iscsi.target.lower() != target:
            continue
        he_involved = StorageRole.HOSTED_ENGINE in (domain.spec.role, peer.spec.role)
        if he_involved and _seniority(peer) < mine:
            owner = (
                f"the hosted-engine domain {peer.metadata.name}"
                if peer.spec.role == StorageRole.HOSTED_ENGINE
                else f"domain {peer.metadata.name}"
            )
            return (
                f"spec.iscsi.target: {domain.spec.iscsi.target} is already used by {owner}; "
                "the hosted-engine domain's target must be used by no other domain"
            )
    return None


def validate(domain: StorageDomain, peers: Sequence[StorageDomain]) -> list[Problem]:
    """Every rule beyond the schema, in a stable order; empty when the domain can be used."""
    out: list[Problem] = []
    if (p := capacity_problem(domain.spec)) is not None:
        out.append(Problem(REASON_CAPACITY_TOO_SMALL, p))
    out.extend(Problem(REASON_INVALID_CONNECTION, p) for p in connection_problems(domain.spec))
    if (p := replica_problem(domain.spec)) is not None:
        out.append(Problem(REASON_REPLICA_REQUIRED, p))
    if (p := chap_problem(domain.spec)) is not None:
        out.append(Problem(REASON_CHAP_SECRETS_DIFFER, p))
    if (p := shared_target_problem(domain, peers)) is not None:
        out.append(Problem(REASON_SHARED_TARGET, p))
    return out


def is_sole_data_domain(domain: StorageDomain, peers: Sequence[StorageDomain]) -> bool:
    """The hosted-engine domain with no data domain beside it (losing it means redeploying)."""
    if domain.spec.role != StorageRole.HOSTED_ENGINE:
        return False
    return not any(p.spec.role == StorageRole.DATA for p in _live(peers, domain.metadata.name))


# --------------------------------------------------------------------------------------------
# Rendering


def volume_layout(spec: StorageDomainSpec) -> tuple[str | None, list[str]]:
    """(volumeMode, accessModes) of the domain's volumes; (None, []) for csi (driver's)."""
    if spec.type in (StorageType.NFS, StorageType.GLUSTERFS):
        return "Filesystem", list(ACCESS_MODE_ORDER)
    if spec.type in (StorageType.ISCSI, StorageType.FC):
        fs = spec.iscsi.fs_type if spec.iscsi is not None else spec.fc.fs_type if spec.fc else None
        if fs is None:
            # A raw LUN may be attached on several nodes at once (live migration).
            return "Block", ["ReadWriteMany", "ReadWriteOnce"]
        return "Filesystem", ["ReadWriteOnce"]
    return None, []


def render_storage_class(domain: StorageDomain) -> Body | None:
    """The class dedicated to the domain (None for csi, whose class exists already)."""
    if not owns_storage_class(domain):
        return None
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": storage_class_name(domain),
            "labels": child_labels(domain.metadata.name),
            "annotations": {DOMAIN_ANNOTATION: domain.metadata.name},
        },
        "provisioner": NO_PROVISIONER,
        "reclaimPolicy": domain.spec.reclaim_policy.value,
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": False,
    }


def _nfs_mount_options(spec: StorageDomainSpec) -> list[str]:
    assert spec.nfs is not None
    version = {
        NfsVersion.AUTO: None,
        NfsVersion.V3: "nfsvers=3",
        NfsVersion.V4: "nfsvers=4",
        NfsVersion.V4_1: "nfsvers=4.1",
    }[spec.nfs.version]
    return ([version] if version else []) + list(spec.nfs.mount_options)


def _sources(domain: StorageDomain) -> list[tuple[str, Decimal, Body, list[str]]]:
    """(PV name, capacity in bytes, source fields, mountOptions) of each volume."""
    spec, name = domain.spec, domain.metadata.name
    capacity = spec.capacity.value if spec.capacity is not None else Decimal(0)
    if spec.nfs is not None:
        src = {"nfs": {"server": spec.nfs.server, "path": spec.nfs.path}}
        return [(_volume_name(name), capacity, src, _nfs_mount_options(spec))]
    if spec.iscsi is not None:
        iscsi = spec.iscsi
        portals = [p.endpoint() for p in iscsi.portals]
        block: Body = {"targetPortal": portals[0], "iqn": iscsi.target, "lun": iscsi.lun}
        if len(portals) > 1:
            block["portals"] = portals[1:]
        if iscsi.fs_type is not None:
            block["fsType"] = iscsi.fs_type.value
        if iscsi.initiator_name:
            block["initiatorName"] = iscsi.initiator_name
        ref = iscsi.chap_secret_ref or iscsi.discovery_chap_secret_ref
        if ref is not None:
            block["chapAuthSession"] = iscsi.chap_secret_ref is not None
            block["chapAuthDiscovery"] = iscsi.discovery_chap_secret_ref is not None
            block["secretRef"] = {"name": ref.name, "namespace": ref.namespace}
        return [(_volume_name(name), capacity, {"iscsi": block}, [])]
    if spec.fc is not None:
        each = (capacity / len(spec.fc.wwids)).to_integral_value(rounding="ROUND_FLOOR")
        out: list[tuple[str, Decimal, Body, list[str]]] = []
        for wwid in spec.fc.wwids:
            fc: Body = {"wwids": [wwid]}
            if spec.fc.fs_type is not None:
                fc["fsType"] = spec.fc.fs_type.value
            out.append((_volume_name(name, wwid[-12:].lower()), each, {"fc": fc}, []))
        return out
    if spec.glusterfs is not None:
        g = spec.glusterfs
        attributes = {"server": g.server, "share": f"/{g.volume}"}
        options = []
        if g.backup_servers:
            options.append(f"backup-volfile-servers={':'.join(g.backup_servers)}")
        gsrc: Body = {
            "csi": {
                "driver": g.csi_driver or DEFAULT_GLUSTER_CSI_DRIVER,
                "volumeHandle": f"{g.server}/{g.volume}",
                "volumeAttributes": attributes,
            }
        }
        return [(_volume_name(name), capacity, gsrc, options)]
    return []


def _spec_hash(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def render_volumes(domain: StorageDomain) -> list[Body]:
    """The domain's PersistentVolumes (empty for csi), each annotated with its spec hash."""
    volume_mode, access_modes = volume_layout(domain.spec)
    out = []
    for pv_name, capacity, source, mount_options in _sources(domain):
        spec: Body = {
            "capacity": {"storage": format_bytes(int(capacity))},
            "accessModes": access_modes,
            "volumeMode": volume_mode,
            "persistentVolumeReclaimPolicy": domain.spec.reclaim_policy.value,
            "storageClassName": storage_class_name(domain),
            **source,
        }
        if mount_options:
            spec["mountOptions"] = mount_options
        out.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": pv_name,
                    "labels": child_labels(domain.metadata.name),
                    "annotations": {
                        DOMAIN_ANNOTATION: domain.metadata.name,
                        SPEC_HASH_ANNOTATION: _spec_hash(spec),
                    },
                },
                "spec": spec,
            }
        )
    return out


def reservation_claim(domain_name: str) -> Body:
    """The claimRef that pre-binds a volume to a claim that never exists (no new disks)."""
    return {
        "kind": "PersistentVolumeClaim",
        "apiVersion": "v1",
        "namespace": RESERVATION_NAMESPACE,
        "name": _shorten(f"hostedengine-maintenance-{domain_name}", 253),
    }


def reserve_patch(domain_name: str, resource_version: str | None = None) -> Body:
    """Merge patch pre-binding a free volume. With the observed ``resource_version`` the API
    server refuses it (409) if the PV controller bound the volume meanwhile."""
    meta: Body = {"annotations": {RESERVED_ANNOTATION: RESERVED_VALUE}}
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {"metadata": meta, "spec": {"claimRef": reservation_claim(domain_name)}}


def release_patch(resource_version: str | None = None) -> Body:
    meta: Body = {"annotations": {RESERVED_ANNOTATION: None}}
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {"metadata": meta, "spec": {"claimRef": None}}


# --------------------------------------------------------------------------------------------
# Observed objects


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def is_reserved(pv: Mapping[str, Any]) -> bool:
    return (_meta(pv).get("annotations") or {}).get(RESERVED_ANNOTATION) == RESERVED_VALUE


def bound_claim(pv: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the claim holding ``pv`` (None when free or only reserved)."""
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    if not ref or is_reserved(pv):
        return None
    return str(ref.get("namespace") or ""), str(ref.get("name") or "")


def _bytes(value: Any) -> int:
    try:
        return int(parse_quantity(value)) if value is not None else 0
    except ValueError:
        return 0


def _pv_bytes(pv: Mapping[str, Any]) -> int:
    return _bytes(((pv.get("spec") or {}).get("capacity") or {}).get("storage"))


def _claim_request(pvc: Mapping[str, Any]) -> Any:
    return (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")


def claims_using(
    class_name: str, volumes: Sequence[Mapping[str, Any]], claims: Sequence[Mapping[str, Any]]
) -> list[ClaimRef]:
    """Claims of the domain's class, or bound to one of its volumes, sorted by namespace/name."""
    volume_names = {str(_meta(v).get("name")) for v in volumes}
    held = {bound_claim(v): str(_meta(v).get("name")) for v in volumes if bound_claim(v)}
    out: dict[tuple[str, str], ClaimRef] = {}
    for pvc in claims:
        m = _meta(pvc)
        key = (str(m.get("namespace") or ""), str(m.get("name") or ""))
        spec = pvc.get("spec") or {}
        volume = spec.get("volumeName")
        if spec.get("storageClassName") != class_name and volume not in volume_names:
            continue
        request = _claim_request(pvc)
        size = None
        if request is not None:
            try:
                parse_quantity(request)
                size = str(request)
            except ValueError:
                size = None
        out[key] = ClaimRef(
            namespace=key[0],
            name=key[1],
            size=size,
            volume_name=str(volume) if volume else held.get(key),
        )
    return [out[k] for k in sorted(out)]


@dataclass(frozen=True)
class EngineRef:
    """What the storage side needs to know about a HostedEngine (read leniently)."""

    namespace: str
    name: str
    storage_domain: str | None
    running: bool
    global_maintenance: bool

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _map(value: Any, key: str) -> Mapping[str, Any]:
    """``value[key]`` when both are mappings, else an empty mapping (lenient reads)."""
    if not isinstance(value, Mapping):
        return {}
    out = value.get(key)
    return out if isinstance(out, Mapping) else {}


def engine_ref(body: Mapping[str, Any]) -> EngineRef:
    m = _meta(body)
    status = _map(body, "status")
    disk = _map(_map(_map(body, "spec"), "vm"), "disk")
    running = (
        _map(status, "engine").get("vm") == "up"
        or _map(status, "vm").get("phase") in _RUNNING_VMI_PHASES
        or status.get("state") in _RUNNING_ENGINE_STATES
    )
    maintenance = (
        _map(status, "maintenance").get("mode") == "global"
        or status.get("state") == "GlobalMaintenance"
    )
    domain = disk.get("storageDomain")
    return EngineRef(
        namespace=str(m.get("namespace") or ""),
        name=str(m.get("name") or ""),
        storage_domain=str(domain) if domain else None,
        running=bool(running),
        global_maintenance=bool(maintenance),
    )


def maintenance_blockers(domain_name: str, engines: Sequence[EngineRef]) -> list[EngineRef]:
    """Engines whose disk is on the domain and that run outside global maintenance."""
    return [
        e
        for e in engines
        if e.storage_domain == domain_name and e.running and not e.global_maintenance
    ]


# --------------------------------------------------------------------------------------------
# Volume plan


@dataclass
class VolumePlan:
    """What to do with the domain's PersistentVolumes (names, or bodies to create)."""

    create: list[Body] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    reserve: list[str] = field(default_factory=list)
    release: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    """resourceVersion of each existing volume as observed (preconditions of the patches)."""

    @property
    def empty(self) -> bool:
        return not (self.create or self.delete or self.reserve or self.release)


def plan_volumes(
    domain_name: str,
    desired: Sequence[Body],
    existing: Sequence[Mapping[str, Any]],
    *,
    maintenance: bool,
) -> VolumePlan:
    """Create missing volumes, replace free ones whose spec changed (delete now, create on the
    next pass), keep bound ones (reported as pending), and reserve/release free ones for
    maintenance. Volumes being deleted are left alone."""
    plan = VolumePlan()
    by_name = {str(_meta(v).get("name")): v for v in existing}
    plan.versions = {
        n: str(_meta(v).get("resourceVersion"))
        for n, v in by_name.items()
        if _meta(v).get("resourceVersion")
    }
    wanted = {str(_meta(d).get("name")) for d in desired}
    for body in desired:
        name = str(body["metadata"]["name"])
        have = by_name.get(name)
        if have is None:
            if maintenance:
                body = {
                    **body,
                    "metadata": {
                        **body["metadata"],
                        "annotations": {
                            **body["metadata"]["annotations"],
                            RESERVED_ANNOTATION: RESERVED_VALUE,
                        },
                    },
                    "spec": {**body["spec"], "claimRef": reservation_claim(domain_name)},
                }
            plan.create.append(body)
            continue
        if _meta(have).get("deletionTimestamp"):
            continue
        same = (_meta(have).get("annotations") or {}).get(SPEC_HASH_ANNOTATION) == body[
            "metadata"
        ]["annotations"][SPEC_HASH_ANNOTATION]
        held = bound_claim(have) is not None
        if not same:
            (plan.pending if held else plan.delete).append(name)
            continue
        if held:
            continue
        if maintenance and not is_reserved(have):
            plan.reserve.append(name)
        elif not maintenance and is_reserved(have):
            plan.release.append(name)
    for name, have in sorted(by_name.items()):
        if name in wanted or _meta(have).get("deletionTimestamp"):
            continue
        (plan.pending if bound_claim(have) is not None else plan.delete).append(name)
    return plan


# --------------------------------------------------------------------------------------------
# Probe and status


@dataclass(frozen=True)
class EndpointResult:
    endpoint: str
    reachable: bool
    error: str = ""


def probe_endpoints(spec: StorageDomainSpec) -> list[tuple[str, int]]:
    """(host, port) to probe: NFS 2049, each iSCSI portal, glusterd 24007 on each server."""
    if spec.nfs is not None:
        return [(spec.nfs.server, NFS_PORT)]
    if spec.iscsi is not None:
        return [(p.address, p.port) for p in spec.iscsi.portals]
    if spec.glusterfs is not None:
        return [(s, GLUSTERD_PORT) for s in [spec.glusterfs.server, *spec.glusterfs.backup_servers]]
    return []


def probe_summary(results: Sequence[EndpointResult], now: datetime) -> tuple[ProbeStatus, str]:
    """The probe status and the Reachable condition's reason."""
    if not results:
        none = ProbeStatus(checked_at=now, message="no network endpoint to probe")
        return none, REASON_NOT_PROBED
    up = [r for r in results if r.reachable]
    down = [r for r in results if not r.reachable]
    failures = "; ".join(f"{r.endpoint}: {r.error or 'no answer'}" for r in down)
    if not down:
        names = ", ".join(r.endpoint for r in up)
        return (
            ProbeStatus(endpoint=up[0].endpoint, reachable=True, checked_at=now,
                        message=f"{names} answered"),
            Reason.ENDPOINT_REACHABLE,
        )
    if up:
        return (
            ProbeStatus(endpoint=down[0].endpoint, reachable=True, checked_at=now,
                        message=f"{len(up)} of {len(results)} endpoints answer; {failures}"),
            REASON_PARTIALLY_REACHABLE,
        )
    return (
        ProbeStatus(endpoint=down[0].endpoint, reachable=False, checked_at=now, message=failures),
        Reason.ENDPOINT_UNREACHABLE,
    )


def compute_state(
    *, deleting: bool, materialised: bool, maintenance: bool, reachable: bool | None
) -> StorageDomainState:
    """Locked while deletion is held; Unattached until claims can use it; Maintenance; Inactive
    when no endpoint answers; else Active."""
    if deleting:
        return StorageDomainState.LOCKED
    if not materialised:
        return StorageDomainState.UNATTACHED
    if maintenance:
        return StorageDomainState.MAINTENANCE
    if reachable is False:
        return StorageDomainState.INACTIVE
    return StorageDomainState.ACTIVE


@dataclass(frozen=True)
class Observed:
    """Everything one reconcile of a domain looked at."""

    volumes: Sequence[Mapping[str, Any]] = ()
    storage_class: Mapping[str, Any] | None = None
    claims: Sequence[Mapping[str, Any]] = ()
    engines: Sequence[Mapping[str, Any]] = ()
    peers: Sequence[Mapping[str, Any]] = ()
    probe: Sequence[EndpointResult] | None = None
    """None: no probe this time (keep the last result)."""
    missing_secrets: Sequence[str] = ()


@dataclass(frozen=True)
class Notice:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Decision:
    status: StorageDomainStatus
    volumes: VolumePlan = field(default_factory=VolumePlan)
    storage_class: Body | None = None
    """A class to create (absent now), else None."""
    events: list[Notice] = field(default_factory=list)


def _parse_peers(peers: Sequence[Mapping[str, Any]]) -> list[StorageDomain]:
    out = []
    for body in peers:
        parsed = parse(body)
        if isinstance(parsed, StorageDomain):
            out.append(parsed)
    return out


def current_status(body: Mapping[str, Any]) -> StorageDomainStatus:
    """The status on the object; the parts that do not parse are dropped."""
    raw = dict(body.get("status") or {})
    try:
        return StorageDomainStatus.model_validate(raw)
    except ValidationError:
        conditions = []
        for c in raw.get("conditions") or []:
            try:
                conditions.append(Condition.model_validate(c))
            except ValidationError:
                continue
        try:
            state = StorageDomainState(str(raw.get("state")))
        except ValueError:
            state = StorageDomainState.PENDING
        return StorageDomainStatus(conditions=conditions, state=state)


_WARNING_WHEN: Final[dict[str, ConditionStatus]] = {
    ConditionType.READY: ConditionStatus.FALSE,
    ConditionType.REACHABLE: ConditionStatus.FALSE,
    ConditionType.SOLE_DATA_DOMAIN: ConditionStatus.TRUE,
    ConditionType.DELETION_BLOCKED: ConditionStatus.TRUE,
}


def transition_events(old: Sequence[Condition], new: Sequence[Condition]) -> list[Notice]:
    """One Event per condition that changed status or reason (Warning for the bad side, and
    also when a Warning's message changed), named after the new reason."""
    out = []
    for cond in new:
        before = get_condition(old, cond.type)
        warning = _WARNING_WHEN.get(cond.type) == cond.status or (
            cond.type == ConditionType.MAINTENANCE and cond.reason == Reason.MAINTENANCE_REFUSED
        )
        changed = before is None or (before.status, before.reason) != (cond.status, cond.reason)
        if not changed and warning and before is not None and before.message != cond.message:
            changed = True
        if changed and not (before is None and cond.status == ConditionStatus.UNKNOWN):
            out.append(Notice("Warning" if warning else "Normal", cond.reason, cond.message))
    return out


def _fmt(n: int) -> str:
    return format_bytes(max(n, 0))


def decide(
    body: Mapping[str, Any], observed: Observed, now: datetime
) -> Decision:
    """The whole reconcile of a live (not deleted) domain: objects to create or change, the new
    status and the Events to post. Bad input keeps the last good state."""
    old = current_status(body)
    generation = _meta(body).get("generation")
    parsed = parse(body)
    status = old.model_copy(deep=True)
    status.observed_generation = generation

    def cond(type_: str, value: ConditionStatus | bool, reason: str, message: str) -> None:
        status.conditions = set_condition(
            status.conditions, type_, value, reason, message,
            observed_generation=generation, now=now,
        )

    if isinstance(parsed, str):
        cond(ConditionType.READY, False, Reason.INVALID_SPEC, parsed)
        return Decision(status, events=transition_events(old.conditions, status.conditions))
    domain = parsed
    spec = domain.spec
    peers = _parse_peers(observed.peers)
    problems = validate(domain, peers)
    if observed.missing_secrets:
        problems.append(Problem(REASON_SECRET_MISSING, "; ".join(observed.missing_secrets)))
    if problems:
        first = problems[0]
        cond(ConditionType.READY, False, first.reason, "; ".join(p.message for p in problems))
        return Decision(status, events=transition_events(old.conditions, status.conditions))

    class_name = storage_class_name(domain)
    volume_mode, access_modes = volume_layout(spec)
    status.storage_class_name = class_name
    status.volume_mode = volume_mode
    status.access_modes = access_modes

    # maintenance: entering is refused while an engine runs on the domain outside global
    # maintenance; once in, it stays until the spec says otherwise
    engines = [engine_ref(e) for e in observed.engines]
    blockers = maintenance_blockers(domain.metadata.name, engines)
    in_maintenance = old.state == StorageDomainState.MAINTENANCE
    maintenance = spec.maintenance and (in_maintenance or not blockers)

    desired_class = render_storage_class(domain)
    create_class = desired_class if observed.storage_class is None and desired_class else None
    desired = render_volumes(domain)
    plan = plan_volumes(domain.metadata.name, desired, observed.volumes, maintenance=maintenance)

    claims = claims_using(class_name, observed.volumes, observed.claims)
    status.claims = claims
    status.persistent_volumes = sorted(str(b["metadata"]["name"]) for b in desired)
    requested = sum(_bytes(c.size) for c in claims)
    status.requested = Quantity(_fmt(requested))
    status.capacity = spec.capacity
    if spec.type == StorageType.CSI:
        status.free = (
            Quantity(_fmt(int(spec.capacity.value) - requested))
            if spec.capacity is not None
            else None
        )
    else:
        free_volumes = [v for v in observed.volumes if bound_claim(v) is None]
        status.free = Quantity(_fmt(sum(_pv_bytes(v) for v in free_volumes)))

    # materialised: the class exists (ours or the named one) and every desired volume exists
    existing = {str(_meta(v).get("name")) for v in observed.volumes}
    existing |= {str(b["metadata"]["name"]) for b in plan.create}
    existing -= set(plan.delete)
    materialised = (observed.storage_class is not None or create_class is not None) and all(
        str(d["metadata"]["name"]) in existing for d in desired
    )
    if spec.type == StorageType.CSI and observed.storage_class is None:
        materialised = False
        cond(
            ConditionType.READY, False, REASON_CLASS_NOT_FOUND,
            f"StorageClass {class_name} does not exist; claims cannot be provisioned",
        )
    elif plan.pending:
        cond(
            ConditionType.READY, True, REASON_SPEC_CHANGE_PENDING,
            f"volumes {', '.join(plan.pending)} are held by claims and keep their old spec "
            "until released",
        )
    else:
        kinds = (
            f"{len(desired)} PersistentVolume(s) and StorageClass {class_name}"
            if desired
            else f"StorageClass {class_name} (provisioned by its CSI driver)"
        )
        cond(ConditionType.READY, True, REASON_ACTIVE, f"{kinds}; {len(claims)} claim(s)")

    # reachability
    reachable: bool | None = old.probe.reachable
    if observed.probe is not None:
        probe, reason = probe_summary(observed.probe, now)
        status.probe = probe
        reachable = probe.reachable
        value = (
            ConditionStatus.UNKNOWN if reachable is None
            else ConditionStatus.TRUE if reachable else ConditionStatus.FALSE
        )
        cond(ConditionType.REACHABLE, value, reason, probe.message or "")
    elif get_condition(status.conditions, ConditionType.REACHABLE) is None:
        cond(ConditionType.REACHABLE, ConditionStatus.UNKNOWN, Reason.PENDING, "not probed yet")

    # sole data domain
    if spec.role == StorageRole.HOSTED_ENGINE:
        if is_sole_data_domain(domain, peers):
            cond(
                ConditionType.SOLE_DATA_DOMAIN, True, REASON_SOLE_DATA_DOMAIN,
                "the hosted-engine domain is the only data domain: losing it means "
                "redeploying the engine; add a data domain",
            )
        else:
            cond(ConditionType.SOLE_DATA_DOMAIN, False, REASON_OTHER_DATA_DOMAINS,
                 "other data domains exist")
    else:
        status.conditions = remove_condition(status.conditions, ConditionType.SOLE_DATA_DOMAIN)

    # maintenance condition
    if spec.maintenance and not maintenance:
        names = ", ".join(e.key for e in blockers)
        cond(
            ConditionType.MAINTENANCE, False, Reason.MAINTENANCE_REFUSED,
            f"the disk of HostedEngine {names} is on this domain and the engine runs outside "
            "global maintenance; put the engine into global maintenance first",
        )
    elif maintenance and spec.type == StorageType.CSI:
        cond(
            ConditionType.MAINTENANCE, True, REASON_MAINTENANCE_ADVISORY,
            f"in maintenance; the CSI driver of {class_name} still provisions new claims "
            "(the operator owns no volume of a csi domain)",
        )
    elif maintenance:
        cond(ConditionType.MAINTENANCE, True, REASON_IN_MAINTENANCE,
             "no new disks: free volumes are reserved")
    else:
        cond(ConditionType.MAINTENANCE, False, Reason.NOT_IN_MAINTENANCE, "not in maintenance")
    status.conditions = remove_condition(status.conditions, ConditionType.DELETION_BLOCKED)

    status.state = compute_state(
        deleting=False, materialised=materialised, maintenance=maintenance, reachable=reachable
    )
    status.message = _message(status)
    events = transition_events(old.conditions, status.conditions)
    if old.state != status.state:
        events.append(Notice("Normal", f"State{status.state.value}",
                             f"state {old.state.value} -> {status.state.value}"))
    return Decision(status, plan, create_class, events)


def _message(status: StorageDomainStatus) -> str:
    ready = get_condition(status.conditions, ConditionType.READY)
    return ready.message[:1024] if ready is not None else ""


@dataclass
class DeletionDecision:
    release: bool
    status: StorageDomainStatus | None
    storage_class_name: str = ""
    """The class claims of the domain name (to route their watch events while held)."""
    delete_volumes: list[str] = field(default_factory=list)
    delete_storage_class: str | None = None
    events: list[Notice] = field(default_factory=list)


def decide_deletion(body: Mapping[str, Any], observed: Observed, now: datetime) -> DeletionDecision:
    """Deletion is held while claims use the domain (the users listed in a condition); then
    the domain's own volumes and class are deleted and the finalizer released."""
    old = current_status(body)
    generation = _meta(body).get("generation")
    parsed = parse(body)
    name = str(_meta(body).get("name") or "")
    own_class: str | None
    if isinstance(parsed, StorageDomain):
        class_name = storage_class_name(parsed)
        own_class = class_name if owns_storage_class(parsed) else None
    else:
        class_name = old.storage_class_name or _shorten(f"{CHILD_PREFIX}{name}", 253)
        own_class = class_name if class_name.startswith(CHILD_PREFIX) else None
    claims = claims_using(class_name, observed.volumes, observed.claims)
    if claims:
        status = old.model_copy(deep=True)
        users = ", ".join(f"{c.namespace}/{c.name}" for c in claims)
        status.conditions = set_condition(
            status.conditions, ConditionType.DELETION_BLOCKED, True, Reason.IN_USE,
            f"deletion waits until no claim uses the domain: {users}",
            observed_generation=generation, now=now,
        )
        status.claims = claims
        status.state = StorageDomainState.LOCKED
        status.message = f"being deleted; in use by {users}"[:1024]
        events = transition_events(old.conditions, status.conditions)
        return DeletionDecision(False, status, class_name, events=events)
    volumes = sorted(str(_meta(v).get("name")) for v in observed.volumes)
    storage_class = own_class if observed.storage_class is not None else None
    events = [Notice("Normal", REASON_DELETION_PENDING,
                     f"no claim uses the domain; deleting {len(volumes)} volume(s)")]
    return DeletionDecision(True, None, class_name, volumes, storage_class, events)
