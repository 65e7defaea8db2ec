"""Node Leases in the Host's observation: the storm guard counts fresh Leases, not Ready Nodes;
a fence request for a Ready node with a silent Lease is accepted; the handler's Lease cache
(pure parts, no API)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from host_fixtures import host_obj, ready_node, stamp
from hosted_engine.adapters.fencing import pods_to_release
from hosted_engine.handlers import host as handler
from hosted_engine.handlers import host_mapping as hm
from hosted_engine.logic import host_lifecycle as lc
from hosted_engine.models import Host
from hosted_engine.models.host import HostStatus, PowerManagementStatus, PowerState

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NAMES = ("node-1", "node-2", "node-3")


def lease(name: str, renewed: datetime, duration: int = 40) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": duration,
                     "renewTime": stamp(renewed)}}


def world(renewed: dict[str, float]) -> hm.World:
    return hm.World(
        hosts={n: host_obj(n) for n in NAMES},
        nodes={n: ready_node(n, T0) for n in NAMES},
        leases={n: (T0 + timedelta(seconds=s), 40.0) for n, s in renewed.items()},
    )


def test_settings_for_leases_and_the_power_poll() -> None:
    s = hm.HostSettings.from_env({"HE_HOST_FENCE_MISSED_RENEWALS": "3",
                                  "HE_HOST_LEASE_RENEW_INTERVAL": "0.1",
                                  "HE_HOST_POWER_POLL": "0"})
    assert (s.fence_missed_renewals, s.lease_renew_interval_s, s.power_poll_s) == (3.0, 0.1, 0.0)
    default = hm.HostSettings.from_env({})
    assert (default.fence_missed_renewals, default.lease_renew_interval_s,
            default.power_poll_s) == (2.0, None, 5.0)


def test_storm_guard_counts_fresh_leases_not_ready_nodes() -> None:
    # every Node still Ready (the node-lifecycle grace has not run out), two Leases silent 30 s
    w = world({"node-1": 0, "node-2": 0, "node-3": 29})
    now = T0 + timedelta(seconds=30)
    assert hm.cluster_health(w, now) == lc.ClusterHealth(total_hosts=3, ready_hosts=1)
    assert hm.cluster_health(w) == lc.ClusterHealth(total_hosts=3, ready_hosts=3)  # by Ready
    request = {"hostedengine.io/fence-request": "hostedengine.engine.he/r1"}
    host = Host.model_validate(host_obj("node-1", request))
    obs = hm.observe(host, w, now, hm.HostSettings(), None)
    assert obs.node.ready is True and obs.node.lease_duration_s == 40.0
    assert lc.lost_reason(obs) == "LeaseExpired"
    s = lc.step(None, obs)
    assert not [a for a in s.actions if isinstance(a, lc.RequestFence)]
    assert s.status.fence_blocked_reason == "ClusterPartitioned"


def test_one_silent_lease_among_fresh_ones_is_fenced_on_request() -> None:
    w = world({"node-1": 0, "node-2": 29, "node-3": 29})
    request = {"hostedengine.io/fence-request": "hostedengine.engine.he/r1"}
    host = Host.model_validate({**host_obj("node-1", request),
                                "status": {"powerManagement": {"powerState": "On"}}})
    obs = hm.observe(host, w, T0 + timedelta(seconds=30), hm.HostSettings(), None)
    assert obs.cluster == lc.ClusterHealth(total_hosts=3, ready_hosts=2)
    s = lc.step(None, obs)
    assert s.status.state is lc.HostState.NON_RESPONSIVE
    assert [a for a in s.actions if isinstance(a, lc.RequestFence)] == [lc.RequestFence(1)]


def test_the_lease_cache_keeps_the_newest_renewal_and_says_when_a_node_came_back() -> None:
    reconciler = handler.HostReconciler.__new__(handler.HostReconciler)
    reconciler.settings = hm.HostSettings()
    reconciler.world = hm.World(hosts={n: host_obj(n) for n in NAMES})
    reconciler._world_lock = threading.Lock()
    reconciler.skew = {}
    reconciler.rebuild_index()  # world set by hand: index it as put() does
    host, back = reconciler.observe_lease(lease("node-2", T0), T0)
    assert host == "node-2" and not back  # first sight: skew to write
    assert reconciler.world.leases["node-2"] == (T0, 40.0)
    # an older renewal delivered late never replaces a newer one
    reconciler.observe_lease(lease("node-2", T0 - timedelta(seconds=5)), T0)
    assert reconciler.world.leases["node-2"][0] == T0
    # 30 s of silence, then a renewal: the node is heard from again
    later = T0 + timedelta(seconds=30)
    _, back = reconciler.observe_lease(lease("node-2", later), later)
    assert back
    _, back = reconciler.observe_lease(lease("node-2", later + timedelta(seconds=10)),
                                       later + timedelta(seconds=10))
    assert not back


def test_a_polled_power_state_is_merged_only_when_newer_and_different() -> None:
    reconciler = handler.HostReconciler.__new__(handler.HostReconciler)
    reconciler.polled_power = {}
    reconciler._world_lock = threading.Lock()
    reconciler.world = hm.World(hosts={"node-1": host_obj("node-1")})
    status = HostStatus(power_management=PowerManagementStatus(
        power_state=PowerState.ON, checked_at=T0))
    assert reconciler._merge_polled_power("node-1", status) is status
    reconciler.polled_power["node-1"] = (PowerState.OFF, T0 + timedelta(seconds=5))
    merged = reconciler._merge_polled_power("node-1", status)
    assert merged.power_management.power_state is PowerState.OFF
    assert merged.power_management.checked_at == T0 + timedelta(seconds=5)
    # an action answered after the poll: its reading stands
    newer = HostStatus(power_management=PowerManagementStatus(
        power_state=PowerState.ON, checked_at=T0 + timedelta(seconds=9)))
    assert reconciler._merge_polled_power("node-1", newer) is newer


def test_only_the_pods_the_out_of_service_taint_evicts_are_released() -> None:
    def pod(name: str, node_name: str, tolerations: list[dict[str, str]] | None = None
            ) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "vms"},
                "spec": {"nodeName": node_name, "tolerations": tolerations or [
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                     "effect": "NoExecute", "tolerationSeconds": 300}]}}

    pods = [
        pod("virt-launcher-engine", "node-1"),
        pod("elsewhere", "node-2"),
        pod("tolerates-all", "node-1", [{"operator": "Exists"}]),
        pod("tolerates-oos", "node-1", [{"key": "node.kubernetes.io/out-of-service",
                                         "operator": "Exists", "effect": "NoExecute"}]),
    ]
    assert pods_to_release(pods, "node-1") == [("vms", "virt-launcher-engine")]


def test_an_off_read_again_after_the_node_spoke_refreshes_a_stale_off() -> None:
    reconciler = handler.HostReconciler.__new__(handler.HostReconciler)
    reconciler._world_lock = threading.Lock()
    reconciler.world = hm.World(hosts={"node-1": host_obj("node-1")},
                                leases={"node-1": (T0 + timedelta(seconds=30), 40.0)})
    # Off from an old fence; the node came back (Lease renewed at +30 s) and died again
    stale = HostStatus(power_management=PowerManagementStatus(
        power_state=PowerState.OFF, checked_at=T0))
    reconciler.polled_power = {"node-1": (PowerState.OFF, T0 + timedelta(seconds=40))}
    merged = reconciler._merge_polled_power("node-1", stale)
    assert merged.power_management.checked_at == T0 + timedelta(seconds=40)
    # an Off read after the last renewal is not stale: nothing to rewrite
    fresh = HostStatus(power_management=PowerManagementStatus(
        power_state=PowerState.OFF, checked_at=T0 + timedelta(seconds=35)))
    reconciler.polled_power = {"node-1": (PowerState.OFF, T0 + timedelta(seconds=40))}
    assert reconciler._merge_polled_power("node-1", fresh) is fresh
