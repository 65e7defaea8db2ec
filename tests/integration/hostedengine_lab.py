"""Helpers of the HostedEngine lab scenarios (tests/integration/test_hostedengine*.py and
bench/failover.py): a 3-host lab with BMCs, the hosted-engine StorageDomain, Hosts deployed
for the engine with Redfish power management, and a HostedEngine with short timings."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import HOSTEDENGINES, HOSTS, STORAGEDOMAINS, Cluster, conditions, field, wait_for
from hosted_engine.adapters.kube import Resource

ROOT = Path(__file__).resolve().parents[2]
NS = "engine"
NAME = "engine"
NODES = Resource("", "v1", "nodes", namespaced=False)
PODS = Resource("", "v1", "pods", namespaced=True)
VMS = Resource("kubevirt.io", "v1", "virtualmachines", namespaced=True)
VMIS = Resource("kubevirt.io", "v1", "virtualmachineinstances", namespaced=True)
VMIMS = Resource("kubevirt.io", "v1", "virtualmachineinstancemigrations", namespaced=True)
DATAVOLUMES = Resource("cdi.kubevirt.io", "v1beta1", "datavolumes", namespaced=True)
SERVICES = Resource("", "v1", "services", namespaced=True)
SECRETS = Resource("", "v1", "secrets", namespaced=True)
CONFIGMAPS = Resource("", "v1", "configmaps", namespaced=True)
PVCS = Resource("", "v1", "persistentvolumeclaims", namespaced=True)
LAB_NS = "lab-system"
ALL_NODES = ("node-1", "node-2", "node-3")

#: Host thresholds of the operator for the scenarios (seconds), through its environment.
HOST_ENV = {"HE_HOST_SILENT_AFTER": "0.3", "HE_HOST_FENCE_TIMEOUT": "10"}


def fast_spec() -> dict[str, Any]:
    """A HostedEngine spec with short timings (the lab's guest answers on {ip}:8080)."""
    return {
        "vm": {
            "cpu": 2,
            "memory": "16Gi",
            "disk": {"size": "20Gi", "storageDomain": "hosted-engine"},
            "image": {"containerDisk": {"image": "quay.io/ovirt/engine:4.5"}, "version": "4.5"},
            "network": {"fqdn": "engine.lab.example"},
        },
        "health": {
            "url": "http://{ip}:8080/ovirt-engine/services/health",
            "interval": "1s",
            "timeout": "500ms",
            "failureThreshold": 2,
            "startupGrace": "30s",
            "restartGrace": "2s",
        },
        "failover": {
            "silenceThreshold": "2s",
            "startRetries": {"initialBackoff": "1s", "maxBackoff": "5s", "limit": 5},
        },
        "shutdownTimeout": "5s",
    }


def he_body(spec: dict[str, Any] | None = None, *, name: str = NAME,
            annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "hostedengine.io/v1alpha1",
        "kind": "HostedEngine",
        "metadata": {
            "name": name,
            "namespace": NS,
            "annotations": {"lab.hostedengine.io/guest-http": "engine", **(annotations or {})},
        },
        "spec": copy.deepcopy(spec) if spec is not None else fast_spec(),
    }


def bmc_endpoints(cluster: Cluster) -> dict[str, str]:
    cm = cluster.get(CONFIGMAPS, "bmc-endpoints", LAB_NS)
    assert cm is not None, "the lab publishes its BMC endpoints"
    return dict(cm["data"])


def redfish(cluster: Cluster, node_name: str) -> dict[str, Any]:
    url = bmc_endpoints(cluster)[f"{node_name}.redfish"]
    port = int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    return {"type": "redfish", "address": "127.0.0.1", "port": port, "systemID": node_name,
            "credentialsSecretRef": {"name": f"bmc-{node_name}", "namespace": LAB_NS},
            "caBundleSecretRef": {"name": f"bmc-{node_name}", "namespace": LAB_NS,
                                  "key": "ca.crt"},
            "actionTimeout": "20s"}


def host_body(cluster: Cluster, node: str, *, power: bool = True, deploy: bool = True
              ) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": node,
                            "hostedEngine": "deploy" if deploy else "undeploy"}
    if power:
        spec["powerManagement"] = redfish(cluster, node)
    return {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
            "metadata": {"name": node}, "spec": spec}


