"""StorageDomain (cluster-scoped, short name ``sd``): where VM disks live.

``type`` picks exactly one matching block (nfs, iscsi, fc, glusterfs, csi). For nfs, iscsi and
fc the operator materialises PersistentVolumes and a StorageClass dedicated to the domain; for
glusterfs it goes through a CSI driver (the in-tree plugin is gone); for csi it uses the class.
The hosted-engine domain needs at least 74Gi (seed 002, ch. 2).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from hosted_engine.models.base import (
    AGE_COLUMN,
    AbsolutePath,
    CelRule,
    ClusterSecretRef,
    Duration,
    DurationRange,
    HostAddress,
    Iqn,
    LongText,
    ObjectName,
    Port,
    PrinterColumn,
    Quantity,
    Resource,
    ResourceInfo,
    Scope,
    SpecModel,
    StatusModel,
    UniqueItems,
    Wwid,
    cel_rules,
    duration_field,
    parse_quantity,
    quantity_cel,
)
from hosted_engine.models.conditions import ObjectStatus

HOSTED_ENGINE_MIN_CAPACITY = "74Gi"
"""The seeds' minimum size of the hosted-engine storage domain."""
DEFAULT_ISCSI_PORT = 3260
STORAGE_DOMAIN_LABEL = "hostedengine.io/storage-domain"
"""Label on the PVs and the StorageClass materialised for a domain (value: the domain name)."""


class StorageType(StrEnum):
    NFS = "nfs"
    ISCSI = "iscsi"
    FC = "fc"
    GLUSTERFS = "glusterfs"
    CSI = "csi"


class StorageRole(StrEnum):
    HOSTED_ENGINE = "hostedEngine"
    DATA = "data"
    ISO = "iso"
    EXPORT = "export"


class ReclaimPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class NfsVersion(StrEnum):
    AUTO = "auto"
    V3 = "v3"
    V4 = "v4"
    V4_1 = "v4_1"


class FsType(StrEnum):
    EXT4 = "ext4"
    XFS = "xfs"


MountOption = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][-A-Za-z0-9_.=,:/]*$", max_length=128)]


class NfsSource(SpecModel):
    """An NFS export (owned by uid/gid 36, vdsm:kvm, as oVirt expects)."""

    server: HostAddress = Field(description="NFS server name or address.")
    path: AbsolutePath = Field(description="Exported path, e.g. /exports/he.")
    version: NfsVersion = Field(default=NfsVersion.AUTO, description="auto, v3, v4 or v4_1.")
    mount_options: list[MountOption] = Field(
        default_factory=list, max_length=32, description="Extra NFS mount options."
    )


class IscsiPortal(SpecModel):
    """An iSCSI portal."""

    address: HostAddress = Field(description="Portal host name or address.")
    port: Port = Field(default=DEFAULT_ISCSI_PORT, description="Portal port.")

    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


class IscsiSource(SpecModel):
    """An iSCSI LUN."""

    portals: list[IscsiPortal] = Field(
        min_length=1, max_length=8, description="Portals (port 3260 by default)."
    )
    target: Iqn = Field(description="Target IQN.")
    lun: Annotated[int, Field(ge=0, le=16383)] = Field(default=0, description="LUN number.")
    initiator_name: Iqn | None = Field(default=None, description="Initiator IQN to log in as.")
    chap_secret_ref: ClusterSecretRef | None = Field(
        default=None,
        description="Session CHAP credentials (keys node.session.auth.username/password).",
    )
    discovery_chap_secret_ref: ClusterSecretRef | None = Field(
        default=None,
        description="Discovery CHAP credentials (keys discovery.sendtargets.auth.username/...).",
    )
    fs_type: FsType | None = Field(
        default=None, description="Filesystem; unset: the LUN is a raw block device."
    )


class FcSource(SpecModel):
    """Fibre Channel LUNs."""

    wwids: Annotated[list[Wwid], UniqueItems()] = Field(
        min_length=1, max_length=64, description="LUN WWIDs."
    )
    fs_type: FsType | None = Field(
        default=None, description="Filesystem; unset: the LUN is a raw block device."
    )


class GlusterSource(SpecModel):
    """A Gluster volume, served through a CSI driver."""

    server: HostAddress = Field(description="Gluster server.")
    volume: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][-A-Za-z0-9_.]*$", max_length=128)] = Field(
        description="Gluster volume name."
    )
    backup_servers: Annotated[list[HostAddress], UniqueItems()] = Field(
        default_factory=list, max_length=8, description="Fallback volfile servers."
    )
    replica: Annotated[int, Field(ge=3, le=3)] = Field(
        default=3, description="Replica count: 3 is required for VM storage (seed 002)."
    )
    csi_driver: ObjectName | None = Field(
        default=None, description="CSI driver serving Gluster (the in-tree plugin is gone)."
    )


class CsiSource(SpecModel):
    """An existing CSI StorageClass."""

    storage_class_name: ObjectName = Field(description="An existing StorageClass.")


_BLOCKS = ("nfs", "iscsi", "fc", "glusterfs", "csi")


def _block_rule(block: str) -> CelRule:
    return CelRule(
        rule=f"self.type == '{block}' ? has(self.{block}) : !has(self.{block})",
        message=f"{block} must be set when type is {block}, and only then",
        field_path=f".{block}",
    )


