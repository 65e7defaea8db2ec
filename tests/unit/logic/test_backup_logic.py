"""The pure backup decisions: schedule with time zones and seconds, the run state machine
(resumable, never twice for a slot), retention that never deletes the last good backup,
maxFailures, gzip members and manifests."""

from __future__ import annotations

import gzip
import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hosted_engine.logic import backup as lb
from hosted_engine.models.backup import (
    MAX_HISTORY,
    BackupRun,
    BackupSpec,
    BackupStatus,
    Retention,
    RunPhase,
    RunStep,
    RunTrigger,
)

T0 = datetime(2026, 3, 28, 23, 59, 58, tzinfo=UTC)


def spec(**extra: Any) -> BackupSpec:
    body: dict[str, Any] = {"source": {"hostedEngine": "engine"},
                            "target": {"filesystem": {"path": "/backups"}}}
    body.update(extra)
    return BackupSpec.model_validate(body)


def obs(**extra: Any) -> lb.Observed:
    base: dict[str, Any] = {"namespace": "ns", "name": "nightly", "generation": 1}
    base.update(extra)
    return lb.Observed(**base)


def ok_upload() -> lb.UploadResult:
    return lb.UploadResult(ok=True, size_bytes=10, manifest_sha256="a" * 64,
                           location="/backups/ns/engine/x", engine_version="4.5")


def drive(s: BackupSpec, status: BackupStatus, now: datetime, *, host: str = "Up",
          upload: lb.UploadResult | None = None, limit: int = 20
          ) -> tuple[BackupStatus, list[lb.Action]]:
    """Run one whole run through the machine with a cooperative world."""
    actions: list[lb.Action] = []
    requested = False
    snapshot: lb.SnapshotView | None = None
    export: lb.ExportView | None = None
    for _ in range(limit):
        run = status.current_run
        o = obs(host_state=host if not requested else "Maintenance", host_requested=requested,
                snapshot=snapshot, export=export,
                upload=(upload or ok_upload()) if run and run.step == RunStep.UPLOAD else None)
        plan = lb.advance(s, status, o, now)
        actions.extend(plan.actions)
        status = plan.status
        for action in plan.actions:
            if isinstance(action, lb.RequestMaintenance):
                requested = action.on
            if isinstance(action, lb.CreateSnapshot):
                snapshot = lb.SnapshotView(ready=True, indications=("Online", "GuestAgent"))
            if isinstance(action, lb.CreateExport):
                export = lb.ExportView(ready=True)
        if status.current_run is None and run is not None:
            return status, actions
    raise AssertionError(f"run did not finish: {status.current_run}")


# -- schedule ----------------------------------------------------------------------------------


def test_next_fire_honours_the_time_zone_and_daylight_saving() -> None:
    # 02:30 Europe/Paris does not exist on 2026-03-29 (clocks jump 02:00 -> 03:00)
    after = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    first = lb.next_fire("30 2 * * *", "Europe/Paris", after)
    assert first.tzinfo is not None and first.utcoffset() == timedelta(0)
    assert first > after
    nxt = lb.next_fire("0 1 * * *", "Europe/Paris", after)
    assert nxt == datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 01:00 CET
    later = lb.next_fire("0 1 * * *", "Europe/Paris", nxt)
    assert later == datetime(2026, 3, 29, 23, 0, tzinfo=UTC)  # 01:00 CEST


def test_a_sixth_field_is_seconds() -> None:
    assert lb.next_fire("* * * * * */5", None, T0) == datetime(2026, 3, 29, 0, 0, 0,
                                                                    tzinfo=UTC)


def test_run_ids_and_child_names_are_deterministic_dns_labels() -> None:
    assert lb.run_id_for(T0, RunTrigger.SCHEDULE) == "20260328-235958"
    assert lb.run_id_for(T0, RunTrigger.MANUAL) == "20260328-235958-m"
    long = lb.child_name("b" * 60, "20260328-235958")
    assert len(long) <= 63 and long == lb.child_name("b" * 60, "20260328-235958")
    assert long != lb.child_name("b" * 60, "20260328-235959")


# -- the run -----------------------------------------------------------------------------------


