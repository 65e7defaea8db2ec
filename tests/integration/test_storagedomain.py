"""StorageDomain end to end: the operator on the lab materialises each type, binds a disk claim
like the engine's, refuses what it must, and probes the storage endpoints over TCP.

The lab has no storage servers: endpoints are TCP listeners on loopback addresses
(127.0.0.0/8 is all loopback on Linux, so each test gets its own address and the real ports,
2049 for NFS and 24007 for glusterd) or closed ports.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import (
    CLUSTER_PEERINGS,
    HOSTEDENGINES,
    PVCS,
    PVS,
    STORAGECLASSES,
    STORAGEDOMAINS,
    Cluster,
    LabCluster,
    OperatorThread,
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


@pytest.fixture
def nfs_server() -> Iterator[str]:
    """The address of an "NFS server": a listener on port 2049 of a loopback address."""
    lst = Listener(loopback_address(), 2049)
    yield lst.host
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
        assert wait_for(
            "the expected Events",
            lambda: "OnlyDataDomain" in cluster.event_reasons("he-nfs"),
            timeout=30)

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


def test_iscsi_domain_serves_raw_block_and_probes_each_portal(
    cluster: Cluster, listener: Listener
) -> None:
    cluster.create(STORAGEDOMAINS, domain("he-iscsi", "iscsi", {
        "portals": [{"address": "127.0.0.1", "port": listener.port}],
        "target": HE_IQN, "lun": 1}, role="hostedEngine", capacity="100Gi"))
    obj = active(cluster, "he-iscsi")
    assert (obj["status"]["volumeMode"], obj["status"]["accessModes"]) == (
        "Block", ["ReadWriteMany", "ReadWriteOnce"])
    pv = cluster.get(PVS, "sd-he-iscsi")
    assert pv is not None
    assert pv["spec"]["iscsi"] == {
        "targetPortal": f"127.0.0.1:{listener.port}", "iqn": HE_IQN, "lun": 1}
    assert pv["spec"]["volumeMode"] == "Block"
    assert conditions(obj)["Reachable"]["reason"] == "EndpointReachable"
    pvc = bind_engine_disk(cluster, "he-iscsi")
    assert (pvc["spec"]["volumeName"], pvc["spec"]["volumeMode"]) == ("sd-he-iscsi", "Block")


def test_fc_domain_has_one_volume_per_lun_and_nothing_to_probe(cluster: Cluster) -> None:
    wwids = ["3600a098038303053453f463045727a41", "3600a098038303053453f463045727a42"]
    cluster.create(STORAGEDOMAINS, domain("data-fc", "fc", {"wwids": wwids}, capacity="200Gi"))
    obj = active(cluster, "data-fc")
    names = obj["status"]["persistentVolumes"]
    assert len(names) == 2
    for name, wwid in zip(sorted(names), sorted(wwids), strict=True):
        pv = cluster.get(PVS, name)
        assert pv is not None
        assert pv["spec"]["fc"] == {"wwids": [wwid]}
        assert pv["spec"]["capacity"]["storage"] == "100Gi"
    reach = conditions(obj)["Reachable"]
    assert (reach["status"], reach["reason"]) == ("Unknown", "NotProbed")
    pvc = bind_engine_disk(cluster, "data-fc")
    assert pvc["spec"]["volumeName"] in names
    cluster.wait_field(STORAGEDOMAINS, "data-fc", "status.free", "100Gi")


def test_glusterfs_domain_goes_through_the_gluster_csi_driver(cluster: Cluster) -> None:
    address = loopback_address()
    glusterd = Listener(address, 24007)
    try:
        cluster.create(STORAGEDOMAINS, domain("he-gluster", "glusterfs", {
            "server": address, "volume": "engine", "backupServers": ["127.0.0.1"]},
            role="hostedEngine"))
        obj = cluster.wait_condition(STORAGEDOMAINS, "he-gluster", "Reachable", status="True")
        assert obj["reason"] == "PartiallyReachable"  # the backup server has no glusterd
        assert "127.0.0.1:24007" in obj["message"]
        pv = cluster.get(PVS, "sd-he-gluster")
        assert pv is not None
        assert pv["spec"]["csi"] == {
            "driver": "gluster.csi.k8s.io", "volumeHandle": f"{address}/engine",
            "volumeAttributes": {"server": address, "share": "/engine"}}
        assert pv["spec"]["mountOptions"] == ["backup-volfile-servers=127.0.0.1"]
        pvc = bind_engine_disk(cluster, "he-gluster")
        assert pvc["spec"]["volumeName"] == "sd-he-gluster"
    finally:
        glusterd.close()


def test_csi_domain_uses_the_named_class_once_it_exists(cluster: Cluster) -> None:
    cluster.create(STORAGEDOMAINS, domain(
        "data-csi", "csi", {"storageClassName": "fast-csi"}, capacity="500Gi"))
    cond = cluster.wait_condition(STORAGEDOMAINS, "data-csi", "Ready", status="False",
                                  reason="StorageClassNotFound")
    assert "fast-csi" in cond["message"]
    assert field(cluster.get(STORAGEDOMAINS, "data-csi"), "status.state") == "Unattached"
    # the class appears: the domain learns it from the StorageClass watch
    cluster.create(STORAGECLASSES, {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "fast-csi"}, "provisioner": "lab.hostedengine.io/csi"})
    obj = active(cluster, "data-csi")
    assert obj["status"]["storageClassName"] == "fast-csi"
    assert cluster.list(PVS, label_selector="hostedengine.io/storage-domain=data-csi") == []
    cluster.ensure_namespace(NS)
    cluster.create(PVCS, engine_claim("engine-disk", {"storageClassName": "fast-csi",
                                                      "accessModes": ["ReadWriteMany"]}))
    cluster.wait_field(PVCS, "engine-disk", "status.phase", "Bound", namespace=NS)
    cluster.wait_field(STORAGEDOMAINS, "data-csi", "status.free", "442Gi")
    assert field(cluster.get(STORAGEDOMAINS, "data-csi"), "status.requested") == "58Gi"


def test_hosted_engine_domain_below_74gi_is_refused_with_a_clear_message(
    cluster: Cluster,
) -> None:
    from hosted_engine.adapters.kube import Invalid

    with pytest.raises(Invalid) as refused:
        cluster.create(STORAGEDOMAINS, domain(
            "he-small", "nfs", {"server": "nfs.example.com", "path": "/he"},
            role="hostedEngine", capacity="50Gi"))
    assert "at least 74Gi" in str(refused.value)
    assert "spec.capacity" in str(refused.value)
    # a valid domain cannot be shrunk below the minimum either
    cluster.create(STORAGEDOMAINS, domain(
        "he-ok", "nfs", {"server": "nfs.example.com", "path": "/he"}, role="hostedEngine"))
    with pytest.raises(Invalid):
        cluster.patch(STORAGEDOMAINS, "he-ok", {"spec": {"capacity": "73Gi"}})
    assert field(cluster.get(STORAGEDOMAINS, "he-ok"), "spec.capacity") == "80Gi"


def test_shared_iscsi_target_of_the_hosted_engine_domain_is_refused(
    cluster: Cluster, listener: Listener
) -> None:
    portal = [{"address": "127.0.0.1", "port": listener.port}]
    cluster.create(STORAGEDOMAINS, domain(
        "he-iscsi", "iscsi", {"portals": portal, "target": HE_IQN}, role="hostedEngine"))
    active(cluster, "he-iscsi")
    cluster.create(STORAGEDOMAINS, domain(
        "data-iscsi", "iscsi", {"portals": portal, "target": HE_IQN, "lun": 2}))
    cond = cluster.wait_condition(STORAGEDOMAINS, "data-iscsi", "Ready", status="False",
                                  reason="SharedIscsiTarget")
    assert "he-iscsi" in cond["message"] and HE_IQN in cond["message"]
    wait_for("a SharedIscsiTarget Warning Event",
             lambda: "SharedIscsiTarget" in cluster.event_reasons("data-iscsi"))
    assert cluster.get(PVS, "sd-data-iscsi") is None
    assert cluster.get(STORAGECLASSES, "sd-data-iscsi") is None
    # the hosted-engine domain keeps working
    assert field(cluster.get(STORAGEDOMAINS, "he-iscsi"), "status.state") == "Active"
    # another target is fine
    cluster.patch(STORAGEDOMAINS, "data-iscsi",
                  {"spec": {"iscsi": {"target": "iqn.2026-01.io.example:data"}}})
    active(cluster, "data-iscsi")
    assert cluster.get(PVS, "sd-data-iscsi") is not None


def test_deletion_is_held_while_a_claim_uses_the_domain(
    cluster: Cluster, nfs_server: str
) -> None:
    cluster.create(STORAGEDOMAINS, domain(
        "data-nfs", "nfs", {"server": nfs_server, "path": "/data"}))
    bind_engine_disk(cluster, "data-nfs")
    cluster.delete(STORAGEDOMAINS, "data-nfs")
    cond = cluster.wait_condition(STORAGEDOMAINS, "data-nfs", "DeletionBlocked", status="True",
                                  reason="InUse")
    assert f"{NS}/engine-disk" in cond["message"]
    assert field(cluster.get(STORAGEDOMAINS, "data-nfs"), "status.state") == "Locked"
    assert cluster.get(PVS, "sd-data-nfs") is not None
    # the claim goes: the domain, its volume and its class follow
    cluster.delete(PVCS, "engine-disk", NS)
    cluster.wait_gone(STORAGEDOMAINS, "data-nfs")
    cluster.wait_gone(PVS, "sd-data-nfs")
    cluster.wait_gone(STORAGECLASSES, "sd-data-nfs")


def hosted_engine(domain_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "hostedengine.io/v1alpha1", "kind": "HostedEngine",
        "metadata": {"name": "engine", "namespace": NS},
        "spec": {"vm": {"disk": {"storageDomain": domain_name},
                        "image": {"containerDisk": {"image": "quay.io/ovirt/engine:4.5"}},
                        "network": {"fqdn": "engine.example.com"}}},
    }


def test_maintenance_is_refused_under_a_running_engine_then_stops_new_disks(
    cluster: Cluster,
) -> None:
    """Two LUNs, so the test holds whether or not the HostedEngine handler claims its own disk
    on the domain meanwhile: only free volumes are reserved, bound ones keep their disks."""
    wwids = ["3600a098038303053453f463045727b01", "3600a098038303053453f463045727b02"]
    cluster.create(STORAGEDOMAINS, domain("he-fc", "fc", {"wwids": wwids}, role="hostedEngine",
                                          capacity="160Gi"))
    active(cluster, "he-fc")
    cluster.ensure_namespace(NS)
    cluster.create(HOSTEDENGINES, hosted_engine("he-fc"))
    running = {"state": "EngineUp", "engine": {"vm": "up", "health": "good"},
               "vm": {"phase": "Running"}, "maintenance": {"mode": "none"}}
    cluster.patch_status(HOSTEDENGINES, "engine", running, NS)

    cluster.patch(STORAGEDOMAINS, "he-fc", {"spec": {"maintenance": True}})
    cond = cluster.wait_condition(STORAGEDOMAINS, "he-fc", "Maintenance", status="False",
                                  reason="MaintenanceRefused")
    assert f"{NS}/engine" in cond["message"] and "global maintenance" in cond["message"]
    wait_for("a MaintenanceRefused Warning Event",
             lambda: "MaintenanceRefused" in cluster.event_reasons("he-fc"))
    assert field(cluster.get(STORAGEDOMAINS, "he-fc"), "status.state") == "Active"

    # global maintenance: the HostedEngine watch wakes the domain, which enters maintenance
    cluster.patch(HOSTEDENGINES, "engine", {"spec": {"maintenance": {"mode": "global"}}}, NS)
    cluster.patch_status(HOSTEDENGINES, "engine",
                         {"state": "GlobalMaintenance", "maintenance": {"mode": "global"}}, NS)
    cluster.wait_field(STORAGEDOMAINS, "he-fc", "status.state", "Maintenance")
    selector = "hostedengine.io/storage-domain=he-fc"

    def reserved() -> list[dict[str, Any]]:
        return [pv for pv in cluster.list(PVS, label_selector=selector)
                if (pv["metadata"].get("annotations") or {}).get("hostedengine.io/reserved")]

    (pv, *_) = wait_for("a reserved volume", reserved)
    assert pv["spec"]["claimRef"]["namespace"] == "kube-system"
    assert "uid" not in pv["spec"]["claimRef"]
    # no new disk binds while in maintenance
    obj = cluster.get(STORAGEDOMAINS, "he-fc")
    assert obj is not None
    cluster.create(PVCS, engine_claim("new-disk", obj["status"], size="10Gi"))
    lab = cluster.lab.lab
    cluster.lab.runner.call(lambda: lab.settle(10))
    assert field(cluster.get(PVCS, "new-disk", NS), "status.phase") != "Bound"
    assert all(field(v, "spec.claimRef.name") != "new-disk"
               for v in cluster.list(PVS, label_selector=selector))

    # leaving maintenance releases the volumes and the waiting claim binds
    cluster.patch(STORAGEDOMAINS, "he-fc", {"spec": {"maintenance": False}})
    cluster.wait_field(STORAGEDOMAINS, "he-fc", "status.state", "Active")
    cluster.wait_field(PVCS, "new-disk", "status.phase", "Bound", namespace=NS)
    assert reserved() == []


def test_unreachable_endpoint_makes_the_domain_inactive_until_it_answers(
    cluster: Cluster,
) -> None:
    port = closed_port()
    cluster.create(STORAGEDOMAINS, domain("data-iscsi", "iscsi", {
        "portals": [{"address": "127.0.0.1", "port": port}],
        "target": "iqn.2026-01.io.example:data"}, probeInterval="1s"))
    cond = cluster.wait_condition(STORAGEDOMAINS, "data-iscsi", "Reachable", status="False",
                                  reason="EndpointUnreachable")
    assert f"127.0.0.1:{port}" in cond["message"]
    assert field(cluster.get(STORAGEDOMAINS, "data-iscsi"), "status.state") == "Inactive"
    wait_for("an EndpointUnreachable Warning Event",
             lambda: "EndpointUnreachable" in cluster.event_reasons("data-iscsi"))
    # the volume exists all the same (the storage may come back)
    assert cluster.get(PVS, "sd-data-iscsi") is not None
    server = Listener("127.0.0.1", port)
    try:
        cluster.wait_condition(STORAGEDOMAINS, "data-iscsi", "Reachable", status="True",
                               reason="EndpointReachable")
        cluster.wait_field(STORAGEDOMAINS, "data-iscsi", "status.state", "Active")
    finally:
        server.close()


def test_bad_connection_string_keeps_the_last_good_state(
    cluster: Cluster, nfs_server: str
) -> None:
    cluster.create(STORAGEDOMAINS, domain(
        "data-nfs", "nfs", {"server": nfs_server, "path": "/data"}))
    active(cluster, "data-nfs")
    cluster.patch(STORAGEDOMAINS, "data-nfs", {"spec": {"nfs": {"path": "/data/../etc"}}})
    cond = cluster.wait_condition(STORAGEDOMAINS, "data-nfs", "Ready", status="False",
                                  reason="InvalidConnection")
    assert "spec.nfs.path" in cond["message"] and ".." in cond["message"]
    wait_for("an InvalidConnection Warning Event",
             lambda: "InvalidConnection" in cluster.event_reasons("data-nfs"))
    obj = cluster.get(STORAGEDOMAINS, "data-nfs")
    assert field(obj, "status.state") == "Active"
    assert field(cluster.get(PVS, "sd-data-nfs"), "spec.nfs.path") == "/data"
    # the operator is still alive and follows the fix
    cluster.patch(STORAGEDOMAINS, "data-nfs", {"spec": {"nfs": {"path": "/data2"}}})
    cluster.wait_condition(STORAGEDOMAINS, "data-nfs", "Ready", status="True")
    cluster.wait_field(PVS, "sd-data-nfs", "spec.nfs.path", "/data2")


def test_operator_with_peering_acts_and_announces_itself(
    make_lab_cluster: Callable[..., LabCluster],
) -> None:
    """The harness runs the operator as a Deployment replica would (peering on)."""
    lab = make_lab_cluster(3, peering_crds=True)
    with OperatorThread(lab.kubeconfig, standalone=False, priority=100):
        cluster = Cluster(lab, None)
        wait_for("a keep-alive in the peering object", lambda: field(
            cluster.get(CLUSTER_PEERINGS, "hosted-engine-operator"), "status"))
        cluster.create(STORAGEDOMAINS, domain("data-fc", "fc", {
            "wwids": ["3600a098038303053453f463045727a41"]}))
        active(cluster, "data-fc")
