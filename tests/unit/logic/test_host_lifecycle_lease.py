"""The Host accepts a fence for a Node still Ready when its Lease missed renewals or its BMC
says Off; a Ready node with a fresh Lease is never fenced (issue 6)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hosted_engine.logic.host_lifecycle import (
    ClusterHealth,
    EmitEvent,
    HostObservation,
    HostPolicy,
    HostState,
    NodeObservation,
    PowerObservation,
    ReleasePods,
    RemoveOutOfServiceTaint,
    RequestFence,
    SetCondition,
    Step,
    TaintOutOfService,
    lease_fresh,
    lease_threshold_s,
    lost_reason,
    renew_interval_s,
    step,
)
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FENCE_OK = PowerObservation(configured=True, fencing_allowed=True, power_state="On",
                            observed_at=T0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ready_node(renewed: float, duration: float | None = 40.0) -> NodeObservation:
    """A Node the node-lifecycle controller still reports Ready (its 40 s grace has not run
    out), whose Lease was last renewed at ``renewed``."""
    return NodeObservation(ready=True, lease_renewed_at=at(renewed), lease_duration_s=duration)


def obs(now: float, node: NodeObservation, **kw: object) -> HostObservation:
    base: dict[str, object] = {
        "host": "node-a",
        "now": at(now),
        "node": node,
        "power": FENCE_OK,
        "cluster": ClusterHealth(3, 2),
    }
    base.update(kw)
    return HostObservation(**base)  # type: ignore[arg-type]


def conditions(s: Step) -> dict[str, tuple[str, str]]:
    return {a.type: (a.status, a.reason) for a in s.actions if isinstance(a, SetCondition)}


def fences(s: Step) -> list[RequestFence]:
    return [a for a in s.actions if isinstance(a, RequestFence)]


def test_default_threshold_is_two_missed_kubelet_renewals_plus_margin() -> None:
    node = ready_node(0)
    assert renew_interval_s(node, HostPolicy()) == 10.0  # a quarter of leaseDurationSeconds 40
    threshold = lease_threshold_s(node, HostPolicy())
    assert threshold == pytest.approx(21.8)
    # more than two renewals with their 4 % jitter, less than the node-lifecycle grace (40 s)
    assert 2 * 10 * 1.04 < threshold < 40
    # the policy may name the interval (the kubelet's may differ from a quarter of the lease)
    fast = HostPolicy(lease_renew_interval_s=0.1, fence_missed_renewals=3)
    assert lease_threshold_s(node, fast) == pytest.approx(0.1 * (3 * 1.04 + 0.1))
    # no Lease duration known: the kubelet's 10 s
    assert renew_interval_s(ready_node(0, duration=None), HostPolicy()) == 10.0


def test_one_late_renewal_is_not_a_lost_host() -> None:
    s = step(None, obs(15, ready_node(0), fence_requested=True))
    assert not fences(s) and s.status.state is HostState.UP
    assert conditions(s)["FencingBlocked"] == ("True", "NodeReady")
    blocked = [a.message for a in s.actions if isinstance(a, EmitEvent)]
    assert any("renewed 15.0s ago" in m for m in blocked), blocked


def test_a_ready_node_whose_lease_missed_two_renewals_is_fenced_on_request() -> None:
    waiting = step(None, obs(15, ready_node(0), fence_requested=True))
    s = step(waiting.status, obs(22, ready_node(0), fence_requested=True))
    assert s.status.state is HostState.NON_RESPONSIVE
    assert conditions(s)["Responsive"] == ("False", "LeaseExpired")
    assert fences(s) == [RequestFence(1)]
    # confirmed Off after the request: Fenced, tainted, although the Node still says Ready
    off = replace(FENCE_OK, power_state="Off", observed_at=at(25))
    s = step(s.status, obs(25, ready_node(0), power=off))
    assert s.status.state is HostState.FENCED
    assert any(isinstance(a, TaintOutOfService) for a in s.actions)
    # PodGC releases an out-of-service node's pods only once NotReady: the Host does it now
    assert any(isinstance(a, ReleasePods) for a in s.actions)
    # the Node is still Ready for a while (grace), the Lease silent: stays Fenced, keeps taint
    s = step(s.status, obs(35, replace(ready_node(0), out_of_service_taint=True), power=off))
    assert s.status.state is HostState.FENCED
    assert not any(isinstance(a, RemoveOutOfServiceTaint) for a in s.actions)
    assert any(isinstance(a, ReleasePods) for a in s.actions)
    # powered on again: the kubelet renews its Lease after the Off reading -> back Up
    back = replace(ready_node(100), out_of_service_taint=True)
    s = step(s.status, obs(101, back, power=off))
    assert s.status.state is HostState.UP
    assert any(isinstance(a, RemoveOutOfServiceTaint) for a in s.actions)


def test_without_a_request_a_silent_lease_alone_does_not_fence() -> None:
    s = step(None, obs(60, ready_node(0), runs_restartable_vms=True))
    assert s.status.state is HostState.UP and not fences(s)


def test_bmc_off_after_the_last_renewal_is_lost_at_once() -> None:
    off = replace(FENCE_OK, power_state="Off", observed_at=at(3))
    s = step(None, obs(3, ready_node(2), power=off, fence_requested=True))
    assert conditions(s)["Responsive"] == ("False", "PoweredOff")
    assert fences(s) == [RequestFence(1)]


def test_a_stale_off_or_an_unanswered_bmc_proves_nothing() -> None:
    stale = replace(FENCE_OK, power_state="Off", observed_at=at(1))
    s = step(None, obs(3, ready_node(2), power=stale, fence_requested=True))
    assert not fences(s) and conditions(s)["FencingBlocked"] == ("True", "NodeReady")
    unknown = replace(FENCE_OK, power_state="Unknown", observed_at=at(3))
    s = step(None, obs(3, ready_node(2), power=unknown, fence_requested=True))
    assert not fences(s) and s.status.state is HostState.UP


def test_partition_healed_before_the_fence_started_returns_to_up() -> None:
    # the fence is blocked (no power management) while the lease is silent
    s = step(None, obs(30, ready_node(0), power=PowerObservation(), fence_requested=True))
    assert s.status.state is HostState.NON_RESPONSIVE
    assert conditions(s)["FencingBlocked"] == ("True", "NoPowerManagement")
    s = step(s.status, obs(31, ready_node(31), power=PowerObservation(), fence_requested=True))
    assert s.status.state is HostState.UP
    assert conditions(s)["Responsive"] == ("True", "NodeReady")
    assert not fences(s)


def test_storm_guard_blocks_lease_fencing_when_most_hosts_are_silent() -> None:
    s = step(None, obs(30, ready_node(0), cluster=ClusterHealth(3, 1), fence_requested=True))
    assert not fences(s)
    assert conditions(s)["FencingBlocked"] == ("True", "ClusterPartitioned")


def test_lease_freshness_without_a_lease_falls_back_to_ready() -> None:
    policy = HostPolicy()
    assert lease_fresh(NodeObservation(ready=True), policy, at(0))
    assert not lease_fresh(NodeObservation(ready=None), policy, at(0))
    assert lease_fresh(ready_node(0), policy, at(21))
    assert not lease_fresh(ready_node(0), policy, at(22))


@settings(max_examples=200, deadline=None)
@given(
    silence=st.floats(0, 21.7),
    bmc=st.sampled_from(["On", "Unknown"]),
    restartable=st.booleans(),
    steps=st.integers(1, 4),
)
def test_property_a_ready_node_with_a_fresh_lease_is_never_fenced(
    silence: float, bmc: str, restartable: bool, steps: int
) -> None:
    """Whatever asks, however often: Ready + Lease within 2 missed renewals + BMC not Off ->
    no fence, no NonResponsive."""
    status = None
    for i in range(steps):
        now = 100.0 + i
        power = replace(FENCE_OK, power_state=bmc, observed_at=at(now))
        o = obs(now, ready_node(now - silence), power=power, fence_requested=True,
                runs_restartable_vms=restartable)
        assert lost_reason(o) is None
        result = step(status, o)
        assert not fences(result)
        assert result.status.state is HostState.UP
        status = result.status


def test_pods_are_left_to_kubernetes_once_the_node_is_not_ready() -> None:
    silent = NodeObservation(ready=None, not_ready_since=T0)
    s = step(None, obs(60, silent, fence_requested=True))
    off = replace(FENCE_OK, power_state="Off", observed_at=at(61))
    s = step(s.status, obs(61, silent, power=off))
    assert s.status.state is HostState.FENCED
    assert not any(isinstance(a, ReleasePods) for a in s.actions)
