"""StorageDomain: one block per type, the 74Gi rule, connection strings, status."""

from __future__ import annotations

from typing import Any

import pytest
from celeval import both, model_errors
from hosted_engine.models.storagedomain import (
    StorageDomain,
    StorageDomainSpec,
    StorageDomainState,
)

SECRET = {"name": "chap", "namespace": "hosted-engine"}
BLOCKS: dict[str, dict[str, Any]] = {
    "nfs": {"server": "nfs.example.com", "path": "/exports/he"},
    "iscsi": {
        "portals": [{"address": "10.0.0.50"}],
        "target": "iqn.2026-01.com.example:storage.he",
        "chapSecretRef": SECRET,
    },
    "fc": {"wwids": ["3600508b400105e210000900000490000"]},
    "glusterfs": {"server": "gluster1", "volume": "engine", "backupServers": ["gluster2"]},
    "csi": {"storageClassName": "ceph-rbd"},
}


def sd(type_: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, type_: BLOCKS[type_]}
    if type_ != "csi":
        out["capacity"] = "100Gi"
    out.update(extra)
    return out


@pytest.mark.parametrize("type_", list(BLOCKS))
def test_each_type_with_its_block_is_valid(type_: str) -> None:
    assert both(StorageDomain, sd(type_)) == ([], [])


def test_defaults() -> None:
    spec = StorageDomainSpec.model_validate(sd("iscsi"))
    assert spec.role == "data"
    assert spec.reclaim_policy == "Retain"
    assert spec.maintenance is False
    assert spec.iscsi is not None
    assert spec.iscsi.portals[0].port == 3260 and spec.iscsi.lun == 0
    assert spec.endpoints() == [("10.0.0.50", 3260)]
    nfs = StorageDomainSpec.model_validate(sd("nfs"))
    assert nfs.nfs is not None and nfs.nfs.version == "auto"
    assert nfs.endpoints() == [("nfs.example.com", 2049)]
    gluster = StorageDomainSpec.model_validate(sd("glusterfs"))
    assert gluster.glusterfs is not None and gluster.glusterfs.replica == 3
    assert [h for h, _ in gluster.endpoints()] == ["gluster1", "gluster2"]


def test_the_block_must_match_the_type() -> None:
    wrong = {"type": "nfs", "capacity": "100Gi", "iscsi": BLOCKS["iscsi"]}
    model, cel = both(StorageDomain, wrong)
    assert model == ["spec: nfs must be set when type is nfs, and only then"]
    assert sorted(cel) == [
        "spec: iscsi must be set when type is iscsi, and only then",
        "spec: nfs must be set when type is nfs, and only then",
    ]
    extra = {**sd("csi"), "nfs": BLOCKS["nfs"]}
    model, cel = both(StorageDomain, extra)
    assert model and cel == ["spec: nfs must be set when type is nfs, and only then"]


def test_capacity_required_except_for_csi() -> None:
    spec = sd("nfs")
    del spec["capacity"]
    model, cel = both(StorageDomain, spec)
    assert model == ["spec: capacity is required for nfs, iscsi, fc and glusterfs"]
    assert cel == ["spec: capacity is required for nfs, iscsi, fc and glusterfs"]


@pytest.mark.parametrize("capacity", ["73Gi", "70000Mi", 1024, "74G"])
def test_hosted_engine_domain_needs_74Gi(capacity: Any) -> None:
    model, cel = both(StorageDomain, sd("nfs", role="hostedEngine", capacity=capacity))
    assert len(model) == 1 and "at least 74Gi" in model[0]
    assert cel == ["spec: a hostedEngine domain needs a capacity of at least 74Gi"]


@pytest.mark.parametrize("capacity", ["74Gi", "0.5Ti", 80 * 2**30])
def test_hosted_engine_domain_of_74Gi_or_more(capacity: Any) -> None:
    assert both(StorageDomain, sd("iscsi", role="hostedEngine", capacity=capacity)) == ([], [])


def test_hosted_engine_csi_domain_without_capacity_is_refused() -> None:
    model, cel = both(StorageDomain, sd("csi", role="hostedEngine"))
    assert model and cel == ["spec: a hostedEngine domain needs a capacity of at least 74Gi"]


def test_type_is_immutable_in_the_schema() -> None:
    _, cel = both(StorageDomain, sd("nfs"), old=sd("csi"))
    assert cel == ["spec: type is immutable"]


@pytest.mark.parametrize(
    ("block", "field", "message"),
    [
        ({"type": "nfs", "nfs": {"server": "x", "path": "relative"}}, "spec.nfs.path", "pattern"),
        (
            {"type": "nfs", "nfs": {"server": "x", "path": "/e", "version": "v2"}},
            "spec.nfs.version",
            "'auto'",
        ),
        (
            {"type": "iscsi", "iscsi": {**BLOCKS["iscsi"], "target": "target1"}},
            "spec.iscsi.target",
            "pattern",
        ),
        (
            {"type": "iscsi", "iscsi": {**BLOCKS["iscsi"], "portals": []}},
            "spec.iscsi.portals",
            "at least 1",
        ),
        (
            {"type": "iscsi", "iscsi": {**BLOCKS["iscsi"], "lun": 20000}},
            "spec.iscsi.lun",
            "less than or equal",
        ),
        (
            {"type": "iscsi", "iscsi": {**BLOCKS["iscsi"], "chapSecretRef": {"name": "c"}}},
            "spec.iscsi.chapSecretRef.namespace",
            "Field required",
        ),
        ({"type": "fc", "fc": {"wwids": ["not-a-wwid"]}}, "spec.fc.wwids[0]", "pattern"),
        (
            {"type": "glusterfs", "glusterfs": {**BLOCKS["glusterfs"], "replica": 2}},
            "spec.glusterfs.replica",
            "greater than or equal to 3",
        ),
        ({"type": "csi", "csi": {"storageClassName": "Bad Class"}}, "spec.csi", "pattern"),
        ({"type": "ceph", "csi": BLOCKS["csi"]}, "spec.type", "'nfs'"),
        ({**sd("csi"), "capacity": "-5Gi"}, "spec.capacity", "invalid quantity"),
        ({**sd("csi"), "reclaimPolicy": "Recycle"}, "spec.reclaimPolicy", "'Retain'"),
    ],
)
def test_bad_input_names_the_field(block: dict[str, Any], field: str, message: str) -> None:
    spec = {"capacity": "100Gi", **block}
    errors = model_errors(StorageDomain, spec)
    assert any(e.startswith(field) and message in e for e in errors), errors


def test_status_round_trip() -> None:
    status = {
        "state": "Active",
        "capacity": "100Gi",
        "requested": "58Gi",
        "free": "42Gi",
        "claims": [{"namespace": "ovirt", "name": "engine-disk", "size": "58Gi"}],
        "probe": {"endpoint": "10.0.0.50:3260", "reachable": True},
    }
    obj = StorageDomain.model_validate(
        {"metadata": {"name": "he"}, "spec": sd("iscsi"), "status": status}
    )
    assert obj.status.state == StorageDomainState.ACTIVE
    assert obj.status.free is not None and obj.status.free.to_bytes() == 42 * 2**30
    assert StorageDomain.model_validate(obj.to_dict()) == obj
