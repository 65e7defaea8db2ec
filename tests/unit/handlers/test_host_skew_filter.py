"""The clock-skew estimate of a node ignores the delivery delay of its Lease events: each
sample is the true skew minus that delay, so the largest recent sample stands. Late deliveries
on a busy cluster no longer rewrite every Host's status at every renewal."""

from __future__ import annotations

import threading
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from hosted_engine.handlers import host as handler
from hosted_engine.handlers import host_mapping as hm

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def test_delayed_samples_do_not_move_the_estimate_within_the_window() -> None:
    history: deque[tuple[datetime, float]] = deque()
    assert handler.filtered_skew(history, 0.0, T0) == (0.0, T0)
    # renewals delivered 0.3 .. 1.2 s late: the estimate stays at the least delayed
    for i, delay in enumerate((0.3, 1.2, 0.8, 0.6), start=1):
        at = T0 + timedelta(seconds=10 * i)
        assert handler.filtered_skew(history, -delay, at) == (0.0, at)
    # a larger sample (the clock went ahead, or a faster delivery) replaces it at once
    at = T0 + timedelta(seconds=50)
    assert handler.filtered_skew(history, 5.0, at) == (5.0, at)
    # a clock set back shows once its last larger sample is older than the window
    back = T0 + timedelta(seconds=50 + handler.SKEW_WINDOW)
    assert handler.filtered_skew(history, 0.1, back - timedelta(seconds=1))[0] == 5.0
    assert handler.filtered_skew(history, 0.1, back) == (0.1, back)


def test_the_estimate_is_a_sliding_maximum_not_the_first_sample_after_the_window() -> None:
    """Deliveries 0.3 s late at the median and up to 5 s late (1,000 Hosts): when the least
    delayed sample ages out, the estimate falls to the next largest of the window, not to
    whatever sample comes first (that rewrote every Host's skew about once a minute)."""
    history: deque[tuple[datetime, float]] = deque()
    delays = [0.05, 0.3, 0.2, 0.4, 0.25, 0.1, 4.8, 0.2, 0.3, 0.15, 0.35, 2.5] * 3
    estimates = [handler.filtered_skew(history, -d, T0 + timedelta(seconds=10 * i))[0]
                 for i, d in enumerate(delays)]
    assert min(estimates) >= -0.3  # never one of the late ones: no rewrite (resolution 0.5 s)
    assert len(history) <= handler.SKEW_WINDOW / 10 + 1


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


def _reconciler_with(nodes: list[str]) -> handler.HostReconciler:
    reconciler = handler.HostReconciler.__new__(handler.HostReconciler)
    reconciler.settings = hm.HostSettings()
    reconciler.world = hm.World(hosts={
        n: {"metadata": {"name": n}, "spec": {"nodeName": n}, "status": {"state": "Up"}}
        for n in nodes})
    reconciler._world_lock = threading.Lock()
    reconciler.skew = {}
    reconciler.rebuild_index()
    return reconciler


def test_a_delay_common_to_every_node_is_not_clock_skew() -> None:
    """An operator 8-12 s behind its Lease watch (1,000 nodes after a start: 5-20 s) sees every
    node that far behind: no skew sample is taken; once it has caught up, a node whose clock
    is 5 s ahead shows, the others are in sync."""
    nodes = [f"node-{i}" for i in range(20)]
    reconciler = _reconciler_with(nodes)

    def renewals(ticks: range, behind: Any) -> None:
        for tick in ticks:
            node = nodes[tick % len(nodes)]
            renew = T0 + timedelta(seconds=0.5 * tick)
            ahead = 5.0 if node == "node-7" else 0.0
            reconciler.observe_lease(_lease(node, renew + timedelta(seconds=ahead)),
                                     renew + timedelta(seconds=behind(tick)))

    # 3 renewals of each node, 8 to 12 s behind with jitter: the first ones (too few samples
    # to tell) are taken as they are, then none
    renewals(range(60), lambda tick: 8.0 + 4.0 * tick / 60 + (0.3 if tick % 2 else -0.3))
    assert set(reconciler.skew) <= {"node-0", "node-1"}, reconciler.skew
    # caught up: deliveries 50 ms late (the two early samples are replaced by larger ones)
    renewals(range(60, 100), lambda tick: 0.05)
    estimates = {n: reconciler.skew[n][0] for n in nodes}
    assert abs(estimates["node-7"] - 4.95) < 0.01, estimates
    assert all(abs(v + 0.05) < 0.01 for n, v in estimates.items() if n != "node-7"), estimates


def test_a_small_common_delay_is_delivery_noise_and_one_skewed_node_is_not_the_reference() -> None:
    reconciler = _reconciler_with(["a", "b", "c"])
    at = T0 + timedelta(seconds=30)
    for i, sample in enumerate([-0.3, -0.2, -0.4]):
        reconciler._recent_samples.append((at - timedelta(seconds=i), sample))
    assert reconciler.common_delay(at) == 0.0  # within the noise: samples as they are
    reconciler._recent_samples.clear()
    for i, sample in enumerate([0.0, -0.1, -120.0]):  # one node 2 minutes behind
        reconciler._recent_samples.append((at - timedelta(seconds=i), sample))
    assert reconciler.common_delay(at) == 0.0  # the others set the reference
    reconciler._recent_samples.clear()
    for i, sample in enumerate([-9.0, -9.2, -8.8, -30.0]):  # all behind: the operator is
        reconciler._recent_samples.append((at - timedelta(seconds=i / 2), sample))
    assert reconciler.common_delay(at) == -9.0
    # samples older than the window are not part of it
    assert reconciler.common_delay(at + timedelta(seconds=handler.COMMON_DELAY_MAX_AGE + 4)) \
        == 0.0
