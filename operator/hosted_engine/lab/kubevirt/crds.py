"""KubeVirt's, CDI's, snapshot and export CustomResourceDefinitions, and the KubeVirt CR.

The schemas type the fields the operator and the simulators rely on (so the API server validates
them and `kubectl explain` shows them) and keep the rest of KubeVirt's large API open with
``x-kubernetes-preserve-unknown-fields``. Printer columns follow KubeVirt's own CRDs
(pkg/virt-operator/resource/generate/components/crds.go).
"""

from __future__ import annotations

from typing import Any

from hosted_engine.lab.kubevirt import (
    CDI_GROUP,
    EXPORT_GROUP,
    KUBEVIRT_CR_NAME,
    KUBEVIRT_GROUP,
    KUBEVIRT_NAMESPACE,
    SNAPSHOT_GROUP,
)

Schema = dict[str, Any]

RUN_STRATEGIES = ["Always", "Halted", "Manual", "RerunOnFailure", "Once", "WaitAsReceiver"]
EVICTION_STRATEGIES = ["None", "LiveMigrate", "LiveMigrateIfPossible", "External"]
VMI_PHASES = ["", "Pending", "Scheduling", "Scheduled", "Running", "Succeeded", "Failed", "Unknown"]
MIGRATION_PHASES = [
    "",
    "Pending",
    "Scheduling",
    "Scheduled",
    "PreparingTarget",
    "TargetReady",
    "Running",
    "Succeeded",
    "Failed",
]

# KubeVirt's defaults (pkg/virt-config/virt-config.go), see k8s-anchors §1.4.
DEFAULT_MIGRATIONS: dict[str, Any] = {
    "parallelMigrationsPerCluster": 5,
    "parallelOutboundMigrationsPerNode": 2,
    "bandwidthPerMigration": "0Mi",
    "completionTimeoutPerGiB": 150,
    "progressTimeout": 150,
    "allowAutoConverge": False,
    "allowPostCopy": False,
}


def _open(properties: dict[str, Schema] | None = None, **extra: Any) -> Schema:
    """An object schema with typed ``properties`` that keeps unknown fields."""
    schema: Schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if properties:
        schema["properties"] = properties
    schema.update(extra)
    return schema


