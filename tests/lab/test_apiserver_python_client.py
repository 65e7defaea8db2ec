"""The official ``kubernetes`` client against the lab over HTTPS with the bearer token."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from hosted_engine.lab.testing import LabThread
from kubernetes import client, dynamic, watch
from kubernetes.client.rest import ApiException
from lab_api import WIDGET_CRD


def test_request_without_token_is_401(lab: LabThread) -> None:
    """Requests without the bearer token are refused with 401 Unauthorized as a Status
    (authentication: "Putting a Bearer Token in a Request")."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{lab.url}/api/v1/namespaces", context=ctx, timeout=10)
    assert exc.value.code == 401
    assert b'"reason":"Unauthorized"' in exc.value.read()


def test_tls_verification_with_generated_ca(lab: LabThread) -> None:
    """The server certificate is signed by the CA written into the kubeconfig, so clients
    verify TLS (kubeconfig: certificate-authority-data)."""
    api = lab.api_client()
    assert api.configuration.verify_ssl is True
    version = client.VersionApi(api).get_code()
    assert version.major == "1"
    api.close()


def test_sync_crud_and_conflict(k8s_api: Any) -> None:
    """Typed client create/read/replace/patch/delete, 409 on stale replace."""
    v1 = client.CoreV1Api(k8s_api)
    cm = v1.create_namespaced_config_map("default", {"metadata": {"name": "a"},
                                                     "data": {"k": "v"}})
    assert cm.metadata.uid and cm.metadata.resource_version
    cm.data = {"k": "w"}
    updated = v1.replace_namespaced_config_map("a", "default", cm)
    assert updated.data == {"k": "w"}
    cm.data = {"k": "x"}
    with pytest.raises(ApiException) as exc:
        v1.replace_namespaced_config_map("a", "default", cm)
    assert exc.value.status == 409
    v1.patch_namespaced_config_map("a", "default", {"data": {"p": "1"}})
    assert v1.read_namespaced_config_map("a", "default").data == {"k": "w", "p": "1"}
    v1.delete_namespaced_config_map("a", "default")
    with pytest.raises(ApiException) as exc:
        v1.read_namespaced_config_map("a", "default")
    assert exc.value.status == 404


def test_custom_objects_api(k8s_api: Any) -> None:
    """CustomObjectsApi: create returns the body (201), status patch, list."""
    ext = client.ApiextensionsV1Api(k8s_api)
    ext.create_custom_resource_definition(WIDGET_CRD)
    co = client.CustomObjectsApi(k8s_api)
    obj = co.create_namespaced_custom_object("example.io", "v1", "default", "widgets", {
        "apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"color": "red"}})
    assert obj["spec"]["replicas"] == 1
    co.patch_namespaced_custom_object_status("example.io", "v1", "default", "widgets", "w",
                                             {"status": {"phase": "Up"}})
    listed = co.list_namespaced_custom_object("example.io", "v1", "default", "widgets")
    assert listed["items"][0]["status"] == {"phase": "Up"}


def test_watch_stream(k8s_api: Any, lab: LabThread) -> None:
    """watch.Watch streams events over HTTPS (api-concepts: "Efficient detection of
    changes")."""
    v1 = client.CoreV1Api(k8s_api)
    rv = v1.list_namespaced_config_map("default").metadata.resource_version
    events: list[tuple[str, str]] = []
    w = watch.Watch()

    def run() -> None:
        for ev in w.stream(v1.list_namespaced_config_map, "default", resource_version=rv,
                           timeout_seconds=10):
            events.append((ev["type"], ev["object"].metadata.name))
            if len(events) == 3:
                w.stop()

    t = threading.Thread(target=run)
    t.start()
    writer = client.CoreV1Api(lab.api_client())
    writer.create_namespaced_config_map("default", {"metadata": {"name": "w"}})
    writer.patch_namespaced_config_map("w", "default", {"data": {"a": "b"}})
    writer.delete_namespaced_config_map("w", "default")
    t.join(15)
    assert events == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


def test_dynamic_client(k8s_api: Any) -> None:
    """DynamicClient discovers resources and works with lists that carry kind/apiVersion."""
    dyn = dynamic.DynamicClient(k8s_api)
    leases = dyn.resources.get(api_version="coordination.k8s.io/v1", kind="Lease")
    leases.create(body={"metadata": {"name": "l1"}, "spec": {"holderIdentity": "me"}},
                  namespace="kube-node-lease")
    listed = leases.get(namespace="kube-node-lease")
    assert listed.kind == "LeaseList"
    assert [i.metadata.name for i in listed.items] == ["l1"]
    assert leases.get(name="l1", namespace="kube-node-lease").spec.holderIdentity == "me"


def test_eviction_via_client(k8s_api: Any) -> None:
    """CoreV1Api.create_namespaced_pod_eviction answers 201 and deletes the pod."""
    v1 = client.CoreV1Api(k8s_api)
    v1.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "c", "image": "i"}]}})
    v1.create_namespaced_pod_eviction("p", "default", {
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}})
    assert [p.metadata.name for p in v1.list_namespaced_pod("default").items] == []
