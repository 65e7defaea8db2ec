"""Helpers of the KubeVirt scenarios: a whole lab with fast timings and the KubeVirt simulator."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hosted_engine.lab.kubevirt.plugin import kubevirt_of
from hosted_engine.lab.kubevirt.resources import VMIS, VMS
from hosted_engine.lab.kubevirt.sim import KubeVirtSim
from hosted_engine.lab.sim.api import NAMESPACES, STORAGECLASSES, Obj
from hosted_engine.lab.sim.lab import Lab
from hosted_engine.lab.sim.timings import LabTimings

NS = "vms"


def fast_timings(**overrides: Any) -> LabTimings:
    extra = {"kubevirt_api_seconds": 0.01, "migration_unschedulable_timeout": 1.0,
             "evacuation_retry": 0.2}
    extra.update(overrides.pop("extra", {}))
    return LabTimings.fast(extra=extra, **overrides)


class KubeVirtLab:
    """The lab plus helpers the scenarios share."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.api = lab.api
        self.kv: KubeVirtSim = kubevirt_of(lab)

    async def wait(self, predicate: Callable[[], Awaitable[bool] | bool],
                   timeout: float = 10.0) -> None:
        await self.lab.wait_for(predicate, timeout=timeout)

    async def vm(self, name: str, ns: str = NS) -> Obj:
        obj = await self.api.get(VMS, name, ns)
        assert obj is not None, f"no VM {name}"
        return obj

    async def vmi(self, name: str, ns: str = NS) -> Obj | None:
        return await self.api.get(VMIS, name, ns)

    async def vmi_phase(self, name: str, ns: str = NS) -> str:
        vmi = await self.vmi(name, ns)
        return str(((vmi or {}).get("status") or {}).get("phase") or "") if vmi else ""

    async def wait_phase(self, name: str, phase: str, timeout: float = 10.0) -> Obj:
        async def ok() -> bool:
            return await self.vmi_phase(name) == phase

        await self.wait(ok, timeout)
        vmi = await self.vmi(name)
        assert vmi is not None
        return vmi

    async def printable(self, name: str) -> str:
        return str(((await self.vm(name)).get("status") or {}).get("printableStatus", ""))

    async def wait_printable(self, name: str, value: str, timeout: float = 10.0) -> None:
        async def ok() -> bool:
            return await self.printable(name) == value

        await self.wait(ok, timeout)

    async def subresource(self, name: str, verb: str, body: Obj | None = None,
                          ns: str = NS) -> Any:
        path = f"/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/{name}/{verb}"
        return await self.lab.client.request("PUT", path, body=body or {})


def vm_body(name: str, strategy: str | None = "Always", *, memory: str = "1Gi",
            annotations: dict[str, str] | None = None, volumes: list[Obj] | None = None,
            **spec: Any) -> Obj:
    vmi_spec: Obj = {
        "domain": {
            "cpu": {"cores": 1},
            "memory": {"guest": memory},
            "devices": {"interfaces": [{"name": "default", "masquerade": {}}]},
        },
        "networks": [{"name": "default", "pod": {}}],
        "volumes": volumes or [],
    }
    vmi_spec.update(spec)
    body: Obj = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations or {}},
        "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": vmi_spec}},
    }
    if strategy is not None:
        body["spec"]["runStrategy"] = strategy
    return body


async def start_lab(hosts: int = 3, **overrides: Any) -> KubeVirtLab:
    lab = Lab(hosts=hosts, timings=fast_timings(**overrides), bmc=False, tls_enabled=False)
    await lab.start()
    try:
        await lab.api.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": NS}})
        for name in ("shared", "local"):
            await lab.api.create(STORAGECLASSES, {
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": name}, "provisioner": f"lab.hostedengine.io/{name}",
                "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"})
    except BaseException:
        await lab.stop()
        raise
    return KubeVirtLab(lab)




LabFactory = Callable[..., Awaitable[KubeVirtLab]]