def test_a_scheduled_run_starts_at_its_slot_and_only_once() -> None:
    s = spec(schedule="0 2 * * *")
    first = lb.advance(s, BackupStatus(), obs(), T0)
    assert first.status.current_run is None
    slot = first.status.next_run_time
    assert slot == datetime(2026, 3, 29, 2, 0, tzinfo=UTC)
    assert first.wait == min(lb.IDLE_POLL, (slot - T0).total_seconds())
    started = lb.advance(s, first.status, obs(), slot + timedelta(seconds=3))
    run = started.status.current_run
    assert run is not None and run.id == "20260329-020000" and run.step == RunStep.SNAPSHOT
    assert run.trigger == RunTrigger.SCHEDULE and run.scheduled_at == slot
    assert started.status.next_run_time == datetime(2026, 3, 30, 2, 0, tzinfo=UTC)
    # the status is written before any action: the same decision again is the same run
    again = lb.advance(s, started.status, obs(), slot + timedelta(seconds=4))
    assert again.status.current_run is not None and again.status.current_run.id == run.id
    assert again.actions == [lb.CreateSnapshot(run.snapshot_name or "")]


def test_a_slot_already_in_history_never_runs_again() -> None:
    s = spec(schedule="0 2 * * *")
    slot = datetime(2026, 3, 29, 2, 0, tzinfo=UTC)
    done = BackupRun(id="20260329-020000", phase=RunPhase.SUCCEEDED, finished_at=slot)
    status = BackupStatus(next_run_time=slot, runs=[done])
    plan = lb.advance(s, status, obs(), slot + timedelta(seconds=1))
    assert plan.status.current_run is None
    assert plan.status.next_run_time == slot + timedelta(days=1)


def test_a_whole_run_with_a_failover_host_in_order() -> None:
    s = spec(failoverHost="node-3")
    status, actions = drive(s, BackupStatus(), T0)
    kinds = [type(a).__name__ for a in actions if not isinstance(a, lb.Emit)]
    assert kinds == ["RequestMaintenance", "CreateSnapshot", "CreateExport", "DeleteChildren",
                     "RequestMaintenance"]
    assert [a.on for a in actions if isinstance(a, lb.RequestMaintenance)] == [True, False]
    (run,) = status.runs
    assert run.phase == RunPhase.SUCCEEDED and run.trigger == RunTrigger.ONE_SHOT
    assert run.step == RunStep.DONE and run.size_bytes == 10 and run.message is None
    assert status.phase == "Succeeded" and status.last_successful_run == run.id
    reasons = [a.reason for a in actions if isinstance(a, lb.Emit)]
    assert reasons == ["BackupStarted", "FailoverHostInMaintenance", "BackupSucceeded"]
    # a one-shot backup never runs again
    assert lb.advance(s, status, obs(), T0 + timedelta(days=1)).status.current_run is None


def test_a_missing_failover_host_fails_the_run_and_cleans_up() -> None:
    s = spec(failoverHost="node-9")
    plan = lb.advance(s, BackupStatus(), obs(), T0)
    plan = lb.advance(s, plan.status, obs(host_state=None), T0)
    run = plan.status.current_run
    assert run is not None and run.phase == RunPhase.FAILED and run.step == RunStep.CLEANUP
    plan = lb.advance(s, plan.status, obs(), T0)
    assert lb.DeleteChildren(run.snapshot_name or "") in plan.actions
    assert lb.DeleteRunObjects(run.id) in plan.actions  # partial objects never stay
    plan = lb.advance(s, plan.status, obs(), T0)
    assert lb.RequestMaintenance("node-9", False) in plan.actions
    plan = lb.advance(s, plan.status, obs(), T0)
    assert plan.status.runs[0].phase == RunPhase.FAILED
    assert "not found" in (plan.status.runs[0].message or "")
    assert plan.status.consecutive_failures == 1 and plan.status.phase == "Failed"


def test_crash_consistent_snapshot_is_noted() -> None:
    s = spec()
    plan = lb.advance(s, BackupStatus(), obs(), T0)
    snap = lb.SnapshotView(ready=True, indications=("Online", "NoGuestAgent"))
    plan = lb.advance(s, plan.status, obs(snapshot=snap), T0)
    run = plan.status.current_run
    assert run is not None and run.step == RunStep.EXPORT
    assert run.message is not None and "crash-consistent" in run.message


