"""pydantic v2 models of the custom resources; the CRDs are generated from them.

One module per kind (``hostedengine``, ``host``, ``storagedomain``, ``backup``, ``restore``,
``rollingmaintenance``), shared types in ``base`` and ``conditions``, the generator in
``crdgen``. Parse a kopf body with ``HostedEngine.model_validate(dict(body))``; dump a status
for a patch with ``status.to_dict()`` (camelCase, no ``None``).
"""

from hosted_engine.models.backup import Backup, BackupSpec, BackupStatus
from hosted_engine.models.base import (
    Duration,
    Quantity,
    Resource,
    describe_validation_error,
    parse_duration,
    parse_quantity,
    validation_messages,
)
from hosted_engine.models.conditions import (
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    get_condition,
    set_condition,
)
from hosted_engine.models.host import Host, HostSpec, HostStatus
from hosted_engine.models.hostedengine import HostedEngine, HostedEngineSpec, HostedEngineStatus
from hosted_engine.models.restore import Restore, RestoreSpec, RestoreStatus
from hosted_engine.models.rollingmaintenance import (
    RollingMaintenance,
    RollingMaintenanceSpec,
    RollingMaintenanceStatus,
)
from hosted_engine.models.storagedomain import StorageDomain, StorageDomainSpec, StorageDomainStatus

KINDS: tuple[type[Resource], ...] = (
    HostedEngine,
    Host,
    StorageDomain,
    Backup,
    Restore,
    RollingMaintenance,
)

__all__ = [
    "KINDS",
    "Backup",
    "BackupSpec",
    "BackupStatus",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "Duration",
    "Host",
    "HostSpec",
    "HostStatus",
    "HostedEngine",
    "HostedEngineSpec",
    "HostedEngineStatus",
    "Quantity",
    "Reason",
    "Resource",
    "Restore",
    "RestoreSpec",
    "RestoreStatus",
    "RollingMaintenance",
    "RollingMaintenanceSpec",
    "RollingMaintenanceStatus",
    "StorageDomain",
    "StorageDomainSpec",
    "StorageDomainStatus",
    "describe_validation_error",
    "get_condition",
    "parse_duration",
    "parse_quantity",
    "set_condition",
    "validation_messages",
]
