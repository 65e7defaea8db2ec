"""The base Kubernetes adapter's pure helpers (its API calls: tests/integration)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hosted_engine import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from hosted_engine.adapters import kube

HOSTEDENGINES = kube.hostedengine_resource("hostedengines", namespaced=True)
HOSTS = kube.hostedengine_resource("hosts", namespaced=False)


def engine(name: str = "engine", namespace: str = "he") -> dict[str, Any]:
    return {
        "apiVersion": "hostedengine.io/v1alpha1",
        "kind": "HostedEngine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hosts": ["node-a"]},
    }


# ---- pure helpers ------------------------------------------------------------------------


def test_paths_for_core_and_custom_kinds() -> None:
    assert HOSTEDENGINES.path("he", "e", "status") == (
        "/apis/hostedengine.io/v1alpha1/namespaces/he/hostedengines/e/status"
    )
    assert HOSTEDENGINES.path() == "/apis/hostedengine.io/v1alpha1/hostedengines"
    assert HOSTS.path(None, "node-a") == "/apis/hostedengine.io/v1alpha1/hosts/node-a"
    assert kube.SECRETS.path("he", "bmc") == "/api/v1/namespaces/he/secrets/bmc"
    with pytest.raises(ValueError, match="namespace is required"):
        HOSTEDENGINES.path(None, "e")


def test_adopt_labels_and_owns_without_touching_the_input() -> None:
    owner = {**engine(), "metadata": {**engine()["metadata"], "uid": "u-1"}}
    child = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "he"}}
    adopted = kube.adopt(child, owner)
    assert "labels" not in child["metadata"]
    assert adopted["metadata"]["labels"] == {MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    assert adopted["metadata"]["ownerReferences"] == [
        {"apiVersion": "hostedengine.io/v1alpha1", "kind": "HostedEngine", "name": "engine",
         "uid": "u-1", "controller": True, "blockOwnerDeletion": True}
    ]
    # Adopting twice keeps one reference.
    assert len(kube.adopt(adopted, owner)["metadata"]["ownerReferences"]) == 1


def test_namespaced_owner_cannot_own_across_namespaces() -> None:
    owner = {**engine(), "metadata": {**engine()["metadata"], "uid": "u-1"}}
    with pytest.raises(ValueError, match="cannot own"):
        kube.adopt({"metadata": {"name": "x", "namespace": "other"}}, owner)
    with pytest.raises(ValueError, match=r"lacks metadata\.uid"):
        kube.owner_reference(engine())


def test_event_body_for_cluster_scoped_objects_lands_in_default() -> None:
    host = {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
            "metadata": {"name": "node-a", "uid": "h-1"}}
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = kube.event_body(host, reason="FenceStarted", message="x" * 5000, type="Warning",
                            now=now)
    assert event["metadata"]["namespace"] == "default"
    assert event["metadata"]["name"].startswith("node-a.")
    assert event["involvedObject"] == {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
                                       "name": "node-a", "uid": "h-1"}
    assert len(event["message"]) == kube.EVENT_MESSAGE_LIMIT
    assert event["firstTimestamp"] == "2026-01-02T03:04:05Z"
    with pytest.raises(ValueError, match="CamelCase"):
        kube.event_body(host, reason="fence started", message="m", now=now)
