"""The examples on the lab: what the demo applies becomes Active and takes the engine's disk;
every per-type example is accepted by the API server's schema and CEL rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import NAMESPACES, PVCS, ROOT, STORAGEDOMAINS, Cluster, LabCluster, conditions

pytestmark = pytest.mark.lab

LAB_EXAMPLES = sorted((ROOT / "examples" / "lab").glob("storagedomain*.yaml"))


def test_lab_examples_become_active_and_bind_the_engine_disk(cluster: Cluster) -> None:
    for path in LAB_EXAMPLES:
        cluster.apply_yaml(path)
    for name in ("hosted-engine", "data"):
        cluster.wait_field(STORAGEDOMAINS, name, "status.state", "Active")
    he = cluster.wait_condition(STORAGEDOMAINS, "hosted-engine", "SoleDataDomain",
                                status="False")
    assert he["reason"] == "OtherDataDomains"
    obj = cluster.get(STORAGEDOMAINS, "hosted-engine")
    assert obj is not None
    assert conditions(obj)["Reachable"]["reason"] == "NotProbed"
    status = obj["status"]
    cluster.ensure_namespace("hosted-engine")
    cluster.create(PVCS, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "engine-disk", "namespace": "hosted-engine"},
        "spec": {"storageClassName": status["storageClassName"],
                 "volumeMode": status["volumeMode"], "accessModes": ["ReadWriteMany"],
                 "resources": {"requests": {"storage": "58Gi"}}}})
    cluster.wait_field(PVCS, "engine-disk", "status.phase", "Bound", namespace="hosted-engine")
    cluster.wait_field(STORAGEDOMAINS, "hosted-engine", "status.requested", "58Gi")


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "storagedomains").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_per_type_examples_are_accepted_by_the_api_server(
    lab_cluster: LabCluster, path: Path
) -> None:
    cluster = Cluster(lab_cluster, None)  # no operator: nothing probes example.com here
    cluster.kube.create_or_get(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": "hosted-engine-system"}})
    created = cluster.apply_yaml(path)
    assert any(o["kind"] == "StorageDomain" for o in created)
