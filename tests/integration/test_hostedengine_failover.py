"""HostedEngine failover and maintenance on the lab: node power loss -> fenced through the Host
and failed over; without power management it waits and says why; global maintenance hands off
and expires; local maintenance of the engine's host moves the engine first; mails arrive at a
real SMTP server (aiosmtpd) over STARTTLS verified against the lab CA; two replicas -> one acts.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import (
    HOSTEDENGINES,
    HOSTS,
    Cluster,
    LabCluster,
    OperatorThread,
    conditions,
    field,
    wait_for,
)
from hosted_engine.lab.bmc.tls import LabCA
from hosted_engine.lab.sim.timings import LabTimings
from hostedengine_lab import (
    HOST_ENV,
    NAME,
    NS,
    SECRETS,
    VMIMS,
    VMS,
    engine_vmi,
    event_reasons,
    fast_spec,
    he,
    he_body,
    lab_call,
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


def test_node_power_loss_fences_the_host_and_fails_over(cluster: Cluster) -> None:
    prepare(cluster)
    cluster.create(HOSTEDENGINES, he_body())
    first = wait_up(cluster)["status"]["host"]
    lab_call(cluster, lambda lab: lab.faults.fail_node(first))

    obj = wait_up(cluster, avoid=first, timeout=60)
    status = obj["status"]
    assert status["host"] != first and vmi_node(cluster) == status["host"]
    record = status["lastFailover"]
    assert record["fromHost"] == first and record["toHost"] == status["host"]
    for key in ("lostAt", "detectedAt", "fencedAt", "startedAt", "healthyAt"):
        assert record.get(key), (key, record)
    assert record["detectedAt"] <= record["fencedAt"] <= record["startedAt"] <= \
        record["healthyAt"]
    assert status["failovers"] == 1
    fenced = cluster.get(HOSTS, first)
    assert field(fenced, "status.fencing.phase") == "Confirmed"
    rows = {r["host"]: r for r in status["hosts"]}
    assert rows[first]["score"] == 0
    # detected as a host loss (by the silence, or the Host's own fence came first), never as a
    # crash of the engine
    messages = [e["message"] for e in cluster.events_for(NAME, NS)]
    assert any(f"{first} was fenced" in m or "HostLost" in m or f"{first} fenced" in m
               for m in messages), messages
    assert "EngineUnexpectedlyDown" not in event_reasons(cluster)
    assert status["ha"]["attempts"] == 0  # a lost host is not an engine failure


def test_without_fencing_the_engine_waits_and_says_why(cluster: Cluster) -> None:
    prepare(cluster, power=False)
    cluster.create(HOSTEDENGINES, he_body())
    first = wait_up(cluster)["status"]["host"]
    uid = engine_vmi(cluster)["metadata"]["uid"]
    lab_call(cluster, lambda lab: lab.faults.fail_node(first))

    wait_state(cluster, "HostLost", timeout=30)
    cond = cluster.wait_condition(HOSTEDENGINES, NAME, "Degraded", status="True",
                                  namespace=NS, timeout=30)
    assert cond["reason"] == "FenceUnavailable"
    assert "never two engines" in cond["message"] or "cannot be fenced" in cond["message"]
    wait_for("FenceUnavailable event", lambda: "FenceUnavailable" in event_reasons(cluster))
    time.sleep(1.5)  # more than the silence threshold again: still no second engine
    obj = he(cluster)
    assert obj["status"]["state"] == "HostLost"
    vmi = engine_vmi(cluster)
    assert vmi is not None and vmi["metadata"]["uid"] == uid
    assert field(vmi, "status.nodeName") == first
    assert conditions(obj)["Available"]["status"] == "False"


def test_global_maintenance_hands_off_and_expires(cluster: Cluster) -> None:
    prepare(cluster)
    cluster.create(HOSTEDENGINES, he_body())
    wait_up(cluster)
    until = (datetime.now(UTC) + timedelta(seconds=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.patch(HOSTEDENGINES, NAME, {"spec": {"maintenance": {
        "mode": "global", "until": until, "reason": "engine upgrade"}}}, NS)
    obj = wait_state(cluster, "GlobalMaintenance", timeout=20)
    assert conditions(obj)["GlobalMaintenance"]["status"] == "True"
    cluster.wait_field(VMS, NAME, "spec.runStrategy", "Manual", namespace=NS)
    assert obj["status"]["maintenance"]["mode"] == "global"

    # a manual stop is allowed now; nothing starts the engine again while maintenance lasts
    cluster.patch(HOSTEDENGINES, NAME, {"spec": {"running": False}}, NS)
    wait_for("engine VMI gone", lambda: engine_vmi(cluster) is None
             or field(engine_vmi(cluster), "status.phase") in ("Succeeded", "Failed"),
             timeout=20)
    time.sleep(1.0)
    assert he(cluster)["status"]["state"] == "GlobalMaintenance"
    assert engine_vmi(cluster) is None or field(engine_vmi(cluster), "status.phase") in (
        "Succeeded", "Failed")
    cluster.patch(HOSTEDENGINES, NAME, {"spec": {"running": True}}, NS)
    # expiry: HA takes over again by itself, the engine runs again
    obj = wait_up(cluster, timeout=40)
    assert wait_for(
        "the expected Events",
        lambda: "GlobalMaintenanceExpired" in event_reasons(cluster),
        timeout=30)
    assert conditions(obj)["GlobalMaintenance"]["status"] == "False"
    assert cluster.get(VMS, NAME, NS)["spec"]["runStrategy"] == "Always"


def test_local_maintenance_of_the_engine_host_moves_the_engine_first(cluster: Cluster) -> None:
    prepare(cluster)
    cluster.create(HOSTEDENGINES, he_body())
    first = wait_up(cluster)["status"]["host"]
    cluster.patch(HOSTS, first, {"spec": {"maintenance": {"mode": "local"}}})
    cluster.wait_field(HOSTS, first, "status.state", "Maintenance", timeout=40)
    obj = wait_up(cluster, avoid=first, timeout=40)
    assert vmi_node(cluster) == obj["status"]["host"] != first
    migrations = [m for m in cluster.list(VMIMS, NS) if m["spec"]["vmiName"] == NAME]
    assert len(migrations) == 1, [m["metadata"]["name"] for m in migrations]
    rows = {r["host"]: r for r in obj["status"]["hosts"]}
    assert rows[first]["localMaintenance"] is True and rows[first]["score"] == 0


# --------------------------------------------------------------------------------------------
# notifications


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.auth: list[str] = []
        self.tls: list[bool] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        self.tls.append(session.ssl is not None)
        return "250 OK"


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[tuple[Any, Inbox, LabCA]]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ca = LabCA(tmp_path / "smtp-ca")
    inbox = Inbox()

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login, auth_data.password) == (b"mailer", b"s3cret-pw")
        if ok:
            inbox.auth.append(auth_data.login.decode())
        return AuthResult(success=ok)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port,
                            tls_context=ca.server_context(),
                            require_starttls=True, authenticator=authenticator,
                            auth_require_tls=True)
    controller.start()
    try:
        yield controller, inbox, ca
    finally:
        controller.stop()


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def test_mails_arrive_over_starttls_with_auth(cluster: Cluster,
                                              smtp_server: tuple[Any, Inbox, LabCA]) -> None:
    controller, inbox, ca = smtp_server
    prepare(cluster)
    cluster.create(SECRETS, secret("smtp-auth", {"username": "mailer", "password": "s3cret-pw"}))
    cluster.create(SECRETS, secret("smtp-ca", {"ca.crt": ca.ca_pem.decode()}))
    spec = fast_spec()
    spec["notifications"] = {
        "smtpServer": "127.0.0.1", "smtpPort": controller.port, "startTLS": True,
        "credentialsSecretRef": {"name": "smtp-auth"},
        "caBundleSecretRef": {"name": "smtp-ca", "key": "ca.crt"},
        "sourceEmail": "he@lab.example", "destinationEmails": ["ops@lab.example"],
    }
    cluster.create(HOSTEDENGINES, he_body(spec))
    wait_up(cluster)
    # EngineDown-EngineStart, EngineStart-EngineStarting, EngineStarting-EngineUp all match
    wait_for("3 mails", lambda: len(inbox.messages) >= 3, timeout=20,
             describe=lambda: [m.content[:80] for m in inbox.messages])
    subjects = [m.content.decode(errors="replace") for m in inbox.messages]
    assert any("EngineStarting-EngineUp" in s for s in subjects)
    assert all(inbox.tls) and inbox.auth
    assert inbox.messages[0].rcpt_tos == ["ops@lab.example"]
    count = len(inbox.messages)
    transitions = [e for e in event_reasons(cluster) if e.startswith("Engine")]
    assert count <= len(transitions)  # one mail per matching transition, not more
    cluster.wait_field(HOSTEDENGINES, NAME, "status.notifications.sent",
                       predicate=lambda n: (n or 0) >= 3, namespace=NS)
    text = repr(he(cluster)) + repr(cluster.events_for(NAME, NS))
    assert "s3cret-pw" not in text


# --------------------------------------------------------------------------------------------
# two replicas


@pytest.fixture
def peering_lab(make_lab_cluster: Callable[..., LabCluster]) -> LabCluster:
    return make_lab_cluster(3, timings=LabTimings.fast(), bmc=True, peering_crds=True)


def test_two_replicas_one_acts(peering_lab: LabCluster) -> None:
    a = OperatorThread(peering_lab.kubeconfig, standalone=False, priority=100).start()
    b = OperatorThread(peering_lab.kubeconfig, standalone=False, priority=10).start()
    try:
        cluster = Cluster(peering_lab, a)
        prepare(cluster)
        cluster.create(HOSTEDENGINES, he_body())
        wait_up(cluster, timeout=60)
        vms = cluster.list(VMS, NS)
        assert len(vms) == 1
        starts = [e for e in cluster.events_for(NAME, NS) if e["reason"] == "EngineStart"]
        assert len(starts) == 1, starts  # one replica decided, the other stood by
        created = [e for e in cluster.events_for(NAME, NS) if e["reason"] == "EngineVmCreated"]
        assert len(created) == 1
        a.stop()
        # the standby takes over and keeps the engine up (crash -> back up)
        lab_call(cluster, lambda lab: lab.faults.crash_vm(NS, NAME))
        wait_for("the standby acted", lambda: "EngineUnexpectedlyDown" in event_reasons(cluster),
                 timeout=60)
        wait_up(cluster, timeout=60)
    finally:
        for op in (b, a):
            if op.running:
                op.stop()
