"""A fence that gave up belongs to its request: a new request id (the HostedEngine asking again
once the BMC may work) starts a new attempt budget (a BMC outage longer than the retries used to
leave the host unfenceable, and the engine down, for good). And the pure helpers the Host uses
to call a power-off off after its fresh re-read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hosted_engine.handlers import host_mapping as hm
from hosted_engine.logic import host_lifecycle as lc
from hosted_engine.models import Host
from hosted_engine.models.host import FencePhase, FencingStatus, HostState, HostStatus

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
POLICY = lc.HostPolicy(silent_after_s=20.0, fence_timeout_s=6.0, max_fence_attempts=3)


def gave_up(request_id: str) -> HostStatus:
    return HostStatus(state=HostState.NON_RESPONSIVE, state_since=T0, fencing=FencingStatus(
        request_id=request_id, requested_by="hostedengine.engine.he", phase=FencePhase.FAILED,
        started_at=T0, count=3, previous_state=HostState.UP))


def host_obj(request_id: str, status: HostStatus) -> dict[str, Any]:
    return {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
            "metadata": {"name": "node-1", "annotations": {
                "hostedengine.io/fence-request": f"hostedengine.engine.he/{request_id}"}},
            "spec": {"nodeName": "node-1", "powerManagement": {
                "type": "redfish", "address": "10.0.0.1",
                "credentialsSecretRef": {"name": "bmc", "namespace": "ops"}}},
            "status": status.to_dict()}


def lost(now: datetime, requested: bool = True) -> lc.HostObservation:
    return lc.HostObservation(
        host="node-1", now=now,
        node=lc.NodeObservation(ready=False, not_ready_since=T0 - timedelta(seconds=60)),
        power=lc.PowerObservation(configured=True, fencing_allowed=True),
        cluster=lc.ClusterHealth(3, 2), policy=POLICY, fence_requested=requested)


def test_the_same_request_keeps_its_given_up_fence() -> None:
    back = hm.to_logic(gave_up("r1"), request_id="r1")
    assert back is not None and back.fence is not None
    assert back.fence.gave_up and back.fence.attempts == 3
    assert not lc.requests_fence(lc.step(back, lost(T0 + timedelta(seconds=30))))
    # without a request (the annotation removed) it is kept as well
    again = hm.to_logic(gave_up("r1"))
    assert again is not None and again.fence is not None and again.fence.gave_up


def test_a_new_request_id_starts_a_new_attempt_budget() -> None:
    status = gave_up("r1")
    back = hm.to_logic(status, request_id="r2")
    assert back is not None and back.fence is None
    assert back.state is lc.HostState.NON_RESPONSIVE and back.return_to is lc.HostState.UP
    host = Host.model_validate(host_obj("r2", status))
    assert hm.fence_request_active(host)
    result = lc.step(back, lost(T0 + timedelta(seconds=30)))
    assert [a for a in result.actions if isinstance(a, lc.RequestFence)] == [lc.RequestFence(1)]
    fencing = hm.fencing_status(result.status, host, status.fencing, T0 + timedelta(seconds=30))
    assert fencing is not None
    assert (fencing.request_id, fencing.phase, fencing.count) == (
        "r2", FencePhase.POWERING_OFF, 1)


def test_a_withdrawn_power_off_counts_no_attempt() -> None:
    result = lc.step(None, lost(T0))
    assert lc.requests_fence(result)
    assert result.status.fence is not None and result.status.fence.attempts == 1
    called_off = lc.without_fence(result)
    assert not lc.requests_fence(called_off)
    assert called_off.status.fence is not None
    assert called_off.status.fence.attempts == 0 and not called_off.status.fence.in_flight
    assert not [a for a in called_off.actions
                if isinstance(a, lc.EmitEvent) and a.reason == "FenceRequested"]
    # the rest of the step stands (the host is NonResponsive, its condition is set)
    assert called_off.status.state is lc.HostState.NON_RESPONSIVE
    assert any(isinstance(a, lc.SetCondition) and a.type == "Responsive"
               for a in called_off.actions)
    # the next decision asks for the first attempt again
    again = lc.step(called_off.status, lost(T0 + timedelta(seconds=1)))
    assert [a for a in again.actions if isinstance(a, lc.RequestFence)] == [lc.RequestFence(1)]
    # a step without a power-off is left as it is
    quiet = lc.step(None, lost(T0, requested=False))
    assert lc.without_fence(quiet) == quiet