def test_a_run_that_takes_too_long_fails() -> None:
    s = spec(runTimeout="10s")
    plan = lb.advance(s, BackupStatus(), obs(), T0)
    plan = lb.advance(s, plan.status, obs(snapshot=lb.SnapshotView()), T0 + timedelta(seconds=11))
    run = plan.status.current_run
    assert run is not None and run.phase == RunPhase.FAILED
    assert "timed out" in (run.message or "") and "Snapshot" in (run.message or "")


def test_max_failures_suspends_and_manual_runs_still_go() -> None:
    s = spec(schedule="* * * * * *", maxFailures=2)
    status = BackupStatus()
    now = T0
    for _ in range(2):
        status = lb.advance(s, status, obs(), now).status  # sets nextRunTime
        now = status.next_run_time or now
        status, _ = drive(s, status, now, upload=lb.UploadResult(ok=False, error="boom"))
    assert status.consecutive_failures == 2
    assert status.phase == "Suspended" and status.next_run_time is None
    assert lb.advance(s, status, obs(), now + timedelta(hours=1)).status.current_run is None
    manual = lb.advance(s, status, obs(run_now_id="x1"), now + timedelta(hours=1))
    assert manual.status.current_run is not None
    assert manual.status.current_run.trigger == RunTrigger.MANUAL
    assert manual.status.last_run_now_id == "x1"
    # a success resets the count
    done, _ = drive(s, manual.status, now + timedelta(hours=1))
    assert done.consecutive_failures == 0 and done.phase == "Scheduled"


def test_suspend_pauses_the_schedule() -> None:
    s = spec(schedule="* * * * * *", suspend=True)
    plan = lb.advance(s, BackupStatus(next_run_time=T0), obs(), T0 + timedelta(seconds=5))
    assert plan.status.current_run is None and plan.status.phase == "Suspended"
    assert plan.status.next_run_time is None


# -- retention ---------------------------------------------------------------------------------


def good(i: int, when: datetime) -> BackupRun:
    return BackupRun(id=f"r{i:03d}", phase=RunPhase.SUCCEEDED, finished_at=when)


def test_keep_last_never_deletes_the_newest_success_and_ignores_failures() -> None:
    runs = [good(i, T0 - timedelta(hours=i)) for i in range(5)]
    failed = BackupRun(id="f", phase=RunPhase.FAILED, finished_at=T0 + timedelta(hours=1))
    victims = lb.to_delete([failed, *runs], Retention(keep_last=2), None)
    assert victims == ["r002", "r003", "r004"]
    assert lb.to_delete(runs, None, None) == []


def test_daily_and_weekly_keep_the_newest_of_each_bucket_in_the_time_zone() -> None:
    # two runs a day for 10 days, at 23:30 and 00:30 UTC (in Tokyo both are the same day)
    runs = []
    for day in range(10):
        base = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=day)
        runs += [good(day * 2, base + timedelta(hours=23, minutes=30)),
                 good(day * 2 + 1, base + timedelta(hours=0, minutes=30))]
    kept_utc = lb.retained(runs, Retention(keep_daily=3), None)
    assert kept_utc == {"r018", "r016", "r014"}  # the 23:30 run of each of the last 3 days
    kept_tokyo = lb.retained(runs, Retention(keep_daily=3), "Asia/Tokyo")
    assert len(kept_tokyo) == 3 and kept_tokyo != kept_utc
    weekly = lb.retained(runs, Retention(keep_weekly=2), None)
    assert len(weekly) == 2 and "r018" in weekly


def test_the_last_good_backup_survives_any_rule() -> None:
    old = good(1, T0 - timedelta(days=400))
    assert lb.retained([old], Retention(keep_daily=1, keep_weekly=1), None) == {"r001"}
    assert lb.to_delete([old], Retention(keep_last=1), None) == []


def test_history_is_bounded_dropping_deleted_then_failed_first() -> None:
    runs = [BackupRun(id=f"d{i}", phase=RunPhase.DELETED) for i in range(MAX_HISTORY)]
    runs.insert(0, BackupRun(id="new", phase=RunPhase.SUCCEEDED))
    out = lb.bounded_history(runs)
    assert len(out) == MAX_HISTORY and out[0].id == "new"
    assert "d49" not in {r.id for r in out}


def test_retention_marks_deleted_runs() -> None:
    status = BackupStatus(runs=[good(1, T0), good(2, T0 - timedelta(hours=1))])
    out = lb.apply_deletions(status, ["r002"])
    assert [r.phase for r in out.runs] == [RunPhase.SUCCEEDED, RunPhase.DELETED]


