"""Bad input: a table of malformed or dangerous specs across every kind.

Each one is either refused by the schema at the lab API server (422 whose message names the
field; the object is unchanged) or accepted and then reported by the operator (a condition and
a Warning Event naming the field) while the object keeps its last good state. The operator logs
no traceback throughout (no handler crashed).

One lab with the operator serves the whole table: good objects first (a Host Up, an NFS
StorageDomain Active, the engine Up, a suspended Backup), then every case in turn; the cases of
Restore and RollingMaintenance are new objects (created from a good body with the bad part
merged in).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from reliability_hardening_support import OutputCapture

from harness import (  # isort: skip
    HOSTEDENGINES,
    HOSTS,
    STORAGEDOMAINS,
    Cluster,
    conditions,
    field,
    wait_for,
)
from hosted_engine.adapters.kube import Invalid, Resource  # isort: skip
from hosted_engine.lab.sim.timings import LabTimings  # isort: skip
from hostedengine_lab import HOST_ENV, NAME, NS, he_body, prepare, wait_up  # isort: skip
from test_storagedomain import Listener, loopback_address  # isort: skip

pytestmark = pytest.mark.lab

BACKUPS = Resource("hostedengine.io", "v1alpha1", "backups", namespaced=True)
RESTORES = Resource("hostedengine.io", "v1alpha1", "restores", namespaced=True)
RUNS = Resource("hostedengine.io", "v1alpha1", "rollingmaintenances", namespaced=False)
LONG = "x" * 2000


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # Host, StorageDomain, HostedEngine, Backup, Restore, RollingMaintenance
    patch: dict[str, Any]  # merged into the good spec (None deletes, as a JSON merge patch)
    field: str  # what the refusal or the report must name
    by: str = "schema"  # "schema": 422; "operator": condition + Warning Event


def redfish_pm(**extra: Any) -> dict[str, Any]:
    return {"powerManagement": extra}


CASES: list[Case] = [
    # -- Host ----------------------------------------------------------------------------------
    Case("host-name-pattern", "Host", {"nodeName": "Node_1"}, "spec.nodeName"),
    Case("host-name-injection", "Host", {"nodeName": "node-1;reboot"}, "spec.nodeName"),
    Case("host-deploy-enum", "Host", {"hostedEngine": "maybe"}, "spec.hostedEngine"),
    Case("host-mode-enum", "Host", {"maintenance": {"mode": "remote"}},
         "spec.maintenance.mode"),
    Case("host-timeout-format", "Host", {"maintenance": {"timeout": "10 minutes"}},
         "spec.maintenance.timeout"),
    Case("host-timeout-zero", "Host", {"maintenance": {"timeout": "0s"}},
         "spec.maintenance.timeout"),
    Case("host-policy-enum", "Host", {"maintenance": {"nonMigratablePolicy": "kill"}},
         "spec.maintenance.nonMigratablePolicy"),
    Case("host-reason-long", "Host", {"maintenance": {"reason": LONG}},
         "spec.maintenance.reason"),
    Case("host-bmc-port", "Host", redfish_pm(port=70000), "spec.powerManagement.port"),
    Case("host-bmc-type", "Host", redfish_pm(type="ilo"), "spec.powerManagement.type"),
    Case("host-bmc-address", "Host", redfish_pm(address="bmc;rm -rf /"),
         "spec.powerManagement.address"),
    Case("host-bmc-ipmi-systemid", "Host", redfish_pm(type="ipmi", caBundleSecretRef=None),
         "systemID"),
    Case("host-bmc-secret-namespace", "Host",
         redfish_pm(credentialsSecretRef={"namespace": None}), "namespace"),
    Case("host-group-pattern", "Host", {"group": "Group A"}, "spec.group"),
    # -- StorageDomain --------------------------------------------------------------------------
    Case("sd-type-enum", "StorageDomain", {"type": "ceph"}, "spec.type"),
    Case("sd-type-mismatch", "StorageDomain", {"type": "iscsi"}, "iscsi"),
    Case("sd-server-empty", "StorageDomain", {"nfs": {"server": ""}}, "spec.nfs.server"),
    Case("sd-path-relative", "StorageDomain", {"nfs": {"path": "data"}}, "spec.nfs.path"),
    Case("sd-version-enum", "StorageDomain", {"nfs": {"version": "v5"}}, "spec.nfs.version"),
    Case("sd-mount-option-injection", "StorageDomain", {"nfs": {"mountOptions": ["rw;reboot"]}},
         "spec.nfs.mountOptions"),
    Case("sd-capacity", "StorageDomain", {"capacity": "lots"}, "spec.capacity"),
    Case("sd-probe-interval", "StorageDomain", {"probeInterval": "100ms"},
         "spec.probeInterval"),
    Case("sd-role-enum", "StorageDomain", {"role": "primary"}, "spec.role"),
    Case("sd-reclaim-enum", "StorageDomain", {"reclaimPolicy": "Recycle"},
         "spec.reclaimPolicy"),
    Case("sd-path-traversal", "StorageDomain", {"nfs": {"path": "/data/../etc"}},
         "spec.nfs.path", by="operator"),
    # -- HostedEngine ---------------------------------------------------------------------------
    Case("he-cpu-zero", "HostedEngine", {"vm": {"cpu": 0}}, "spec.vm.cpu"),
    Case("he-cpu-huge", "HostedEngine", {"vm": {"cpu": 100000}}, "spec.vm.cpu"),
    Case("he-memory-format", "HostedEngine", {"vm": {"memory": "lots"}}, "spec.vm.memory"),
    Case("he-memory-negative", "HostedEngine", {"vm": {"memory": "-16Gi"}}, "spec.vm.memory"),
    Case("he-mac", "HostedEngine", {"vm": {"network": {"macAddress": "zz:16:3e:00:00:01"}}},
         "spec.vm.network.macAddress"),
    Case("he-fqdn", "HostedEngine", {"vm": {"network": {"fqdn": "engine lab"}}},
         "spec.vm.network.fqdn"),
    Case("he-boot-enum", "HostedEngine", {"vm": {"network": {"bootProtocol": "bootp"}}},
         "spec.vm.network.bootProtocol"),
    Case("he-static-without-address", "HostedEngine",
         {"vm": {"network": {"bootProtocol": "static"}}}, "address"),
    Case("he-two-images", "HostedEngine",
         {"vm": {"image": {"url": {"url": "https://images.example/engine.qcow2"}}}}, "image"),
    Case("he-health-url", "HostedEngine", {"health": {"url": "file:///etc/shadow"}},
         "spec.health.url"),
    Case("he-health-interval", "HostedEngine", {"health": {"interval": "0s"}},
         "spec.health.interval"),
    Case("he-health-timeout-above-interval", "HostedEngine", {"health": {"timeout": "5s"}},
         "timeout"),
    Case("he-failure-threshold", "HostedEngine", {"health": {"failureThreshold": 0}},
         "spec.health.failureThreshold"),
    Case("he-silence", "HostedEngine", {"failover": {"silenceThreshold": "1s"}},
         "spec.failover.silenceThreshold"),
    Case("he-retry-limit", "HostedEngine", {"failover": {"startRetries": {"limit": 0}}},
         "spec.failover.startRetries.limit"),
    Case("he-spares", "HostedEngine", {"sparesCount": 100}, "spec.sparesCount"),
    Case("he-stop-mode", "HostedEngine", {"stopMode": "Yank"}, "spec.stopMode"),
    Case("he-shutdown-timeout", "HostedEngine", {"shutdownTimeout": "2h"},
         "spec.shutdownTimeout"),
    Case("he-maintenance-local", "HostedEngine", {"maintenance": {"mode": "local"}},
         "spec.maintenance.mode"),
    Case("he-smtp-port", "HostedEngine", {"notifications": {
        "smtpServer": "smtp.example", "smtpPort": 0, "sourceEmail": "he@example.com",
        "destinationEmails": ["ops@example.com"]}}, "spec.notifications.smtpPort"),
    Case("he-smtp-source", "HostedEngine", {"notifications": {
        "smtpServer": "smtp.example", "sourceEmail": "not-an-email",
        "destinationEmails": ["ops@example.com"]}}, "spec.notifications.sourceEmail"),
    Case("he-reset-negative", "HostedEngine", {"resetSeq": -1}, "spec.resetSeq"),
    Case("he-gateway-outside-subnet", "HostedEngine", {"vm": {"network": {
        "bootProtocol": "static", "address": "10.0.0.5", "prefix": 24,
        "gateway": "10.0.1.1"}}}, "gateway", by="operator"),
    # -- Backup ---------------------------------------------------------------------------------
    Case("backup-schedule", "Backup", {"schedule": "every day"}, "spec.schedule"),
    Case("backup-timezone", "Backup", {"timeZone": "Mars/Olympus Mons"}, "spec.timeZone"),
    Case("backup-keep-zero", "Backup", {"retention": {"keepLast": 0}},
         "spec.retention.keepLast"),
    Case("backup-max-failures", "Backup", {"maxFailures": 0}, "spec.maxFailures"),
    Case("backup-relative-path", "Backup", {"target": {"filesystem": {"path": "backups"}}},
         "spec.target.filesystem.path"),
    Case("backup-two-targets", "Backup", {"target": {"pvc": {"claimName": "backups"}}},
         "target"),
    Case("backup-source-name", "Backup", {"source": {"hostedEngine": "Engine_1"}},
         "spec.source.hostedEngine"),
    Case("backup-run-timeout", "Backup", {"runTimeout": "1s"}, "spec.runTimeout"),
    Case("backup-s3-endpoint", "Backup", {"target": {"filesystem": None, "s3": {
        "endpoint": "s3.example.com", "bucket": "b1", "credentialsSecretRef": {"name": "s3"}}}},
         "spec.target.s3.endpoint"),
    Case("backup-unknown-zone", "Backup", {"timeZone": "Mars/Olympus_Mons"}, "timeZone",
         by="operator"),
    Case("backup-cron-minute", "Backup", {"schedule": "61 * * * *"}, "schedule",
         by="operator"),
    # -- Restore --------------------------------------------------------------------------------
    Case("restore-name", "Restore", {"hostedEngineName": "Bad_Name"}, "spec.hostedEngineName"),
    Case("restore-missing-name", "Restore", {"hostedEngineName": None}, "hostedEngineName"),
    Case("restore-two-sources", "Restore", {"source": {"location": {
        "target": {"filesystem": {"path": "/backups"}}, "run": "r1"}}}, "source"),
    Case("restore-empty-backup", "Restore", {"source": {"backup": {"name": ""}}},
         "spec.source.backup.name"),
    Case("restore-domain", "Restore", {"storageDomain": "UPPER"}, "spec.storageDomain"),
    # -- RollingMaintenance ---------------------------------------------------------------------
    Case("rolling-two-scopes", "RollingMaintenance", {"scope": {"hosts": ["node-1"]}},
         "scope"),
    Case("rolling-no-hosts", "RollingMaintenance", {"scope": {"groups": None, "hosts": []}},
         "spec.scope.hosts"),
    Case("rolling-max-unavailable", "RollingMaintenance", {"maxUnavailable": 0},
         "spec.maxUnavailable"),
    Case("rolling-poll", "RollingMaintenance", {"pollInterval": "10m"}, "spec.pollInterval"),
    Case("rolling-stage-below-poll", "RollingMaintenance",
         {"stageTimeout": "5s", "pollInterval": "10s"}, "stageTimeout"),
    Case("rolling-hook-both", "RollingMaintenance", {"stages": {"maintenance": {
        "script": {"name": "hooks", "key": "hook.sh"}}}}, "command"),
    Case("rolling-hook-image", "RollingMaintenance", {"stages": {"maintenance": {
        "image": "bad image"}}}, "spec.stages.maintenance.image"),
    Case("rolling-hooks-namespace", "RollingMaintenance", {"hooksNamespace": "Hooks!"},
         "spec.hooksNamespace"),
]


def merge(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def diff(current: Any, target: Any) -> Any:
    """The JSON merge patch that turns ``current`` into ``target``."""
    if not isinstance(current, dict) or not isinstance(target, dict):
        return copy.deepcopy(target)
    out: dict[str, Any] = {k: None for k in current if k not in target}
    for key, value in target.items():
        if current.get(key) != value:
            out[key] = diff(current.get(key), value)
    return out


def test_the_table_is_big_and_covers_every_kind() -> None:
    assert len(CASES) >= 50
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.kind for c in CASES} == {"Host", "StorageDomain", "HostedEngine", "Backup",
                                       "Restore", "RollingMaintenance"}


# -- the good objects ---------------------------------------------------------------------------


@pytest.fixture
def nfs_listener() -> Iterator[Listener]:
    lst = Listener(loopback_address(), 2049)
    yield lst
    lst.close()


@dataclass
class Good:
    resource: Resource
    name: str
    namespace: str | None
    body: dict[str, Any]
    state_path: str  # the status field that shows the good state


def good_objects(cluster: Cluster, nfs: str, tmp_path: Path) -> dict[str, Good]:
    prepare(cluster)  # the hosted-engine StorageDomain and three Hosts with Redfish
    cluster.create(HOSTEDENGINES, he_body())
    wait_up(cluster, timeout=60)
    sd = {"apiVersion": "hostedengine.io/v1alpha1", "kind": "StorageDomain",
          "metadata": {"name": "data-nfs"},
          "spec": {"type": "nfs", "role": "data", "capacity": "80Gi",
                   "nfs": {"server": nfs, "path": "/data"}}}
    cluster.create(STORAGEDOMAINS, sd)
    backup = {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Backup",
              "metadata": {"name": "nightly", "namespace": NS},
              "spec": {"source": {"hostedEngine": NAME}, "schedule": "0 3 * * *",
                       "suspend": True, "target": {"filesystem": {"path": str(tmp_path)}}}}
    cluster.create(BACKUPS, backup)
    cluster.wait_field(STORAGEDOMAINS, "data-nfs", "status.state", "Active", timeout=30)
    cluster.wait_field(BACKUPS, "nightly", "status.phase", "Suspended", namespace=NS)
    host = cluster.get(HOSTS, "node-1")
    engine = cluster.get(HOSTEDENGINES, NAME, NS)
    assert host is not None and engine is not None
    restore = {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Restore",
               "metadata": {"namespace": NS},
               "spec": {"source": {"backup": {"name": "nightly"}},
                        "hostedEngineName": "restored"}}
    rolling = {"apiVersion": "hostedengine.io/v1alpha1", "kind": "RollingMaintenance",
               "metadata": {},
               "spec": {"scope": {"groups": {}}, "hooksNamespace": "hooks",
                        "pollInterval": "1s", "stageTimeout": "30s",
                        "stages": {"maintenance": {"image": "registry.example/hook:1",
                                                   "command": ["/bin/true"]}}}}
    return {
        "Host": Good(HOSTS, "node-1", None, host, "status.state"),
        "StorageDomain": Good(STORAGEDOMAINS, "data-nfs", None, sd, "status.state"),
        "HostedEngine": Good(HOSTEDENGINES, NAME, NS, engine, "status.state"),
        "Backup": Good(BACKUPS, "nightly", NS, backup, "status.phase"),
        "Restore": Good(RESTORES, "", NS, restore, ""),
        "RollingMaintenance": Good(RUNS, "", None, rolling, ""),
    }


# -- the checks ---------------------------------------------------------------------------------


def warning_naming(cluster: Cluster, good: Good, text: str) -> list[dict[str, Any]]:
    return [e for e in cluster.events_for(good.name, good.namespace or "default")
            if e.get("type") == "Warning" and text in str(e.get("message"))]


def condition_naming(obj: dict[str, Any] | None, text: str) -> dict[str, Any] | None:
    for cond in conditions(obj).values():
        if cond.get("status") in ("False", "True") and text in str(cond.get("message")):
            return cond
    return None


def check_schema(cluster: Cluster, good: Good, case: Case) -> None:
    if not good.name:  # a new object: created from the good body with the bad part
        body = copy.deepcopy(good.body)
        body["metadata"]["name"] = case.id
        body["spec"] = merge(body["spec"], case.patch)
        with pytest.raises(Invalid) as refused:
            cluster.create(good.resource, body)
        assert case.field in str(refused.value), (case.id, str(refused.value))
        assert cluster.get(good.resource, case.id, good.namespace) is None
        return
    before = cluster.get(good.resource, good.name, good.namespace)
    assert before is not None
    with pytest.raises(Invalid) as refused:
        cluster.patch(good.resource, good.name, {"spec": case.patch}, good.namespace)
    assert case.field in str(refused.value), (case.id, str(refused.value))
    after = cluster.get(good.resource, good.name, good.namespace)
    assert after is not None
    assert after["spec"] == before["spec"], case.id
    assert after["metadata"]["generation"] == before["metadata"]["generation"], case.id


def check_operator(cluster: Cluster, good: Good, case: Case) -> None:
    before = cluster.get(good.resource, good.name, good.namespace)
    assert before is not None
    state = field(before, good.state_path)
    cluster.patch(good.resource, good.name, {"spec": case.patch}, good.namespace)
    cond = wait_for(f"{case.id}: a condition naming {case.field}", lambda: condition_naming(
        cluster.get(good.resource, good.name, good.namespace), case.field),
        describe=lambda: conditions(cluster.get(good.resource, good.name, good.namespace)))
    assert cond["status"] == "False", (case.id, cond)
    wait_for(f"{case.id}: a Warning Event naming {case.field}",
             lambda: warning_naming(cluster, good, case.field), timeout=30,
             describe=lambda: cluster.events_for(good.name, good.namespace or "default"))
    # the last good state is kept
    obj = cluster.get(good.resource, good.name, good.namespace)
    assert field(obj, good.state_path) == state, (case.id, field(obj, good.state_path))
    # the fix is followed: the spec of before, and the report goes away
    current = cluster.get(good.resource, good.name, good.namespace)
    assert current is not None
    cluster.patch(good.resource, good.name, {"spec": diff(current["spec"], before["spec"])},
                  good.namespace)
    wait_for(f"{case.id}: the report cleared after the fix", lambda: condition_naming(
        cluster.get(good.resource, good.name, good.namespace), case.field) is None,
        describe=lambda: conditions(cluster.get(good.resource, good.name, good.namespace)))
    assert field(cluster.get(good.resource, good.name, good.namespace),
                 good.state_path) == state, case.id


@pytest.fixture(autouse=True)
def _operator_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in HOST_ENV.items():
        monkeypatch.setenv(key, value)


def test_every_bad_spec_is_refused_or_reported_and_the_good_state_stays(
        make_cluster: Callable[..., Cluster], nfs_listener: Listener, tmp_path: Path,
        output: OutputCapture) -> None:
    cluster = make_cluster(3, timings=LabTimings.fast(), bmc=True)
    goods = good_objects(cluster, nfs_listener.host, tmp_path)
    failures: list[str] = []
    for case in CASES:
        check = check_schema if case.by == "schema" else check_operator
        try:
            check(cluster, goods[case.kind], case)
        except (AssertionError, pytest.fail.Exception) as exc:
            failures.append(f"{case.id}: {str(exc)[:400]}")
    assert not failures, "\n".join(failures)
    # nothing crashed: the operator logged no traceback (it followed every fix, above)
    assert "Traceback" not in output.operator_text()
