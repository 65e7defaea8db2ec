"""The Lease watch-event lag (``hosted_engine_watch_lag_seconds``): observed by the Host's
Lease handler for each MODIFIED event (renewal to handling), never for the watch's initial
listing, clamped at 0, one observation per event."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
import pytest
from hosted_engine.adapters import metrics
from hosted_engine.adapters.kubevirt import NODE_LEASE_NAMESPACE
from hosted_engine.clock import ManualClock, get_clock, set_clock
from hosted_engine.handlers import host as handler
from hosted_engine.handlers import host_mapping as hm

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
NAME = "hosted_engine_watch_lag_seconds"


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    previous = get_clock()
    manual = ManualClock(T0)
    set_clock(manual)
    try:
        yield manual
    finally:
        set_clock(previous)


def sample(suffix: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(f"{NAME}_{suffix}", {"kind": "Lease", **labels})
    return value or 0.0


def snapshot() -> dict[str, float]:
    """Count, sum and a few cumulative buckets (the registry is shared by the whole session:
    the tests compare differences)."""
    out = {"count": sample("count"), "sum": sample("sum")}
    for le in ("0.01", "0.1", "0.25", "1.0", "5.0", "10.0", "300.0", "+Inf"):
        out[le] = sample("bucket", le=le)
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 6) for k in before}


def lease(node: str, renew: datetime) -> dict[str, Any]:
    # renewTime as the kubelet writes it: RFC 3339 with microseconds
    return {"metadata": {"name": node, "namespace": NODE_LEASE_NAMESPACE},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                     "renewTime": renew.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}


def deliver(memo: kopf.Memo, body: dict[str, Any], type_: str | None,
            namespace: str = NODE_LEASE_NAMESPACE) -> None:
    # the kopf handler as kopf calls it (its decorator's type wants every kopf argument)
    event = cast(Any, handler.lease_event)
    asyncio.run(event(namespace=namespace, body=kopf.Body(cast(Any, body)), type=type_,
                      memo=memo))


@pytest.fixture
def memo() -> kopf.Memo:
    m = kopf.Memo()
    m[handler.RECONCILER_KEY] = handler.HostReconciler(
        kube=None, settings=hm.HostSettings())  # type: ignore[arg-type]
    m[handler.TRIGGERS_KEY] = handler.Triggers()
    return m


def test_modified_events_are_observed_listing_and_other_events_are_not(
        clock: ManualClock, memo: kopf.Memo) -> None:
    before = snapshot()
    # the initial listing: renewals up to a period old, not a lag
    deliver(memo, lease("node-1", T0 - timedelta(seconds=9)), None)
    deliver(memo, lease("node-2", T0 - timedelta(seconds=9)), "ADDED")
    deliver(memo, lease("node-1", T0 - timedelta(seconds=9)), "DELETED")
    # another namespace's Lease (kopf watches Leases cluster-wide)
    deliver(memo, lease("leader", T0 - timedelta(seconds=9)), "MODIFIED", namespace="kube-system")
    assert delta(before, snapshot())["count"] == 0

    # renewed 0.2 s and 7.5 s before the operator handles them
    deliver(memo, lease("node-1", T0 - timedelta(seconds=0.2)), "MODIFIED")
    deliver(memo, lease("node-2", T0 - timedelta(seconds=7.5)), "MODIFIED")
    d = delta(before, snapshot())
    assert d["count"] == 2
    assert d["sum"] == pytest.approx(7.7)
    assert (d["0.1"], d["0.25"], d["5.0"], d["10.0"], d["+Inf"]) == (0, 1, 1, 2, 2)


def test_lag_keeps_the_microseconds_and_is_clamped_at_zero(
        clock: ManualClock, memo: kopf.Memo) -> None:
    before = snapshot()
    deliver(memo, lease("node-1", T0 - timedelta(microseconds=4_321)), "MODIFIED")
    d = delta(before, snapshot())
    assert d["sum"] == pytest.approx(0.004321)
    assert d["0.01"] == 1

    # a node whose clock is ahead of the operator's: renewTime "in the future" -> 0, not < 0
    before = snapshot()
    deliver(memo, lease("node-2", T0 + timedelta(seconds=3)), "MODIFIED")
    d = delta(before, snapshot())
    assert (d["count"], d["sum"], d["0.01"]) == (1, 0, 1)


def test_an_operator_minutes_behind_lands_in_the_top_buckets(
        clock: ManualClock, memo: kopf.Memo) -> None:
    before = snapshot()
    clock.advance(600)
    deliver(memo, lease("node-1", T0 + timedelta(seconds=462)), "MODIFIED")  # 138 s behind
    deliver(memo, lease("node-2", T0 - timedelta(seconds=1)), "MODIFIED")  # 601 s behind
    d = delta(before, snapshot())
    assert d["sum"] == pytest.approx(739)
    assert (d["10.0"], d["300.0"], d["+Inf"]) == (0, 1, 2)


def test_record_watch_lag_returns_what_it_observed() -> None:
    now = T0
    assert metrics.record_watch_lag("Lease", None, now - timedelta(seconds=1), now) is None
    assert metrics.record_watch_lag("Lease", "MODIFIED", None, now) is None
    assert metrics.record_watch_lag(
        "Lease", "MODIFIED", now - timedelta(seconds=2, microseconds=5), now) == 2.000005
    assert metrics.record_watch_lag("Lease", "MODIFIED", now + timedelta(seconds=1), now) == 0
    assert metrics.WATCH_LAG_BUCKETS[0] == 0.01 and metrics.WATCH_LAG_BUCKETS[-1] == 300
