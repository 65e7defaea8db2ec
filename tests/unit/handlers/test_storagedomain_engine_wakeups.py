"""A StorageDomain runs only when something it reads changes (every run LISTs claims, volumes,
peers and engines): a HostedEngine's events wake it only when what the domain reads of the
engine changes (its disk's domain, running, global maintenance), not on its frequent other
status writes; a domain with no network endpoint (FC, CSI) has no probe timer."""

from __future__ import annotations

import copy
from typing import Any

import kopf
from hosted_engine.handlers import storagedomain as sd


def engine(state: str = "EngineUp", *, domain: str = "hosted-engine", mode: str = "none",
           heartbeat: str = "2026-11-22T08:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {"name": "engine", "namespace": "engine"},
        "spec": {"vm": {"disk": {"storageDomain": domain}}},
        "status": {"state": state, "maintenance": {"mode": mode},
                   "vm": {"phase": "Running"},
                   "hosts": [{"host": "node-1", "lastSeen": heartbeat}]},
    }


async def deliver(memo: kopf.Memo, body: dict[str, Any], type_: str | None = "MODIFIED"
                  ) -> set[str]:
    """Deliver one watch event; the domains woken by it."""
    triggers = sd.triggers_of(memo)
    for name in ("hosted-engine", "data"):
        triggers.event(name).clear()
    await sd.engine_event(name=body["metadata"]["name"],
                          namespace=body["metadata"]["namespace"], spec=body["spec"],
                          body=body, type=type_, memo=memo)
    return {name for name in ("hosted-engine", "data") if triggers.event(name).is_set()}


async def test_only_what_the_domain_reads_wakes_it() -> None:
    memo = kopf.Memo()
    memo[sd.TRIGGERS_KEY] = sd.Triggers()
    first = engine()
    assert await deliver(memo, first, None) == {"hosted-engine"}  # first sight
    # the engine's heartbeat and health: nothing the domain reads
    later = engine(heartbeat="2026-11-22T08:00:10Z")
    later["status"]["health"] = {"lastProbe": "ok"}
    assert await deliver(memo, later) == set()
    assert await deliver(memo, copy.deepcopy(later)) == set()
    # global maintenance (what a pending domain maintenance waits for) wakes it
    assert await deliver(memo, engine(mode="global")) == {"hosted-engine"}
    assert await deliver(memo, engine(mode="global", heartbeat="x")) == set()
    # the engine stops
    stopped = engine("EngineDown", mode="global")
    stopped["status"]["vm"] = {"phase": "Succeeded"}
    assert await deliver(memo, stopped) == {"hosted-engine"}
    # its disk moves to another domain: both re-check
    assert await deliver(memo, engine("EngineDown", domain="data", mode="global")) \
        == {"hosted-engine", "data"}
    # deleted: its domain re-checks, and a recreated engine is seen again
    gone = engine("EngineDown", domain="data", mode="global")
    assert await deliver(memo, gone, "DELETED") == {"data"}
    assert await deliver(memo, engine(domain="data")) == {"data"}


def test_only_domains_with_network_endpoints_have_a_probe_timer() -> None:
    fc = {"type": "fc", "role": "data", "capacity": "50Gi",
          "fc": {"wwids": ["3600a0980383030534f3f4a4f4d4c4502"]}}
    nfs = {"type": "nfs", "role": "data", "capacity": "50Gi", "probeInterval": "30s",
           "nfs": {"server": "nfs.example", "path": "/exports/data"}}
    csi = {"type": "csi", "role": "data", "csi": {"storageClassName": "lab-csi"}}
    assert sd.next_probe_in(fc) is None  # FC: nothing to probe, no periodic reconcile (LISTs)
    assert sd.next_probe_in(csi) is None
    assert sd.next_probe_in(nfs) == 30.0
    assert sd.next_probe_in({**nfs, "probeInterval": "bad"}) == sd.DEFAULT_PROBE_INTERVAL
    assert sd.next_probe_in({"type": "nfs"}) == 60.0  # unreadable spec: keep looking


async def test_a_trigger_ends_an_untimed_wait() -> None:
    triggers = sd.Triggers()
    triggers.fire("data")
    assert await triggers.wait("data", float("inf")) is True
    assert await triggers.wait("data", 0.0) is False
