"""The lab's KubeVirt: CRDs, virt-controller, virt-api, migrations, snapshots, exports, CDI.

Simulated faithfully enough that the operator meets the behaviour of a real KubeVirt cluster
(shared/reference/k8s-anchors.md §1): runStrategy semantics and the subresources' side effects,
the VMI lifecycle with virt-launcher pods placed by the lab scheduler, live migrations under the
KubeVirt CR's limits, the eviction webhook, snapshots, restores, exports served over HTTPS,
DataVolume imports and simulated guest services on per-VMI loopback addresses.

The simulators are ordinary clients of the lab API server (its in-process client); nothing here is
imported by the operator.
"""

from __future__ import annotations

KUBEVIRT_GROUP = "kubevirt.io"
SUBRESOURCES_GROUP = "subresources.kubevirt.io"
SNAPSHOT_GROUP = "snapshot.kubevirt.io"
EXPORT_GROUP = "export.kubevirt.io"
CDI_GROUP = "cdi.kubevirt.io"

KUBEVIRT_NAMESPACE = "kubevirt"
KUBEVIRT_CR_NAME = "kubevirt"

# Labels and annotations KubeVirt puts on its objects.
APP_LABEL = "kubevirt.io"  # "virt-launcher" on launcher pods
CREATED_BY_LABEL = "kubevirt.io/created-by"  # the VMI's UID on launcher pods
DOMAIN_ANNOTATION = "kubevirt.io/domain"  # the VMI's name on launcher pods
VM_NAME_LABEL = "vm.kubevirt.io/name"
NODE_NAME_LABEL = "kubevirt.io/nodeName"  # set on the VMI once scheduled
MIGRATION_JOB_LABEL = "kubevirt.io/migrationJobUID"  # on migration target pods
EVACUATION_ANNOTATION = "kubevirt.io/evacuationMigration"
VMI_FINALIZER = "foregroundDeleteVirtualMachine"
VM_CONTROLLER_FINALIZER = "kubevirt.io/virtualMachineControllerFinalizer"
MIGRATION_FINALIZER = "kubevirt.io/migrationJobFinalizer"

# The lab's own annotations.
GUEST_HTTP_ANNOTATION = "lab.hostedengine.io/guest-http"  # e.g. "engine"
GUEST_AGENT_ANNOTATION = "lab.hostedengine.io/guest-agent"  # "true": the agent connects
DISK_SEED_ANNOTATION = "lab.hostedengine.io/disk-seed"  # on PVCs: key of the content stream
