"""The lease clock (logic/leaseclock.py): Lease silence judged against the newest renewal seen
plus its renew interval, not the wall clock, and its use by the Host and HA rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hosted_engine.logic import ha, leaseclock
from hosted_engine.logic import host_lifecycle as lc

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
KUBELET = 10.0  # the kubelet's renew interval (leaseDurationSeconds 40 / 4)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def clock(now: float, renewed: dict[str, float]) -> datetime:
    limit = leaseclock.horizon((at(s), KUBELET) for s in renewed.values())
    return leaseclock.lease_now(at(now), limit)


def silences(now: float, renewed: dict[str, float]) -> dict[str, float]:
    lease_now = clock(now, renewed)
    return {n: (lease_now - at(s)).total_seconds() for n, s in renewed.items()}


def test_renew_interval_configured_else_a_quarter_of_the_duration_else_ten_seconds() -> None:
    assert leaseclock.renew_interval_s(40.0) == 10.0
    assert leaseclock.renew_interval_s(20.0, 0.5) == 0.5
    assert leaseclock.renew_interval_s(None) == leaseclock.DEFAULT_RENEW_INTERVAL_S == 10.0
    assert leaseclock.renew_interval_s(0.0, 0.0) == 10.0
    assert leaseclock.horizon([]) is None
    assert leaseclock.horizon([(at(0), 10.0), (at(3), 2.0), (at(1), 10.0)]) == at(11)
    assert leaseclock.lease_now(at(50), None) == at(50)  # no Lease seen: the wall clock


def test_up_to_date_the_lease_clock_is_now() -> None:
    # three nodes renewing every 10 s at different phases, all seen at once
    renewed = {"a": 97.0, "b": 93.5, "c": 90.2}
    assert clock(100.0, renewed) == at(100)
    assert silences(100.0, renewed) == {"a": 3.0, "b": 6.5, "c": 9.8}


def test_behind_on_every_lease_the_clock_is_held_back_and_nobody_is_silent() -> None:
    # the operator is 60 s behind its watch: what it has seen is 60 s old
    renewed = {"a": 37.0, "b": 33.5, "c": 30.2}
    assert clock(100.0, renewed) == at(47)
    threshold = lc.lease_threshold_s(lc.NodeObservation(lease_duration_s=40.0), lc.HostPolicy())
    assert round(threshold, 1) == 21.8
    for node, silent in silences(100.0, renewed).items():
        assert silent < threshold, node
        assert silent < ha.Settings().host_silence.total_seconds(), node
    # the wall clock would have called them all silent for more than a minute
    assert all((at(100) - at(s)).total_seconds() > 60 for s in renewed.values())


def test_one_dead_node_among_live_ones_is_silent_as_before() -> None:
    renewed = {"a": 97.0, "b": 93.5, "dead": 70.0}
    assert clock(100.0, renewed) == at(100)
    assert silences(100.0, renewed)["dead"] == 30.0  # exactly the wall-clock silence
    # the same while the operator is 20 s behind: the dead node falls behind the others
    behind = {"a": 77.0, "b": 73.5, "dead": 50.0}
    assert clock(100.0, behind) == at(87)
    assert silences(100.0, behind)["dead"] == 37.0


def test_every_node_silent_at_once_nobody_is_lost_by_lease() -> None:
    # all power lost (or the operator cut from the API) at t=50: the clock stops at 60
    renewed = {"a": 49.0, "b": 45.0, "c": 41.0}
    for now in (60.0, 120.0, 3600.0):
        assert clock(now, renewed) == at(59)
        assert max(silences(now, renewed).values()) == 18.0
    threshold = lc.lease_threshold_s(lc.NodeObservation(lease_duration_s=40.0), lc.HostPolicy())
    assert threshold > 18.0


def _host_obs(now: float, renewed: float, horizon: datetime | None) -> lc.HostObservation:
    node = lc.NodeObservation(lease_renewed_at=at(renewed), lease_duration_s=40.0,
                              lease_horizon=horizon)
    return lc.HostObservation(host="h", now=at(now), node=node, fence_requested=True,
                              power=lc.PowerObservation(configured=True, fencing_allowed=True))


def test_host_rules_judge_the_lease_at_the_lease_clock() -> None:
    # 60 s behind: this node's Lease is 60 s old, the newest one seen (another node's) 58 s
    limit = leaseclock.horizon([(at(40), KUBELET), (at(42), KUBELET)])
    held = _host_obs(100.0, 40.0, limit)
    assert lc.lease_silent_for(held) == 12.0
    assert lc.lost_reason(held) is None
    assert lc.lease_fresh(held.node, held.policy, held.now)
    step = lc.step(None, held)
    assert step.status.state is lc.HostState.UP
    assert step.status.fence_blocked_reason == "NodeReady"  # the request waits, refused
    assert not [a for a in step.actions if isinstance(a, lc.RequestFence)]
    # without a horizon (the re-read of a fresh Lease right before a power-off): wall clock
    wall = _host_obs(100.0, 40.0, None)
    assert lc.lease_silent_for(wall) == 60.0
    assert lc.lost_reason(wall) == "LeaseExpired"
    assert not lc.lease_fresh(wall.node, wall.policy, wall.now)
    # a horizon past now changes nothing
    ahead = _host_obs(100.0, 40.0, at(130))
    assert lc.lease_silent_for(ahead) == 60.0 and lc.lost_reason(ahead) == "LeaseExpired"


def _he_obs(heartbeats: dict[str, float], horizon: datetime | None) -> ha.Observation:
    return ha.Observation(
        hosts=tuple(ha.HostObservation(name=n, last_heartbeat=at(s), free_memory=64 * 2**30)
                    for n, s in heartbeats.items()),
        engine_memory=16 * 2**30,
        lease_horizon=horizon,
    )


def test_ha_scores_judge_heartbeats_at_the_lease_clock() -> None:
    settings, memory = ha.Settings(), ha.Memory()
    behind = {"a": 37.0, "b": 33.5, "c": 30.2}  # all 60+ s old: the operator is behind
    limit = leaseclock.horizon((at(s), KUBELET) for s in behind.values())
    scores = ha.compute_scores(settings, memory, _he_obs(behind, limit), at(100))
    assert all(s.eligible for s in scores), scores
    wall = ha.compute_scores(settings, memory, _he_obs(behind, None), at(100))
    assert not any(s.eligible for s in wall)  # what the wall clock said before
    decision = ha.step(settings, memory, _he_obs(behind, limit), at(100))
    assert {row.host: row.state for row in decision.hosts} == {"a": "Up", "b": "Up", "c": "Up"}
    # one really silent among live ones: lost, whatever the lease clock
    one_dead = {"a": 97.0, "b": 93.5, "c": 40.0}
    limit = leaseclock.horizon((at(s), KUBELET) for s in one_dead.values())
    decision = ha.step(settings, memory, _he_obs(one_dead, limit), at(100))
    rows = {row.host: row for row in decision.hosts}
    assert rows["c"].state == "Lost" and not rows["c"].up_to_date
    assert rows["c"].last_seen == at(40)  # the real heartbeat is reported, not a shifted one
    assert rows["a"].state == rows["b"].state == "Up"
