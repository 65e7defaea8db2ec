"""StorageDomain rendering (PVs and StorageClass per type), volume plans, claims, engines,
probe summaries, states and the whole decision (pure)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hosted_engine.logic import storage as s
from hosted_engine.models import StorageDomain

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LABEL = "hostedengine.io/storage-domain"


def body(name: str = "d", type_: str = "nfs", block: dict[str, Any] | None = None, *,
         role: str = "data", capacity: str | None = "80Gi", status: dict[str, Any] | None = None,
         generation: int = 1, **spec: Any) -> dict[str, Any]:
    blocks = {
        "nfs": {"server": "nfs.example.com", "path": "/exports/he"},
        "iscsi": {"portals": [{"address": "10.0.0.5"}, {"address": "10.0.0.6", "port": 3261}],
                  "target": "iqn.2026-01.io.example:t", "lun": 4},
        "fc": {"wwids": ["3600a098038303053453f463045727a41",
                         "3600a098038303053453f463045727a42",
                         "3600a098038303053453f463045727a43"]},
        "glusterfs": {"server": "g1.example.com", "volume": "engine",
                      "backupServers": ["g2.example.com", "g3.example.com"]},
        "csi": {"storageClassName": "fast"},
    }
    sp: dict[str, Any] = {"type": type_, "role": role, type_: block or blocks[type_], **spec}
    if capacity is not None:
        sp["capacity"] = capacity
    out: dict[str, Any] = {
        "apiVersion": "hostedengine.io/v1alpha1", "kind": "StorageDomain",
        "metadata": {"name": name, "uid": f"uid-{name}", "generation": generation,
                     "creationTimestamp": T0.isoformat()},
        "spec": sp,
    }
    if status is not None:
        out["status"] = status
    return out


def model(b: dict[str, Any]) -> StorageDomain:
    parsed = s.parse(b)
    assert isinstance(parsed, StorageDomain), parsed
    return parsed


def pv_of(b: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    (pv,) = s.render_volumes(model(b))
    pv = copy.deepcopy(pv)
    pv["spec"].update(overrides.pop("spec", {}))
    pv["metadata"].update(overrides)
    return pv


# --- rendering per type --------------------------------------------------------------------


def test_nfs_renders_one_volume_with_the_export_and_version() -> None:
    b = body(block={"server": "10.0.0.9", "path": "/he", "version": "v4_1",
                    "mountOptions": ["soft", "timeo=600"]}, reclaimPolicy="Delete")
    (pv,) = s.render_volumes(model(b))
    assert pv["metadata"]["name"] == "sd-d"
    assert pv["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "hosted-engine-operator", LABEL: "d"}
    spec = pv["spec"]
    assert spec["nfs"] == {"server": "10.0.0.9", "path": "/he"}
    assert spec["mountOptions"] == ["nfsvers=4.1", "soft", "timeo=600"]
    assert spec["capacity"] == {"storage": "80Gi"}
    assert spec["accessModes"] == ["ReadWriteMany", "ReadWriteOnce", "ReadOnlyMany"]
    assert spec["volumeMode"] == "Filesystem"
    assert spec["persistentVolumeReclaimPolicy"] == "Delete"
    assert spec["storageClassName"] == "sd-d"
    assert "claimRef" not in spec


@pytest.mark.parametrize(("version", "option"), [("v3", "nfsvers=3"), ("v4", "nfsvers=4"),
                                                  ("auto", None)])
def test_nfs_versions(version: str, option: str | None) -> None:
    (pv,) = s.render_volumes(model(body(block={"server": "n", "path": "/p",
                                                "version": version})))
    assert pv["spec"].get("mountOptions") == ([option] if option else None)


def test_iscsi_renders_the_lun_with_portals_and_chap() -> None:
    b = body("i", "iscsi", {
        "portals": [{"address": "10.0.0.5"}, {"address": "10.0.0.6", "port": 3261}],
        "target": "iqn.2026-01.io.example:t", "lun": 4,
        "initiatorName": "iqn.2026-01.io.example:host",
        "chapSecretRef": {"name": "chap", "namespace": "storage"}})
    (pv,) = s.render_volumes(model(b))
    assert pv["spec"]["iscsi"] == {
        "targetPortal": "10.0.0.5:3260", "portals": ["10.0.0.6:3261"],
        "iqn": "iqn.2026-01.io.example:t", "lun": 4,
        "initiatorName": "iqn.2026-01.io.example:host",
        "chapAuthSession": True, "chapAuthDiscovery": False,
        "secretRef": {"name": "chap", "namespace": "storage"}}
    assert (pv["spec"]["volumeMode"], pv["spec"]["accessModes"]) == (
        "Block", ["ReadWriteMany", "ReadWriteOnce"])


def test_iscsi_with_a_filesystem_is_single_node() -> None:
    b = body("i", "iscsi", {"portals": [{"address": "10.0.0.5"}],
                            "target": "iqn.2026-01.io.example:t", "fsType": "xfs"})
    (pv,) = s.render_volumes(model(b))
    assert pv["spec"]["iscsi"]["fsType"] == "xfs"
    assert (pv["spec"]["volumeMode"], pv["spec"]["accessModes"]) == (
        "Filesystem", ["ReadWriteOnce"])


def test_fc_splits_the_capacity_between_its_luns() -> None:
    pvs = s.render_volumes(model(body("f", "fc", capacity="300Gi")))
    assert [pv["spec"]["fc"]["wwids"][0][-2:] for pv in pvs] == ["41", "42", "43"]
    assert {pv["spec"]["capacity"]["storage"] for pv in pvs} == {"100Gi"}
    assert len({pv["metadata"]["name"] for pv in pvs}) == 3
    assert all(pv["metadata"]["name"].startswith("sd-f-") for pv in pvs)
    uneven = s.render_volumes(model(body("f", "fc", capacity="100")))
    assert [pv["spec"]["capacity"]["storage"] for pv in uneven] == ["33", "33", "33"]


def test_glusterfs_goes_through_a_csi_driver() -> None:
    (pv,) = s.render_volumes(model(body("g", "glusterfs")))
    assert pv["spec"]["csi"] == {
        "driver": s.DEFAULT_GLUSTER_CSI_DRIVER, "volumeHandle": "g1.example.com/engine",
        "volumeAttributes": {"server": "g1.example.com", "share": "/engine"}}
    assert pv["spec"]["mountOptions"] == ["backup-volfile-servers=g2.example.com:g3.example.com"]
    other = body("g", "glusterfs", {"server": "g1.example.com", "volume": "v",
                                    "csiDriver": "kadalu"})
    (pv2,) = s.render_volumes(model(other))
    assert pv2["spec"]["csi"]["driver"] == "kadalu"
    assert "mountOptions" not in pv2["spec"]


def test_csi_materialises_nothing_and_names_its_class() -> None:
    domain = model(body("c", "csi", capacity=None))
    assert s.render_volumes(domain) == []
    assert s.render_storage_class(domain) is None
    assert s.storage_class_name(domain) == "fast"
    assert s.volume_layout(domain.spec) == (None, [])


def test_storage_class_is_dedicated_and_provisions_nothing() -> None:
    sc = s.render_storage_class(model(body(reclaimPolicy="Retain")))
    assert sc == {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "sd-d", "labels": {
            "app.kubernetes.io/managed-by": "hosted-engine-operator", LABEL: "d"},
            "annotations": {s.DOMAIN_ANNOTATION: "d"}},
        "provisioner": "kubernetes.io/no-provisioner", "reclaimPolicy": "Retain",
        "volumeBindingMode": "Immediate", "allowVolumeExpansion": False,
    }


def test_long_names_keep_labels_and_names_valid() -> None:
    name = "x" * 100
    assert len(s.label_value(name)) == 63
    assert s.label_value(name) != s.label_value("x" * 99)
    (pv,) = s.render_volumes(model(body(name)))
    assert pv["metadata"]["labels"][LABEL] == s.label_value(name)
    assert pv["metadata"]["annotations"][s.DOMAIN_ANNOTATION] == name


def test_spec_hash_follows_the_source() -> None:
    a = pv_of(body())
    b = pv_of(body(block={"server": "nfs.example.com", "path": "/other"}))
    key = s.SPEC_HASH_ANNOTATION
    assert a["metadata"]["annotations"][key] != b["metadata"]["annotations"][key]
    assert a["metadata"]["annotations"][key] == pv_of(body())["metadata"]["annotations"][key]


# --- volume plans ------------------------------------------------------------------------------


CLAIM = {"kind": "PersistentVolumeClaim", "namespace": "engine", "name": "disk", "uid": "c1"}


def test_plan_creates_missing_and_keeps_matching_volumes() -> None:
    desired = s.render_volumes(model(body()))
    plan = s.plan_volumes("d", desired, [], maintenance=False)
    assert [v["metadata"]["name"] for v in plan.create] == ["sd-d"]
    again = s.plan_volumes("d", desired, desired, maintenance=False)
    assert again.empty and again.pending == []


def test_plan_replaces_a_free_changed_volume_but_not_a_bound_one() -> None:
    old = pv_of(body())
    desired = s.render_volumes(model(body(block={"server": "nfs.example.com", "path": "/x"})))
    assert s.plan_volumes("d", desired, [old], maintenance=False).delete == ["sd-d"]
    bound = pv_of(body(), spec={"claimRef": CLAIM})
    plan = s.plan_volumes("d", desired, [bound], maintenance=False)
    assert (plan.delete, plan.pending) == ([], ["sd-d"])


def test_plan_removes_volumes_no_longer_wanted() -> None:
    stray = pv_of(body(), name="sd-d-old")
    plan = s.plan_volumes("d", s.render_volumes(model(body())), [pv_of(body()), stray],
                          maintenance=False)
    assert plan.delete == ["sd-d-old"]


def test_maintenance_reserves_free_volumes_and_leaving_releases_them() -> None:
    desired = s.render_volumes(model(body()))
    free = pv_of(body(), resourceVersion="41")
    plan = s.plan_volumes("d", desired, [free], maintenance=True)
    assert (plan.reserve, plan.versions) == (["sd-d"], {"sd-d": "41"})
    # the observed version guards the patch: a volume bound meanwhile is not taken over
    assert s.reserve_patch("d", "41")["metadata"]["resourceVersion"] == "41"
    patch = s.reserve_patch("d")
    reserved = copy.deepcopy(free)
    reserved["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    reserved["spec"]["claimRef"] = patch["spec"]["claimRef"]
    assert s.is_reserved(reserved) and s.bound_claim(reserved) is None
    assert reserved["spec"]["claimRef"]["namespace"] == s.RESERVATION_NAMESPACE
    assert "uid" not in reserved["spec"]["claimRef"]  # pre-bound: the controller waits
    assert s.plan_volumes("d", desired, [reserved], maintenance=True).empty
    assert s.plan_volumes("d", desired, [reserved], maintenance=False).release == ["sd-d"]
    assert s.release_patch("7") == {
        "metadata": {"annotations": {s.RESERVED_ANNOTATION: None}, "resourceVersion": "7"},
        "spec": {"claimRef": None}}
    bound = pv_of(body(), spec={"claimRef": CLAIM})
    assert s.plan_volumes("d", desired, [bound], maintenance=True).empty  # disks stay


def test_volumes_created_in_maintenance_are_born_reserved() -> None:
    plan = s.plan_volumes("d", s.render_volumes(model(body())), [], maintenance=True)
    (created,) = plan.create
    assert s.is_reserved(created) and created["spec"]["claimRef"]["name"].startswith(
        "hostedengine-maintenance-")


# --- claims and engines ------------------------------------------------------------------------


def pvc(name: str, cls: str | None, volume: str | None = None, size: str = "58Gi",
        ns: str = "engine") -> dict[str, Any]:
    spec: dict[str, Any] = {"resources": {"requests": {"storage": size}}}
    if cls is not None:
        spec["storageClassName"] = cls
    if volume:
        spec["volumeName"] = volume
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def test_claims_using_the_class_or_a_volume() -> None:
    bound = pv_of(body(), spec={"claimRef": {**CLAIM, "name": "a"}})
    claims = [pvc("a", "sd-d", "sd-d"), pvc("b", "sd-d"), pvc("c", "other"),
              pvc("d", None, "sd-d", ns="vms"), pvc("e", "sd-d", size="bogus")]
    out = s.claims_using("sd-d", [bound], claims)
    assert [(c.namespace, c.name, c.size, c.volume_name) for c in out] == [
        ("engine", "a", "58Gi", "sd-d"), ("engine", "b", "58Gi", None),
        ("engine", "e", None, None), ("vms", "d", "58Gi", "sd-d")]


def engine(domain: str | None, *, state: str | None = None, vm: str | None = None,
           phase: str | None = None, maintenance: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if state:
        status["state"] = state
    if vm:
        status["engine"] = {"vm": vm}
    if phase:
        status["vm"] = {"phase": phase}
    if maintenance:
        status["maintenance"] = {"mode": maintenance}
    disk = {"storageDomain": domain} if domain else {}
    return {"metadata": {"name": "engine", "namespace": "he"},
            "spec": {"vm": {"disk": disk}}, "status": status}


@pytest.mark.parametrize(("kwargs", "blocks"), [
    ({"vm": "up"}, True),
    ({"phase": "Running"}, True),
    ({"state": "EngineStarting"}, True),
    ({"state": "EngineDown", "vm": "down"}, False),
    ({"vm": "up", "maintenance": "global"}, False),
    ({"state": "GlobalMaintenance", "phase": "Running"}, False),
    ({}, False),
])
def test_maintenance_blockers(kwargs: dict[str, Any], blocks: bool) -> None:
    ref = s.engine_ref(engine("d", **kwargs))
    assert (s.maintenance_blockers("d", [ref]) == [ref]) == blocks
    assert s.maintenance_blockers("other", [ref]) == []


def test_engine_ref_reads_garbage_leniently() -> None:
    ref = s.engine_ref({"metadata": {"name": "x"}, "spec": {"vm": "nonsense"}})
    assert (ref.storage_domain, ref.running, ref.global_maintenance) == (None, False, False)


# --- probe and state ---------------------------------------------------------------------------


def test_probe_endpoints_per_type() -> None:
    assert s.probe_endpoints(model(body()).spec) == [("nfs.example.com", 2049)]
    assert s.probe_endpoints(model(body("i", "iscsi")).spec) == [
        ("10.0.0.5", 3260), ("10.0.0.6", 3261)]
    assert s.probe_endpoints(model(body("g", "glusterfs")).spec) == [
        ("g1.example.com", 24007), ("g2.example.com", 24007), ("g3.example.com", 24007)]
    assert s.probe_endpoints(model(body("f", "fc")).spec) == []


def test_probe_summary() -> None:
    up, down = s.EndpointResult("a:1", True), s.EndpointResult("b:2", False, "refused")
    probe, reason = s.probe_summary([up], T0)
    assert (probe.reachable, reason, probe.checked_at) == (True, "EndpointReachable", T0)
    probe, reason = s.probe_summary([up, down], T0)
    assert (probe.reachable, reason) == (True, "PartiallyReachable")
    assert probe.message is not None and "b:2: refused" in probe.message
    probe, reason = s.probe_summary([down], T0)
    assert (probe.reachable, reason, probe.endpoint) == (False, "EndpointUnreachable", "b:2")
    probe, reason = s.probe_summary([], T0)
    assert (probe.reachable, reason) == (None, "NotProbed")


@pytest.mark.parametrize(("kwargs", "state"), [
    ({"deleting": True, "materialised": True, "maintenance": False, "reachable": True}, "Locked"),
    ({"deleting": False, "materialised": False, "maintenance": True, "reachable": True},
     "Unattached"),
    ({"deleting": False, "materialised": True, "maintenance": True, "reachable": False},
     "Maintenance"),
    ({"deleting": False, "materialised": True, "maintenance": False, "reachable": False},
     "Inactive"),
    ({"deleting": False, "materialised": True, "maintenance": False, "reachable": None},
     "Active"),
])
def test_compute_state(kwargs: dict[str, Any], state: str) -> None:
    assert s.compute_state(**kwargs).value == state


# --- the whole decision -------------------------------------------------------------------------


def cond(status: Any, type_: str) -> Any:
    return next((c for c in status.conditions if c.type == type_), None)


def test_first_visit_creates_class_and_volume_and_says_so() -> None:
    b = body()
    d = s.decide(b, s.Observed(probe=[s.EndpointResult("nfs.example.com:2049", True)]), T0)
    assert d.storage_class is not None and d.storage_class["metadata"]["name"] == "sd-d"
    assert [v["metadata"]["name"] for v in d.volumes.create] == ["sd-d"]
    st = d.status
    assert (st.state.value, st.storage_class_name, st.volume_mode) == (
        "Active", "sd-d", "Filesystem")
    assert (st.capacity, st.requested, st.free, st.observed_generation) == ("80Gi", "0", "0", 1)
    assert cond(st, "Ready").reason == "DomainActive"
    assert cond(st, "Reachable").status == "True"
    assert cond(st, "Maintenance").reason == "NotInMaintenance"
    assert cond(st, "SoleDataDomain") is None  # only the hosted-engine domain carries it
    assert {e.reason for e in d.events} >= {"DomainActive", "EndpointReachable", "StateActive"}


def settled(b: dict[str, Any], observed: s.Observed, now: datetime = T0) -> dict[str, Any]:
    """``b`` with the status of one decision applied."""
    out = copy.deepcopy(b)
    out["status"] = s.decide(b, observed, now).status.to_dict()
    return out


def test_a_steady_domain_posts_no_more_events() -> None:
    vols = s.render_volumes(model(body()))
    sc = s.render_storage_class(model(body()))
    obs = s.Observed(volumes=vols, storage_class=sc,
                     probe=[s.EndpointResult("nfs.example.com:2049", True)])
    b = settled(body(), obs)
    again = s.decide(b, obs, T0 + timedelta(minutes=1))
    assert again.events == [] and again.volumes.empty and again.storage_class is None
    assert again.status.to_dict() == s.current_status(b).to_dict() | {
        "probe": again.status.probe.to_dict()}


def test_invalid_input_keeps_the_last_good_state_and_warns() -> None:
    vols = s.render_volumes(model(body()))
    obs = s.Observed(volumes=vols, storage_class={}, probe=[])
    good = settled(body(), obs)
    assert good["status"]["state"] == "Active"
    bad = copy.deepcopy(good)
    bad["spec"]["nfs"]["path"] = "/a//b"
    bad["metadata"]["generation"] = 2
    d = s.decide(bad, obs, T0)
    assert d.status.state.value == "Active"
    assert d.volumes.empty and d.storage_class is None
    ready = cond(d.status, "Ready")
    assert (ready.status, ready.reason, ready.observed_generation) == (
        "False", "InvalidConnection", 2)
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "InvalidConnection")]
    schema_bad = copy.deepcopy(good)
    schema_bad["spec"]["nfs"] = None
    d2 = s.decide(schema_bad, obs, T0)
    assert cond(d2.status, "Ready").reason == "InvalidSpec"
    assert d2.status.state.value == "Active"


def test_missing_chap_secret_is_reported() -> None:
    b = body("i", "iscsi", {"portals": [{"address": "10.0.0.5"}],
                            "target": "iqn.2026-01.io.example:t",
                            "chapSecretRef": {"name": "chap", "namespace": "storage"}})
    d = s.decide(b, s.Observed(missing_secrets=["Secret storage/chap does not exist"]), T0)
    ready = cond(d.status, "Ready")
    assert (ready.reason, ready.message) == ("SecretMissing", "Secret storage/chap does not exist")
    assert d.volumes.empty


def test_csi_without_its_class_is_unattached() -> None:
    d = s.decide(body("c", "csi", capacity="100Gi"), s.Observed(probe=[]), T0)
    assert d.status.state.value == "Unattached"
    assert cond(d.status, "Ready").reason == "StorageClassNotFound"
    d2 = s.decide(body("c", "csi", capacity="100Gi"),
                  s.Observed(storage_class={"metadata": {"name": "fast"}},
                             claims=[pvc("a", "fast", size="30Gi")], probe=[]), T0)
    assert d2.status.state.value == "Active"
    assert (d2.status.requested, d2.status.free) == ("30Gi", "70Gi")


def test_maintenance_refused_under_a_running_engine_then_accepted() -> None:
    he = body("he", role="hostedEngine", maintenance=True)
    running = [engine("he", vm="up")]
    vols = s.render_volumes(model(he))
    obs = s.Observed(volumes=vols, storage_class={}, engines=running, probe=[])
    d = s.decide(he, obs, T0)
    m = cond(d.status, "Maintenance")
    assert (m.status, m.reason) == ("False", "MaintenanceRefused")
    assert "he/engine" in m.message
    assert d.volumes.reserve == [] and d.status.state.value == "Active"
    assert ("Warning", "MaintenanceRefused") in [(e.type, e.reason) for e in d.events]
    in_global = [engine("he", vm="up", maintenance="global")]
    d2 = s.decide(he, s.Observed(volumes=vols, storage_class={}, engines=in_global, probe=[]), T0)
    assert d2.status.state.value == "Maintenance"
    assert d2.volumes.reserve == ["sd-he"]
    # once in maintenance, an engine starting does not throw the domain out of it
    entered = copy.deepcopy(he)
    entered["status"] = d2.status.to_dict()
    d3 = s.decide(entered, obs, T0)
    assert d3.status.state.value == "Maintenance"


def test_sole_data_domain_condition_on_the_hosted_engine_domain() -> None:
    he = body("he", role="hostedEngine")
    d = s.decide(he, s.Observed(probe=[]), T0)
    sole = cond(d.status, "SoleDataDomain")
    assert (sole.status, sole.reason) == ("True", "OnlyDataDomain")
    assert ("Warning", "OnlyDataDomain") in [(e.type, e.reason) for e in d.events]
    d2 = s.decide(he, s.Observed(peers=[body("data")], probe=[]), T0)
    assert cond(d2.status, "SoleDataDomain").status == "False"


def test_unreachable_endpoint_makes_it_inactive_and_a_skipped_probe_keeps_the_result() -> None:
    vols = s.render_volumes(model(body()))
    down = s.Observed(volumes=vols, storage_class={},
                      probe=[s.EndpointResult("nfs.example.com:2049", False, "refused")])
    d = s.decide(body(), down, T0)
    assert d.status.state.value == "Inactive"
    reach = cond(d.status, "Reachable")
    assert (reach.status, reach.reason) == ("False", "EndpointUnreachable")
    b = copy.deepcopy(body())
    b["status"] = d.status.to_dict()
    kept = s.decide(b, s.Observed(volumes=vols, storage_class={}), T0 + timedelta(seconds=5))
    assert kept.status.state.value == "Inactive" and kept.events == []


# --- deletion ------------------------------------------------------------------------------------


def test_deletion_waits_for_claims_and_lists_them() -> None:
    b = body()
    bound = pv_of(b, spec={"claimRef": {**CLAIM, "name": "disk"}})
    obs = s.Observed(volumes=[bound], storage_class={"metadata": {"name": "sd-d"}},
                     claims=[pvc("disk", "sd-d", "sd-d")])
    d = s.decide_deletion(b, obs, T0)
    assert not d.release and d.status is not None
    assert d.status.state.value == "Locked"
    blocked = cond(d.status, "DeletionBlocked")
    assert (blocked.status, blocked.reason) == ("True", "InUse")
    assert "engine/disk" in blocked.message
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "InUse")]
    assert d.delete_volumes == [] and d.delete_storage_class is None


def test_deletion_cleans_up_once_unused() -> None:
    b = body()
    released = pv_of(b)
    d = s.decide_deletion(b, s.Observed(volumes=[released],
                                        storage_class={"metadata": {"name": "sd-d"}}), T0)
    assert d.release and d.delete_volumes == ["sd-d"] and d.delete_storage_class == "sd-d"


def test_deleting_a_csi_domain_leaves_the_class_alone() -> None:
    b = body("c", "csi", capacity=None)
    d = s.decide_deletion(b, s.Observed(storage_class={"metadata": {"name": "fast"}}), T0)
    assert d.release and d.delete_storage_class is None
    held = s.decide_deletion(b, s.Observed(claims=[pvc("x", "fast")]), T0)
    assert not held.release
