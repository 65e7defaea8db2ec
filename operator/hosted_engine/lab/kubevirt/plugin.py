"""Wires the simulated KubeVirt into the lab (``hosted_engine.lab.sim.lab.PLUGIN_MODULES``).

``setup(lab)``: informers for the KubeVirt resources, the CRDs and the KubeVirt CR at start, the
controllers in every pass, virt-api's subresources as an aggregated API group
(``subresources.kubevirt.io`` v1 and v1alpha3), the eviction and migration webhooks as admission
hooks, the guest shutdown time of virt-launcher pods, the VM fault hooks and the ``vms`` and
``migrations`` sections of ``lab status``. :func:`kubevirt_of` gives tests the simulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hosted_engine.lab.apiserver import AdmissionRequest, ApiError, ApiRequest, ApiResponse
from hosted_engine.lab.kubevirt import APP_LABEL, SUBRESOURCES_GROUP
from hosted_engine.lab.kubevirt.cdi import UPLOAD_GROUP
from hosted_engine.lab.kubevirt.resources import (
    DATAVOLUMES,
    EXPORTS,
    KUBEVIRTS,
    RESTORES,
    SNAPSHOT_CONTENTS,
    SNAPSHOTS,
    VMIMS,
    VMIS,
    VMS,
)
from hosted_engine.lab.kubevirt.sim import KubeVirtSim, SubresourceError
from hosted_engine.lab.kubevirt.virtapi import VM_VERBS, VirtApi
from hosted_engine.lab.sim.api import Conflict, Obj, Res, meta

if TYPE_CHECKING:
    from hosted_engine.lab.sim.lab import ClusterView, Lab

RESOURCES: tuple[Res, ...] = (
    VMS, VMIS, VMIMS, KUBEVIRTS, SNAPSHOTS, SNAPSHOT_CONTENTS, RESTORES, EXPORTS, DATAVOLUMES,
)
_SIMS: dict[int, KubeVirtSim] = {}


def kubevirt_of(lab: Lab) -> KubeVirtSim:
    """The KubeVirt simulator of a lab started with plugins."""
    return _SIMS[id(lab)]


def _api_error(exc: SubresourceError) -> ApiError:
    return ApiError(exc.code, exc.message, exc.reason)


class _Controller:
    def __init__(self, sim: KubeVirtSim) -> None:
        self.sim = sim

    async def reconcile(self, view: ClusterView, now: float) -> None:
        await self.sim.sync()


def setup(lab: Lab) -> None:
    informers = {res: lab.informer(res) for res in RESOURCES}

    def cache(res: Res) -> list[Obj] | None:
        informer = informers.get(res)
        if informer is None:
            informer = lab.informer_if_any(res.plural)
        return informer.items() if informer is not None else None

    sim = KubeVirtSim(lab.api, lab.timings, machines=lab.nodes, wall=lab.wall, cache=cache,
                      kubelets=lab.kubelets)
    virtapi = VirtApi(sim)
    _SIMS[id(lab)] = sim

    async def on_start() -> None:
        await sim.install()
        certs = lab.server.certificates if lab.server.tls_enabled else None
        material = (certs.ca_pem, certs.cert_pem, certs.key_pem) if certs is not None else None
        await sim.start(material)
        await sim.storage.cdi.start(material)

    async def on_stop() -> None:
        await sim.storage.cdi.stop()
        await sim.stop()
        _SIMS.pop(id(lab), None)

    lab.on_start(on_start)
    lab.on_stop(on_stop)
    lab.add_controller(_Controller(sim))

    async def subresources(req: ApiRequest, rest: list[str]) -> ApiResponse:
        # rest: namespaces/NS/virtualmachines/NAME/VERB
        if len(rest) != 5 or rest[0] != "namespaces" or rest[2] != "virtualmachines":
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if req.method.upper() != "PUT":
            raise ApiError(405, f"{req.method} is not supported on {rest[4]}", "MethodNotAllowed")
        body = req.body if isinstance(req.body, dict) else None
        try:
            await virtapi.vm_subresource(rest[4], rest[1], rest[3], body)
        except SubresourceError as exc:
            raise _api_error(exc) from exc
        except Conflict as exc:  # the VM changed between our read and our write
            raise ApiError(409, f'Operation cannot be fulfilled on virtualmachine.kubevirt.io '
                                f'"{rest[3]}": {exc}', "Conflict") from exc
        return ApiResponse(202, b"", "application/json")

    resources: list[dict[str, Any]] = [
        {"name": f"virtualmachines/{verb}", "singularName": "", "namespaced": True,
         "kind": "VirtualMachine", "verbs": ["update"]}
        for verb in VM_VERBS
    ]
    resources.insert(0, {"name": "virtualmachines", "singularName": "", "namespaced": True,
                         "kind": "VirtualMachine", "verbs": []})
    for version in ("v1", "v1alpha3"):
        lab.server.register_aggregated(SUBRESOURCES_GROUP, version, resources, subresources)

    async def upload_tokens(req: ApiRequest, rest: list[str]) -> ApiResponse:
        # rest: namespaces/NS/uploadtokenrequests (CDI's upload API server)
        if len(rest) != 3 or rest[0] != "namespaces" or rest[2] != "uploadtokenrequests":
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if req.method.upper() != "POST":
            raise ApiError(405, f"{req.method} is not supported on uploadtokenrequests",
                           "MethodNotAllowed")
        body = req.body if isinstance(req.body, dict) else {}
        try:
            out = await sim.storage.cdi.token_request(rest[1], body)
        except LookupError as exc:
            raise ApiError(400, str(exc), "BadRequest") from exc
        return ApiResponse(201, out, "application/json")

    lab.server.register_aggregated(UPLOAD_GROUP, "v1beta1", [
        {"name": "uploadtokenrequests", "singularName": "uploadtokenrequest", "namespaced": True,
         "kind": "UploadTokenRequest", "verbs": ["create"]}], upload_tokens)

    async def eviction(req: AdmissionRequest) -> None:
        try:
            await virtapi.admit_eviction(req.namespace, req.name)
        except SubresourceError as exc:
            raise _api_error(exc) from exc

    async def migration_create(req: AdmissionRequest) -> None:
        if req.object is None:
            return
        try:
            await virtapi.admit_migration(req.object)
        except SubresourceError as exc:
            raise _api_error(exc) from exc

    lab.server.register_admission("validating", "", "pods", "eviction", "CREATE", eviction)
    lab.server.register_admission(
        "validating", VMIMS.group, VMIMS.plural, "", "CREATE", migration_create
    )

    def launcher_stop_time(pod: Obj) -> float | None:
        if (meta(pod).get("labels") or {}).get(APP_LABEL) == "virt-launcher":
            return lab.timings.vm_shutdown_time
        return None

    lab.add_stop_time_hook(launcher_stop_time)
    def vm_fault(fn: Any) -> Any:
        async def hook(namespace: str, name: str) -> str:
            try:
                await fn(namespace, name)
            except LookupError as exc:
                raise ApiError(404, str(exc), "NotFound") from exc
            return f"{fn.__name__.replace('_', '-')} {namespace}/{name}"

        return hook

    lab.faults.set_hook("crash_vm", vm_fault(sim.crash_vm))
    lab.faults.set_hook("hang_guest", vm_fault(sim.hang_guest))
    lab.faults.set_hook("heal_guest", vm_fault(sim.heal_guest))
    lab.faults.set_hook("set_migration_bandwidth", sim.set_migration_bandwidth)
    lab.faults.add_status_section("vms", lambda: sim.status()["vms"])
    lab.faults.add_status_section("migrations", lambda: sim.status()["migrations"])