def _delete(status: BackupStatus, value: str) -> tuple[BackupStatus, list[lb.Action]]:
    plan = lb.advance(spec(), status, obs(delete_run=value), T0)
    return plan.status, plan.actions


def _reasons(actions: list[lb.Action]) -> list[tuple[str, str]]:
    return [(a.reason, a.message) for a in actions if isinstance(a, lb.Emit)]


def test_a_failed_run_can_always_be_deleted_a_good_one_unless_it_is_the_only_good() -> None:
    failed = BackupRun(id="f1", phase=RunPhase.FAILED, finished_at=T0)
    only_good = good(1, T0 - timedelta(hours=1))
    status = BackupStatus(runs=[failed, only_good], last_successful_run="r001")
    out, actions = _delete(status, "f1")
    assert lb.DeleteRunObjects("f1") in actions and out.last_delete_run == "f1"
    assert _reasons(actions)[0][0] == "RunDeleted"
    # handled once: the same value again does nothing
    assert lb.advance(spec(), out, obs(delete_run="f1"), T0).actions == []
    out, actions = _delete(out, "r001")
    assert not any(isinstance(a, lb.DeleteRunObjects) for a in actions)
    assert _reasons(actions) == [
        ("DeleteRunRefused", "run r001 is the only good backup left: it is never deleted")]
    # with another good run, it goes; the last successful run moves to the one left
    status = BackupStatus(runs=[good(2, T0), only_good], last_successful_run="r002")
    out, actions = _delete(status, "r002/cli-1")
    assert lb.DeleteRunObjects("r002") in actions and out.last_delete_run == "r002/cli-1"
    after = lb.apply_deletions(out, ["r002"])
    assert after.last_successful_run == "r001"
    assert [r.phase for r in after.runs] == [RunPhase.DELETED, RunPhase.SUCCEEDED]


def test_an_unknown_or_running_run_is_not_deleted() -> None:
    running = BackupRun(id="now", phase=RunPhase.RUNNING, step=RunStep.SNAPSHOT, started_at=T0)
    status = BackupStatus(runs=[good(1, T0)], current_run=running)
    _, actions = _delete(status, "now")
    assert ("DeleteRunRefused", "run now is in progress") in _reasons(actions)
    _, actions = _delete(BackupStatus(runs=[good(1, T0)]), "r999")
    assert _reasons(actions) == [("DeleteRunRefused", "no run r999 in the history")]


def test_selected_vms_get_their_own_snapshot_and_export_and_are_cleaned_up() -> None:
    s = spec(source={"hostedEngine": "engine", "vmSelector": {"matchLabels": {"t": "b"}}})
    plan = lb.advance(s, BackupStatus(), obs(selected_vms=("db", "app")), T0)
    run = plan.status.current_run
    assert run is not None and run.virtual_machines == ["app", "db"]
    app, db = (lb.vm_child_name("nightly", run.id, vm) for vm in ("app", "db"))
    plan = lb.advance(s, plan.status, obs(), T0)
    assert plan.actions == [lb.CreateSnapshot(run.snapshot_name or ""),
                            lb.CreateSnapshot(app, "app"), lb.CreateSnapshot(db, "db")]
    ready = lb.SnapshotView(ready=True)
    # one VM's snapshot still missing or not ready: the run waits
    waiting = lb.advance(s, plan.status, obs(snapshot=ready, other_snapshots={"app": ready}), T0)
    assert waiting.actions == [lb.CreateSnapshot(db, "db")]
    assert waiting.status.current_run is not None
    assert waiting.status.current_run.step == RunStep.SNAPSHOT
    failed = lb.advance(s, plan.status, obs(snapshot=ready, other_snapshots={
        "app": ready, "db": lb.SnapshotView(failed="no such VM")}), T0)
    assert failed.status.current_run is not None
    assert failed.status.current_run.phase == RunPhase.FAILED
    assert "VirtualMachine db" in (failed.status.current_run.message or "")
    cleanup = lb.advance(s, failed.status, obs(), T0)
    assert {a.name for a in cleanup.actions if isinstance(a, lb.DeleteChildren)} == {
        run.snapshot_name, app, db}


