"""The operator's metrics, scraped over HTTP from the endpoint the operator serves and parsed
with prometheus-client's own text parser."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hosted_engine.adapters import metrics
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(metrics.PORT_ENV, "0")
    assert metrics.serve_from_env() is None  # 0: off
    server = metrics.serve(0, "127.0.0.1")
    try:
        yield f"http://127.0.0.1:{server.port}/metrics"
    finally:
        metrics.stop_serving()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[Any, float], metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


def engine_status(**over: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "state": "EngineUp",
        "engine": {"vm": "up", "health": "good"},
        "hosts": [{"host": "node-1", "score": 3400}, {"host": "node-2", "score": 2400}],
        "maintenance": {"mode": "none"},
        "spares": {"required": 1, "available": 1},
        "failovers": 3,
    }
    status.update(over)
    return status


def test_engine_state_health_scores_and_failovers(endpoint: str) -> None:
    ns, name = "m-engine", "he1"
    metrics.record_engine_status(ns, name, engine_status())
    s = scrape(endpoint)
    assert value(s, "hosted_engine_engine_state", namespace=ns, name=name, state="EngineUp") == 1
    assert value(s, "hosted_engine_engine_state", namespace=ns, name=name,
                 state="EngineDown") == 0
    assert value(s, "hosted_engine_engine_up", namespace=ns, name=name) == 1
    assert value(s, "hosted_engine_engine_health", namespace=ns, name=name, health="good") == 1
    assert value(s, "hosted_engine_host_score", namespace=ns, name=name, host="node-2") == 2400
    assert value(s, "hosted_engine_engine_spares_available", namespace=ns, name=name) == 1
    # the first status seen is the baseline: history is not counted again after a restart
    assert value(s, "hosted_engine_failovers_total", namespace=ns, name=name) == 0

    metrics.record_engine_status(ns, name, engine_status(
        state="GlobalMaintenance", engine={"vm": "up", "health": "bad"}, failovers=4,
        hosts=[{"host": "node-1", "score": 3000}],
        maintenance={"mode": "global", "since": "2026-01-31T10:00:00Z"}))
    metrics.record_engine_status(ns, name, engine_status(failovers=4,
                                                         hosts=[{"host": "node-1"}]))
    s = scrape(endpoint)
    assert value(s, "hosted_engine_failovers_total", namespace=ns, name=name) == 1
    assert value(s, "hosted_engine_host_score", namespace=ns, name=name, host="node-2") is None
    assert value(s, "hosted_engine_host_score", namespace=ns, name=name, host="node-1") == 0
    assert value(s, "hosted_engine_engine_global_maintenance", namespace=ns, name=name) == 0


def test_global_maintenance_since_and_forget(endpoint: str) -> None:
    ns, name = "m-engine", "he2"
    metrics.record_engine_status(ns, name, engine_status(
        state="GlobalMaintenance", maintenance={"mode": "global",
                                                "since": "2026-01-31T10:00:00Z"}))
    s = scrape(endpoint)
    assert value(s, "hosted_engine_engine_global_maintenance", namespace=ns, name=name) == 1
    assert value(s, "hosted_engine_engine_global_maintenance_since_seconds",
                 namespace=ns, name=name) == 1769853600.0
    metrics.forget_engine(ns, name)
    s = scrape(endpoint)
    assert not [k for k in s if dict(k[1]).get("name") == name]


def test_hosts_backups_and_errors(endpoint: str) -> None:
    metrics.record_fence("m-node-9", "req-1", "Confirmed")
    metrics.record_fence("m-node-9", "req-1", "Confirmed")  # the same request: once
    metrics.record_maintenance_done("m-node-9", 42.0)
    metrics.record_migrations("m-node-9", succeeded=3, failed=1)
    metrics.record_reconcile_error("m-kind")
    runs = [{"id": "old", "phase": "Succeeded", "durationSeconds": 9,
             "finishedAt": "2026-01-30T00:00:00Z", "sizeBytes": 10}]
    metrics.record_backup_runs("m-ns", "nightly", runs)  # history: remembered, not counted
    runs = [{"id": "r2", "phase": "Failed", "durationSeconds": 2.5},
            {"id": "r3", "phase": "Succeeded", "durationSeconds": 30,
             "finishedAt": "2026-01-31T00:00:00Z", "sizeBytes": 2048},
            {"id": "r4", "phase": "Running"}, *runs]
    metrics.record_backup_runs("m-ns", "nightly", runs)
    metrics.record_backup_runs("m-ns", "nightly", runs)  # again: nothing new
    s = scrape(endpoint)
    assert value(s, "hosted_engine_fence_actions_total", host="m-node-9",
                 result="Confirmed") == 1
    assert value(s, "hosted_engine_maintenance_duration_seconds_count", host="m-node-9") == 1
    assert value(s, "hosted_engine_maintenance_duration_seconds_sum", host="m-node-9") == 42
    assert value(s, "hosted_engine_migrations_total", host="m-node-9", result="succeeded") == 3
    assert value(s, "hosted_engine_migrations_total", host="m-node-9", result="failed") == 1
    assert value(s, "hosted_engine_reconcile_errors_total", kind="m-kind") == 1
    assert value(s, "hosted_engine_backup_runs_total", namespace="m-ns", name="nightly",
                 result="Failed") == 1
    assert value(s, "hosted_engine_backup_runs_total", namespace="m-ns", name="nightly",
                 result="Succeeded") == 1
    assert value(s, "hosted_engine_backup_duration_seconds_count", namespace="m-ns",
                 name="nightly") == 2
    assert value(s, "hosted_engine_backup_size_bytes", namespace="m-ns", name="nightly") == 2048
    assert value(s, "hosted_engine_backup_last_success_timestamp_seconds", namespace="m-ns",
                 name="nightly") == 1769817600.0


def test_run_options_carry_the_metrics_port_and_log_format() -> None:
    from hosted_engine.cli.main import build_parser
    from hosted_engine.cli.run import options_from_args

    args = build_parser().parse_args(
        ["run", "--metrics-port", "9100", "--log-format", "json", "--priority", "1"])
    options = options_from_args(args)
    assert (options.metrics_port, options.log_format) == (9100, "json")
    defaults = options_from_args(build_parser().parse_args(["run", "--priority", "1"]))
    assert (defaults.metrics_port, defaults.log_format) == (None, "text")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--metrics-port", "70000"])


def test_host_status_transitions(endpoint: str) -> None:
    host = "m-node-7"
    drain = {"startedAt": "2026-01-31T10:00:00Z", "total": 3}
    metrics.record_host_status(host, {"state": "Up"}, {
        "state": "PreparingForMaintenance", "drain": {**drain, "moved": [{"n": 1}]}})
    metrics.record_host_status(host, {
        "state": "PreparingForMaintenance", "drain": {**drain, "moved": [{"n": 1}]}}, {
        "state": "Maintenance", "stateSince": "2026-01-31T10:01:30Z",
        "drain": {**drain, "moved": [{"n": 1}, {"n": 2}], "failed": [{"n": 3}],
                  "finishedAt": "2026-01-31T10:01:30Z"}})
    fence = {"requestId": "r1", "phase": "Confirmed"}
    metrics.record_host_status(host, {"fencing": {"requestId": "r1", "phase": "PoweringOff"}},
                               {"fencing": fence})
    metrics.record_host_status(host, {"fencing": fence}, {"fencing": fence})  # unchanged
    metrics.record_host_status(host, {"fencing": fence},
                               {"fencing": {"requestId": "r2", "phase": "Failed"}})
    s = scrape(endpoint)
    assert value(s, "hosted_engine_migrations_total", host=host, result="succeeded") == 2
    assert value(s, "hosted_engine_migrations_total", host=host, result="failed") == 1
    assert value(s, "hosted_engine_maintenance_duration_seconds_sum", host=host) == 90
    assert value(s, "hosted_engine_fence_actions_total", host=host, result="Confirmed") == 1
    assert value(s, "hosted_engine_fence_actions_total", host=host, result="Failed") == 1
