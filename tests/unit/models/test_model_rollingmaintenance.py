"""RollingMaintenance: scope forms, hooks, stageTimeout bounds, abort, status."""

from __future__ import annotations

from typing import Any

import pytest
from celeval import both, model_errors
from hosted_engine.models.rollingmaintenance import (
    SKIP_EXIT_CODE,
    HostRunState,
    RollingMaintenance,
    RollingMaintenanceSpec,
    RunState,
    StageName,
    StageResultValue,
)

HOOK = {"image": "registry.example.com/hooks:1", "command": ["/hooks/run.sh"]}


def rolling(**extra: Any) -> dict[str, Any]:
    return {"scope": {"hosts": ["host-1", "host-2"]}, **extra}


def test_defaults_are_cloudstacks() -> None:
    spec = RollingMaintenanceSpec.model_validate(rolling())
    assert spec.stage_timeout.total_seconds() == 1800
    assert spec.poll_interval.total_seconds() == 10
    assert spec.max_unavailable == 1
    assert spec.forced is False and spec.paused is False and spec.abort is False
    assert spec.payload == []
    assert spec.stages.pre_flight is None
    assert SKIP_EXIT_CODE == 70


@pytest.mark.parametrize(
    "scope",
    [
        {"hosts": ["host-1"]},
        {"selector": {"matchLabels": {"rack": "a"}}},
        {"groups": {}},
        {"groups": {"labelKey": "topology.kubernetes.io/zone", "values": ["z1", "z2"]}},
    ],
)
def test_each_scope_form_is_valid(scope: dict[str, Any]) -> None:
    assert both(RollingMaintenance, rolling(scope=scope)) == ([], [])


@pytest.mark.parametrize("scope", [{}, {"hosts": ["h"], "selector": {"matchLabels": {"a": "b"}}}])
def test_exactly_one_scope_form(scope: dict[str, Any]) -> None:
    model, cel = both(RollingMaintenance, rolling(scope=scope))
    assert any("scope: set exactly one of hosts, selector, groups" in m for m in model)
    assert cel == ["spec.scope: scope: set exactly one of hosts, selector, groups"]


def test_groups_default_label_key() -> None:
    spec = RollingMaintenanceSpec.model_validate(rolling(scope={"groups": {}}))
    assert spec.scope.groups is not None
    assert spec.scope.groups.label_key == "hostedengine.io/group"


def test_all_four_stages_with_payload() -> None:
    script = {"image": "busybox:1", "script": {"name": "hooks", "key": "maintenance.sh"}}
    spec = rolling(
        stages={
            "preFlight": HOOK,
            "preMaintenance": HOOK,
            "maintenance": script,
            "postMaintenance": {**HOOK, "timeout": "5m"},
        },
        payload=["--reboot", "--kernel=6.1"],
        forced=True,
        maxUnavailable=2,
    )
    assert both(RollingMaintenance, spec) == ([], [])
    parsed = RollingMaintenanceSpec.model_validate(spec)
    assert parsed.stages.maintenance is not None
    assert parsed.stages.maintenance.script is not None
    assert parsed.stages.post_maintenance is not None
    assert parsed.stages.post_maintenance.timeout == "5m"


@pytest.mark.parametrize(
    "hook",
    [
        {"image": "x"},
        {"image": "x", "command": ["a"], "script": {"name": "hooks", "key": "a.sh"}},
    ],
)
def test_hook_needs_command_or_script(hook: dict[str, Any]) -> None:
    model, cel = both(RollingMaintenance, rolling(stages={"maintenance": hook}))
    assert any("hook: set exactly one of command, script" in m for m in model)
    assert cel == ["spec.stages.maintenance: hook: set exactly one of command, script"]


def test_stage_timeout_must_cover_the_poll_interval() -> None:
    model, cel = both(RollingMaintenance, rolling(stageTimeout="5s", pollInterval="10s"))
    assert model == ["spec: stageTimeout 5s must be at least pollInterval 10s"]
    assert cel == ["spec: stageTimeout must be at least pollInterval"]
    # the default pollInterval (10s) applies when only stageTimeout is given
    model, cel = both(RollingMaintenance, rolling(stageTimeout="5s"))
    assert model and cel
    assert both(RollingMaintenance, rolling(stageTimeout="2s", pollInterval="1s")) == ([], [])


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"stageTimeout": "25h"}, "spec.stageTimeout", "at most 24h"),
        ({"stageTimeout": "later"}, "spec.stageTimeout", "invalid duration"),
        ({"pollInterval": "500ms"}, "spec.pollInterval", "at least 1s"),
        ({"maxUnavailable": 0}, "spec.maxUnavailable", "greater than or equal to 1"),
        ({"scope": {"hosts": []}}, "spec.scope.hosts", "at least 1"),
        ({"scope": {"hosts": ["Host_1"]}}, "spec.scope.hosts[0]", "pattern"),
        ({"payload": ["x"] * 33}, "spec.payload", "at most 32"),
        ({"stages": {"reboot": HOOK}}, "spec.stages.reboot", "Extra inputs"),
        ({"hooksNamespace": "Kube System"}, "spec.hooksNamespace", "pattern"),
    ],
)
def test_bad_input_names_the_field(extra: dict[str, Any], field: str, message: str) -> None:
    errors = model_errors(RollingMaintenance, rolling(**extra))
    assert any(e.startswith(field) and message in e for e in errors), errors


def test_abort_cannot_be_undone() -> None:
    _, cel = both(RollingMaintenance, rolling(abort=False), old=rolling(abort=True))
    assert cel == ["spec: abort cannot be undone"]
    assert both(RollingMaintenance, rolling(abort=True), old=rolling()) == ([], [])
    assert both(RollingMaintenance, rolling(paused=False), old=rolling(paused=True)) == ([], [])


def test_status_round_trip() -> None:
    status = {
        "state": "Running",
        "progress": "1/2",
        "hostsTotal": 2,
        "hostsDone": 1,
        "currentGroup": "rack-a",
        "groups": [{"name": "rack-a", "hosts": ["host-1", "host-2"], "schedulingDisabled": True}],
        "hosts": [
            {
                "host": "host-1",
                "state": "Succeeded",
                "stages": [
                    {"stage": "PreFlight", "result": "Skipped", "exitCode": 70},
                    {
                        "stage": "Maintenance",
                        "result": "Succeeded",
                        "exitCode": 0,
                        "logTail": "done\n",
                    },
                ],
            }
        ],
    }
    obj = RollingMaintenance.model_validate(
        {"metadata": {"name": "r"}, "spec": rolling(), "status": status}
    )
    assert obj.status.state == RunState.RUNNING
    host = obj.status.hosts[0]
    assert host.state == HostRunState.SUCCEEDED
    assert host.stages[0].stage == StageName.PRE_FLIGHT
    assert host.stages[0].result == StageResultValue.SKIPPED
    assert RollingMaintenance.model_validate(obj.to_dict()) == obj
    with pytest.raises(ValueError, match="exitCode"):
        RollingMaintenance.model_validate(
            {
                "metadata": {"name": "r"},
                "spec": rolling(),
                "status": {
                    "hosts": [{"host": "h", "stages": [{"stage": "PreFlight", "exitCode": 300}]}]
                },
            }
        )
