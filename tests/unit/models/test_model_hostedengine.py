"""HostedEngine: defaults, bounds, cross-field rules (model and CEL agree), round trip."""

from __future__ import annotations

import copy
import random
from datetime import timedelta
from typing import Any

import pytest
from celeval import both, model_errors
from hosted_engine.models.hostedengine import (
    DEFAULT_HEALTH_URL,
    EngineState,
    HostedEngine,
    HostedEngineSpec,
    HostedEngineStatus,
    random_mac,
)
from pydantic import ValidationError

BASE: dict[str, Any] = {
    "vm": {
        "disk": {"storageDomain": "he-domain"},
        "image": {"containerDisk": {"image": "quay.io/ovirt/engine:4.5"}},
        "network": {"fqdn": "engine.example.com"},
    }
}


def spec(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = out
        parts = path.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def test_defaults_follow_the_issues_and_ovirt() -> None:
    he = HostedEngineSpec.model_validate(BASE)
    assert he.running is True
    assert he.vm.cpu == 4 and he.vm.memory == "16Gi"
    assert he.vm.network.boot_protocol == "dhcp"
    assert he.maintenance.mode == "none"
    assert he.health.url == DEFAULT_HEALTH_URL
    assert he.health.url_for("engine.example.com") == (
        "http://engine.example.com/ovirt-engine/services/health"
    )
    assert he.health.expect == "DB Up"
    assert he.health.restart_grace.timedelta == timedelta(seconds=60)
    assert he.failover.silence_threshold.timedelta == timedelta(seconds=22)
    assert he.failover.require_fencing is True
    assert he.failover.move_threshold == 800
    assert he.failover.start_retries.limit == 5
    assert he.spares_count == 0
    assert he.notifications is None
    assert he.upgrade_policy.pre_upgrade_backup is True
    assert he.shutdown_timeout.total_seconds() == 120


def test_notification_defaults_are_ovirts() -> None:
    he = HostedEngineSpec.model_validate(spec(notifications={}))
    assert he.notifications is not None
    n = he.notifications
    assert (n.smtp_server, n.smtp_port, n.source_email) == ("localhost", 25, "root@localhost")
    assert n.destination_emails == ["root@localhost"]
    assert n.state_transition == "maintenance|start|stop|up|down"
    assert n.start_tls is False


def test_whole_object_round_trip_in_camel_case() -> None:
    body = {
        "apiVersion": "hostedengine.io/v1alpha1",
        "kind": "HostedEngine",
        "metadata": {"name": "engine", "namespace": "ovirt", "generation": 2},
        "spec": spec(sparesCount=1, maintenance={"mode": "global", "reason": "upgrade"}),
        "status": {
            "observedGeneration": 2,
            "state": "EngineUp",
            "host": "host-1",
            "engine": {"vm": "up", "health": "good", "detail": "Up"},
            "hosts": [{"host": "host-1", "hostID": 1, "score": 3400, "upToDate": True}],
        },
    }
    he = HostedEngine.model_validate(body)
    assert he.status.state == EngineState.ENGINE_UP
    assert he.status.hosts[0].host_id == 1
    again = HostedEngine.model_validate(he.to_dict())
    assert again == he
    assert he.to_dict()["spec"]["sparesCount"] == 1
    assert he.to_dict()["status"]["hosts"][0]["hostID"] == 1


def test_kind_defaults_and_empty_status() -> None:
    he = HostedEngine.model_validate({"metadata": {"name": "e"}, "spec": BASE})
    assert he.kind == "HostedEngine"
    assert he.status == HostedEngineStatus()
    assert he.status.state == EngineState.PENDING


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"sparesCount": -1}, "spec.sparesCount", "greater than or equal to 0"),
        ({"sparesCount": 65}, "spec.sparesCount", "less than or equal to 64"),
        ({"vm__cpu": 0}, "spec.vm.cpu", "greater than or equal to 1"),
        ({"vm__memory": "512Mi"}, "spec.vm.memory", "must be at least 1Gi"),
        ({"vm__memory": "lots"}, "spec.vm.memory", "invalid quantity"),
        ({"vm__network__fqdn": "bad_name!"}, "spec.vm.network.fqdn", "pattern"),
        ({"vm__network__macAddress": "00:16:3e:zz:00:01"}, "spec.vm.network.macAddress", "pattern"),
        ({"vm__network__dnsServers": ["1.1.1.1"] * 4}, "spec.vm.network.dnsServers", "at most 3"),
        ({"vm__network__dnsServers": ["1.1.1.300"]}, "spec.vm.network.dnsServers[0]", "pattern"),
        ({"maintenance__mode": "local"}, "spec.maintenance.mode", "'none' or 'global'"),
        ({"health__restartGrace": "3h"}, "spec.health.restartGrace", "at most 2h"),
        ({"health__failureThreshold": 0}, "spec.health.failureThreshold", "greater than"),
        ({"failover__silenceThreshold": "1s"}, "spec.failover.silenceThreshold", "at least 2s"),
        ({"vm__cloudInit__rootSshAccess": "maybe"}, "spec.vm.cloudInit.rootSshAccess", "'yes'"),
        ({"vm__cloudInit__etcHosts": ["engine"]}, "spec.vm.cloudInit.etcHosts", "etcHosts[0]"),
        ({"vm__cloudInit__etcHosts": ["x y"]}, "spec.vm.cloudInit.etcHosts", "not an IP"),
        ({"vm__cloudInit__extraUserData": {"a": 1}}, "spec.vm.cloudInit.extraUserData", "string"),
        (
            {"notifications": {"stateTransition": "up|("}},
            "spec.notifications.stateTransition",
            "regular",
        ),
        ({"notifications": {"destinationEmails": ["nobody"]}}, "spec.notifications", "pattern"),
        ({"notifications": {"smtpPort": 0}}, "spec.notifications.smtpPort", "greater than"),
        ({"upgradePolicy": {"mode": "Sometimes"}}, "spec.upgradePolicy.mode", "Automatic"),
        ({"runing": False}, "spec.runing", "Extra inputs"),
    ],
)
def test_bad_input_names_the_field(changes: dict[str, Any], field: str, message: str) -> None:
    errors = model_errors(HostedEngine, spec(**changes))
    assert errors, "expected a validation error"
    assert any(e.startswith(field) and message in e for e in errors), errors


