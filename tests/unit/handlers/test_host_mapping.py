"""The Host handler's mapping code: watched objects -> the state machine's observation, and
the state machine's status <-> the Host's status (pure; plain dicts, no API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hosted_engine.adapters import kubevirt as kv
from hosted_engine.handlers import host as handler
from hosted_engine.handlers import host_mapping as hm
from hosted_engine.logic import drain as dr
from hosted_engine.logic import host_lifecycle as lc
from hosted_engine.models import Host
from hosted_engine.models.host import FencePhase, HostState, HostStatus

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
GI = 1024**3


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def node(name: str, *, ready: str = "True", unschedulable: bool = False,
         labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None,
         since: datetime = T0) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}, "resourceVersion": "1"},
            "spec": {"unschedulable": unschedulable, "taints": taints or []},
            "status": {"allocatable": {"memory": "64Gi", "cpu": "16"},
                       "conditions": [{"type": "Ready", "status": ready,
                                       "lastTransitionTime": stamp(since),
                                       "lastHeartbeatTime": stamp(since)}]}}


def vmi(name: str, node_name: str, *, memory: str = "2Gi", phase: str = "Running",
        migratable: bool = True, labels: dict[str, str] | None = None) -> dict[str, Any]:
    cond = {"type": "LiveMigratable", "status": "True"}
    if not migratable:
        cond = {"type": "LiveMigratable", "status": "False",
                "reason": "DisksNotLiveMigratable", "message": "PVC disk is not shared"}
    return {"metadata": {"name": name, "namespace": "vms", "uid": f"uid-{name}",
                         "labels": labels or {}, "resourceVersion": "5"},
            "spec": {"domain": {"cpu": {"cores": 2}, "memory": {"guest": memory}}},
            "status": {"phase": phase, "nodeName": node_name, "conditions": [cond]}}


def vmim(name: str, vmi_name: str, phase: str, *, host: str | None = "node-1",
         source: str = "node-1", end: datetime | None = None,
         created: datetime = T0) -> dict[str, Any]:
    labels = {kv.MIGRATION_HOST_LABEL: host} if host else {}
    state: dict[str, Any] = {"sourceNode": source}
    if end is not None:
        state["endTimestamp"] = stamp(end)
    return {"metadata": {"name": name, "namespace": "vms", "labels": labels,
                         "creationTimestamp": stamp(created), "resourceVersion": "7"},
            "spec": {"vmiName": vmi_name},
            "status": {"phase": phase, "migrationState": state}}


def host_obj(name: str = "node-1", *, spec: dict[str, Any] | None = None,
             status: dict[str, Any] | None = None,
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
            "metadata": {"name": name, "generation": 1, "annotations": annotations or {}},
            "spec": {"nodeName": name, **(spec or {})}, "status": status or {}}


def world(**extra: Any) -> hm.World:
    w = hm.World(
        hosts={n: host_obj(n) for n in ("node-1", "node-2", "node-3")},
        nodes={n: node(n) for n in ("node-1", "node-2", "node-3")},
    )
    for key, value in extra.items():
        setattr(w, key, value)
    return w


SETTINGS = hm.HostSettings()


# --------------------------------------------------------------------------------------------
# settings


def test_settings_from_the_environment_with_bad_values_falling_back() -> None:
    s = hm.HostSettings.from_env({"HE_HOST_SILENT_AFTER": "2.5", "HE_HOST_FENCE_TIMEOUT": "x",
                                  "HE_HOST_MIN_HEALTHY_RATIO": "3", "HE_HOST_FENCE_AFTER": "-1",
                                  "HE_HOST_MAX_FENCE_ATTEMPTS": "0"})
    assert s.silent_after_s == 2.5
    assert s.fence_timeout_s == 60.0  # unreadable -> default
    assert s.min_healthy_ratio == 1.0  # capped
    assert s.fence_after_s == 0.0  # negative -> default
    assert s.max_fence_attempts == 1  # at least one
    assert hm.HostSettings.from_env({}) == hm.HostSettings()


# --------------------------------------------------------------------------------------------
# observation


def test_drain_vms_carry_migration_state_attempts_engine_and_migratability() -> None:
    w = world(
        vmis={("vms", n): v for n, v in {
            "idle": vmi("idle", "node-1"),
            "moving": vmi("moving", "node-1"),
            "retry": vmi("retry", "node-1"),
            "done": vmi("done", "node-1"),
            "disk": vmi("disk", "node-1", migratable=False),
            "engine": vmi("engine", "node-1", labels={kv.ENGINE_VM_LABEL: "he"}),
            "elsewhere": vmi("elsewhere", "node-2"),
            "finished": vmi("finished", "node-1", phase="Succeeded"),
        }.items()},
        vmims={("vms", m["metadata"]["name"]): m for m in (
            vmim("m-moving", "moving", "Running"),
            vmim("m-retry-1", "retry", "Failed", end=T0 + timedelta(seconds=3)),
            vmim("m-retry-2", "retry", "Failed", end=T0 + timedelta(seconds=9)),
            vmim("m-done", "done", "Succeeded"),
            vmim("m-old", "idle", "Failed", created=T0 - timedelta(hours=1)),  # an older drain
        )},
    )
    host = Host.model_validate(host_obj(spec={"maintenance": {"mode": "local"}}))
    progress = lc.MaintenanceProgress(started_at=T0)
    obs = hm.observe(host, w, T0 + timedelta(seconds=10), SETTINGS, progress)
    vms = {v.name: v for v in obs.vms}
    assert set(vms) == {"idle", "moving", "retry", "done", "disk", "engine"}
    assert vms["idle"].migration is dr.MigrationState.NONE and vms["idle"].failed_attempts == 0
    assert vms["moving"].migration is dr.MigrationState.IN_FLIGHT
    assert vms["retry"].migration is dr.MigrationState.FAILED
    assert vms["retry"].failed_attempts == 2
    assert vms["retry"].last_failure_at == T0 + timedelta(seconds=9)
    assert vms["done"].migration is dr.MigrationState.SUCCEEDED
    assert not vms["disk"].live_migratable
    assert vms["disk"].not_migratable_reason == "DisksNotLiveMigratable: PVC disk is not shared"
    assert vms["engine"].is_engine and not vms["idle"].is_engine
    assert (vms["idle"].memory_bytes, vms["idle"].cpu_millis) == (2 * GI, 200)
    assert obs.mode is lc.MaintenanceMode.LOCAL
    # the migration in flight counts for this host under its name
    assert obs.in_flight_by_source == {"node-1": 1}


def test_targets_cluster_health_and_restartable_vms() -> None:
    w = world(
        nodes={
            "node-1": node("node-1"),
            "node-2": node("node-2", labels={kv.ENGINE_HOST_LABEL: "true"}),
            "node-3": node("node-3", ready="Unknown", since=T0 - timedelta(seconds=30)),
            "node-4": node("node-4", unschedulable=True),
        },
        vmis={("vms", "a"): vmi("a", "node-1")},
        vms={("vms", "a"): {"metadata": {"name": "a", "namespace": "vms"},
                            "spec": {"runStrategy": "RerunOnFailure"}}},
        pod_requests={("vms", "p"): ("node-2", 8 * GI, 1000, "Running"),
                      ("vms", "q"): ("node-2", 4 * GI, 500, "Succeeded")},
    )
    w.hosts["node-4"] = host_obj("node-4", status={"state": "Maintenance"})
    # the drain's targets are read only when maintenance is asked for (or under way)
    assert hm.observe(Host.model_validate(host_obj()), w, T0, SETTINGS, None).targets == ()
    host = Host.model_validate(host_obj(spec={"maintenance": {"mode": "local"}}))
    obs = hm.observe(host, w, T0, SETTINGS, None)
    targets = {t.name: t for t in obs.targets}
    assert set(targets) == {"node-2", "node-3", "node-4"}
    assert targets["node-2"].may_run_engine and targets["node-2"].usable
    assert targets["node-2"].allocated_memory_bytes == 8 * GI  # finished pods hold nothing
    assert not targets["node-3"].schedulable  # not Ready
    assert targets["node-4"].in_maintenance and not targets["node-4"].usable
    # node-3 is silent; a cordoned node (node-4) is still a Ready one for the storm guard
    assert obs.cluster == lc.ClusterHealth(total_hosts=4, ready_hosts=3)
    assert obs.runs_restartable_vms
    assert obs.power == lc.PowerObservation(configured=False, fencing_allowed=False,
                                            power_state="Unknown", observed_at=None)


def test_a_silent_node_is_seen_not_ready_since_its_transition() -> None:
    w = world(nodes={"node-1": node("node-1", ready="Unknown", since=T0),
                     "node-2": node("node-2")})
    obs = hm.observe(Host.model_validate(host_obj()), w, T0 + timedelta(seconds=5), SETTINGS,
                     None)
    assert obs.node.ready is None and obs.node.not_ready_since == T0
    missing = hm.observe(Host.model_validate(host_obj("node-9")), w, T0, SETTINGS, None)
    assert not missing.node.exists


def test_fence_request_is_active_until_handled() -> None:
    annotations = {"hostedengine.io/fence-request": "hostedengine.engine.he/req-1"}
    host = Host.model_validate(host_obj(annotations=annotations))
    assert hm.fence_request(host) == ("hostedengine.engine.he", "req-1")
    assert hm.fence_request_active(host)
    for phase, active in (("Refused", True), ("PoweringOff", True), ("Confirmed", False),
                          ("Failed", False), ("Released", False)):
        handled = Host.model_validate(host_obj(annotations=annotations, status={
            "fencing": {"requestID": "req-1", "phase": phase}}))
        assert hm.fence_request_active(handled) is active, phase
    other = Host.model_validate(host_obj(annotations=annotations, status={
        "fencing": {"requestID": "req-0", "phase": "Confirmed"}}))
    assert hm.fence_request_active(other)  # a new id is a new request


# --------------------------------------------------------------------------------------------
# status mapping


def test_a_draining_status_round_trips_through_the_state_machine() -> None:
    w = world(vmims={("vms", "m"): vmim("m", "b", "Running")})
    progress = lc.MaintenanceProgress(
        started_at=T0, to_move=("vms/a", "vms/b", "vms/c"), moved=("vms/a",),
        in_flight=("vms/b",), blocked=(dr.BlockedVM(dr.VMRef("vms", "c"), "NoDisk"),),
        started_migrations=("vms/b",))
    logic = lc.HostStatus(state=lc.HostState.PREPARING_FOR_MAINTENANCE, since=T0,
                          maintenance=progress)
    drain = hm.drain_status(progress, w, "node-1", None)
    assert drain is not None
    assert drain.total == 3 and drain.in_flight[0].migration == "m"
    status = HostStatus(state=HostState.PREPARING_FOR_MAINTENANCE, state_since=T0, drain=drain)
    wire = HostStatus.model_validate(status.to_dict())
    back = hm.to_logic(wire, started_migrations=("vms/b",))
    assert back == logic


def test_a_pending_host_has_no_state_machine_status_yet() -> None:
    assert hm.to_logic(HostStatus()) is None


def test_fencing_phases_from_request_to_release() -> None:
    annotations = {"hostedengine.io/fence-request": "engine/r1"}
    host = Host.model_validate(host_obj(annotations=annotations))
    refused = hm.fencing_status(
        lc.HostStatus(state=lc.HostState.UP, fence_blocked_reason="NodeReady"), host, None, T0)
    assert refused is not None
    assert (refused.request_id, refused.requested_by, refused.phase) == \
        ("r1", "engine", FencePhase.REFUSED)

    fence = lc.FenceProgress(requested_at=T0, attempts=1)
    nr = lc.HostStatus(state=lc.HostState.NON_RESPONSIVE, return_to=lc.HostState.UP, fence=fence)
    powering = hm.fencing_status(nr, host, refused, T0)
    assert powering is not None and powering.phase is FencePhase.POWERING_OFF
    assert powering.previous_state is HostState.UP and powering.count == 1

    done = lc.HostStatus(state=lc.HostState.FENCED, return_to=lc.HostState.UP,
                         fence=lc.FenceProgress(requested_at=T0, attempts=1,
                                                confirmed_off_at=T0 + timedelta(seconds=2)))
    confirmed = hm.fencing_status(done, host, powering, T0)
    assert confirmed is not None and confirmed.phase is FencePhase.CONFIRMED
    assert confirmed.out_of_service_taint and confirmed.confirmed_at == T0 + timedelta(seconds=2)
    # the state machine resumes from what the status says
    status = HostStatus(state=HostState.FENCED, fencing=confirmed)
    back = hm.to_logic(HostStatus.model_validate(status.to_dict()))
    assert back is not None and back.fence is not None
    assert back.fence.confirmed_off_at == T0 + timedelta(seconds=2)
    assert back.return_to is lc.HostState.UP

    handled = Host.model_validate(host_obj(annotations=annotations,
                                           status={"fencing": confirmed.to_dict()}))
    released = hm.fencing_status(lc.HostStatus(state=lc.HostState.UP), handled, confirmed,
                                 T0 + timedelta(minutes=1))
    assert released is not None and released.phase is FencePhase.RELEASED
    assert released.request_id == "r1" and not released.out_of_service_taint
    assert released.finished_at == T0 + timedelta(seconds=2)  # when the fence completed


def test_merge_patch_changes_only_what_differs_and_deletes_what_is_gone() -> None:
    old = {"state": "Up", "drain": {"total": 2, "moved": [1]}, "node": {"ready": True}}
    new = {"state": "Maintenance", "drain": {"total": 2, "moved": [1, 2]},
           "node": {"ready": True}, "message": "x"}
    assert hm.merge_patch(old, new) == {"state": "Maintenance", "drain": {"moved": [1, 2]},
                                        "message": "x"}
    assert hm.merge_patch(new, {"state": "Up"}) == {
        "state": "Up", "drain": None, "node": None, "message": None}
    assert hm.merge_patch(new, new) == {}


def test_node_status_keeps_its_heartbeat_while_ready_does_not_change() -> None:
    first = hm.node_status(node("node-1", since=T0))
    assert first.ready and first.last_heartbeat == T0
    later = node("node-1", since=T0 + timedelta(seconds=10))
    assert hm.node_status(later, first).last_heartbeat == T0
    down = hm.node_status(node("node-1", ready="Unknown", since=T0 + timedelta(seconds=40)), first)
    assert not down.ready and down.last_heartbeat == T0 + timedelta(seconds=40)


# --------------------------------------------------------------------------------------------
# adapter helpers and clock skew


def test_requests_and_quantities() -> None:
    pod = {"spec": {"containers": [
        {"resources": {"requests": {"memory": "1Gi", "cpu": "250m"}}},
        {"resources": {"requests": {"memory": "512Mi", "cpu": "1"}}}]}}
    assert kv.pod_requests(pod) == (GI + 512 * 1024**2, 1250)
    assert kv.vmi_requests({"spec": {"domain": {"resources": {"requests": {
        "memory": "3Gi", "cpu": "2"}}}}}) == (3 * GI, 2000)
    assert kv.vmi_requests({"spec": {"domain": {"cpu": {"cores": 2, "sockets": 2}}}}) == (
        128 * 1024**2, 400)
    assert kv.quantity("nonsense") == 0
    assert kv.parse_time("2026-05-01T12:00:00.5Z") == T0 + timedelta(milliseconds=500)
    assert kv.parse_time("garbage") is None


@pytest.mark.parametrize(("written", "measured", "changed"), [
    (0.0, 0.1, False),   # noise
    (0.0, 0.6, False),   # in sync either way: delivery jitter, not news
    (-0.05, -1.9, False),  # still in sync
    (1.9, 2.1, True),    # crossed the 2 s limit
    (3.0, 3.2, False),   # still skewed, about the same
    (3.0, 3.6, True),    # skewed, moved by more than the resolution
    (-2.5, -1.5, True),  # back under the limit
])
def test_clock_skew_is_rewritten_only_when_it_matters(written: float, measured: float,
                                                       changed: bool) -> None:
    assert handler._skew_changed(written, measured) is changed


def test_clock_skew_from_a_lease() -> None:
    renew = T0 + timedelta(seconds=3)
    assert handler.skew_seconds(renew, T0) == 3.0
    lease = {"metadata": {"name": "node-1"}, "spec": {"renewTime": "2026-05-01T12:00:03.000000Z"}}
    assert kv.lease_renew_time(lease) == renew


def test_a_ready_node_without_network_is_unusable() -> None:
    bad = node("node-1")
    bad["status"]["conditions"].append({"type": "NetworkUnavailable", "status": "True"})
    w = world(nodes={"node-1": bad, "node-2": node("node-2")})
    obs = hm.observe(Host.model_validate(host_obj()), w, T0, SETTINGS, None)
    assert obs.node.ready is True
    assert (obs.node.usable, obs.node.unusable_reason) == (False, "NetworkUnavailable")
    step = lc.step(lc.HostStatus(state=lc.HostState.UP, since=T0), obs)
    assert step.status.state is lc.HostState.NON_OPERATIONAL
