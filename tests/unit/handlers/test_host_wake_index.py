"""Host wake-ups at scale: the node index, the dependents a change of another Host wakes, the
shared snapshot and the cheap storm-guard count (bench/operator_scale.py found each of them
O(Hosts) per event or per reconcile, O(Hosts^2) per change)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from hosted_engine.handlers import host as handler
from hosted_engine.handlers import host_mapping as hm
from hosted_engine.logic import host_lifecycle as lc

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def host(name: str, node: str, rv: str = "1", state: str = "Up",
         **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": rv,
                         "annotations": spec.pop("annotations", {})},
            "spec": {"nodeName": node, **spec}, "status": {"state": state}}


def node(name: str, ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def reconciler() -> handler.HostReconciler:
    return handler.HostReconciler(kube=None, settings=hm.HostSettings())  # type: ignore[arg-type]


def test_host_for_node_follows_the_hosts_by_index() -> None:
    r = reconciler()
    assert r.host_for_node("node-1") is None
    r.put("hosts", "a", host("a", "node-1"))
    r.put("hosts", "b", host("b", "node-2"))
    assert (r.host_for_node("node-1"), r.host_for_node("node-2")) == ("a", "b")
    r.put("hosts", "a", host("a", "node-3", rv="2"))  # its node changed
    assert r.host_for_node("node-1") is None and r.host_for_node("node-3") == "a"
    r.put("hosts", "a", host("a", "node-1", rv="1"))  # an older version changes nothing
    assert r.host_for_node("node-3") == "a"
    r.put("hosts", "b", host("b", "node-2", rv="9"), deleted=True)
    assert r.host_for_node("node-2") is None
    # two Hosts naming one Node: the first one stays the answer, as the scan gave it
    r.put("hosts", "c", host("c", "node-3"))
    assert r.host_for_node("node-3") == "a"
    r.put("hosts", "a", host("a", "node-3", rv="10"), deleted=True)
    assert r.host_for_node("node-3") == "c"


def test_only_hosts_that_read_the_others_are_dependents() -> None:
    r = reconciler()
    r.put("hosts", "up", host("up", "n1"))
    r.put("hosts", "drain", host("drain", "n2", maintenance={"mode": "local"}))
    r.put("hosts", "lost", host("lost", "n3", state="NonResponsive"))
    r.put("hosts", "asked", host("asked", "n4", annotations={
        "hostedengine.io/fence-request": "engine/x-1"}))
    r.put("hosts", "engine", host("engine", "n5", hostedEngine="deploy"))
    r.put("hosts", "new", host("new", "n6", state=""))
    r.put("hosts", "bad", host("bad", "n7", state="NonOperational"))
    assert sorted(r.dependents()) == ["asked", "drain", "engine", "lost", "new"]
    r.put("hosts", "lost", host("lost", "n3", rv="2", state="Up"))  # back: no longer
    r.put("hosts", "up", host("up", "n1", rv="2", state="PreparingForMaintenance"))
    assert sorted(r.dependents()) == ["asked", "drain", "engine", "new", "up"]
    r.put("hosts", "drain", host("drain", "n2", rv="3"), deleted=True)
    assert "drain" not in r.dependents()


def test_a_change_of_one_host_wakes_its_own_loop_and_the_dependents_only() -> None:
    async def scenario() -> set[str]:
        memo = kopf.Memo()
        memo[handler.RECONCILER_KEY] = r = reconciler()
        memo[handler.TRIGGERS_KEY] = triggers = handler.Triggers()
        bodies = {f"h{i}": host(f"h{i}", f"n{i}") for i in range(50)}
        bodies["h7"] = host("h7", "n7", state="NonResponsive")
        bodies["h9"] = host("h9", "n9", maintenance={"mode": "local"})
        for name, body in bodies.items():
            await handler.host_event(name=name, body=body, type=None, memo=memo)  # type: ignore[arg-type]
        for name in bodies:
            triggers.event(name).clear()
        changed = host("h3", "n3", rv="2", state="PreparingForMaintenance")
        await handler.host_event(name="h3", body=changed, type="MODIFIED", memo=memo)  # type: ignore[arg-type]
        assert r.host_for_node("n3") == "h3"
        return {n for n in bodies if triggers.event(n).is_set()}

    assert asyncio.run(scenario()) == {"h3", "h7", "h9"}


def test_a_status_write_without_a_state_change_wakes_no_other_host() -> None:
    async def scenario() -> set[str]:
        memo = kopf.Memo()
        memo[handler.RECONCILER_KEY] = reconciler()
        memo[handler.TRIGGERS_KEY] = triggers = handler.Triggers()
        for i in range(5):
            await handler.host_event(name=f"h{i}", body=host(f"h{i}", f"n{i}", state="Fenced"),  # type: ignore[arg-type]
                                     type=None, memo=memo)
        for i in range(5):
            triggers.event(f"h{i}").clear()
        same = host("h1", "n1", rv="2", state="Fenced")
        same["status"]["clockSkew"] = {"seconds": 0.1}
        await handler.host_event(name="h1", body=same, type="MODIFIED", memo=memo)  # type: ignore[arg-type]
        return {f"h{i}" for i in range(5) if triggers.event(f"h{i}").is_set()}

    assert asyncio.run(scenario()) == {"h1"}


def test_the_snapshot_is_shared_until_the_cache_changes_and_leases_are_always_current() -> None:
    r = reconciler()
    r.put("hosts", "a", host("a", "n1"))
    r.put("nodes", "n1", node("n1"))
    first, second = r.snapshot(), r.snapshot()
    assert first.hosts is second.hosts and first.hosts is not r.world.hosts
    r.observe_lease({"metadata": {"name": "n1"},
                     "spec": {"renewTime": T0.isoformat(), "leaseDurationSeconds": 40}},
                    T0, listed=True)
    third = r.snapshot()
    assert third.hosts is first.hosts and third.leases["n1"][0] == T0
    assert "n1" not in first.leases  # a snapshot taken before is not changed under a reader
    r.put("nodes", "n1", node("n1", ready=False))
    fourth = r.snapshot()
    assert fourth.nodes is not first.nodes and fourth.nodes["n1"] == node("n1", ready=False)
    assert first.nodes["n1"] == node("n1")


def _slow_cluster_health(world: hm.World, now: datetime, policy: lc.HostPolicy) -> int:
    return sum(1 for h in world.hosts.values()
               if lc.lease_fresh(hm.node_observation(world, hm.host_node(h)), policy, now))


def test_the_cheap_storm_guard_count_is_the_lease_freshness_of_every_host() -> None:
    rng = random.Random(12)
    policy = lc.HostPolicy()
    for _ in range(30):
        world = hm.World()
        for i in range(40):
            world.hosts[f"h{i}"] = host(f"h{i}", f"n{i}")
            if rng.random() < 0.8:
                world.nodes[f"n{i}"] = node(f"n{i}", ready=rng.random() < 0.7)
            if rng.random() < 0.7:
                world.leases[f"n{i}"] = (T0 - timedelta(seconds=rng.uniform(0, 60)),
                                         rng.choice([40.0, 10.0, None]))
        health = hm.cluster_health(world, T0, policy)
        assert health.total_hosts == 40
        assert health.ready_hosts == _slow_cluster_health(world, T0, policy)


def _renewal(node_name: str, at: datetime) -> dict[str, Any]:
    return {"metadata": {"name": node_name},
            "spec": {"renewTime": at.isoformat(), "leaseDurationSeconds": 40}}


def test_no_skew_sample_while_our_own_writes_come_back_late() -> None:
    """An operator behind its watches handles Lease renewals late: the 'skew' it would measure
    is its backlog. The echo of its own status write tells it: no sample while it is behind,
    sampling again once an echo is prompt (or after the window)."""
    r = reconciler()
    body = host("a", "n1")
    r.put("hosts", "a", body)
    r._echoes["a"] = (7, T0)  # as _write records it
    echo = {**body, "metadata": {**body["metadata"], "resourceVersion": "7"}}
    r.note_echo("a", echo, T0 + timedelta(seconds=9))  # came back 9 s late
    assert r.behind_until == T0 + timedelta(seconds=9 + handler.SKEW_WINDOW)
    late = T0 + timedelta(seconds=20)
    r.observe_lease(_renewal("n1", late - timedelta(seconds=8)), late)
    assert "n1" not in r.skew and r.world.leases["n1"][0] == late - timedelta(seconds=8)
    # another Host's event, or an older version, is no echo
    r._echoes["a"] = (8, late)
    r.note_echo("a", {**echo, "metadata": {**echo["metadata"], "resourceVersion": "6"}}, late)
    assert r.behind_until is not None
    # a prompt echo (or a later version: kopf hands over the newest of a burst): the
    # operator caught up, samples count again
    r.note_echo("a", {**echo, "metadata": {**echo["metadata"], "resourceVersion": "9"}},
                late + timedelta(seconds=0.1))
    assert r.behind_until is None
    now = late + timedelta(seconds=1)
    r.observe_lease(_renewal("n1", now - timedelta(seconds=0.05)), now)
    assert r.skew["n1"][0] == -0.05
    # without any echo the distrust ends with the window
    r.behind_until = now + timedelta(seconds=5)
    r.observe_lease(_renewal("n1", now + timedelta(seconds=10)), now + timedelta(seconds=10))
    assert r.skew["n1"][1] == now + timedelta(seconds=10)


def test_a_starting_operator_takes_no_skew_sample_before_a_prompt_echo() -> None:
    r = reconciler()
    assert r.behind_until is not None  # just started: behind until shown otherwise
    body = host("a", "n1")
    r.put("hosts", "a", body)
    now = r.behind_until - timedelta(seconds=handler.SKEW_WINDOW) + timedelta(seconds=1)
    r.observe_lease(_renewal("n1", now - timedelta(seconds=6)), now)
    assert "n1" not in r.skew  # a first Lease event handled 6 s late is no sample
    r._echoes["a"] = (3, now)
    r.note_echo("a", {**body, "metadata": {**body["metadata"], "resourceVersion": "3"}},
                now + timedelta(seconds=0.1))
    assert r.behind_until is None
    r.observe_lease(_renewal("n1", now), now + timedelta(seconds=0.2))
    assert r.skew["n1"][0] == -0.2


def test_a_comeback_is_a_gap_between_renewals_not_a_late_event() -> None:
    """An operator 40 s behind its Lease watch sees renewals 10 s apart: no comeback (each
    one used to wake every dependent Host and kept a 1,000-node operator behind for good); a
    renewal after a silence longer than the threshold is one, however late it arrives."""
    r = reconciler()
    r.put("hosts", "a", host("a", "n1"))
    behind = timedelta(seconds=40)
    r.observe_lease(_renewal("n1", T0), T0 + behind)
    for i in range(1, 6):
        renew = T0 + timedelta(seconds=10 * i)
        _, came_back = r.observe_lease(_renewal("n1", renew), renew + behind)
        assert not came_back
    after_silence = T0 + timedelta(seconds=50 + 30)
    _, came_back = r.observe_lease(_renewal("n1", after_silence), after_silence + behind)
    assert came_back


def test_the_vmis_of_a_node_come_from_an_index_kept_per_vmi_event() -> None:
    r = reconciler()

    def vmi(name: str, node_name: str, phase: str = "Running") -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "ns", "uid": name, "resourceVersion": "1"},
                "status": {"nodeName": node_name, "phase": phase}}

    for i in range(30):
        r.put("vmis", ("ns", f"v{i}"), vmi(f"v{i}", f"n{i % 3}",
                                           "Succeeded" if i % 5 == 0 else "Running"))
    world = r.snapshot()
    assert world.vmis_by_node is not None
    scanned = replace(world, vmis_by_node=None)  # the scan: the reference
    for n in ("n0", "n1", "n2", "n9"):
        assert sorted(hm.key_of(v) for v in hm.vmis_on(world, n)) == \
            sorted(hm.key_of(v) for v in hm.vmis_on(scanned, n))
    r.put("vmis", ("ns", "v1"), vmi("v1", "n2") | {"metadata": {
        "name": "v1", "namespace": "ns", "uid": "v1", "resourceVersion": "2"}})
    moved = r.snapshot()  # a new version: a new index
    assert ("ns", "v1") in {hm.key_of(v) for v in hm.vmis_on(moved, "n2")}
    assert ("ns", "v1") not in {hm.key_of(v) for v in hm.vmis_on(moved, "n1")}
    # a final phase or a deletion takes a VMI out; the newest body is the one listed
    r.put("vmis", ("ns", "v1"), vmi("v1", "n2", "Failed") | {"metadata": {
        "name": "v1", "namespace": "ns", "uid": "v1", "resourceVersion": "3"}})
    r.put("vmis", ("ns", "v2"), vmi("v2", "n2"), deleted=True)
    r.put("vmis", ("ns", "v8"), vmi("v8", "n2") | {"metadata": {
        "name": "v8", "namespace": "ns", "uid": "v8", "resourceVersion": "5"}})
    last = r.snapshot()
    on_n2 = {hm.key_of(v): v for v in hm.vmis_on(last, "n2")}
    assert ("ns", "v1") not in on_n2 and ("ns", "v2") not in on_n2
    assert on_n2[("ns", "v8")]["metadata"]["resourceVersion"] == "5"
    scanned = replace(last, vmis_by_node=None)
    for n in ("n0", "n1", "n2"):
        assert sorted(hm.key_of(v) for v in hm.vmis_on(last, n)) == \
            sorted(hm.key_of(v) for v in hm.vmis_on(scanned, n))
