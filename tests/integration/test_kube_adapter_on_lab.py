"""The base Kubernetes adapter against the lab API server: real HTTPS, CRDs with structural
schemas, the status subresource, merge patch, label selectors, Status errors."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hosted_engine import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from hosted_engine.adapters import kube

pytestmark = pytest.mark.lab

HOSTS = kube.hostedengine_resource("hosts", namespaced=False)
CONFIGMAPS = kube.Resource("", "v1", "configmaps", namespaced=True)
NAMESPACES = kube.Resource("", "v1", "namespaces", namespaced=False)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(lab: Any) -> Iterator[kube.Kube]:
    """The adapter on the lab, with the Host CRD installed."""
    subprocess.run(
        [str(Path(sys.executable).parent / "kubectl"), "--kubeconfig", str(lab.kubeconfig_path),
         "apply", "-f", str(ROOT / "crds" / "hosts.hostedengine.io.yaml")],
        check=True, capture_output=True, timeout=60,
    )
    client = kube.Kube(lab.api_client())
    try:
        yield client
    finally:
        client.close()


def host(name: str) -> dict[str, Any]:
    return {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
            "metadata": {"name": name}, "spec": {"nodeName": name}}


def configmap(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "data": {"k": "v"}}


def namespace(client: kube.Kube, name: str) -> None:
    client.create_or_get(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": name}})


# ---- against the lab API server ---------------------------------------------------------


def test_get_missing_raises_not_found_with_the_api_message(api: kube.Kube) -> None:
    with pytest.raises(kube.NotFound) as exc:
        api.get(HOSTS, "nope")
    assert exc.value.status == 404
    assert "nope" in str(exc.value)
    assert api.find(HOSTS, "nope") is None


def test_create_or_get_creates_once_with_owner_and_label(api: kube.Kube) -> None:
    owner, created = api.create_or_get(HOSTS, host("node-a"))
    assert created and owner["metadata"]["uid"]
    namespace(api, "he")
    first, created_first = api.create_or_get(CONFIGMAPS, configmap("c", "he"), owner=owner)
    again, created_again = api.create_or_get(CONFIGMAPS, configmap("c", "he"), owner=owner)
    assert (created_first, created_again) == (True, False)
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    stored = api.get(CONFIGMAPS, "c", "he")
    assert stored["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY_VALUE
    (ref,) = stored["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("Host", owner["metadata"]["uid"], True)


def test_patch_status_writes_only_status(api: kube.Kube) -> None:
    api.create(HOSTS, host("node-a"))
    ready = {"type": "Ready", "status": "Unknown", "reason": "NotImplemented", "message": "",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}
    api.patch_status(HOSTS, "node-a", {"conditions": [ready]})
    api.patch_status(HOSTS, "node-a", {"observedGeneration": 1})
    result = api.get(HOSTS, "node-a")
    assert result["status"]["conditions"] == [ready]
    assert result["status"]["observedGeneration"] == 1
    assert result["spec"]["nodeName"] == "node-a"
    # null deletes a key (merge patch)
    api.patch_status(HOSTS, "node-a", {"observedGeneration": None})
    assert "observedGeneration" not in api.get(HOSTS, "node-a")["status"]


def test_patch_metadata(api: kube.Kube) -> None:
    api.create(HOSTS, host("node-a"))
    patched = api.patch(HOSTS, "node-a", {"metadata": {"labels": {"rack": "r1"}}})
    assert patched["metadata"]["labels"]["rack"] == "r1"


def test_list_cluster_scoped(api: kube.Kube) -> None:
    assert api.list(HOSTS) == []
    for i in range(3):
        api.create(HOSTS, host(f"node-{i}"))
    assert sorted(h["metadata"]["name"] for h in api.list(HOSTS)) == ["node-0", "node-1", "node-2"]


def test_list_across_and_within_namespaces_and_by_label(api: kube.Kube) -> None:
    for ns in ("one", "two"):
        namespace(api, ns)
    api.create(CONFIGMAPS, configmap("a", "one", app="x"))
    api.create(CONFIGMAPS, configmap("b", "two", app="x"))
    api.create(CONFIGMAPS, configmap("c", "two", app="y"))

    def names(items: list[dict[str, Any]]) -> list[str]:
        return sorted(i["metadata"]["name"] for i in items if i["metadata"]["name"] in "abc")

    assert names(api.list(CONFIGMAPS)) == ["a", "b", "c"]
    assert names(api.list(CONFIGMAPS, "two")) == ["b", "c"]
    assert names(api.list(CONFIGMAPS, label_selector="app=x")) == ["a", "b"]


def test_delete_reports_whether_it_existed(api: kube.Kube) -> None:
    api.create(HOSTS, host("node-a"))
    assert api.delete(HOSTS, "node-a") is True
    assert api.find(HOSTS, "node-a") is None
    assert api.delete(HOSTS, "node-a") is False


def test_conflict_on_plain_create(api: kube.Kube) -> None:
    api.create(HOSTS, host("node-a"))
    with pytest.raises(kube.Conflict) as exc:
        api.create(HOSTS, host("node-a"))
    assert exc.value.status == 409


def test_schema_rejection_is_invalid(api: kube.Kube) -> None:
    with pytest.raises(kube.Invalid) as exc:
        api.create(HOSTS, {**host("node-a"), "spec": {}})
    assert exc.value.status == 422
    assert "nodeName" in str(exc.value)


def test_post_event_for_a_cluster_scoped_object(api: kube.Kube) -> None:
    owner = api.create(HOSTS, host("node-a"))
    event = api.post_event(owner, reason="FenceStarted", message="powering off", type="Warning")
    assert event["metadata"]["namespace"] == "default"
    stored = api.get(kube.EVENTS, event["metadata"]["name"], "default")
    assert stored["involvedObject"]["uid"] == owner["metadata"]["uid"]
    assert (stored["type"], stored["reason"]) == ("Warning", "FenceStarted")


def test_read_secret_decodes_and_hides_the_value(api: kube.Kube) -> None:
    namespace(api, "he")
    api.create(kube.SECRETS, {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bmc", "namespace": "he"},
        "data": {"password": base64.b64encode(b"s3cr3t").decode()},
    })
    value = api.read_secret("he", "bmc", "password")
    assert value.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(value) and "s3cr3t" not in str(value)
    with pytest.raises(kube.NotFound, match="has no key 'user'") as exc:
        api.read_secret("he", "bmc", "user")
    assert "s3cr3t" not in str(exc.value)
    with pytest.raises(kube.NotFound):
        api.read_secret("he", "missing", "password")
