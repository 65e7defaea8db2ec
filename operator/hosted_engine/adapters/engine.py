"""The HostedEngine's I/O on the API: its owned objects, the engine VM's power and placement,
fence requests on Hosts, Events and status. Synchronous (the kubernetes client): call it from a
thread (``asyncio.to_thread``), never from the event loop directly.

The operator writes only what it owns: the VM, its cloud-init Secret and its Service are
created once with an owner reference; later only ``spec.runStrategy`` and the template's
``affinity`` of the VM are patched. The HostedEngine's spec is never written.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Final

from hosted_engine import API_GROUP
from hosted_engine.adapters.kube import (
    Body,
    Conflict,
    Kube,
    KubeError,
    NotFound,
    Resource,
    hostedengine_resource,
)
from hosted_engine.logic import engine_vm as ev

log = logging.getLogger(__name__)

VMS: Final = Resource("kubevirt.io", "v1", "virtualmachines", namespaced=True)
VMIS: Final = Resource("kubevirt.io", "v1", "virtualmachineinstances", namespaced=True)
VMIMS: Final = Resource(
    "kubevirt.io", "v1", "virtualmachineinstancemigrations", namespaced=True
)
SECRETS: Final = Resource("", "v1", "secrets", namespaced=True)
SERVICES: Final = Resource("", "v1", "services", namespaced=True)
HOSTS: Final = hostedengine_resource("hosts", namespaced=False)
HOSTEDENGINES: Final = hostedengine_resource("hostedengines", namespaced=True)
STORAGEDOMAINS: Final = hostedengine_resource("storagedomains", namespaced=False)
#: Label on the migrations the HostedEngine creates (value: the HostedEngine's name).
MIGRATION_LABEL: Final = f"{API_GROUP}/hostedengine-move"


class EngineKube:
    """The HostedEngine's adapter over :class:`Kube`."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    # -- owned objects ---------------------------------------------------------------------

    def disk_target(self, domain: str) -> tuple[ev.DiskTarget | None, str]:
        """The StorageClass (and mode) the engine's disk claim must use, or why not yet."""
        obj = self.kube.find(STORAGEDOMAINS, domain)
        if obj is None:
            return None, f"StorageDomain {domain} does not exist"
        status = obj.get("status") or {}
        klass = status.get("storageClassName")
        if status.get("state") not in ("Active", "Unattached") or not klass:
            return None, f"StorageDomain {domain} is not active yet ({status.get('state')})"
        modes = tuple(str(m) for m in status.get("accessModes") or [])
        mode = status.get("volumeMode")
        return ev.DiskTarget(str(klass), str(mode) if mode else None, modes), ""

    def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        return self.kube.read_secret(namespace, name, key).get_secret_value()

    def ensure(self, resource: Resource, body: Mapping[str, Any], owner: Body) -> bool:
        """Create ``body`` owned by ``owner`` unless it exists (never overwritten); True when
        created."""
        _, created = self.kube.create_or_get(resource, body, owner=owner)
        return created

    def find_vm(self, namespace: str, name: str) -> Body | None:
        return self.kube.find(VMS, name, namespace)

    # -- the engine VM ---------------------------------------------------------------------

    def set_run_strategy(self, namespace: str, name: str, strategy: str) -> None:
        self.kube.patch(VMS, name, {"spec": {"runStrategy": strategy}}, namespace)

    def set_affinity(self, namespace: str, name: str, affinity: Mapping[str, Any]) -> None:
        # A merge patch replaces lists whole: the required terms and preferences are ours.
        self.kube.patch(
            VMS,
            name,
            {"spec": {"template": {"spec": {"affinity": {"nodeAffinity": None}}}}},
            namespace,
        )
        self.kube.patch(
            VMS, name, {"spec": {"template": {"spec": {"affinity": dict(affinity)}}}}, namespace
        )

    def _subresource(self, namespace: str, name: str, verb: str, body: Mapping[str, Any]) -> None:
        path = (
            f"/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines/"
            f"{name}/{verb}"
        )
        try:
            self.kube.api_client.call_api(
                path,
                "PUT",
                header_params={"Content-Type": "application/json", "Accept": "application/json"},
                body=dict(body),
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 202: "object"},
                _return_http_data_only=True,
            )
        except Exception as exc:  # the kubernetes client's ApiException or a connection error
            status = int(getattr(exc, "status", 0) or 0)
            if status == 409:
                raise Conflict(f"{verb} {namespace}/{name}: {exc}", status=409) from None
            raise KubeError(f"{verb} {namespace}/{name} failed ({status or exc})",
                            status=status) from None

    def start(self, namespace: str, name: str) -> None:
        """The start subresource (global maintenance: runStrategy Manual)."""
        with contextlib.suppress(Conflict):  # already running or starting
            self._subresource(namespace, name, "start", {})

    def delete_vmi(self, namespace: str, name: str, *, grace: int | None = None) -> bool:
        """Stop the running instance: graceful (the VMI's grace period) or ``grace`` seconds.
        With runStrategy Always KubeVirt starts a new one where the affinity says."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        try:
            self.kube.api_client.call_api(
                VMIS.path(namespace, name),
                "DELETE",
                header_params={"Content-Type": "application/json", "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 202: "object"},
                _return_http_data_only=True,
            )
        except Exception as exc:
            if int(getattr(exc, "status", 0) or 0) == 404:
                return False
            raise KubeError(f"delete VMI {namespace}/{name} failed: {exc}") from None
        return True

    def migrations(self, namespace: str) -> list[Body]:
        return self.kube.list(VMIMS, namespace)

    def migrate(self, namespace: str, he: str, vmi: str, node: str, owner: Body) -> str | None:
        """A migration of the engine VMI to ``node`` (addedNodeSelector on its hostname). None
        when a migration of the VMI is already under way (e.g. the Host's drain moving the
        engine first): never a second migration for the same move."""
        for m in self.kube.list(VMIMS, namespace):
            if (m.get("spec") or {}).get("vmiName") != vmi:
                continue
            if ((m.get("status") or {}).get("phase")) not in ("Succeeded", "Failed"):
                return None
        body = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstanceMigration",
            "metadata": {
                "generateName": f"{he}-move-",
                "namespace": namespace,
                "labels": {MIGRATION_LABEL: he},
            },
            "spec": {
                "vmiName": vmi,
                "addedNodeSelector": {ev.HOSTNAME_LABEL: node},
            },
        }
        created, _ = self.kube.create_or_get(VMIMS, body, owner=owner)
        return str((created.get("metadata") or {}).get("name") or "")

    # -- fencing through the Host ----------------------------------------------------------

    def request_fence(self, host: str, requester: str, request_id: str) -> None:
        """``hostedengine.io/fence-request: <requester>/<id>`` on the Host (handlers/host.py)."""
        value = ev.FenceRef(requester, request_id).value
        self.kube.patch(
            HOSTS, host, {"metadata": {"annotations": {ev.FENCE_REQUEST_ANNOTATION: value}}}
        )

    def clear_fence(self, host: str, requester: str) -> None:
        """Withdraw our fence request (only ours: another requester's stays)."""
        try:
            obj = self.kube.get(HOSTS, host)
        except NotFound:
            return
        current = ((obj.get("metadata") or {}).get("annotations") or {}).get(
            ev.FENCE_REQUEST_ANNOTATION
        )
        if isinstance(current, str) and current.startswith(f"{requester}/"):
            self.kube.patch(
                HOSTS, host, {"metadata": {"annotations": {ev.FENCE_REQUEST_ANNOTATION: None}}}
            )

    # -- status and Events -----------------------------------------------------------------

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.kube.patch_status(HOSTEDENGINES, name, status, namespace)

    def event(self, involved: Body, type_: str, reason: str, message: str) -> None:
        try:
            self.kube.post_event(
                involved,
                reason=reason,
                message=message,
                type="Warning" if type_ == "Warning" else "Normal",
            )
        except (KubeError, ValueError) as exc:
            log.warning("event %s not posted: %s", reason, exc)
