"""Host: defaults, power management, power-action annotations, status."""

from __future__ import annotations

from typing import Any

import pytest
from celeval import both, model_errors
from hosted_engine.models.host import (
    FENCE_REQUEST_ANNOTATION,
    POWER_ACTION_ANNOTATION,
    POWER_ACTION_ID_ANNOTATION,
    Host,
    HostSpec,
    HostState,
    PowerAction,
    PowerActionResult,
    PowerState,
)

BMC: dict[str, Any] = {
    "type": "redfish",
    "address": "10.0.0.21",
    "systemID": "node-1",
    "credentialsSecretRef": {"name": "bmc-node-1", "namespace": "hosted-engine"},
}


def test_annotation_keys() -> None:
    assert POWER_ACTION_ANNOTATION == "hostedengine.io/power-action"
    assert POWER_ACTION_ID_ANNOTATION == "hostedengine.io/power-action-id"
    assert FENCE_REQUEST_ANNOTATION == "hostedengine.io/fence-request"
    assert [a.value for a in PowerAction] == ["status", "on", "off", "soft", "reset", "cycle"]


def test_defaults() -> None:
    spec = HostSpec.model_validate({"nodeName": "node-1"})
    assert spec.hosted_engine == "undeploy"
    assert spec.maintenance.mode == "none"
    assert spec.maintenance.non_migratable_policy == "block"
    assert spec.maintenance.timeout.total_seconds() == 1800
    assert spec.power_management is None
    full = HostSpec.model_validate({"nodeName": "node-1", "powerManagement": BMC})
    pm = full.power_management
    assert pm is not None
    assert pm.verify_tls is True
    assert pm.fencing_enabled is True
    assert pm.action_timeout.total_seconds() == 60
    assert pm.effective_port() == 443
    ipmi = {**BMC, "type": "ipmi"}
    del ipmi["systemID"]
    pm2 = HostSpec.model_validate({"nodeName": "n", "powerManagement": ipmi}).power_management
    assert pm2 is not None and pm2.effective_port() == 623


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({}, "spec.nodeName", "Field required"),
        ({"nodeName": "Node_1"}, "spec.nodeName", "pattern"),
        ({"nodeName": "n", "hostedEngine": "yes"}, "spec.hostedEngine", "'deploy'"),
        ({"nodeName": "n", "maintenance": {"mode": "global"}}, "spec.maintenance.mode", "'local'"),
        (
            {"nodeName": "n", "maintenance": {"nonMigratablePolicy": "kill"}},
            "spec.maintenance.nonMigratablePolicy",
            "'block'",
        ),
        ({"nodeName": "n", "maintenance": {"timeout": "0s"}}, "spec.maintenance.timeout", "1s"),
        (
            {"nodeName": "n", "powerManagement": {**BMC, "type": "ilo"}},
            "spec.powerManagement.type",
            "'redfish' or 'ipmi'",
        ),
        (
            {"nodeName": "n", "powerManagement": {**BMC, "port": 70000}},
            "spec.powerManagement.port",
            "less than or equal to 65535",
        ),
        (
            {"nodeName": "n", "powerManagement": {**BMC, "credentialsSecretRef": {"name": "x"}}},
            "spec.powerManagement.credentialsSecretRef.namespace",
            "Field required",
        ),
        (
            {"nodeName": "n", "powerManagement": {**BMC, "actionTimeout": "11m"}},
            "spec.powerManagement.actionTimeout",
            "at most 10m",
        ),
        ({"nodeName": "n", "group": "Rack A"}, "spec.group", "pattern"),
        ({"nodeName": "n", "password": "x"}, "spec.password", "Extra inputs"),
    ],
)
def test_bad_input_names_the_field(spec: dict[str, Any], field: str, message: str) -> None:
    errors = model_errors(Host, spec)
    assert any(e.startswith(field) and message in e for e in errors), errors


def test_redfish_only_fields_with_ipmi_are_refused_by_model_and_cel() -> None:
    model, cel = both(Host, {"nodeName": "n", "powerManagement": {**BMC, "type": "ipmi"}})
    assert model == ["spec.powerManagement: systemID is only used with type redfish"]
    assert cel == ["spec.powerManagement: systemID is only used with type redfish"]


def test_node_name_is_immutable_in_the_schema() -> None:
    _, cel = both(Host, {"nodeName": "node-2"}, old={"nodeName": "node-1"})
    assert cel == ["spec.nodeName: nodeName is immutable"]
    assert both(Host, {"nodeName": "node-1"}, old={"nodeName": "node-1"}) == ([], [])


def _host(annotations: dict[str, str], last: dict[str, Any] | None = None) -> Host:
    status: dict[str, Any] = {"powerManagement": {"powerState": "On"}}
    if last is not None:
        status["powerManagement"]["lastAction"] = last
    return Host.model_validate(
        {
            "metadata": {"name": "node-1", "annotations": annotations},
            "spec": {"nodeName": "node-1", "powerManagement": BMC},
            "status": status,
        }
    )


def test_power_action_requests_from_annotations() -> None:
    assert _host({}).requested_power_action() is None
    assert not _host({}).power_action_pending()
    host = _host({POWER_ACTION_ANNOTATION: "Off"})
    assert host.requested_power_action() == (PowerAction.OFF, None)
    assert host.power_action_pending()
    done = {"action": "off", "result": "Succeeded"}
    assert not _host({POWER_ACTION_ANNOTATION: "off"}, done).power_action_pending()
    again = _host({POWER_ACTION_ANNOTATION: "off", POWER_ACTION_ID_ANNOTATION: "2"}, done)
    assert again.power_action_pending()
    handled = {"action": "off", "id": "2", "result": "Failed", "message": "timed out"}
    assert not _host(
        {POWER_ACTION_ANNOTATION: "off", POWER_ACTION_ID_ANNOTATION: "2"}, handled
    ).power_action_pending()


def test_a_bad_power_action_names_the_annotation() -> None:
    with pytest.raises(ValueError, match=r"hostedengine.io/power-action: 'explode' is not one of"):
        _host({POWER_ACTION_ANNOTATION: "explode"}).requested_power_action()


def test_status_round_trip() -> None:
    status = {
        "observedGeneration": 1,
        "state": "PreparingForMaintenance",
        "drain": {
            "total": 3,
            "moved": [{"namespace": "vms", "name": "a"}],
            "inFlight": [{"namespace": "vms", "name": "b", "migration": "b-mig"}],
            "blocked": [{"namespace": "vms", "name": "c", "reason": "not live-migratable"}],
        },
        "powerManagement": {
            "powerState": "On",
            "lastAction": {"id": "1", "action": "status", "result": "Succeeded"},
        },
        "fencing": {"requestId": "he/1", "phase": "Confirmed", "outOfServiceTaint": True},
        "clockSkew": {"seconds": 2.5},
        "hostedEngine": {"deployed": True, "hostID": 2, "score": 3000},
    }
    host = Host.model_validate(
        {"metadata": {"name": "n"}, "spec": {"nodeName": "n"}, "status": status}
    )
    assert host.status.state == HostState.PREPARING_FOR_MAINTENANCE
    assert host.status.power_management.power_state == PowerState.ON
    last = host.status.power_management.last_action
    assert last is not None and last.result == PowerActionResult.SUCCEEDED
    assert host.status.drain is not None and host.status.drain.blocked[0].reason
    assert Host.model_validate(host.to_dict()) == host
    assert host.to_dict()["status"]["hostedEngine"]["hostID"] == 2
