"""A HostedEngine's events wake its StorageDomain only when what the domain reads of it
changes (its disk's domain, running, global maintenance), not on its frequent other status
writes: every wake-up of a domain is a reconcile that LISTs claims, volumes and peers."""

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
