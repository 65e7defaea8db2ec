"""The Host handler re-reads the Node and its Lease (GET) right before a BMC power-off.

The real :class:`~hosted_engine.handlers.host.HostReconciler` against the lab's API server: its
watch cache says the node's Lease has been silent for a minute (a lagging informer, a stalled
watch) and the HostedEngine asks for a fence; the API holds a Lease renewed a moment ago. The
power-off is called off (``FenceAborted``), the Host stays Up and no BMC call is made. The
control case (the API's Lease silent too) goes on to the power-off, so the check is not vacuous.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hosted_engine.adapters.kube import Kube, Resource
from hosted_engine.adapters.kubevirt import HOSTS, LEASES, NODES
from hosted_engine.clock import get_clock
from hosted_engine.handlers import host as handler
from hosted_engine.handlers import host_mapping as hm
from hosted_engine.lab.testing import LabThread
from hosted_engine.logic import host_lifecycle as lc
from hosted_engine.models import Host

ROOT = Path(__file__).resolve().parents[3]
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
SECRETS = Resource("", "v1", "secrets", namespaced=True)
EVENTS = Resource("", "v1", "events", namespaced=True)
NAMES = ("node-1", "node-2", "node-3")
REQUEST = {"hostedengine.io/fence-request": "hostedengine.engine.he/r1"}


def stamp(seconds_ago: float) -> str:
    when = get_clock().now() - timedelta(seconds=seconds_ago)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {},
            "status": {"allocatable": {"memory": "64Gi", "cpu": "16"},
                       "conditions": [{"type": "Ready", "status": "True",
                                       "lastTransitionTime": stamp(600),
                                       "lastHeartbeatTime": stamp(1)}]}}


def lease(name: str, seconds_ago: float) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                     "renewTime": stamp(seconds_ago)}}


def host(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
            "metadata": {"name": name, "annotations": annotations},
            # nothing listens on port 1: a power-off that goes ahead fails at once
            "spec": {"nodeName": name, "powerManagement": {
                "type": "redfish", "address": "127.0.0.1", "port": 1, "verifyTLS": False,
                "actionTimeout": "1s",
                "credentialsSecretRef": {"name": "bmc", "namespace": "ops"}}}}


@pytest.fixture
def kube(lab: LabThread) -> Iterator[Kube]:
    subprocess.run(
        [str(Path(sys.executable).parent / "kubectl"), "--kubeconfig", str(lab.kubeconfig_path),
         "apply", "-f", str(ROOT / "crds" / "hosts.hostedengine.io.yaml")],
        check=True, capture_output=True, timeout=60)
    client = Kube(lab.api_client())
    for ns in ("kube-node-lease", "ops"):
        client.create_or_get(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": ns}})
    client.create(SECRETS, {"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": "bmc", "namespace": "ops"},
                            "stringData": {"username": "admin", "password": "pw"}})
    try:
        yield client
    finally:
        client.close()


def reconciler_with_a_stale_cache(kube: Kube, api_lease_age: float
                                  ) -> handler.HostReconciler:
    """The API: three Ready nodes, node-1's Lease renewed ``api_lease_age`` s ago, the others
    just now; node-1's Host asked to be fenced. The cache: the same, but node-1's Lease last
    seen renewed 60 s ago."""
    reconciler = handler.HostReconciler(kube, hm.HostSettings(power_poll_s=0.0))
    for name in NAMES:
        kube.create(NODES, node(name))
        kube.create(LEASES, lease(name, api_lease_age if name == "node-1" else 0.0))
        created = kube.create(HOSTS, host(name, REQUEST if name == "node-1" else {}))
        reconciler.put("hosts", name, created)
        reconciler.put("nodes", name, kube.get(NODES, name))
        reconciler.observe_lease(lease(name, 60.0 if name == "node-1" else 0.0),
                                 get_clock().now(), listed=True)
        # the powerManagement spec counts as checked: only the fence may call the BMC
        reconciler._pm_checked[name] = handler._fingerprint(Host.model_validate(created))
    return reconciler


def reasons(kube: Kube) -> list[str]:
    return [str(e.get("reason")) for e in kube.list(EVENTS, None)
            if (e.get("involvedObject") or {}).get("name") == "node-1"]


def test_a_fence_decided_on_a_stale_cache_is_called_off_by_the_fresh_read(kube: Kube) -> None:
    reconciler = reconciler_with_a_stale_cache(kube, api_lease_age=0.5)
    # the cache alone proves a loss: the decision would be a power-off
    cached = Host.model_validate(reconciler.snapshot().hosts["node-1"])
    obs = hm.observe(cached, reconciler.snapshot(), get_clock().now(), reconciler.settings, None)
    assert lc.lost_reason(obs) == "LeaseExpired"
    assert lc.requests_fence(lc.step(None, obs))

    reconciler.reconcile("node-1")

    status = kube.get(HOSTS, "node-1").get("status") or {}
    assert status.get("state") == "Up", status
    assert (status.get("fencing") or {}).get("phase") == "Refused", status
    assert not (status.get("powerManagement") or {}).get("lastAction"), status
    got = reasons(kube)
    assert "FenceAborted" in got and "FenceRequested" not in got and "FenceFailed" not in got, got
    # the cache learnt the fresh renewal
    renewed, _ = reconciler.snapshot().leases["node-1"]
    assert (get_clock().now() - renewed).total_seconds() < 30


def test_a_lease_silent_in_the_api_too_goes_on_to_the_power_off(kube: Kube) -> None:
    reconciler = reconciler_with_a_stale_cache(kube, api_lease_age=60.0)
    reconciler.reconcile("node-1")
    status = kube.get(HOSTS, "node-1").get("status") or {}
    assert status.get("state") == "NonResponsive", status
    assert (status.get("fencing") or {}).get("count") == 1, status
    action = (status.get("powerManagement") or {}).get("lastAction") or {}
    assert (action.get("id"), action.get("action")) == ("fence-1", "off"), status
    got = reasons(kube)
    assert "FenceRequested" in got and "FenceAborted" not in got, got
