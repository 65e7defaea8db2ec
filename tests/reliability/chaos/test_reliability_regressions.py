"""Regression tests (pure logic) for the bugs the chaos suite found.

1. Operator killed in the middle of a failover (kill-point test of the failover): the restarted
   operator read an HA memory still saying EngineUp on the lost host, found the engine VMI that
   KubeVirt had restarted on another host after the fence, and followed it as a "move": the
   failover was lost (failovers stayed 0, no lastFailover) and the fence request of the lost
   host was never released.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hosted_engine.logic import engine_vm as ev
from hosted_engine.logic import ha

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
GiB = 1024**3


def host(name: str, **changes: Any) -> ha.HostObservation:
    base = ha.HostObservation(name=name, ready=True, last_heartbeat=NOW - timedelta(seconds=1),
                              free_memory=8 * GiB)
    return replace(base, **changes)


def observation(old: ha.HostObservation) -> ha.Observation:
    return ha.Observation(
        vm=ha.EngineVm(exists=True, desired_running=True, phase=ha.VmiPhase.RUNNING,
                       node="h2", since=NOW - timedelta(seconds=20)),
        probes=(ha.Probe(NOW - timedelta(seconds=1), ha.ProbeResult.OK),),
        hosts=(old, host("h2"), host("h3")),
        engine_memory=GiB,
    )


def up_on_h1() -> ha.Memory:
    return ha.Memory(state=ha.State.ENGINE_UP, since=NOW - timedelta(minutes=5), host="h1",
                     healthy_since=NOW - timedelta(minutes=5))


def test_engine_found_elsewhere_after_its_host_was_fenced_is_a_failover() -> None:
    fenced_at = NOW - timedelta(seconds=30)
    old = ha.HostObservation(name="h1", ready=False, last_heartbeat=NOW - timedelta(minutes=1),
                             free_memory=8 * GiB, bmc_power=ha.PowerState.OFF,
                             fence=ha.FenceStatus.CONFIRMED, fence_since=fenced_at)
    decision = ha.step(ha.Settings(), up_on_h1(), observation(old), NOW)
    memory = decision.memory
    assert memory.state is ha.State.ENGINE_UP and memory.host == "h2"
    assert memory.failovers == 1
    record = memory.last_failover
    assert record is not None
    assert (record.from_host, record.to_host, record.fenced_at) == ("h1", "h2", fenced_at)
    assert record.lost_at <= record.detected_at and record.healthy_at == NOW
    assert ha.ClearFenceRequest("h1") in decision.actions
    reasons = [a.reason for a in decision.actions if isinstance(a, ha.EmitEvent)]
    assert "EngineFailedOver" in reasons and "EngineMoved" not in reasons
    # the record survives the status round trip a restarted operator reads
    again = ha.memory_from_dict(ha.memory_to_dict(memory))
    assert again.failovers == 1 and again.last_failover == record


def test_engine_found_elsewhere_while_its_host_is_fine_is_a_move() -> None:
    decision = ha.step(ha.Settings(), up_on_h1(), observation(host("h1")), NOW)
    assert decision.memory.host == "h2"
    assert decision.memory.failovers == 0 and decision.memory.last_failover is None
    reasons = [a.reason for a in decision.actions if isinstance(a, ha.EmitEvent)]
    assert "EngineMoved" in reasons and "EngineFailedOver" not in reasons


# 2. The HostedEngine's status is written with a JSON merge patch, which keeps every key it does
#    not name: HA memory fields that went back to None (the in-progress failover record, the
#    lost, fenced or abandoned host, the backoff) stayed in status.ha, and a restarted operator
#    read them back (a stale failover record would be completed and counted again).


def test_the_status_patch_deletes_memory_fields_that_went_back_to_none() -> None:
    old = ha.Memory(state=ha.State.FENCING, host="h1", lost_host="h1", fenced_host="h1",
                    backoff_until=NOW,
                    failover=ha.FailoverRecord("h1", lost_at=NOW, detected_at=NOW))
    new = ha.Memory(state=ha.State.ENGINE_UP, host="h2")
    stored = {"ha": ev.status_patch({"ha": ha.memory_to_dict(old)})["ha"]}
    patch = ev.status_patch({"ha": ha.memory_to_dict(new), "host": None})
    merged = merge_patch(stored, patch)
    assert ha.memory_from_dict(merged["ha"]) == ha.memory_from_dict(ha.memory_to_dict(new))
    assert "failover" not in merged["ha"] and "lostHost" not in merged["ha"]
    assert patch["host"] is None and patch["lastFailover"] is None
    # every key the memory can write is covered
    full = ha.memory_to_dict(ha.Memory(
        host="h", lost_host="h", fenced_host="h", abandoned_host="h", migration_target="h",
        notice="n", user_action="u", refusal="r", since=NOW, backoff_until=NOW,
        start_requested_at=NOW, healthy_since=NOW, last_action_at=NOW,
        migration_failed_at=NOW, reminder_at=NOW,
        failover=ha.FailoverRecord("h", lost_at=NOW, detected_at=NOW),
        last_failover=ha.FailoverRecord("h", lost_at=NOW, detected_at=NOW)))
    assert set(full) <= set(ev.HA_MEMORY_KEYS)


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, what the API server does with a merge patch."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out


# 3. A node power loss was sometimes handled as a move, not a failover: its Node went NotReady
#    (score 0) before its Lease silence made it lost, so EngineUp moved the engine "for the
#    score" (a live migration of a VMI on a dead node: 422, then a crash-like end). The loss
#    was then counted as an engine failure and no failover was recorded (failovers 0): seen in
#    the failover kill points and in test_node_power_loss_fences_the_host_and_fails_over.


def test_no_move_away_from_a_host_that_just_went_not_ready() -> None:
    silent = ha.HostObservation(name="h1", ready=False, free_memory=8 * GiB,
                                last_heartbeat=NOW - timedelta(seconds=1))
    obs = ha.Observation(
        vm=ha.EngineVm(exists=True, desired_running=True, phase=ha.VmiPhase.RUNNING,
                       node="h1", since=NOW - timedelta(minutes=5), live_migratable=True),
        probes=(ha.Probe(NOW - timedelta(seconds=1), ha.ProbeResult.OK),),
        hosts=(silent, host("h2"), host("h3")),
        engine_memory=GiB,
    )
    decision = ha.step(ha.Settings(), up_on_h1(), obs, NOW)
    assert decision.state is ha.State.ENGINE_UP
    assert not [a for a in decision.actions
                if isinstance(a, ha.MigrateEngine | ha.StopEngine | ha.PowerOffEngine)]
    # once silent past host_silence it is a host loss: fence first, then fail over
    later = NOW + ha.Settings().host_silence + timedelta(seconds=5)
    decision = ha.step(ha.Settings(), decision.memory, obs, later)
    assert decision.state in (ha.State.HOST_LOST, ha.State.FENCING)
    assert ha.RequestFence in {type(a) for a in decision.actions}
    assert decision.memory.failover is not None
