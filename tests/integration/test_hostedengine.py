"""HostedEngine end to end on the lab: deploy -> Up on the best host; a crash and a hung guest
are handled; bad input keeps the last good state; a stop outside global maintenance is refused.

The lab runs with its fast timings and BMCs; the HostedEngine uses short health timings (see
hostedengine_lab.fast_spec). Every wait polls for the expected state.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from harness import (
    HOSTEDENGINES,
    STORAGEDOMAINS,
    Cluster,
    LabCluster,
    conditions,
    field,
    wait_for,
)
from hosted_engine.lab.sim.timings import LabTimings
from hostedengine_lab import (
    DATAVOLUMES,
    HOST_ENV,
    NAME,
    NS,
    PODS,
    PVCS,
    SECRETS,
    SERVICES,
    VMS,
    engine_vmi,
    event_reasons,
    fast_spec,
    he,
    he_body,
    lab_call,
    memory_hog,
    prepare,
    vmi_node,
    wait_state,
    wait_up,
)

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def _operator_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in HOST_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def lab_cluster(make_lab_cluster: Callable[..., LabCluster]) -> LabCluster:
    return make_lab_cluster(3, timings=LabTimings.fast(), bmc=True)


def test_deploy_creates_the_vm_and_runs_it_on_the_best_host(cluster: Cluster) -> None:
    prepare(cluster)
    # node-1 lacks room for the engine's 16Gi (-400): node-2 and node-3 lead, node-2 by name
    cluster.ensure_namespace(NS)
    cluster.create(PODS, memory_hog("node-1", "60Gi"))
    cluster.create(HOSTEDENGINES, he_body())

    obj = wait_up(cluster)
    status = obj["status"]
    assert status["host"] == "node-2" == vmi_node(cluster)
    assert status["engine"]["vm"] == "up" and status["engine"]["health"] == "good"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    rows = {r["host"]: r for r in status["hosts"]}
    assert set(rows) == {"node-1", "node-2", "node-3"}
    assert rows["node-1"]["score"] == 3000 and rows["node-1"]["hasRoom"] is False
    assert rows["node-2"]["score"] == rows["node-3"]["score"] == 3400
    assert rows["node-2"]["engineRunning"] is True and rows["node-2"]["upToDate"] is True
    conds = conditions(obj)
    assert conds["Available"]["status"] == "True"
    assert conds["Degraded"]["status"] == "False"
    assert conds["GlobalMaintenance"]["status"] == "False"
    assert conds["SparesSatisfied"]["status"] == "True"
    assert conds["Progressing"]["status"] == "False"
    assert status["ha"]["state"] == "EngineUp" and status["ha"]["placement"]

    # what the operator created and owns
    vm = cluster.get(VMS, NAME, NS)
    assert vm is not None
    owner = vm["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "HostedEngine", NAME, obj["metadata"]["uid"])
    assert vm["spec"]["runStrategy"] == "Always"
    assert vm["metadata"]["labels"]["hostedengine.io/hostedengine"] == NAME
    affinity = vm["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    required = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "hostedengine.io/engine-host", "operator": "In", "values": ["true"]} in \
        required[0]["matchExpressions"]
    iface = vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]
    assert iface["macAddress"].startswith("00:16:3e:")
    assert status["vm"]["macAddress"] == iface["macAddress"]
    for resource, name in ((SECRETS, f"{NAME}-cloudinit"), (SERVICES, NAME),
                           (DATAVOLUMES, f"{NAME}-disk")):
        child = cluster.get(resource, name, NS)
        assert child is not None, name
    pvc = cluster.get(PVCS, f"{NAME}-disk", NS)
    assert pvc is not None and field(pvc, "status.phase") == "Bound"
    domain_class = field(cluster.get(STORAGEDOMAINS, "hosted-engine"), "status.storageClassName")
    assert pvc["spec"]["storageClassName"] == domain_class
    reasons = event_reasons(cluster)
    assert {"EngineVmCreated", "EngineStart", "EngineUp"} <= set(reasons)
    # the user's spec is never written by the operator (no new generation)
    assert he(cluster)["metadata"]["generation"] == 1


def test_crashed_vm_comes_back_up(cluster: Cluster) -> None:
    prepare(cluster)
    cluster.create(HOSTEDENGINES, he_body())
    wait_up(cluster)
    first = engine_vmi(cluster)
    assert first is not None
    lab_call(cluster, lambda lab: lab.faults.crash_vm(NS, NAME))
    wait_state(cluster, lambda s: s != "EngineUp", timeout=20)
    obj = wait_up(cluster)
    vmi = engine_vmi(cluster)
    assert vmi is not None and vmi["metadata"]["uid"] != first["metadata"]["uid"]
    assert wait_for(
        "the expected Events",
        lambda: "EngineUnexpectedlyDown" in event_reasons(cluster),
        timeout=30)
    assert obj["status"]["ha"]["attempts"] >= 1  # a crash is a failure (backoff), not ignored


def test_hung_guest_is_restarted_after_the_grace(cluster: Cluster) -> None:
    prepare(cluster)
    cluster.create(HOSTEDENGINES, he_body())
    wait_up(cluster)
    first = engine_vmi(cluster)
    assert first is not None
    lab_call(cluster, lambda lab: lab.faults.hang_guest(NS, NAME))
    bad = wait_state(cluster, "EngineUpBadHealth", timeout=20)
    assert bad["status"]["engine"]["health"] == "bad"
    assert engine_vmi(cluster)["metadata"]["uid"] == first["metadata"]["uid"]  # not yet
    wait_state(cluster, lambda s: s in ("EngineStop", "EngineForceStop", "EngineDown",
                                         "EngineStart", "EngineStarting"), timeout=20)
    wait_up(cluster)
    vmi = engine_vmi(cluster)
    assert vmi is not None and vmi["metadata"]["uid"] != first["metadata"]["uid"]
    reasons = event_reasons(cluster)
    assert "EngineUpBadHealth" in reasons and "EngineStop" in reasons


def test_stop_outside_global_maintenance_is_refused_and_bad_input_keeps_the_last_state(
        cluster: Cluster) -> None:
    prepare(cluster)
    cluster.create(HOSTEDENGINES, he_body())
    wait_up(cluster)
    uid = engine_vmi(cluster)["metadata"]["uid"]
    cluster.patch(HOSTEDENGINES, NAME, {"spec": {"running": False}}, NS)
    wait_for("StopRefused event", lambda: "StopRefused" in event_reasons(cluster))
    obj = he(cluster)
    assert obj["status"]["state"] == "EngineUp"
    assert "global maintenance" in obj["status"]["ha"]["refusal"]
    assert engine_vmi(cluster)["metadata"]["uid"] == uid

    # a spec the schema accepts but the model refuses (static address outside the gateway's
    # subnet): condition + Warning Event, the engine keeps running as before
    cluster.patch(HOSTEDENGINES, NAME, {"spec": {"running": True, "vm": {"network": {
        "bootProtocol": "static", "address": "10.0.0.5", "prefix": 24,
        "gateway": "10.0.1.1"}}}}, NS)
    cond = cluster.wait_condition(HOSTEDENGINES, NAME, "SpecValid", status="False",
                                  namespace=NS)
    assert cond["reason"] == "InvalidSpec" and "gateway" in cond["message"]
    assert wait_for(
        "the expected Events",
        lambda: "InvalidSpec" in event_reasons(cluster),
        timeout=30)
    assert he(cluster)["status"]["state"] == "EngineUp"
    assert engine_vmi(cluster)["metadata"]["uid"] == uid


def test_engine_that_never_gets_healthy_ends_degraded_until_a_manual_reset(
        cluster: Cluster) -> None:
    prepare(cluster)
    spec = fast_spec()
    spec["health"]["startupGrace"] = "3s"
    spec["failover"]["startRetries"] = {"limit": 2, "initialBackoff": "1s", "maxBackoff": "2s"}
    spec["sparesCount"] = 5
    # the lab's engine on a "broken" image answers DB Down for ever
    cluster.create(HOSTEDENGINES, he_body(
        spec, annotations={"lab.hostedengine.io/guest-image": "engine-broken"}))
    obj = wait_state(cluster, "Degraded", timeout=60)
    cond = conditions(obj)["Degraded"]
    assert cond["status"] == "True" and cond["reason"] == "GaveUp"
    assert "2 consecutive failures" in cond["message"]
    assert obj["status"]["ha"]["attempts"] == 2
    spares = conditions(obj)["SparesSatisfied"]
    assert spares["status"] == "False" and "of 5 required" in spares["message"]
    assert obj["status"]["spares"]["required"] == 5
    time.sleep(2.5)  # longer than the backoff: still no automatic start
    assert he(cluster)["status"]["state"] == "Degraded"
    assert he(cluster)["status"]["ha"]["attempts"] == 2

    # a manual reset (spec.resetSeq) tries again from zero
    cluster.patch(HOSTEDENGINES, NAME, {"spec": {"resetSeq": 1}}, NS)
    wait_for("a new attempt after the reset",
             lambda: (he(cluster)["status"]["ha"].get("resetSeq") == 1
                      and he(cluster)["status"]["state"] != "Degraded"), timeout=30)
    assert wait_for(
        "the expected Events",
        lambda: "Degraded" in event_reasons(cluster),
        timeout=30)