# --- cross-field rules: the model and the CRD's CEL say the same ----------------------------------


def test_static_network_needs_address_prefix_and_gateway() -> None:
    bad = spec(vm__network__bootProtocol="static", vm__network__address="10.0.0.5")
    model, cel = both(HostedEngine, bad)
    assert any("requires prefix, gateway" in m for m in model)
    assert cel == ["spec.vm.network: a static address requires address, prefix and gateway"]


def test_static_network_complete_is_valid() -> None:
    good = spec(
        vm__network__bootProtocol="static",
        vm__network__address="10.0.0.5",
        vm__network__prefix=24,
        vm__network__gateway="10.0.0.1",
    )
    assert both(HostedEngine, good) == ([], [])


def test_static_address_must_lie_in_the_gateways_subnet() -> None:
    bad = spec(
        vm__network__bootProtocol="static",
        vm__network__address="10.0.1.5",
        vm__network__prefix=24,
        vm__network__gateway="10.0.0.1",
    )
    errors = model_errors(HostedEngine, bad)
    assert errors == [
        "spec.vm.network: gateway 10.0.0.1 is not in the subnet 10.0.1.0/24 of address 10.0.1.5/24"
    ]


def test_address_without_static_is_refused() -> None:
    model, cel = both(HostedEngine, spec(vm__network__address="10.0.0.5"))
    assert model and cel
    assert "only used with bootProtocol static" in model[0]


@pytest.mark.parametrize(
    "image",
    [
        {},
        {"containerDisk": {"image": "a"}, "pvc": {"claimName": "disk"}},
        {"version": "4.5"},
    ],
)
def test_image_needs_exactly_one_source(image: dict[str, Any]) -> None:
    model, cel = both(HostedEngine, spec(vm__image=image))
    assert any("image source: set exactly one of containerDisk, url, pvc" in m for m in model)
    assert cel == ["spec.vm.image: image source: set exactly one of containerDisk, url, pvc"]


@pytest.mark.parametrize(
    "image",
    [
        {"url": {"url": "https://images.example.com/engine.qcow2"}},
        {"pvc": {"claimName": "engine-golden"}, "version": "4.5.6"},
    ],
)
def test_each_image_source_is_valid(image: dict[str, Any]) -> None:
    assert both(HostedEngine, spec(vm__image=image)) == ([], [])


def test_health_timeout_must_not_exceed_interval() -> None:
    model, cel = both(HostedEngine, spec(health={"interval": "5s", "timeout": "6s"}))
    assert model == ["spec.health: timeout 6s must not exceed interval 5s"]
    assert cel == ["spec.health: timeout must not exceed interval"]
    assert both(HostedEngine, spec(health={"interval": "20s", "timeout": "20s"})) == ([], [])


def test_start_backoff_must_be_ordered() -> None:
    bad = spec(failover={"startRetries": {"initialBackoff": "10m", "maxBackoff": "1m"}})
    model, cel = both(HostedEngine, bad)
    assert model == ["spec.failover.startRetries: initialBackoff must not exceed maxBackoff"]
    assert cel == ["spec.failover.startRetries: initialBackoff must not exceed maxBackoff"]


def test_duration_bounds_are_enforced_by_cel_too() -> None:
    model, cel = both(HostedEngine, spec(failover={"silenceThreshold": "1s"}))
    assert model and cel == ["spec.failover.silenceThreshold: must be at least 2s"]
    # The engine's memory bound is the model's only (no quantity CEL on every HostedEngine).
    model, cel = both(HostedEngine, spec(vm__memory="512Mi"))
    assert model == ["spec.vm.memory: quantity 512Mi is too small: must be at least 1Gi"]
    assert cel == []


def test_random_mac_is_in_ovirts_range_and_reproducible() -> None:
    mac = random_mac(random.Random(7))
    assert mac.startswith("00:16:3e:") and len(mac) == 17
    assert mac == random_mac(random.Random(7))
    HostedEngineSpec.model_validate(spec(vm__network__macAddress=mac))


def test_status_bounds() -> None:
    with pytest.raises(ValidationError, match="score"):
        HostedEngineStatus.model_validate({"hosts": [{"host": "h", "score": 3401}]})
    with pytest.raises(ValidationError, match="state"):
        HostedEngineStatus.model_validate({"state": "Sleeping"})