def _str(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def _int(**extra: Any) -> Schema:
    return {"type": "integer", **extra}


def _bool() -> Schema:
    return {"type": "boolean"}


def _int_or_str() -> Schema:
    return {"x-kubernetes-int-or-string": True}


def _list(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _string_map() -> Schema:
    return {"type": "object", "additionalProperties": {"type": "string"}}


CONDITION: Schema = _open(
    {
        "type": _str(),
        "status": _str(),
        "reason": _str(),
        "message": _str(),
        "lastTransitionTime": {"type": "string", "nullable": True},
        "lastProbeTime": {"type": "string", "nullable": True},
    },
    required=["type", "status"],
)
CONDITIONS: Schema = _list(CONDITION)

RESOURCES: Schema = _open(
    {
        "requests": {"type": "object", "additionalProperties": _int_or_str()},
        "limits": {"type": "object", "additionalProperties": _int_or_str()},
    }
)

DOMAIN: Schema = _open(
    {
        "cpu": _open({"cores": _int(), "sockets": _int(), "threads": _int()}),
        "memory": _open({"guest": _int_or_str()}),
        "resources": RESOURCES,
        "devices": _open(
            {
                "disks": _list(_open({"name": _str()}, required=["name"])),
                "interfaces": _list(
                    _open(
                        {
                            "name": _str(),
                            "masquerade": _open(),
                            "bridge": _open(),
                            "sriov": _open(),
                        },
                        required=["name"],
                    )
                ),
                "hostDevices": _list(_open({"name": _str(), "deviceName": _str()})),
                "gpus": _list(_open({"name": _str(), "deviceName": _str()})),
            }
        ),
    }
)

VOLUME: Schema = _open(
    {
        "name": _str(),
        "persistentVolumeClaim": _open({"claimName": _str()}),
        "dataVolume": _open({"name": _str()}),
        "containerDisk": _open({"image": _str()}),
        "cloudInitNoCloud": _open(),
        "emptyDisk": _open(),
    },
    required=["name"],
)

VMI_SPEC: Schema = _open(
    {
        "domain": DOMAIN,
        "volumes": _list(VOLUME),
        "networks": _list(_open({"name": _str(), "pod": _open(), "multus": _open()})),
        "nodeSelector": _string_map(),
        "affinity": _open(),
        "tolerations": _list(_open()),
        "evictionStrategy": _str(enum=EVICTION_STRATEGIES),
        "terminationGracePeriodSeconds": _int(),
        "hostname": _str(),
        "priorityClassName": _str(),
    },
    required=["domain"],
)

MIGRATION_STATE: Schema = _open(
    {
        "migrationUid": _str(),
        "sourceNode": _str(),
        "sourcePod": _str(),
        "targetNode": _str(),
        "targetPod": _str(),
        "startTimestamp": {"type": "string", "nullable": True},
        "endTimestamp": {"type": "string", "nullable": True},
        "completed": _bool(),
        "failed": _bool(),
        "failureReason": _str(),
        "abortRequested": _bool(),
        "abortStatus": _str(),
        "mode": _str(),
    }
)

VMI_STATUS: Schema = _open(
    {
        "phase": _str(),
        "reason": _str(),
        "nodeName": _str(),
        "conditions": CONDITIONS,
        "interfaces": _list(
            _open({"name": _str(), "ipAddress": _str(), "ipAddresses": _list(_str())})
        ),
        "activePods": _string_map(),
        "evacuationNodeName": _str(),
        "migrationState": MIGRATION_STATE,
        "migrationMethod": _str(),
        "phaseTransitionTimestamps": _list(
            _open({"phase": _str(), "phaseTransitionTimestamp": _str()})
        ),
        "guestOSInfo": _open(),
        "launcherContainerImageVersion": _str(),
    }
)

VM_SPEC: Schema = _open(
    {
        "runStrategy": _str(enum=RUN_STRATEGIES),
        "running": _bool(),
        "template": _open(
            {"metadata": _open(), "spec": VMI_SPEC},
            required=["spec"],
        ),
        "dataVolumeTemplates": _list(_open({"metadata": _open(), "spec": _open()})),
    },
    required=["template"],
    **{
        "x-kubernetes-validations": [
            {
                "rule": "!(has(self.running) && has(self.runStrategy))",
                "message": "Running and RunStrategy are mutually exclusive",
            }
        ]
    },
)

VM_STATUS: Schema = _open(
    {
        "printableStatus": _str(),
        "runStrategy": _str(),
        "created": _bool(),
        "ready": _bool(),
        "conditions": CONDITIONS,
        "stateChangeRequests": _list(
            _open({"action": _str(), "uid": _str(), "data": _string_map()}, required=["action"])
        ),
        "startFailure": _open(),
        "observedGeneration": _int(),
        "desiredGeneration": _int(),
        "snapshotInProgress": {"type": "string", "nullable": True},
        "restoreInProgress": {"type": "string", "nullable": True},
    }
)

VMIM_SPEC: Schema = _open(
    {
        "vmiName": _str(),
        "addedNodeSelector": _string_map(),
        "priority": _str(),
    },
    required=["vmiName"],
)

VMIM_STATUS: Schema = _open(
    {
        "phase": _str(),
        "conditions": CONDITIONS,
        "migrationState": MIGRATION_STATE,
        "phaseTransitionTimestamps": _list(
            _open({"phase": _str(), "phaseTransitionTimestamp": _str()})
        ),
    }
)

KUBEVIRT_SPEC: Schema = _open(
    {
        "configuration": _open(
            {
                "evictionStrategy": _str(enum=EVICTION_STRATEGIES),
                "migrations": _open(
                    {
                        "parallelMigrationsPerCluster": _int(minimum=1),
                        "parallelOutboundMigrationsPerNode": _int(minimum=1),
                        "bandwidthPerMigration": _int_or_str(),
                        "completionTimeoutPerGiB": _int(minimum=0),
                        "progressTimeout": _int(minimum=0),
                        "allowAutoConverge": _bool(),
                        "allowPostCopy": _bool(),
                    }
                ),
                "developerConfiguration": _open({"featureGates": _list(_str())}),
            }
        ),
    }
)

TYPED_REF: Schema = _open(
    {"apiGroup": _str(), "kind": _str(), "name": _str()}, required=["kind", "name"]
)

SNAPSHOT_SPEC: Schema = _open(
    {
        "source": TYPED_REF,
        "deletionPolicy": _str(enum=["Delete", "Retain"]),
        "failureDeadline": _str(),
    },
    required=["source"],
)

SNAPSHOT_STATUS: Schema = _open(
    {
        "phase": _str(),
        "readyToUse": _bool(),
        "creationTime": {"type": "string", "nullable": True},
        "error": _open({"time": _str(), "message": _str()}),
        "conditions": CONDITIONS,
        "indications": _list(_str()),
        "sourceIndications": _list(_open({"indication": _str(), "message": _str()})),
        "virtualMachineSnapshotContentName": _str(),
        "sourceUID": _str(),
        "snapshotVolumes": _open(
            {"includedVolumes": _list(_str()), "excludedVolumes": _list(_str())}
        ),
    }
)

RESTORE_SPEC: Schema = _open(
    {
        "target": TYPED_REF,
        "virtualMachineSnapshotName": _str(),
        "targetReadinessPolicy": _str(
            enum=["WaitGracePeriod", "StopTarget", "FailImmediate", "WaitEventually"]
        ),
        "volumeRestorePolicy": _str(enum=["RandomizeNames", "InPlace", "PrefixTargetName"]),
        "patches": _list(_str()),
    },
    required=["target", "virtualMachineSnapshotName"],
)

RESTORE_STATUS: Schema = _open(
    {
        "complete": _bool(),
        "restoreTime": {"type": "string", "nullable": True},
        "conditions": CONDITIONS,
        "restores": _list(_open({"volumeName": _str(), "persistentVolumeClaim": _str()})),
        "deletedDataVolumes": _list(_str()),
    }
)

EXPORT_SPEC: Schema = _open(
    {
        "source": TYPED_REF,
        "tokenSecretRef": _str(),
        "ttlDuration": _str(),
    },
    required=["source"],
)

EXPORT_FORMAT: Schema = _open({"format": _str(), "url": _str()})
EXPORT_LINK: Schema = _open(
    {
        "cert": _str(),
        "volumes": _list(_open({"name": _str(), "formats": _list(EXPORT_FORMAT)})),
        "manifests": _list(_open({"type": _str(), "url": _str()})),
    }
)
EXPORT_STATUS: Schema = _open(
    {
        "phase": _str(),
        "conditions": CONDITIONS,
        "links": _open({"internal": EXPORT_LINK, "external": EXPORT_LINK}),
        "serviceName": _str(),
        "tokenSecretRef": _str(),
        "ttlExpirationTime": {"type": "string", "nullable": True},
        "virtualMachineName": _str(),
    }
)

DV_SPEC: Schema = _open(
    {
        "source": _open(
            {
                "http": _open({"url": _str()}),
                "blank": _open(),
                "pvc": _open({"namespace": _str(), "name": _str()}),
                "registry": _open({"url": _str()}),
                "s3": _open({"url": _str()}),
                "upload": _open(),
                "imageio": _open({"url": _str(), "diskId": _str()}),
            }
        ),
        "storage": _open(
            {
                "accessModes": _list(_str()),
                "resources": RESOURCES,
                "storageClassName": _str(),
                "volumeMode": _str(),
            }
        ),
        "pvc": _open(
            {
                "accessModes": _list(_str()),
                "resources": RESOURCES,
                "storageClassName": _str(),
                "volumeMode": _str(),
            }
        ),
        "contentType": _str(enum=["kubevirt", "archive"]),
    }
)

DV_STATUS: Schema = _open(
    {
        "phase": _str(),
        "progress": _str(),
        "restartCount": _int(),
        "claimName": _str(),
        "conditions": CONDITIONS,
    }
)


def _column(name: str, path: str, type_: str = "string", priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "jsonPath": path, "type": type_}
    if priority:
        col["priority"] = priority
    return col


AGE = _column("Age", ".metadata.creationTimestamp", "date")


def _crd(
    group: str,
    kind: str,
    plural: str,
    short_names: list[str],
    versions: list[str],
    spec: Schema,
    status: Schema,
    columns: list[dict[str, Any]],
    categories: list[str] | None = None,
) -> dict[str, Any]:
    """One namespaced CRD; the last version listed is the storage version."""
    schema: Schema = {
        "type": "object",
        "properties": {
            "apiVersion": _str(),
            "kind": _str(),
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }
    names: dict[str, Any] = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "shortNames": short_names,
    }
    if categories:
        names["categories"] = categories
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{group}",
            "labels": {"app.kubernetes.io/part-of": "hosted-engine-lab"},
        },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": names,
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": index == len(versions) - 1,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
                for index, version in enumerate(versions)
            ],
        },
    }


