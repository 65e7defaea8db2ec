"""Property tests: for cross-field rules, the model and the CRD's CEL rules accept and refuse
the same objects (so an object that bypassed the schema is reported the same way)."""

from __future__ import annotations

from typing import Any

from celeval import both
from hosted_engine.models.backup import Backup
from hosted_engine.models.rollingmaintenance import RollingMaintenance
from hosted_engine.models.storagedomain import StorageDomain
from hypothesis import given, settings
from hypothesis import strategies as st

BLOCKS: dict[str, dict[str, Any]] = {
    "nfs": {"server": "nfs.example.com", "path": "/exports/he"},
    "iscsi": {"portals": [{"address": "10.0.0.50"}], "target": "iqn.2026-01.com.example:he"},
    "fc": {"wwids": ["3600508b400105e210000900000490000"]},
    "glusterfs": {"server": "gluster1", "volume": "engine"},
    "csi": {"storageClassName": "ceph-rbd"},
}


@settings(max_examples=150, deadline=None)
@given(
    type_=st.sampled_from(sorted(BLOCKS)),
    blocks=st.sets(st.sampled_from(sorted(BLOCKS)), max_size=2),
    role=st.sampled_from([None, "hostedEngine", "data", "iso", "export"]),
    capacity=st.sampled_from([None, "10Gi", "73Gi", "74Gi", "75000Mi", "1Ti", 79456894976]),
)
def test_storage_domain_model_and_cel_agree(
    type_: str, blocks: set[str], role: str | None, capacity: Any
) -> None:
    spec: dict[str, Any] = {"type": type_, **{b: BLOCKS[b] for b in blocks}}
    if role is not None:
        spec["role"] = role
    if capacity is not None:
        spec["capacity"] = capacity
    model, cel = both(StorageDomain, spec)
    assert (model == []) == (cel == []), (spec, model, cel)


@settings(max_examples=100, deadline=None)
@given(
    forms=st.sets(st.sampled_from(["hosts", "selector", "groups"])),
    stage_timeout=st.sampled_from([None, "1s", "5s", "10s", "30m", "24h"]),
    poll=st.sampled_from([None, "1s", "10s", "5m"]),
)
def test_rolling_maintenance_model_and_cel_agree(
    forms: set[str], stage_timeout: str | None, poll: str | None
) -> None:
    values = {"hosts": ["host-1"], "selector": {"matchLabels": {"a": "b"}}, "groups": {}}
    spec: dict[str, Any] = {"scope": {f: values[f] for f in forms}}
    if stage_timeout is not None:
        spec["stageTimeout"] = stage_timeout
    if poll is not None:
        spec["pollInterval"] = poll
    model, cel = both(RollingMaintenance, spec)
    assert (model == []) == (cel == []), (spec, model, cel)


@settings(max_examples=100, deadline=None)
@given(
    targets=st.sets(st.sampled_from(["s3", "pvc", "filesystem"])),
    schedule=st.booleans(),
    zone=st.booleans(),
    retention=st.booleans(),
)
def test_backup_model_and_cel_agree(
    targets: set[str], schedule: bool, zone: bool, retention: bool
) -> None:
    values: dict[str, Any] = {
        "s3": {
            "endpoint": "https://s3.example.com",
            "bucket": "backups",
            "credentialsSecretRef": {"name": "s3"},
        },
        "pvc": {"claimName": "backups"},
        "filesystem": {"path": "/backups"},
    }
    spec: dict[str, Any] = {
        "source": {"hostedEngine": "engine"},
        "target": {t: values[t] for t in targets},
    }
    if schedule:
        spec["schedule"] = "0 * * * *"
    if zone:
        spec["timeZone"] = "UTC"
    if retention:
        spec["retention"] = {"keepLast": 3}
    model, cel = both(Backup, spec)
    assert (model == []) == (cel == []), (spec, model, cel)
