"""Backup and Restore: targets, schedules, retention, sources, status."""

from __future__ import annotations

from typing import Any

import pytest
from celeval import both, model_errors
from hosted_engine.models.backup import (
    RUN_NOW_ANNOTATION,
    Backup,
    BackupPhase,
    BackupSpec,
    RunPhase,
)
from hosted_engine.models.restore import Restore, RestorePhase, RestoreSpec

S3 = {
    "endpoint": "https://s3.example.com:9000",
    "bucket": "engine-backups",
    "credentialsSecretRef": {"name": "s3-creds"},
}


def backup(**extra: Any) -> dict[str, Any]:
    return {"source": {"hostedEngine": "engine"}, "target": {"s3": S3}, **extra}


def test_defaults() -> None:
    spec = BackupSpec.model_validate(backup())
    assert spec.schedule is None  # one-shot
    assert spec.max_failures == 3
    assert spec.suspend is False
    assert spec.quiesce is True
    assert spec.run_timeout.total_seconds() == 7200
    assert spec.target.s3 is not None
    assert spec.target.s3.verify_tls is True
    assert spec.target.s3.region == "us-east-1"
    assert RUN_NOW_ANNOTATION == "hostedengine.io/run-now"


@pytest.mark.parametrize(
    "target",
    [
        {"s3": S3},
        {"pvc": {"claimName": "backups", "path": "engine"}},
        {"filesystem": {"path": "/var/backups"}},
    ],
)
def test_each_target_is_valid(target: dict[str, Any]) -> None:
    assert both(Backup, backup(target=target)) == ([], [])


@pytest.mark.parametrize("target", [{}, {"s3": S3, "filesystem": {"path": "/var/backups"}}])
def test_exactly_one_target(target: dict[str, Any]) -> None:
    model, cel = both(Backup, backup(target=target))
    assert any("target: set exactly one of s3, pvc, filesystem" in m for m in model)
    assert cel == ["spec.target: target: set exactly one of s3, pvc, filesystem"]


def test_scheduled_backup_with_zone_and_retention() -> None:
    spec = backup(
        schedule="*/5 * * * *",
        timeZone="Europe/Paris",
        retention={"keepLast": 7, "keepWeekly": 4},
        failoverHost="host-3",
    )
    assert both(Backup, spec) == ([], [])
    parsed = BackupSpec.model_validate(spec)
    assert parsed.retention is not None and parsed.retention.keep_last == 7
    assert BackupSpec.model_validate(backup(schedule="@daily")).schedule == "@daily"


def test_zone_and_retention_only_with_a_schedule() -> None:
    model, cel = both(Backup, backup(timeZone="UTC", retention={"keepLast": 2}))
    assert model == ["spec: timeZone is only used with schedule"]
    assert sorted(cel) == [
        "spec: retention is only used with schedule",
        "spec: timeZone is only used with schedule",
    ]


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"schedule": "every day"}, "spec.schedule", "pattern"),
        ({"schedule": "61 * * * *"}, "spec.schedule", "not a valid cron expression"),
        ({"schedule": "@daily", "timeZone": "Mars/Olympus"}, "spec.timeZone", "IANA"),
        ({"maxFailures": 0}, "spec.maxFailures", "greater than or equal to 1"),
        ({"schedule": "@daily", "retention": {"keepLast": 0}}, "spec.retention.keepLast", "1"),
        ({"runTimeout": "1s"}, "spec.runTimeout", "at least 10s"),
        ({"source": {}}, "spec.source.hostedEngine", "Field required"),
        ({"target": {"s3": {**S3, "bucket": "UPPER"}}}, "spec.target.s3.bucket", "pattern"),
        ({"target": {"s3": {**S3, "endpoint": "s3.local"}}}, "spec.target.s3.endpoint", "pattern"),
        (
            {"target": {"filesystem": {"path": "relative"}}},
            "spec.target.filesystem.path",
            "pattern",
        ),
        ({"failoverHost": "Host 3"}, "spec.failoverHost", "pattern"),
    ],
)
def test_bad_backup_input_names_the_field(extra: dict[str, Any], field: str, message: str) -> None:
    errors = model_errors(Backup, backup(**extra))
    assert any(e.startswith(field) and message in e for e in errors), errors


def test_backup_status_round_trip() -> None:
    status = {
        "phase": "Scheduled",
        "lastSuccessTime": "2026-01-01T01:00:00Z",
        "lastSuccessfulRun": "20260101-010000",
        "nextRunTime": "2026-01-01T02:00:00Z",
        "runs": [
            {
                "id": "20260101-010000",
                "phase": "Succeeded",
                "sizeBytes": 123456,
                "durationSeconds": 12.5,
                "manifestSha256": "a" * 64,
            }
        ],
    }
    obj = Backup.model_validate({"metadata": {"name": "b"}, "spec": backup(), "status": status})
    assert obj.status.phase == BackupPhase.SCHEDULED
    assert obj.status.runs[0].phase == RunPhase.SUCCEEDED
    assert Backup.model_validate(obj.to_dict()) == obj
    with pytest.raises(ValueError, match="manifestSha256"):
        Backup.model_validate(
            {
                "metadata": {"name": "b"},
                "spec": backup(),
                "status": {"runs": [{"id": "x", "phase": "Succeeded", "manifestSha256": "nothex"}]},
            }
        )


# --- Restore ------------------------------------------------------------------------------------


def restore(**extra: Any) -> dict[str, Any]:
    return {"source": {"backup": {"name": "nightly"}}, "hostedEngineName": "engine", **extra}


def test_restore_defaults_and_sources() -> None:
    spec = RestoreSpec.model_validate(restore())
    assert spec.clean_missing_hosts is False
    assert spec.source.backup is not None and spec.source.backup.run is None
    location = restore(source={"location": {"target": {"s3": S3}, "run": "20260101-010000"}})
    assert both(Restore, location) == ([], [])


@pytest.mark.parametrize(
    "source",
    [{}, {"backup": {"name": "nightly"}, "location": {"target": {"s3": S3}, "run": "r1"}}],
)
def test_restore_needs_exactly_one_source(source: dict[str, Any]) -> None:
    model, cel = both(Restore, restore(source=source))
    assert any("source: set exactly one of backup, location" in m for m in model)
    assert cel == ["spec.source: source: set exactly one of backup, location"]


def test_restore_location_target_is_checked_too() -> None:
    model, cel = both(Restore, restore(source={"location": {"target": {}, "run": "r1"}}))
    assert model and cel == [
        "spec.source.location.target: target: set exactly one of s3, pvc, filesystem"
    ]


def test_restore_bad_input_and_status() -> None:
    errors = model_errors(Restore, restore(hostedEngineName="Engine!"))
    assert any(e.startswith("spec.hostedEngineName") for e in errors)
    obj = Restore.model_validate(
        {
            "metadata": {"name": "r"},
            "spec": restore(),
            "status": {
                "phase": "Failed",
                "mismatches": [{"object": "disk.img", "expected": "a", "actual": "b"}],
                "missingHosts": [{"name": "host-9", "reason": "no such Host"}],
            },
        }
    )
    assert obj.status.phase == RestorePhase.FAILED
    assert Restore.model_validate(obj.to_dict()) == obj
