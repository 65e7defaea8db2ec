"""The scoring's CPU-pressure input: requested CPU of non-engine pods over the node's allocatable
CPU, fed into the HA machine's host scores; a missing source costs nothing (issue 6)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hosted_engine.handlers import hostedengine as handler
from hosted_engine.logic import engine_vm as ev
from hosted_engine.logic import ha
from hosted_engine.models.hostedengine import HostedEngineSpec

T0 = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


def spec() -> HostedEngineSpec:
    return HostedEngineSpec.model_validate({
        "vm": {
            "memory": "16Gi",
            "disk": {"storageDomain": "hosted-engine"},
            "image": {"containerDisk": {"image": "quay.io/ovirt/engine:4.5"}},
            "network": {"fqdn": "engine.example.com"},
        },
    })


def node(name: str, cpu: str | None = "16") -> dict[str, Any]:
    allocatable = {"memory": "64Gi", **({"cpu": cpu} if cpu is not None else {})}
    return {"metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                                       "lastHeartbeatTime": T0.isoformat()}],
                       "allocatable": allocatable}}


def host(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {}, "annotations": {}},
            "spec": {"nodeName": name, "hostedEngine": "deploy",
                     "powerManagement": {"type": "redfish", "address": "10.0.0.1"}},
            "status": {}}


@pytest.mark.parametrize(
    ("cpu", "requested", "load"),
    [
        ("16", 8000, 0.5),
        ("16", 0, 0.0),
        ("16", None, 0.0),  # no pod data: no penalty
        ("4", 6000, 1.0),  # over-committed: capped
        (None, 8000, 0.0),  # no allocatable CPU known: no penalty
        ("15500m", 7750, 0.5),
    ],
)
def test_cpu_load_is_requested_over_allocatable(cpu: str | None, requested: int | None,
                                                load: float) -> None:
    assert ev.cpu_load(node("n", cpu), requested) == pytest.approx(load)


def test_cpu_pressure_lowers_the_score_on_ovirts_scale() -> None:
    world = ev.World(
        vm={"metadata": {"name": "e-engine"}, "spec": {"runStrategy": "Always"}},
        hosts=(host("a"), host("b"), host("c")),
        nodes={n: node(n) for n in ("a", "b", "c")},
        leases={n: T0 for n in ("a", "b", "c")},
        used_memory={},
        used_cpu={"a": int(0.9 * 16000), "b": int(0.65 * 16000)},
    )
    obs, _ = ev.observe(spec(), world, "ns", "e")
    loads = {h.name: h.cpu_load for h in obs.hosts}
    assert loads == pytest.approx({"a": 0.9, "b": 0.65, "c": 0.0})
    decision = ha.step(ha.Settings(), ha.Memory(), obs, T0)
    scores = {s.host: s.score for s in decision.scores}
    # oVirt's cpu-load penalty: 0 at 40 %, 1000 at 90 %, linear between
    assert scores["a"] == 3400 - 1000
    assert scores["b"] == 3400 - 500
    assert scores["c"] == 3400
    rows = {r.host: r for r in decision.hosts}
    assert any(p.startswith("CPU load 90%") for p in rows["a"].penalties)


def test_the_index_counts_cpu_requests_of_pods_that_are_not_the_engine() -> None:
    def pod(cpu: str, labels: dict[str, str] | None = None, phase: str = "Running",
            node_name: str = "a") -> tuple[Any, Any, Any]:
        spec_ = {"nodeName": node_name, "containers": [
            {"name": "c", "resources": {"requests": {"cpu": cpu}}},
            {"name": "sidecar", "resources": {"requests": {"cpu": "100m"}}}]}
        return spec_, {"phase": phase}, labels or {}

    spec_, status, labels = pod("1500m")
    assert handler.he_pod_cpu(spec=spec_, status=status, labels=labels) == {"a": 1600}
    spec_, status, labels = pod("2", labels={ev.ENGINE_VM_LABEL: "engine"})
    assert handler.he_pod_cpu(spec=spec_, status=status, labels=labels) is None
    spec_, status, labels = pod("2", phase="Succeeded")
    assert handler.he_pod_cpu(spec=spec_, status=status, labels=labels) is None
    spec_, status, labels = pod("2", node_name="")
    assert handler.he_pod_cpu(spec=spec_, status=status, labels=labels) is None
