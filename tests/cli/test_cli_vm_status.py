"""vm-status rendering without a cluster: the text layout against a golden file, the JSON keys,
and the per-host engine status as oVirt reports it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hosted_engine.cli.engine import render_vm_status, status_json

GOLDEN = Path(__file__).parent / "golden"


def he_object(*, global_maintenance: bool = True) -> dict[str, Any]:
    """A HostedEngine as the operator writes it: up on node-2, node-3 stale, node-1 short of
    memory, in global maintenance until a fixed time."""
    return {
        "apiVersion": "hostedengine.io/v1alpha1",
        "kind": "HostedEngine",
        "metadata": {"name": "engine", "namespace": "engine"},
        "spec": {
            "running": True,
            "vm": {"network": {"fqdn": "engine.lab.example"}},
            "maintenance": {"mode": "global" if global_maintenance else "none"},
        },
        "status": {
            "state": "GlobalMaintenance" if global_maintenance else "EngineUp",
            "host": "node-2",
            "engine": {"vm": "up", "health": "good", "detail": "Up"},
            "vm": {"version": "4.5"},
            "spares": {"required": 1, "available": 1, "hosts": ["node-1"]},
            "hosts": [
                {"host": "node-1", "hostId": 1, "nodeName": "node-1", "score": 3000,
                 "state": "EngineDown", "upToDate": True, "lastSeen": "2026-01-31T10:00:01Z",
                 "ready": True, "hasRoom": False, "penalties": ["not enough free memory"]},
                {"host": "node-2", "hostId": 2, "nodeName": "node-2", "score": 3400,
                 "state": "EngineUp", "upToDate": True, "lastSeen": "2026-01-31T10:00:02Z",
                 "ready": True, "engineRunning": True, "hasRoom": True},
                {"host": "node-3", "hostId": 3, "nodeName": "node-3", "score": 0,
                 "state": "HostLost", "upToDate": False, "lastSeen": "2026-01-31T09:58:00Z",
                 "ready": False, "localMaintenance": True},
            ],
            "maintenance": (
                {"mode": "global", "since": "2026-01-31T09:00:00Z",
                 "until": "2026-01-31T12:00:00Z"}
                if global_maintenance else {"mode": "none"}
            ),
            "conditions": [{"type": "Available", "status": "True"}],
            "failovers": 2,
        },
    }


def test_text_layout_matches_the_golden_file() -> None:
    expected = (GOLDEN / "vm_status.txt").read_text()
    assert render_vm_status(he_object()) == expected


def test_text_without_global_maintenance_has_no_banner() -> None:
    text = render_vm_status(he_object(global_maintenance=False))
    assert "GLOBAL MAINTENANCE" not in text
    assert "--== Host node-2 (id: 2) status ==--" in text


def test_json_has_ovirts_keys_per_host_id() -> None:
    data = json.loads(json.dumps(status_json(he_object())))
    assert set(data) == {"1", "2", "3", "global_maintenance", "engine"}
    assert data["global_maintenance"] is True
    assert data["2"]["engine-status"] == {
        "vm": "up", "health": "good", "detail": "Up", "reason": None}
    assert data["1"]["engine-status"]["reason"] == "vm not running on this host"
    assert data["3"]["engine-status"] == "unknown stale-data"
    assert data["3"]["live-data"] is False and data["3"]["maintenance"] is True
    assert data["3"]["stopped"] is True
    assert data["1"]["score"] == 3000 and data["1"]["has-room"] is False
    assert data["engine"]["state"] == "GlobalMaintenance"
    assert data["engine"]["maintenance"]["until"] == "2026-01-31T12:00:00Z"
    assert data["engine"]["conditions"] == {"Available": "True"}


def test_a_fresh_object_without_status_renders() -> None:
    obj = {"metadata": {"name": "e", "namespace": "n"}, "spec": {}}
    text = render_vm_status(obj)
    assert "Engine state                       : Pending" in text
    assert "No hosts in the engine's host table yet." in text
    assert status_json(obj)["global_maintenance"] is False