# -- data --------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressible", [True, False])
def test_gzip_members_round_trip_and_hash_both_sides(compressible: bool) -> None:
    raw = (b"engine " * 300_000) if compressible else os.urandom(2_500_000)
    gz = lb.GzipStream(block=1_000_000)
    out = b"".join(b for i in range(0, len(raw), 65536) for b in gz.feed(raw[i:i + 65536]))
    out += b"".join(gz.finish())
    assert gzip.decompress(out) == raw  # standard multi-member gzip
    assert b"".join(lb.iter_gunzip([out[i:i + 777] for i in range(0, len(out), 777)])) == raw
    assert gz.raw_sha.hexdigest() == hashlib.sha256(raw).hexdigest()
    assert gz.stored_sha.hexdigest() == hashlib.sha256(out).hexdigest()
    assert gz.raw_size == len(raw) and gz.stored_size == len(out)
    if compressible:
        assert len(out) < len(raw) // 10
    else:  # random data is stored, not squeezed: 5 bytes per 64 KiB block, 18 per member
        assert len(out) <= len(raw) * 1.0001 + 3 * 18


def test_manifest_round_trip_and_verification() -> None:
    objects = [lb.StoredObject("disk.img.gz", 3, "a" * 64, 5, "b" * 64),
               lb.StoredObject("hostedengine.yaml", 2, "c" * 64)]
    data = lb.build_manifest(namespace="ns", backup="nightly", run_id="r1", created_at=T0,
                             operator_version="0.1.0", source={"fqdn": "e.example"},
                             objects=objects, indications=["Online"])
    body = lb.parse_manifest(data)
    assert body["backup"] == {"namespace": "ns", "name": "nightly", "run": "r1"}
    disk, he = body["objects"]
    assert lb.verify_object(disk, 3, "a" * 64, "b" * 64) == []
    assert [m.object for m in lb.verify_object(disk, 4, "d" * 64, "e" * 64)] == [
        "disk.img.gz (size)", "disk.img.gz", "disk.img.gz (raw)"]
    assert lb.verify_object(he, None, None) == [lb.Mismatch("hostedengine.yaml", "c" * 64, None)]


@pytest.mark.parametrize("bad", [b"not json", b'{"formatVersion": 2, "objects": []}',
                                 b'{"formatVersion": 1, "objects": [{"name": "../x", '
                                 b'"size": 1, "sha256": "a"}]}'])
def test_bad_manifests_are_refused(bad: bytes) -> None:
    with pytest.raises(lb.ManifestError):
        lb.parse_manifest(bad)


# -- restore -----------------------------------------------------------------------------------


def test_missing_hosts_and_the_restored_spec() -> None:
    he = {"spec": {"vm": {"image": {"containerDisk": {"image": "x"}, "version": "4.5"},
                          "disk": {"size": "20Gi", "storageDomain": "he"},
                          "network": {"fqdn": "engine.example"}}},
          "status": {"hosts": [{"host": "a"}, {"host": "b"}, {"host": "c"}]}}
    recorded = lb.recorded_hosts(he)
    assert recorded == ["a", "b", "c"]
    missing = lb.missing_hosts(recorded, {"a": "Up", "b": "NonResponsive"})
    assert missing == [("b", "Host is NonResponsive"), ("c", "no such Host in this cluster")]
    out = lb.restored_engine_spec(he, claim="e-restored-disk", storage_domain="data",
                                  remove_hosts=["b", "c"], recorded=recorded)
    assert out["vm"]["image"] == {"pvc": {"claimName": "e-restored-disk"}, "version": "4.5"}
    assert out["vm"]["disk"]["storageDomain"] == "data"
    assert out["vm"]["network"]["fqdn"] == "engine.example"
    assert out["hosts"]["names"] == ["a"]
    assert he["spec"]["vm"]["image"]["containerDisk"] == {"image": "x"}  # input untouched


def test_two_manual_runs_in_the_same_second_are_two_runs() -> None:
    s = spec(schedule="0 0 1 1 *")
    first, _ = drive(s, lb.advance(s, BackupStatus(), obs(run_now_id="a"), T0).status, T0)
    assert [r.id for r in first.runs] == ["20260328-235958-m"]
    plan = lb.advance(s, first, obs(run_now_id="b"), T0)
    assert plan.status.current_run is not None
    assert plan.status.current_run.id == "20260328-235958-m2"
    assert plan.status.last_run_now_id == "b"