def prepare(cluster: Cluster, *, power: bool = True, nodes: tuple[str, ...] = ALL_NODES
            ) -> None:
    """The hosted-engine StorageDomain (examples/lab), the Hosts, the namespace."""
    cluster.apply_yaml(ROOT / "examples" / "lab" / "storagedomain.yaml")
    for node in nodes:
        cluster.create(HOSTS, host_body(cluster, node, power=power))
    cluster.ensure_namespace(NS)
    cluster.wait_field(STORAGEDOMAINS, "hosted-engine", "status.state", "Active", timeout=30)
    for node in nodes:
        cluster.wait_field(HOSTS, node, "status.hostedEngine.deployed", True, timeout=30)
        if power:
            cluster.wait_condition(HOSTS, node, "PowerManagementReady", status="True",
                                   timeout=30)


def he(cluster: Cluster, name: str = NAME) -> dict[str, Any]:
    obj = cluster.get(HOSTEDENGINES, name, NS)
    assert obj is not None
    return obj


def state(cluster: Cluster, name: str = NAME) -> str | None:
    return field(cluster.get(HOSTEDENGINES, name, NS), "status.state")


def describe(cluster: Cluster, name: str = NAME) -> Any:
    obj = cluster.get(HOSTEDENGINES, name, NS) or {}
    status = obj.get("status") or {}
    return {"state": status.get("state"), "host": status.get("host"),
            "engine": status.get("engine"), "reason": (status.get("ha") or {}).get("reason")}


def wait_state(cluster: Cluster, wanted: str | Callable[[str | None], bool], *,
               timeout: float = 30, name: str = NAME) -> dict[str, Any]:
    check = wanted if callable(wanted) else (lambda s: s == wanted)
    wait_for(f"HostedEngine state {wanted}", lambda: check(state(cluster, name)),
             timeout=timeout, describe=lambda: describe(cluster, name))
    return he(cluster, name)


def wait_up(cluster: Cluster, *, timeout: float = 40, name: str = NAME,
            avoid: str | None = None) -> dict[str, Any]:
    """Wait for EngineUp with Available=True (and not on ``avoid``)."""
    def up() -> bool:
        obj = cluster.get(HOSTEDENGINES, name, NS) or {}
        status = obj.get("status") or {}
        available = conditions(obj).get("Available", {}).get("status") == "True"
        return (status.get("state") == "EngineUp" and available
                and (avoid is None or status.get("host") != avoid))

    wait_for(f"engine up{' off ' + avoid if avoid else ''}", up, timeout=timeout,
             describe=lambda: describe(cluster, name))
    return he(cluster, name)


def engine_vmi(cluster: Cluster, name: str = NAME) -> dict[str, Any] | None:
    return cluster.get(VMIS, name, NS)


def vmi_node(cluster: Cluster, name: str = NAME) -> str | None:
    vmi = engine_vmi(cluster, name)
    return field(vmi, "status.nodeName") if vmi else None


def events(cluster: Cluster, name: str = NAME) -> list[dict[str, Any]]:
    return cluster.events_for(name, NS)


def event_reasons(cluster: Cluster, name: str = NAME) -> list[str]:
    return [str(e.get("reason")) for e in events(cluster, name)]


def lab_call(cluster: Cluster, fn: Callable[[Any], Any]) -> Any:
    """Run ``await fn(lab)`` in the lab's loop (faults)."""
    lab = cluster.lab.lab

    async def run() -> Any:
        return await fn(lab)

    return cluster.lab.runner.call(run)


def memory_hog(node: str, memory: str) -> dict[str, Any]:
    """A pod bound to ``node`` that requests ``memory`` (makes that host lack room)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"hog-{node}", "namespace": NS},
            "spec": {"nodeName": node, "containers": [{
                "name": "hog", "image": "registry.example/hog:1",
                "resources": {"requests": {"memory": memory}}}]}}
