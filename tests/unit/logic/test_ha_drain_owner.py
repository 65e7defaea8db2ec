"""One actor moves the engine off a host in local maintenance: the Host's drain live-migrates it,
the HA machine waits and follows (it only cold-moves a VMI that cannot live-migrate, or moves it
when the drain was refused or gave up). :func:`engine_vm.drain_moves_engine` reads that from the
Host object."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hosted_engine.logic import engine_vm as ev
from hosted_engine.logic.backoff import Backoff
from hosted_engine.logic.ha import (
    Decision,
    EmitEvent,
    EngineVm,
    HostObservation,
    Memory,
    MigrateEngine,
    Notify,
    Observation,
    PowerState,
    Probe,
    ProbeResult,
    Settings,
    State,
    StopEngine,
    VmiPhase,
    step,
)
from hosted_engine.models.host import MAINTENANCE_REQUEST_ANNOTATION

GIB = 1 << 30
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = Settings(
    health_interval=timedelta(seconds=10),
    host_silence=timedelta(seconds=20),
    backoff=Backoff(timedelta(seconds=10), 2.0, timedelta(minutes=5)),
)
NOW = T0 + timedelta(seconds=30)
GOOD = (Probe(T0 + timedelta(seconds=20), ProbeResult.OK),)


def host(name: str, **kw: Any) -> HostObservation:
    base: dict[str, Any] = {"name": name, "last_heartbeat": NOW, "free_memory": 16 * GIB,
                            "bmc_power": PowerState.ON}
    base.update(kw)
    return HostObservation(**base)


def observe(h1: dict[str, Any], *, node: str = "h1", **vm_kw: Any) -> Observation:
    engine = EngineVm(exists=True, phase=VmiPhase.RUNNING, node=node, since=T0, **vm_kw)
    hosts = (host("h1", **h1), host("h2"), host("h3"))
    return Observation(vm=engine, hosts=hosts, engine_memory=8 * GIB, probes=GOOD)


def run(state: State, o: Observation) -> Decision:
    return step(S, Memory(state=state, since=T0, host="h1", healthy_since=T0), o, NOW)


def moves(d: Decision) -> list[object]:
    return [a for a in d.actions if isinstance(a, (MigrateEngine, StopEngine))]


def test_the_machine_waits_while_the_hosts_drain_migrates_the_engine() -> None:
    o = observe({"local_maintenance": True, "drain_moves_engine": True}, live_migratable=True)
    d = run(State.ENGINE_UP, o)
    assert d.state is State.LOCAL_MAINTENANCE and moves(d) == []
    assert "waiting for the drain of h1" in d.memory.reason
    again = step(S, d.memory, o, NOW + timedelta(seconds=10))
    assert moves(again) == [] and again.state is State.LOCAL_MAINTENANCE


def test_a_running_migration_is_awaited_whoever_started_it() -> None:
    o = observe({"local_maintenance": True}, live_migratable=True, migrating=True)
    d = run(State.LOCAL_MAINTENANCE, o)
    assert moves(d) == [] and "migrating off h1" in d.memory.reason


def test_without_the_drain_the_machine_moves_the_engine_itself() -> None:
    # the Host refused maintenance, timed out or blocked the engine: nobody else moves it
    o = observe({"local_maintenance": True, "drain_moves_engine": False}, live_migratable=True)
    d = run(State.ENGINE_UP, o)
    assert moves(d) == [MigrateEngine("h2")] and d.state is State.ENGINE_MIGRATING


def test_a_vmi_that_cannot_live_migrate_is_cold_moved_by_the_machine() -> None:
    # the drain blocks it (EngineNotLiveMigratable): the HostedEngine restarts it elsewhere
    o = observe({"local_maintenance": True, "drain_moves_engine": True}, live_migratable=False)
    d = run(State.ENGINE_UP, o)
    assert moves(d) == [StopEngine(True)] and d.state is State.ENGINE_STOP


def test_the_machine_follows_the_engine_the_drain_moved() -> None:
    o = observe({"local_maintenance": True, "drain_moves_engine": True}, node="h2",
                live_migratable=True)
    d = run(State.LOCAL_MAINTENANCE, o)
    assert d.state is State.ENGINE_UP and d.memory.host == "h2" and moves(d) == []
    moved = [e for e in d.actions if isinstance(e, EmitEvent) and e.reason == "EngineMoved"]
    assert len(moved) == 1 and "was h1" in moved[0].message


def host_obj(*, mode: str = "none", state: str = "Up", annotations: dict[str, str] | None = None,
             conditions: list[dict[str, Any]] | None = None,
             drain: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"state": state, "conditions": conditions or []}
    if drain is not None:
        status["drain"] = drain
    return {"metadata": {"name": "h1", "annotations": annotations or {}},
            "spec": {"nodeName": "h1", "maintenance": {"mode": mode}}, "status": status}


@pytest.mark.parametrize(
    ("host", "owns"),
    [
        (host_obj(), False),
        (host_obj(mode="local"), True),  # the Host has not reacted yet: the drain is coming
        (host_obj(state="PreparingForMaintenance"), True),
        (host_obj(annotations={MAINTENANCE_REQUEST_ANNOTATION: "rolling/nightly"}), True),
        (host_obj(mode="local", state="PreparingForMaintenance",
                  drain={"blocked": [{"namespace": "other", "name": "vm1", "reason": "x"}]}),
         True),
        (host_obj(mode="local", conditions=[{"type": "MaintenanceRefused", "status": "True"}]),
         False),
        (host_obj(mode="local", conditions=[{"type": "MaintenanceRefused", "status": "False"}]),
         True),
        (host_obj(mode="local", state="PreparingForMaintenance", drain={"timedOut": True}),
         False),
        (host_obj(mode="local", state="PreparingForMaintenance",
                  drain={"blocked": [{"namespace": "engine", "name": "engine",
                                      "reason": "EngineNotLiveMigratable: x"}]}),
         False),
        (host_obj(mode="local", state="Maintenance"), False),
        (host_obj(mode="local", state="NonResponsive"), False),
        (host_obj(mode="local", state="Fenced"), False),
    ],
)
def test_drain_moves_engine_reads_the_host(host: dict[str, Any], owns: bool) -> None:
    assert ev.drain_moves_engine(host, "engine", "engine") is owns


def test_a_moved_engine_not_yet_healthy_is_adopted_on_its_new_host() -> None:
    o = observe({"local_maintenance": True, "drain_moves_engine": True}, node="h2")
    o = Observation(vm=o.vm, hosts=o.hosts, engine_memory=o.engine_memory, probes=())
    d = run(State.LOCAL_MAINTENANCE, o)
    assert d.state is State.ENGINE_STARTING and d.memory.host == "h2" and moves(d) == []
    notes = [a for a in d.actions if isinstance(a, Notify)]
    assert [(n.new, "moved to h2" in n.reason) for n in notes] == [(State.ENGINE_STARTING, True)]
