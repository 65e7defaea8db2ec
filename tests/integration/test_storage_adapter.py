"""The storage adapter's TCP probe against real sockets, and a held deletion that survives an
operator restart."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from harness import PVCS, PVS, STORAGEDOMAINS, Cluster, LabCluster, OperatorThread
from hosted_engine.adapters.storage import probe_all, probe_tcp

pytestmark = pytest.mark.lab


def test_probe_tells_a_listener_from_a_closed_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        up = probe_tcp("127.0.0.1", port, timeout=1.0)
        assert (up.endpoint, up.reachable) == (f"127.0.0.1:{port}", True)
    down = probe_tcp("127.0.0.1", port, timeout=1.0)
    assert down.reachable is False and down.error  # e.g. "Connection refused"


def test_probe_all_keeps_the_order_and_brackets_ipv6() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        results = probe_all([("127.0.0.1", port), ("[::1]", 9)], timeout=1.0)
    assert [r.endpoint for r in results] == [f"127.0.0.1:{port}", "[::1]:9"]
    assert [r.reachable for r in results] == [True, False]


def test_held_deletion_resumes_after_an_operator_restart(
    lab_cluster: LabCluster, make_operator: Callable[..., OperatorThread]
) -> None:
    first = make_operator()
    cluster = Cluster(lab_cluster, first)
    cluster.create(STORAGEDOMAINS, {
        "apiVersion": "hostedengine.io/v1alpha1", "kind": "StorageDomain",
        "metadata": {"name": "data-fc"},
        "spec": {"type": "fc", "capacity": "100Gi",
                 "fc": {"wwids": ["3600a098038303053453f463045727a41"]}}})
    cluster.wait_field(STORAGEDOMAINS, "data-fc", "status.state", "Active")
    cluster.ensure_namespace("vms")
    cluster.create(PVCS, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "disk", "namespace": "vms"},
        "spec": {"storageClassName": "sd-data-fc", "volumeMode": "Block",
                 "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}}})
    cluster.wait_field(PVCS, "disk", "status.phase", "Bound", namespace="vms")
    cluster.delete(STORAGEDOMAINS, "data-fc")
    cluster.wait_condition(STORAGEDOMAINS, "data-fc", "DeletionBlocked", status="True")
    first.stop()

    make_operator()  # a new replica picks the held deletion up
    cluster.delete(PVCS, "disk", "vms")
    cluster.wait_gone(STORAGEDOMAINS, "data-fc", timeout=30)
    assert cluster.list(PVS, label_selector="hostedengine.io/storage-domain=data-fc") == []
