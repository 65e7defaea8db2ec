"""Objects the Host mapping tests build from: a Ready Node and a Host with power management."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ready_node(name: str, since: datetime) -> dict[str, Any]:
    """A Ready Node (ready and last heard from at ``since``) with 64Gi / 16 CPUs."""
    return {"metadata": {"name": name, "labels": {}}, "spec": {},
            "status": {"allocatable": {"memory": "64Gi", "cpu": "16"},
                       "conditions": [{"type": "Ready", "status": "True",
                                       "lastTransitionTime": stamp(since),
                                       "lastHeartbeatTime": stamp(since)}]}}


def host_obj(name: str, annotations: dict[str, str] | None = None,
             **spec: Any) -> dict[str, Any]:
    """A Host of node ``name`` with a Redfish BMC; ``spec``: more spec fields (camelCase)."""
    return {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
            "metadata": {"name": name, "generation": 1, "annotations": annotations or {}},
            "spec": {"nodeName": name, **spec, "powerManagement": {
                "type": "redfish", "address": "10.0.0.1",
                "credentialsSecretRef": {"name": "bmc", "namespace": "ops"}}},
            "status": {}}
