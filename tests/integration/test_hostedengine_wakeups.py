"""The HostedEngine machine is woken by events, not only by its timer.

Every timer of the machine is made longer than the test (health interval and silence threshold
10 minutes, the daemon's longest sleep one hour, so the prober, which starts before the engine
VMI runs, sleeps 10 minutes too): the machine can only react through event wake-ups (VM, VMI,
migration, Host and Node events). Regression for the per-object kopf memo (a shallow copy of the
operator-wide one), in which the daemon's wake-up registry was invisible to those handlers.
Also the local maintenance race: exactly one migration of the engine VMI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from harness import HOSTEDENGINES, HOSTS, Cluster, LabCluster, field, wait_for
from hosted_engine.handlers import hostedengine as he_handlers
from hosted_engine.lab.sim.timings import LabTimings
from hostedengine_lab import (
    HOST_ENV,
    NAME,
    NS,
    VMIMS,
    engine_vmi,
    event_reasons,
    fast_spec,
    he,
    he_body,
    lab_call,
    prepare,
    vmi_node,
    wait_state,
)

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def _event_driven_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in HOST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(he_handlers, "MAX_WAIT", 3600.0)


@pytest.fixture
def lab_cluster(make_lab_cluster: Callable[..., LabCluster]) -> LabCluster:
    return make_lab_cluster(3, timings=LabTimings.fast(), bmc=True)


def slow_timer_spec() -> dict[str, Any]:
    spec = fast_spec()
    spec["health"].update({"interval": "10m", "timeout": "3s", "startupGrace": "2h"})
    spec["failover"]["silenceThreshold"] = "10m"
    return spec


def engine_migrations(cluster: Cluster) -> list[str]:
    return [m["metadata"]["name"] for m in cluster.list(VMIMS, NS)
            if m["spec"]["vmiName"] == NAME]


def test_events_wake_the_machine_crash_and_local_maintenance(cluster: Cluster) -> None:
    prepare(cluster)
    cluster.create(HOSTEDENGINES, he_body(slow_timer_spec()))
    # created VM -> start -> VMI Running: each step after the first needs a VM/VMI wake-up
    wait_state(cluster, "EngineStarting", timeout=40)
    first = engine_vmi(cluster)
    assert first is not None and field(first, "status.phase") == "Running"
    assert he(cluster)["status"]["ha"]["attempts"] == 0

    # a crash (VMI Failed, KubeVirt restarts it) is noticed through the VMI's events alone
    lab_call(cluster, lambda lab: lab.faults.crash_vm(NS, NAME))
    wait_for("the crash is noticed",
             lambda: (he(cluster)["status"].get("ha") or {}).get("attempts", 0) >= 1,
             timeout=30, describe=lambda: he(cluster)["status"].get("ha"))
    wait_for("EngineUnexpectedlyDown event",
             lambda: "EngineUnexpectedlyDown" in event_reasons(cluster), timeout=30)
    wait_for("the new VMI runs", lambda: (engine_vmi(cluster) or {}).get("metadata", {}).get(
        "uid") != first["metadata"]["uid"] and field(engine_vmi(cluster), "status.phase")
        == "Running", timeout=30)
    wait_state(cluster, "EngineStarting", timeout=30)

    # local maintenance of the engine's host (a Host event): the Host's drain migrates the
    # engine, the machine follows it; one migration of the engine VMI, never two
    source = vmi_node(cluster)
    assert source is not None
    cluster.patch(HOSTS, source, {"spec": {"maintenance": {"mode": "local"}}})
    cluster.wait_field(HOSTS, source, "status.state", "Maintenance", timeout=40)
    wait_for("the machine follows the moved engine",
             lambda: he(cluster)["status"].get("host") not in (None, source)
             and he(cluster)["status"].get("host") == vmi_node(cluster),
             timeout=30, describe=lambda: (he(cluster)["status"].get("host"), vmi_node(cluster)))
    assert len(engine_migrations(cluster)) == 1, engine_migrations(cluster)
    wait_for("EngineMoved event", lambda: "EngineMoved" in event_reasons(cluster), timeout=30)
    assert "ActionFailed" not in event_reasons(cluster)
