"""The clock-skew estimate of a node ignores the delivery delay of its Lease events: each
sample is the true skew minus that delay, so the largest recent sample stands. Late deliveries
on a busy cluster no longer rewrite every Host's status at every renewal."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from hosted_engine.handlers import host as handler
from hosted_engine.handlers import host_mapping as hm

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def test_delayed_samples_do_not_move_the_estimate_within_the_window() -> None:
    kept = handler.filtered_skew(None, 0.0, T0)
    assert kept == (0.0, T0)
    # renewals delivered 0.3 .. 1.2 s late: the estimate stays at the least delayed
    for i, delay in enumerate((0.3, 1.2, 0.8, 0.6), start=1):
        kept = handler.filtered_skew(kept, -delay, T0 + timedelta(seconds=10 * i))
        assert kept == (0.0, T0)
    # a larger sample (the clock went ahead, or a faster delivery) replaces it at once
    kept = handler.filtered_skew(kept, 5.0, T0 + timedelta(seconds=50))
    assert kept == (5.0, T0 + timedelta(seconds=50))
    # a clock set back shows once its last larger sample is older than the window
    back = T0 + timedelta(seconds=50 + handler.SKEW_WINDOW)
    assert handler.filtered_skew(kept, 0.1, back - timedelta(seconds=1)) == kept
    assert handler.filtered_skew(kept, 0.1, back) == (0.1, back)


def _lease(node: str, renew: datetime) -> dict[str, Any]:
    return {"metadata": {"name": node, "namespace": "kube-node-lease"},
            "spec": {"renewTime": renew.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                     "leaseDurationSeconds": 40}}


def test_late_renewals_wake_the_host_for_a_status_write_only_once() -> None:
    reconciler = handler.HostReconciler.__new__(handler.HostReconciler)
    reconciler.settings = hm.HostSettings()
    body = {"metadata": {"name": "node-1"}, "spec": {"nodeName": "node-1"},
            "status": {"state": "Up"}}
    reconciler.world = hm.World(hosts={"node-1": body})
    reconciler._world_lock = threading.Lock()
    reconciler.skew = {}
    reconciler.rebuild_index()  # world set by hand: index it as put() does
    woken = []
    for i, delay in enumerate((0.05, 0.9, 0.2, 1.4, 0.7, 0.1)):
        renew = T0 + timedelta(seconds=10 * i)
        host, _ = reconciler.observe_lease(_lease("node-1", renew),
                                           renew + timedelta(seconds=delay))
        woken.append(host)
        if host is not None:  # the reconcile writes the estimate, as handler._clock_skew does
            body["status"]["clockSkew"] = {"seconds": round(reconciler.skew["node-1"][0], 2)}
    assert woken == ["node-1", None, None, None, None, None]
    assert reconciler.skew["node-1"][0] == -0.05


def test_a_listed_lease_gives_no_skew_sample() -> None:
    """At start the watch lists every Lease as it was last renewed (up to 10 s ago): not a
    skew sample, or every Host would report its node behind by that much."""
    reconciler = handler.HostReconciler.__new__(handler.HostReconciler)
    reconciler.settings = hm.HostSettings()
    body = {"metadata": {"name": "node-1"}, "spec": {"nodeName": "node-1"},
            "status": {"state": "Up", "clockSkew": {"seconds": 0.0}}}
    reconciler.world = hm.World(hosts={"node-1": body})
    reconciler._world_lock = threading.Lock()
    reconciler.skew = {}
    reconciler.rebuild_index()  # world set by hand: index it as put() does
    listed_at = T0 + timedelta(seconds=7)
    host, _ = reconciler.observe_lease(_lease("node-1", T0), listed_at, listed=True)
    assert host is None and "node-1" not in reconciler.skew
    assert reconciler.world.leases["node-1"][0] == T0  # the renewal itself is recorded
    host, _ = reconciler.observe_lease(_lease("node-1", T0 + timedelta(seconds=10)),
                                       T0 + timedelta(seconds=10.05))
    assert host is None and reconciler.skew["node-1"][0] == -0.05
