"""StorageDomain validation rules (pure): one test per rule, both sides of each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hosted_engine.logic import storage as s
from hosted_engine.models import StorageDomain

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def sd(
    name: str = "d",
    type_: str = "nfs",
    block: dict[str, Any] | None = None,
    *,
    role: str = "data",
    capacity: str | None = "80Gi",
    created: datetime = T0,
    deleting: bool = False,
    **spec: Any,
) -> StorageDomain:
    blocks = {
        "nfs": {"server": "nfs.example.com", "path": "/exports/he"},
        "iscsi": {"portals": [{"address": "10.0.0.5"}], "target": "iqn.2026-01.io.example:t"},
        "fc": {"wwids": ["3600a098038303053453f463045727a41"]},
        "glusterfs": {"server": "g1.example.com", "volume": "engine"},
        "csi": {"storageClassName": "fast"},
    }
    body: dict[str, Any] = {"type": type_, "role": role, type_: block or blocks[type_], **spec}
    if capacity is not None:
        body["capacity"] = capacity
    meta: dict[str, Any] = {
        "name": name,
        "uid": f"uid-{name}",
        "generation": 1,
        "creationTimestamp": created.isoformat(),
    }
    if deleting:
        meta["deletionTimestamp"] = created.isoformat()
    return StorageDomain.model_validate({"metadata": meta, "spec": body})


def reasons(domain: StorageDomain, peers: list[StorageDomain] | None = None) -> list[str]:
    return [p.reason for p in s.validate(domain, peers or [])]


# --- hosted-engine capacity ------------------------------------------------------------------


def test_hosted_engine_domain_needs_74gi() -> None:
    ok = sd(role="hostedEngine", capacity="74Gi")
    assert s.capacity_problem(ok.spec) is None
    # the schema refuses less; an object that bypassed it is refused the same way
    small = ok.model_copy(deep=True)
    small.spec.capacity = type(ok.spec.capacity)("73Gi")  # type: ignore[misc]
    problem = s.capacity_problem(small.spec)
    assert problem is not None and "at least 74Gi" in problem and "73Gi" in problem
    assert s.REASON_CAPACITY_TOO_SMALL in reasons(small)


def test_data_domains_have_no_minimum() -> None:
    assert s.capacity_problem(sd(capacity="1Gi").spec) is None


# --- connection strings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ("nfs.example.com", False),
        ("10.1.2.3", False),
        ("[fd00::1]", False),
        ("fd00::1", False),
        ("999.1.1.1", True),
        ("10.1.2", True),
        ("-bad.example.com", True),
        ("a" * 64 + ".example.com", True),
        ("[fd00::zz]", True),
    ],
)
def test_host_addresses(value: str, bad: bool) -> None:
    problem = s.host_problem(value, "spec.nfs.server")
    assert (problem is not None) == bad
    if bad:
        assert problem is not None and problem.startswith("spec.nfs.server:")


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ("/exports/he", False),
        ("/", False),
        ("/exports//he", True),
        ("/exports/he/", True),
        ("/exports/../etc", True),
        ("/exports/./he", True),
        ("/exports/h e", True),
    ],
)
def test_nfs_paths(path: str, bad: bool) -> None:
    assert (s.nfs_path_problem(path) is not None) == bad


def test_nfs_version_set_twice_is_refused() -> None:
    domain = sd(
        block={
            "server": "nfs.example.com",
            "path": "/he",
            "version": "v3",
            "mountOptions": ["nfsvers=4"],
        }
    )
    (problem,) = s.connection_problems(domain.spec)
    assert "conflicts with version v3" in problem
    auto = sd(block={"server": "nfs.example.com", "path": "/he", "mountOptions": ["nfsvers=4"]})
    assert s.connection_problems(auto.spec) == []


def test_nfs_duplicate_mount_options() -> None:
    domain = sd(
        block={"server": "nfs.example.com", "path": "/he", "mountOptions": ["soft", "soft"]}
    )
    assert any("given twice" in p for p in s.connection_problems(domain.spec))


def test_iscsi_portals_and_iqn_month() -> None:
    dup = sd(
        "i",
        "iscsi",
        {
            "portals": [{"address": "10.0.0.5"}, {"address": "10.0.0.5", "port": 3260}],
            "target": "iqn.2026-13.io.example:t",
        },
    )
    problems = s.connection_problems(dup.spec)
    assert any("10.0.0.5:3260 listed twice" in p for p in problems)
    assert any("month 13" in p for p in problems)
    assert s.connection_problems(sd("i", "iscsi").spec) == []


def test_fc_duplicate_wwids() -> None:
    wwid = "3600a098038303053453f463045727a41"
    domain = sd("f", "fc", {"wwids": [wwid, wwid.upper()]})
    assert any("listed twice" in p for p in s.connection_problems(domain.spec))


def test_gluster_servers_must_differ() -> None:
    domain = sd(
        "g",
        "glusterfs",
        {
            "server": "g1.example.com",
            "volume": "engine",
            "backupServers": ["g2.example.com", "G1.example.com"],
        },
    )
    (problem,) = s.connection_problems(domain.spec)
    assert "repeats a server" in problem
    assert s.REASON_INVALID_CONNECTION in reasons(domain)


# --- gluster replica 3 -----------------------------------------------------------------------


def test_gluster_replica_3_is_required() -> None:
    domain = sd("g", "glusterfs")
    assert domain.spec.glusterfs is not None and domain.spec.glusterfs.replica == 3
    assert s.replica_problem(domain.spec) is None
    bypassed = domain.model_copy(deep=True)
    assert bypassed.spec.glusterfs is not None
    bypassed.spec.glusterfs.replica = 2
    problem = s.replica_problem(bypassed.spec)
    assert problem is not None and "replica 3" in problem
    assert reasons(bypassed) == [s.REASON_REPLICA_REQUIRED]


# --- CHAP ---------------------------------------------------------------------------------------


def test_chap_secrets_must_be_one_secret() -> None:
    base = {"portals": [{"address": "10.0.0.5"}], "target": "iqn.2026-01.io.example:t"}
    same = sd(
        "i",
        "iscsi",
        {
            **base,
            "chapSecretRef": {"name": "chap", "namespace": "storage"},
            "discoveryChapSecretRef": {"name": "chap", "namespace": "storage"},
        },
    )
    assert s.chap_problem(same.spec) is None
    assert s.chap_secret_keys(same.spec) == [
        (
            "storage",
            "chap",
            [
                "node.session.auth.username",
                "node.session.auth.password",
                "discovery.sendtargets.auth.username",
                "discovery.sendtargets.auth.password",
            ],
        )
    ]
    other = sd(
        "i",
        "iscsi",
        {
            **base,
            "chapSecretRef": {"name": "chap", "namespace": "storage"},
            "discoveryChapSecretRef": {"name": "disc", "namespace": "storage"},
        },
    )
    assert s.REASON_CHAP_SECRETS_DIFFER in reasons(other)


# --- shared iSCSI target ------------------------------------------------------------------------


def iscsi(
    name: str, role: str, target: str, created: datetime, lun: int = 0, deleting: bool = False
) -> StorageDomain:
    return sd(
        name,
        "iscsi",
        {"portals": [{"address": "10.0.0.5"}], "target": target, "lun": lun},
        role=role,
        created=created,
        deleting=deleting,
    )


def test_second_domain_on_the_hosted_engine_target_is_refused() -> None:
    he = iscsi("he", "hostedEngine", "iqn.2026-01.io.example:he", T0)
    data = iscsi("data", "data", "iqn.2026-01.io.example:HE", T0 + timedelta(seconds=5), lun=3)
    problem = s.shared_target_problem(data, [he])
    assert problem is not None and "the hosted-engine domain he" in problem
    assert s.shared_target_problem(he, [data]) is None  # the earlier one keeps working
    assert reasons(data, [he]) == [s.REASON_SHARED_TARGET]


def test_hosted_engine_domain_on_a_used_target_is_refused() -> None:
    data = iscsi("data", "data", "iqn.2026-01.io.example:t", T0)
    he = iscsi("he", "hostedEngine", "iqn.2026-01.io.example:t", T0 + timedelta(minutes=1))
    problem = s.shared_target_problem(he, [data])
    assert problem is not None and "domain data" in problem


def test_targets_shared_without_the_hosted_engine_domain_are_allowed() -> None:
    a = iscsi("a", "data", "iqn.2026-01.io.example:t", T0)
    b = iscsi("b", "data", "iqn.2026-01.io.example:t", T0 + timedelta(seconds=1), lun=1)
    assert s.shared_target_problem(b, [a]) is None


def test_a_peer_being_deleted_does_not_hold_the_target() -> None:
    he = iscsi("he", "hostedEngine", "iqn.2026-01.io.example:t", T0, deleting=True)
    data = iscsi("data", "data", "iqn.2026-01.io.example:t", T0 + timedelta(seconds=1))
    assert s.shared_target_problem(data, [he]) is None


# --- sole data domain ---------------------------------------------------------------------------


def test_sole_data_domain_warning() -> None:
    he = sd("he", role="hostedEngine")
    assert s.is_sole_data_domain(he, [])
    assert s.is_sole_data_domain(he, [sd("iso", role="iso")])
    assert not s.is_sole_data_domain(he, [sd("data")])
    assert s.is_sole_data_domain(he, [sd("data", deleting=True)])
    assert not s.is_sole_data_domain(sd("data"), [])


def test_parse_reports_schema_errors_with_the_field() -> None:
    message = s.parse({"metadata": {"name": "x"}, "spec": {"type": "nfs", "capacity": "1Gi"}})
    assert isinstance(message, str)
    assert "nfs must be set" in message


def test_same_second_the_materialised_domain_keeps_the_target() -> None:
    data = iscsi("a-data", "data", "iqn.2026-01.io.example:t", T0)
    he = iscsi("he", "hostedEngine", "iqn.2026-01.io.example:t", T0)
    # neither materialised: the hosted-engine domain wins the tie
    assert s.shared_target_problem(data, [he]) is not None
    assert s.shared_target_problem(he, [data]) is None
    # the data domain materialised first: it keeps the target, the newcomer is refused
    live = data.model_copy(deep=True)
    live.status.storage_class_name = "sd-a-data"
    live.status.state = type(live.status.state)("Active")
    assert s.shared_target_problem(live, [he]) is None
    assert s.shared_target_problem(he, [live]) is not None