class StorageDomainSpec(SpecModel):
    """A storage domain: exactly the block matching ``type``."""

    type: StorageType = Field(description="nfs, iscsi, fc, glusterfs or csi (immutable).")
    role: StorageRole = Field(
        default=StorageRole.DATA, description="hostedEngine, data, iso or export."
    )
    capacity: Quantity | None = Field(
        default=None,
        description="Size of the domain; required except for csi; at least 74Gi for "
        "the hostedEngine role.",
    )
    reclaim_policy: ReclaimPolicy = Field(
        default=ReclaimPolicy.RETAIN,
        description="What happens to the materialised volumes when released.",
    )
    maintenance: bool = Field(default=False, description="No new disks on the domain while true.")
    probe_interval: Annotated[Duration, DurationRange(minimum="1s", maximum="1h")] = duration_field(
        "60s", "Interval of the TCP reachability probe of the storage endpoints"
    )
    nfs: NfsSource | None = None
    iscsi: IscsiSource | None = None
    fc: FcSource | None = None
    glusterfs: GlusterSource | None = None
    csi: CsiSource | None = None

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            *(_block_rule(b) for b in _BLOCKS),
            CelRule(rule="self.type == oldSelf.type", message="type is immutable"),
            CelRule(
                rule="self.type == 'csi' || has(self.capacity)",
                message="capacity is required for nfs, iscsi, fc and glusterfs",
                field_path=".capacity",
            ),
            CelRule(
                rule="!has(self.role) || self.role != 'hostedEngine' || (has(self.capacity) && "
                f"{quantity_cel('self.capacity')}.compareTo("
                f"quantity('{HOSTED_ENGINE_MIN_CAPACITY}')) >= 0)",
                message=f"a hostedEngine domain needs a capacity of at least "
                f"{HOSTED_ENGINE_MIN_CAPACITY}",
                field_path=".capacity",
            ),
        )
    )

    @model_validator(mode="after")
    def _coherent(self) -> StorageDomainSpec:
        for block in _BLOCKS:
            present = getattr(self, block) is not None
            if present != (self.type == block):
                raise ValueError(f"{block} must be set when type is {block}, and only then")
        if self.type != StorageType.CSI and self.capacity is None:
            raise ValueError("capacity is required for nfs, iscsi, fc and glusterfs")
        if self.role == StorageRole.HOSTED_ENGINE:
            minimum = parse_quantity(HOSTED_ENGINE_MIN_CAPACITY)
            if self.capacity is None or self.capacity.value < minimum:
                raise ValueError(
                    f"a hostedEngine domain needs a capacity of at least "
                    f"{HOSTED_ENGINE_MIN_CAPACITY} (got {self.capacity or 'none'})"
                )
        return self

    def endpoints(self) -> list[tuple[str, int]]:
        """(host, port) of the storage endpoints to probe for reachability."""
        if self.nfs is not None:
            return [(self.nfs.server, 2049)]
        if self.iscsi is not None:
            return [(p.address, p.port) for p in self.iscsi.portals]
        if self.glusterfs is not None:
            servers = [self.glusterfs.server, *self.glusterfs.backup_servers]
            return [(s, 24007) for s in servers]
        return []


# --- status -----------------------------------------------------------------------------------


class StorageDomainState(StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    UNATTACHED = "Unattached"
    MAINTENANCE = "Maintenance"
    LOCKED = "Locked"
    INACTIVE = "Inactive"


class ClaimRef(StatusModel):
    namespace: str = Field(max_length=63)
    name: str = Field(max_length=253)
    size: Quantity | None = None
    volume_name: str | None = Field(default=None, max_length=253)


class ProbeStatus(StatusModel):
    endpoint: str | None = Field(default=None, max_length=300)
    reachable: bool | None = None
    checked_at: datetime | None = None
    message: LongText | None = None


class StorageDomainStatus(ObjectStatus):
    state: StorageDomainState = StorageDomainState.PENDING
    capacity: Quantity | None = None
    requested: Quantity | None = None
    free: Quantity | None = None
    storage_class_name: str | None = Field(
        default=None, max_length=253, description="The StorageClass disk claims must name."
    )
    volume_mode: str | None = Field(
        default=None, max_length=16, description="The volumeMode disk claims must ask for."
    )
    access_modes: list[Annotated[str, Field(max_length=32)]] = Field(
        default_factory=list, max_length=4, description="Access modes the volumes offer."
    )
    persistent_volumes: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list, max_length=1024
    )
    claims: list[ClaimRef] = Field(default_factory=list, max_length=1024)
    probe: ProbeStatus = Field(default_factory=ProbeStatus)
    message: LongText | None = None


class StorageDomain(Resource):
    resource = ResourceInfo(
        kind="StorageDomain",
        plural="storagedomains",
        short_names=("sd",),
        scope=Scope.CLUSTER,
        description="Storage for VM disks: NFS, iSCSI, FC, Gluster or a CSI StorageClass.",
        printer_columns=(
            PrinterColumn("Type", ".spec.type"),
            PrinterColumn("Role", ".spec.role"),
            PrinterColumn("State", ".status.state"),
            PrinterColumn("Capacity", ".status.capacity"),
            PrinterColumn("Free", ".status.free"),
            PrinterColumn("StorageClass", ".status.storageClassName", priority=1),
            AGE_COLUMN,
        ),
    )

    spec: StorageDomainSpec
    status: StorageDomainStatus = Field(default_factory=StorageDomainStatus)