def kubevirt_crds() -> list[dict[str, Any]]:
    """Every CRD the lab's KubeVirt installs, in dependency-free order."""
    ready = ".status.conditions[?(@.type=='Ready')].status"
    return [
        _crd(
            KUBEVIRT_GROUP,
            "VirtualMachine",
            "virtualmachines",
            ["vm", "vms"],
            ["v1"],
            VM_SPEC,
            VM_STATUS,
            [
                AGE,
                _column("Status", ".status.printableStatus"),
                _column("Ready", ready),
            ],
            ["all"],
        ),
        _crd(
            KUBEVIRT_GROUP,
            "VirtualMachineInstance",
            "virtualmachineinstances",
            ["vmi", "vmis"],
            ["v1"],
            VMI_SPEC,
            VMI_STATUS,
            [
                AGE,
                _column("Phase", ".status.phase"),
                _column("IP", ".status.interfaces[0].ipAddress"),
                _column("NodeName", ".status.nodeName"),
                _column("Ready", ready),
                _column(
                    "Live-Migratable",
                    ".status.conditions[?(@.type=='LiveMigratable')].status",
                    priority=1,
                ),
                _column("Paused", ".status.conditions[?(@.type=='Paused')].status", priority=1),
            ],
            ["all"],
        ),
        _crd(
            KUBEVIRT_GROUP,
            "VirtualMachineInstanceMigration",
            "virtualmachineinstancemigrations",
            ["vmim", "vmims"],
            ["v1"],
            VMIM_SPEC,
            VMIM_STATUS,
            [
                _column("Phase", ".status.phase"),
                _column("VMI", ".spec.vmiName"),
                _column("Source", ".status.migrationState.sourceNode", priority=1),
                _column("Target", ".status.migrationState.targetNode", priority=1),
                AGE,
            ],
            ["all"],
        ),
        _crd(
            KUBEVIRT_GROUP,
            "KubeVirt",
            "kubevirts",
            ["kv", "kvs"],
            ["v1"],
            KUBEVIRT_SPEC,
            _open({"phase": _str(), "conditions": CONDITIONS}),
            [AGE, _column("Phase", ".status.phase")],
        ),
        _crd(
            SNAPSHOT_GROUP,
            "VirtualMachineSnapshot",
            "virtualmachinesnapshots",
            ["vmsnapshot", "vmsnapshots"],
            ["v1beta1"],
            SNAPSHOT_SPEC,
            SNAPSHOT_STATUS,
            [
                _column("SourceKind", ".spec.source.kind"),
                _column("SourceName", ".spec.source.name"),
                _column("Phase", ".status.phase"),
                _column("ReadyToUse", ".status.readyToUse", "boolean"),
                _column("CreationTime", ".status.creationTime", "date"),
                _column("Error", ".status.error.message"),
            ],
        ),
        _crd(
            SNAPSHOT_GROUP,
            "VirtualMachineSnapshotContent",
            "virtualmachinesnapshotcontents",
            ["vmsnapshotcontent", "vmsnapshotcontents"],
            ["v1beta1"],
            _open(
                {
                    "virtualMachineSnapshotName": _str(),
                    "source": _open(),
                    "volumeBackups": _list(_open()),
                }
            ),
            _open(
                {
                    "readyToUse": _bool(),
                    "creationTime": {"type": "string", "nullable": True},
                    "error": _open(),
                }
            ),
            [
                _column("ReadyToUse", ".status.readyToUse", "boolean"),
                _column("CreationTime", ".status.creationTime", "date"),
                _column("Error", ".status.error.message"),
            ],
        ),
        _crd(
            SNAPSHOT_GROUP,
            "VirtualMachineRestore",
            "virtualmachinerestores",
            ["vmrestore", "vmrestores"],
            ["v1beta1"],
            RESTORE_SPEC,
            RESTORE_STATUS,
            [
                _column("TargetKind", ".spec.target.kind"),
                _column("TargetName", ".spec.target.name"),
                _column("Complete", ".status.complete", "boolean"),
                _column("RestoreTime", ".status.restoreTime", "date"),
                _column("Error", ".status.conditions[?(@.type=='Failure')].message"),
            ],
        ),
        _crd(
            EXPORT_GROUP,
            "VirtualMachineExport",
            "virtualmachineexports",
            ["vmexport", "vmexports"],
            ["v1beta1"],
            EXPORT_SPEC,
            EXPORT_STATUS,
            [
                _column("SourceKind", ".spec.source.kind"),
                _column("SourceName", ".spec.source.name"),
                _column("Phase", ".status.phase"),
            ],
        ),
        _crd(
            CDI_GROUP,
            "DataVolume",
            "datavolumes",
            ["dv", "dvs"],
            ["v1beta1"],
            DV_SPEC,
            DV_STATUS,
            [
                _column("Phase", ".status.phase"),
                _column("Progress", ".status.progress"),
                _column("Restarts", ".status.restartCount", "integer"),
                AGE,
            ],
            ["all"],
        ),
    ]


def kubevirt_cr(migrations: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `kubevirt/kubevirt` CR with the migration limits (KubeVirt's defaults unless given)."""
    config = dict(DEFAULT_MIGRATIONS)
    config.update(migrations or {})
    return {
        "apiVersion": f"{KUBEVIRT_GROUP}/v1",
        "kind": "KubeVirt",
        "metadata": {"name": KUBEVIRT_CR_NAME, "namespace": KUBEVIRT_NAMESPACE},
        "spec": {"configuration": {"migrations": config}},
    }
