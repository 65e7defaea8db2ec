"""StorageDomain end to end: the operator on the lab materialises each type, binds a disk claim
like the engine's, refuses what it must, and probes the storage endpoints over TCP.

The lab has no storage servers: endpoints are TCP listeners on loopback addresses
(127.0.0.0/8 is all loopback on Linux, so each test gets its own address and the real ports,
2049 for NFS and 24007 for glusterd) or closed ports.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from harness import (
    HOSTEDENGINES,
    PVCS,
    PVS,
    STORAGECLASSES,
    STORAGEDOMAINS,
    Cluster,
    conditions,
    field,
    wait_for,
)

pytestmark = pytest.mark.lab

NS = "engine"
HE_IQN = "iqn.2026-01.io.example:he"


class Listener:
    """A TCP listener standing in for a storage server (it accepts and closes)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.host, self.port = self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()


def loopback_address() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def closed_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


def domain(name: str, type_: str, block: dict[str, Any], *, role: str = "data",
           capacity: str | None = "80Gi", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "role": role, type_: block, **spec}
    if capacity is not None:
        body["capacity"] = capacity
    return {"apiVersion": "hostedengine.io/v1alpha1", "kind": "StorageDomain",
            "metadata": {"name": name}, "spec": body}


def engine_claim(name: str, status: dict[str, Any], size: str = "58Gi") -> dict[str, Any]:
    """A disk claim like the HostedEngine's: the class, mode and access the domain states."""
    modes = status.get("accessModes") or ["ReadWriteOnce"]
    spec: dict[str, Any] = {
        "storageClassName": status["storageClassName"],
        "accessModes": [modes[0]],
        "resources": {"requests": {"storage": size}},
    }
    if status.get("volumeMode"):
        spec["volumeMode"] = status["volumeMode"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


def active(cluster: Cluster, name: str) -> dict[str, Any]:
    cluster.wait_field(STORAGEDOMAINS, name, "status.state", "Active")
    obj = cluster.get(STORAGEDOMAINS, name)
    assert obj is not None
    return obj


def bind_engine_disk(cluster: Cluster, name: str, claim: str = "engine-disk") -> dict[str, Any]:
    """Create the disk claim on the domain and wait until it is Bound and listed."""
    cluster.ensure_namespace(NS)
    obj = active(cluster, name)
    cluster.create(PVCS, engine_claim(claim, obj["status"]))
    cluster.wait_field(PVCS, claim, "status.phase", "Bound", namespace=NS)
    cluster.wait_field(STORAGEDOMAINS, name, "status.claims",
                       predicate=lambda cs: any(c.get("name") == claim for c in cs or []))
    pvc = cluster.get(PVCS, claim, NS)
    assert pvc is not None
    return pvc


def test_nfs_domain_materialises_binds_the_engine_disk_and_probes_the_server(
    cluster: Cluster,
) -> None:
    address = loopback_address()
    server = Listener(address, 2049)
    try:
        cluster.create(STORAGEDOMAINS, domain(
            "he-nfs", "nfs", {"server": address, "path": "/exports/he", "version": "v4_1",
                              "mountOptions": ["soft"]}, role="hostedEngine"))
        obj = active(cluster, "he-nfs")
        status = obj["status"]
        assert status["storageClassName"] == "sd-he-nfs"
        assert (status["volumeMode"], status["accessModes"][0]) == ("Filesystem", "ReadWriteMany")
        sc = cluster.get(STORAGECLASSES, "sd-he-nfs")
        assert sc is not None and sc["provisioner"] == "kubernetes.io/no-provisioner"
        pv = cluster.get(PVS, "sd-he-nfs")
        assert pv is not None
        assert pv["spec"]["nfs"] == {"server": address, "path": "/exports/he"}
        assert pv["spec"]["mountOptions"] == ["nfsvers=4.1", "soft"]
        assert pv["spec"]["capacity"]["storage"] == "80Gi"
        for child in (sc, pv):
            (ref,) = child["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["name"], ref["uid"]) == (
                "StorageDomain", "he-nfs", obj["metadata"]["uid"])
            assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == (
                "hosted-engine-operator")
        reach = conditions(obj)["Reachable"]
        assert (reach["status"], reach["reason"]) == ("True", "EndpointReachable")
        assert field(obj, "status.probe.endpoint") == f"{address}:2049"
        # the only data domain is the hosted-engine one: the seed's warning
        sole = cluster.wait_condition(STORAGEDOMAINS, "he-nfs", "SoleDataDomain", status="True")
        assert "redeploy" in sole["message"]
        assert "OnlyDataDomain" in cluster.event_reasons("he-nfs")

        pvc = bind_engine_disk(cluster, "he-nfs")
        assert pvc["spec"]["volumeName"] == "sd-he-nfs"
        done = cluster.wait_field(STORAGEDOMAINS, "he-nfs", "status.free", "0")
        assert done == "0"
        final = cluster.get(STORAGEDOMAINS, "he-nfs")
        assert field(final, "status.requested") == "58Gi"
        assert field(final, "status.capacity") == "80Gi"
        assert field(final, "status.claims") == [
            {"namespace": NS, "name": "engine-disk", "size": "58Gi", "volumeName": "sd-he-nfs"}]

        # a data domain beside it lifts the warning
        cluster.create(STORAGEDOMAINS, domain(
            "data-nfs", "nfs", {"server": address, "path": "/exports/data"}))
        cluster.wait_condition(STORAGEDOMAINS, "he-nfs", "SoleDataDomain", status="False")
    finally:
        server.close()
