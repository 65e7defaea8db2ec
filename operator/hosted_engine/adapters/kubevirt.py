"""Nodes, node Leases and KubeVirt (VMs, VMIs, migrations, the KubeVirt CR) for the Host operator.

Built on :class:`hosted_engine.adapters.kube.Kube`; every method is synchronous (call it from a
thread) and idempotent, so a reconcile that is interrupted and repeated does no harm:

- Nodes: cordon/uncordon (``spec.unschedulable``), labels, taints (the taint list has no merge
  key, so it is read, changed and written back with the observed ``resourceVersion`` and retried
  on a conflict);
- KubeVirt: create a VirtualMachineInstanceMigration with a deterministic name (a second create
  is a no-op), delete one (KubeVirt aborts it), shut a VM down through its ``stop`` subresource
  (or delete a VMI that has no VM);
- pure helpers that read the objects the watches deliver: requests, quantities, Ready, taints,
  migration phases, the KubeVirt CR's migration limits, Lease ``renewTime``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from kubernetes.client.exceptions import ApiException

from hosted_engine import API_GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from hosted_engine.adapters.kube import (
    Body,
    Conflict,
    Kube,
    KubeError,
    NotFound,
    Resource,
    hostedengine_resource,
)
from hosted_engine.models.base import parse_quantity
from hosted_engine.models.host import HOSTED_ENGINE_NODE_LABEL

NODES: Final = Resource("", "v1", "nodes", namespaced=False)
PODS: Final = Resource("", "v1", "pods", namespaced=True)
LEASES: Final = Resource("coordination.k8s.io", "v1", "leases", namespaced=True)
VMS: Final = Resource("kubevirt.io", "v1", "virtualmachines", namespaced=True)
VMIS: Final = Resource("kubevirt.io", "v1", "virtualmachineinstances", namespaced=True)
VMIMS: Final = Resource(
    "kubevirt.io", "v1", "virtualmachineinstancemigrations", namespaced=True
)
KUBEVIRTS: Final = Resource("kubevirt.io", "v1", "kubevirts", namespaced=True)
HOSTS: Final = hostedengine_resource("hosts", namespaced=False)

NODE_LEASE_NAMESPACE: Final = "kube-node-lease"
OUT_OF_SERVICE_TAINT: Final = "node.kubernetes.io/out-of-service"
#: Node label of a Host deployed for the hosted engine (docs/decisions/0003).
ENGINE_HOST_LABEL: Final = HOSTED_ENGINE_NODE_LABEL
#: Label KubeVirt puts on a scheduled VMI: its node.
VMI_NODE_LABEL: Final = "kubevirt.io/nodeName"
#: Label on the migrations a Host's drain creates: the Host's name.
MIGRATION_HOST_LABEL: Final = f"{API_GROUP}/host"
#: A VM/VMI carrying this label (any value: the HostedEngine's name) is the engine VM; so is a
#: VM owned by a HostedEngine.
ENGINE_VM_LABEL: Final = f"{API_GROUP}/hostedengine"
RESTARTABLE_RUN_STRATEGIES: Final = frozenset({"Always", "RerunOnFailure"})
FINAL_MIGRATION_PHASES: Final = frozenset({"Succeeded", "Failed"})
FINAL_VMI_PHASES: Final = frozenset({"Succeeded", "Failed"})
_TAINT_RETRIES: Final = 5


# --------------------------------------------------------------------------------------------
# Pure helpers over watched objects


def meta(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("metadata") or {}


def status_of(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("status") or {}


def spec_of(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("spec") or {}


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (``Z`` or an offset, with or without fractions), or None."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def quantity(value: Any, default: Decimal = Decimal(0)) -> Decimal:
    """A Kubernetes quantity ("64Gi", "100m", 2) as a Decimal; ``default`` when unreadable."""
    if value is None:
        return default
    try:
        return parse_quantity(value if isinstance(value, int) else str(value))
    except (ValueError, InvalidOperation):
        return default


def memory_bytes(value: Any) -> int:
    return int(quantity(value))


def cpu_millis(value: Any) -> int:
    return int(quantity(value) * 1000)


def pod_requests(pod: Mapping[str, Any]) -> tuple[int, int]:
    """Memory bytes and CPU millis a pod requests (containers summed, init containers' max)."""
    spec = spec_of(pod)
    mem = cpu = 0
    for container in spec.get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        mem += memory_bytes(requests.get("memory"))
        cpu += cpu_millis(requests.get("cpu"))
    for container in spec.get("initContainers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        mem = max(mem, memory_bytes(requests.get("memory")))
        cpu = max(cpu, cpu_millis(requests.get("cpu")))
    return mem, cpu


def vmi_requests(vmi: Mapping[str, Any]) -> tuple[int, int]:
    """Memory bytes and CPU millis of a VMI as KubeVirt requests them for its launcher pod
    (without the launcher's overhead): requests, else the guest memory / 100m per vCPU."""
    domain = spec_of(vmi).get("domain") or {}
    requests = (domain.get("resources") or {}).get("requests") or {}
    mem_value = requests.get("memory") or (domain.get("memory") or {}).get("guest")
    mem = memory_bytes(mem_value) if mem_value is not None else 128 * 1024**2
    if requests.get("cpu") is not None:
        cpu = cpu_millis(requests.get("cpu"))
    else:
        topology = domain.get("cpu") or {}
        vcpus = 1
        for key in ("cores", "sockets", "threads"):
            with contextlib.suppress(TypeError, ValueError):
                vcpus *= max(1, int(topology.get(key, 1)))
        cpu = 100 * vcpus
    return mem, cpu


def node_ready(node: Mapping[str, Any] | None) -> tuple[bool | None, datetime | None]:
    """(Ready: True/False/None for Unknown or absent, lastTransitionTime of Ready)."""
    for cond in status_of(node).get("conditions") or []:
        if cond.get("type") == "Ready":
            value = cond.get("status")
            ready = True if value == "True" else False if value == "False" else None
            return ready, parse_time(cond.get("lastTransitionTime"))
    return None, None


def node_taints(node: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [dict(t) for t in spec_of(node).get("taints") or [] if isinstance(t, Mapping)]


def has_taint(node: Mapping[str, Any] | None, key: str) -> bool:
    return any(t.get("key") == key for t in node_taints(node))


def node_allocatable(node: Mapping[str, Any] | None) -> tuple[int, int]:
    alloc = status_of(node).get("allocatable") or status_of(node).get("capacity") or {}
    return memory_bytes(alloc.get("memory")), cpu_millis(alloc.get("cpu"))


def migration_phase(vmim: Mapping[str, Any]) -> str:
    return str(status_of(vmim).get("phase") or "")


def migration_finished(vmim: Mapping[str, Any]) -> bool:
    return migration_phase(vmim) in FINAL_MIGRATION_PHASES


def migration_end_time(vmim: Mapping[str, Any]) -> datetime | None:
    state = status_of(vmim).get("migrationState") or {}
    end = parse_time(state.get("endTimestamp"))
    if end is not None:
        return end
    stamps = status_of(vmim).get("phaseTransitionTimestamps") or []
    for stamp in reversed(stamps):
        if stamp.get("phase") in FINAL_MIGRATION_PHASES:
            return parse_time(stamp.get("phaseTransitionTimestamp"))
    return parse_time(meta(vmim).get("creationTimestamp"))


def migration_limits_config(kubevirt: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``spec.configuration.migrations`` of the KubeVirt CR (None when absent)."""
    config = spec_of(kubevirt).get("configuration") or {}
    migrations = config.get("migrations")
    return migrations if isinstance(migrations, Mapping) else None


def lease_renew_time(lease: Mapping[str, Any] | None) -> datetime | None:
    return parse_time(spec_of(lease).get("renewTime"))


def resource_version(obj: Mapping[str, Any] | None) -> int | None:
    """The resourceVersion as an int when it is one (used only to drop stale cache updates)."""
    value = meta(obj).get("resourceVersion")
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Writes


class HostKube:
    """The writes a Host reconcile makes, over the shared :class:`Kube` client."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    # -- nodes -------------------------------------------------------------------------------

    def cordon(self, node: str, unschedulable: bool) -> Body | None:
        """Cordon (True) or uncordon (False) a Node; None when the Node does not exist."""
        try:
            return self.kube.patch(NODES, node, {"spec": {"unschedulable": unschedulable or None}})
        except NotFound:
            return None

    def set_label(self, node: str, key: str, value: str | None) -> Body | None:
        """Set (or, with None, remove) one label of a Node; None when the Node is gone."""
        try:
            return self.kube.patch(NODES, node, {"metadata": {"labels": {key: value}}})
        except NotFound:
            return None

    def set_taint(self, node: str, key: str, effect: str, present: bool,
                  value: str | None = None) -> Body | None:
        """Add or remove a taint (by key and effect); None when the Node is gone."""
        for _ in range(_TAINT_RETRIES):
            current = self.kube.find(NODES, node)
            if current is None:
                return None
            taints = node_taints(current)
            there = any(t.get("key") == key and t.get("effect") == effect for t in taints)
            if there == present:
                return current
            if present:
                taint: dict[str, Any] = {"key": key, "effect": effect}
                if value is not None:
                    taint["value"] = value
                taints.append(taint)
            else:
                taints = [t for t in taints if not (t.get("key") == key
                                                    and t.get("effect") == effect)]
            patch = {
                "metadata": {"resourceVersion": meta(current).get("resourceVersion")},
                "spec": {"taints": taints or None},
            }
            try:
                return self.kube.patch(NODES, node, patch)
            except Conflict:
                continue
            except NotFound:
                return None
        raise Conflict(f"node {node}: taints kept changing under us", status=409)

    # -- KubeVirt ----------------------------------------------------------------------------

    def create_migration(
        self,
        *,
        name: str,
        namespace: str,
        vmi: str,
        host: Mapping[str, Any],
        added_node_selector: Mapping[str, str] | None = None,
    ) -> Body:
        """Create a migration of ``vmi`` owned by the Host (idempotent: same name, same object)."""
        body: Body = {
            "apiVersion": VMIMS.api_version,
            "kind": "VirtualMachineInstanceMigration",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    MIGRATION_HOST_LABEL: str(meta(host).get("name")),
                    MANAGED_BY_LABEL: MANAGED_BY_VALUE,
                },
            },
            "spec": {"vmiName": vmi},
        }
        if added_node_selector:
            body["spec"]["addedNodeSelector"] = dict(added_node_selector)
        created, _ = self.kube.create_or_get(VMIMS, body, owner=host)
        return created

    def delete_migration(self, namespace: str, name: str) -> bool:
        return self.kube.delete(VMIMS, name, namespace)

    def stop_vm(self, namespace: str, name: str, has_vm: bool) -> None:
        """Shut a VM down for good (its ``stop`` subresource sets runStrategy Halted); a VMI
        without a VM is deleted (graceful shutdown of the guest)."""
        if not has_vm:
            self.kube.delete(VMIS, name, namespace)
            return
        path = (f"/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines/"
                f"{name}/stop")
        try:
            self.kube._call("PUT", path, body={})
        except ApiException as exc:  # 409: already stopping or stopped; 404: gone
            if exc.status not in (404, 409):
                raise KubeError(f"stop {namespace}/{name}: {exc.status} {exc.reason}",
                                status=int(exc.status or 0)) from None

    # -- hosts -------------------------------------------------------------------------------

    def patch_host_status(self, name: str, status: Mapping[str, Any]) -> Body:
        return self.kube.patch_status(HOSTS, name, status)

    def host_event(self, host: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event on the Host (never fails the reconcile)."""
        with contextlib.suppress(Exception):
            self.kube.post_event(
                host, reason=reason, message=message,
                type="Warning" if type_ == "Warning" else "Normal",
            )


__all__ = [
    "ENGINE_HOST_LABEL",
    "ENGINE_VM_LABEL",
    "HOSTS",
    "KUBEVIRTS",
    "LEASES",
    "MIGRATION_HOST_LABEL",
    "NODES",
    "NODE_LEASE_NAMESPACE",
    "OUT_OF_SERVICE_TAINT",
    "PODS",
    "VMIMS",
    "VMIS",
    "VMI_NODE_LABEL",
    "VMS",
    "HostKube",
]
