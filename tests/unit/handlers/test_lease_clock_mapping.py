"""The lease clock where the observations are built from the watch caches: the Host's
(host_mapping.observe over World.leases) and the HostedEngine's (the he_leases index ->
engine_vm.observe). Leases all 60 s old (the operator 60 s behind its watch) make no host lost;
one Lease 60 s old among fresh ones makes that host lost, as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from host_fixtures import host_obj, ready_node, stamp
from hosted_engine.handlers import host_mapping as hm
from hosted_engine.handlers import hostedengine as he_handler
from hosted_engine.logic import engine_vm as ev
from hosted_engine.logic import ha
from hosted_engine.logic import host_lifecycle as lc
from hosted_engine.models import Host
from hosted_engine.models.hostedengine import HostedEngineSpec

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(seconds=120)
NAMES = ("node-1", "node-2", "node-3")
FENCE = {"hostedengine.io/fence-request": "hostedengine.engine.he/r1"}


def ages(node_1: float, others: float) -> dict[str, float]:
    """Seconds since each node's last renewal seen: node-1's, the others' (a few apart)."""
    return {"node-1": node_1, "node-2": others, "node-3": others + 3.0}


# -------------------------------------------------------------------------------- the Host


def host_world(age: dict[str, float]) -> hm.World:
    return hm.World(
        hosts={n: host_obj(n, hostedEngine="deploy") for n in NAMES},
        nodes={n: ready_node(n, T0) for n in NAMES},
        leases={n: (NOW - timedelta(seconds=s), 40.0) for n, s in age.items()},
    )


def host_observation(age: dict[str, float]) -> lc.HostObservation:
    host = Host.model_validate(host_obj("node-1", FENCE, hostedEngine="deploy"))
    return hm.observe(host, host_world(age), NOW, hm.HostSettings(), None)


def test_host_all_leases_sixty_seconds_old_is_not_lost() -> None:
    obs = host_observation(ages(60.0, 60.0))  # newest 60 s old: the operator is behind
    assert obs.node.lease_horizon == NOW - timedelta(seconds=50)
    assert lc.lease_silent_for(obs) == 10.0
    assert lc.lost_reason(obs) is None
    assert obs.cluster == lc.ClusterHealth(total_hosts=3, ready_hosts=3)  # all heard from
    step = lc.step(None, obs)
    assert step.status.state is lc.HostState.UP
    assert step.status.fence_blocked_reason == "NodeReady"
    assert not [a for a in step.actions if isinstance(a, lc.RequestFence)]


def test_host_one_lease_sixty_seconds_old_among_fresh_ones_is_lost() -> None:
    obs = host_observation(ages(60.0, 1.0))
    assert obs.node.lease_horizon is not None and obs.node.lease_horizon > NOW
    assert lc.lease_silent_for(obs) == 60.0
    assert lc.lost_reason(obs) == "LeaseExpired"
    assert obs.cluster == lc.ClusterHealth(total_hosts=3, ready_hosts=2)
    step = lc.step(None, obs)
    assert step.status.state is lc.HostState.NON_RESPONSIVE
    assert [a for a in step.actions if isinstance(a, lc.RequestFence)]


def test_the_fence_re_read_still_judges_a_fresh_lease_by_the_wall_clock() -> None:
    # the handler's re-read right before a power-off: one Node and its Lease from a GET, no
    # horizon -- a Lease that is really 60 s old is silent for 60 s, whatever the cache says
    fresh = hm.World(nodes={"node-1": ready_node("node-1", T0)},
                     leases={"node-1": (NOW - timedelta(seconds=60), 40.0)})
    cached = host_observation(ages(60.0, 60.0))
    again = lc.HostObservation(host="node-1", now=NOW, node=hm.node_observation(fresh, "node-1"),
                               power=cached.power, policy=cached.policy, fence_requested=True)
    assert again.node.lease_horizon is None
    assert lc.lease_silent_for(again) == 60.0 and lc.lost_reason(again) == "LeaseExpired"


def test_the_storm_guard_counts_by_the_lease_clock() -> None:
    behind = host_world(ages(60.0, 60.0))
    assert hm.cluster_health(behind, NOW) == lc.ClusterHealth(total_hosts=3, ready_hosts=3)
    live = host_world(ages(60.0, 1.0))
    assert hm.cluster_health(live, NOW) == lc.ClusterHealth(total_hosts=3, ready_hosts=2)
    # the configured renew interval (HE_HOST_LEASE_RENEW_INTERVAL) sets the horizon
    assert hm.lease_horizon(behind, 0.5) == NOW - timedelta(seconds=59.5)
    assert hm.lease_horizon(hm.World()) is None


# -------------------------------------------------------------------------- the HostedEngine


def he_spec() -> HostedEngineSpec:
    return HostedEngineSpec.model_validate({
        "vm": {"memory": "16Gi", "disk": {"storageDomain": "hosted-engine"},
               "image": {"containerDisk": {"image": "quay.io/ovirt/engine:4.5"}},
               "network": {"fqdn": "engine.example.com"}},
    })


def lease_index(age: dict[str, float]) -> dict[str, Any]:
    """What the he_leases index holds for these Leases (the kopf index function itself)."""
    index: dict[str, Any] = {}
    index_fn: Any = he_handler.he_leases  # kopf types it as a full IndexingFn
    for name, s in age.items():
        entry = index_fn(name=name, spec={
            "holderIdentity": name, "leaseDurationSeconds": 40,
            "renewTime": stamp(NOW - timedelta(seconds=s))})
        assert entry is not None
        index.update(entry)
    return index


def he_decision(age: dict[str, float]) -> tuple[ha.Observation, ha.Decision]:
    index = lease_index(age)
    world = ev.World(
        hosts=tuple(host_obj(n, hostedEngine="deploy") for n in NAMES),
        nodes={n: ready_node(n, T0) for n in NAMES},
        leases={n: renewed for n, (renewed, _) in index.items()},
        lease_durations={n: d for n, (_, d) in index.items() if d is not None},
    )
    obs, _ = ev.observe(he_spec(), world, "ns", "he")
    return obs, ha.step(ev.settings_from_spec(he_spec()), ha.Memory(), obs, NOW)


def test_engine_all_leases_sixty_seconds_old_no_host_is_lost() -> None:
    obs, decision = he_decision(ages(60.0, 60.0))
    assert obs.lease_horizon == NOW - timedelta(seconds=50)
    assert {r.host: r.state for r in decision.hosts} == {n: "Up" for n in NAMES}
    assert all(r.up_to_date for r in decision.hosts)
    assert all(s.eligible for s in decision.scores)
    assert not [a for a in decision.actions if isinstance(a, ha.RequestFence)]


def test_engine_one_lease_sixty_seconds_old_among_fresh_ones_is_lost() -> None:
    _, decision = he_decision(ages(60.0, 1.0))
    rows = {r.host: r for r in decision.hosts}
    assert rows["node-1"].state == "Lost" and not rows["node-1"].up_to_date
    assert rows["node-1"].last_seen == NOW - timedelta(seconds=60)
    assert rows["node-2"].state == rows["node-3"].state == "Up"
    scores = {s.host: s for s in decision.scores}
    assert not scores["node-1"].eligible and scores["node-2"].eligible
