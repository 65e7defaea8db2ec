"""The base Kubernetes adapter, over real HTTP against a small in-memory API server.

The server below keeps objects by URL path and implements just the API semantics the adapter
relies on: 201/409 on create, 404 on get, JSON merge patch (and only with its content type),
the status subresource, paginated lists and metav1.Status error bodies.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes.client
import pytest
from hosted_engine import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from hosted_engine.adapters import kube

HOSTEDENGINES = kube.hostedengine_resource("hostedengines", namespaced=True)
HOSTS = kube.hostedengine_resource("hosts", namespaced=False)
SERVICES = kube.Resource("", "v1", "services", namespaced=True)


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class FakeApi(BaseHTTPRequestHandler):
    objects: dict[str, dict[str, Any]]
    requests: list[tuple[str, str, str]]
    page_size = 2

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._send(
            code,
            {"kind": "Status", "status": "Failure", "reason": reason, "message": message,
             "code": code},
        )

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def _record(self) -> str:
        path = urlsplit(self.path).path
        self.requests.append((self.command, path, self.headers.get("Content-Type", "")))
        return path

    @staticmethod
    def _is_collection(path: str) -> bool:
        # /api/v1/[namespaces/NS/]PLURAL or /apis/G/V/[namespaces/NS/]PLURAL
        parts = path.strip("/").split("/")
        return len(parts) - (3 if parts[0] == "apis" else 2) in (1, 3)

    @staticmethod
    def _in_collection(obj_path: str, path: str) -> bool:
        parent = obj_path.rsplit("/", 1)[0]
        if parent == path:
            return True
        # A cluster-wide list of a namespaced kind: .../PLURAL holds .../namespaces/NS/PLURAL/x.
        base, _, plural = path.rpartition("/")
        rest = parent.removeprefix(base + "/namespaces/")
        return rest != parent and rest.count("/") == 1 and rest.endswith("/" + plural)

    def do_GET(self) -> None:
        path = self._record()
        if path in self.objects:
            return self._send(200, self.objects[path])
        if not self._is_collection(path):
            return self._status(404, "NotFound", f"{path} not found")
        items = [o for p, o in sorted(self.objects.items()) if self._in_collection(p, path)]
        start = int((parse_qs(urlsplit(self.path).query).get("continue") or ["0"])[0])
        page = items[start:start + self.page_size]
        more = start + self.page_size < len(items)
        meta = {"continue": str(start + self.page_size)} if more else {}
        return self._send(200, {"kind": "List", "items": page, "metadata": meta})

    def do_POST(self) -> None:
        path = self._record()
        body = self._body()
        name = body["metadata"]["name"]
        key = f"{path}/{name}"
        if key in self.objects:
            return self._status(409, "AlreadyExists", f"{name} already exists")
        body["metadata"]["uid"] = f"uid-{len(self.objects)}"
        body["metadata"]["resourceVersion"] = "1"
        self.objects[key] = body
        return self._send(201, body)

    def do_PATCH(self) -> None:
        path = self._record()
        if self.headers.get("Content-Type") != "application/merge-patch+json":
            return self._status(415, "UnsupportedMediaType", "merge patch only")
        status_only = path.endswith("/status")
        key = path.removesuffix("/status")
        if key not in self.objects:
            return self._status(404, "NotFound", f"{key} not found")
        patch = self._body()
        current = self.objects[key]
        if status_only:
            patch = {"status": patch.get("status")}
        elif "status" in patch:
            patch = {k: v for k, v in patch.items() if k != "status"}
        self.objects[key] = merge(current, patch)
        return self._send(200, self.objects[key])

    def do_DELETE(self) -> None:
        path = self._record()
        if self.objects.pop(path, None) is None:
            return self._status(404, "NotFound", f"{path} not found")
        return self._send(200, {"kind": "Status", "status": "Success"})


@pytest.fixture
def api() -> Iterator[tuple[kube.Kube, type[FakeApi]]]:
    handler = type("Api", (FakeApi,), {"objects": {}, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    cfg = kubernetes.client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
    client = kube.Kube(kubernetes.client.ApiClient(cfg))
    try:
        yield client, handler
    finally:
        client.close()
        server.shutdown()
        server.server_close()


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


# ---- over HTTP ---------------------------------------------------------------------------


def test_get_missing_raises_not_found_with_the_api_message(api: Any) -> None:
    client, _ = api
    with pytest.raises(kube.NotFound) as exc:
        client.get(HOSTEDENGINES, "nope", "he")
    assert exc.value.status == 404
    assert "not found" in str(exc.value)
    assert client.find(HOSTEDENGINES, "nope", "he") is None


def test_create_or_get_creates_once_with_owner_and_label(api: Any) -> None:
    client, server = api
    owner, created = client.create_or_get(HOSTEDENGINES, engine())
    assert created
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "engine", "namespace": "he"}, "spec": {"ports": []}}
    first, created_first = client.create_or_get(SERVICES, service, owner=owner)
    again, created_again = client.create_or_get(SERVICES, service, owner=owner)
    assert (created_first, created_again) == (True, False)
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    stored = server.objects["/api/v1/namespaces/he/services/engine"]
    assert stored["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY_VALUE
    assert stored["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]


def test_patch_status_writes_only_status_with_a_merge_patch(api: Any) -> None:
    client, server = api
    client.create(HOSTEDENGINES, engine())
    client.patch_status(HOSTEDENGINES, "engine", {"conditions": [{"type": "Ready"}]}, "he")
    client.patch_status(HOSTEDENGINES, "engine", {"host": "node-a"}, "he")
    result = client.get(HOSTEDENGINES, "engine", "he")
    assert result["status"] == {"conditions": [{"type": "Ready"}], "host": "node-a"}
    assert result["spec"] == {"hosts": ["node-a"]}
    method, path, ctype = server.requests[-2]
    assert (method, ctype) == ("PATCH", "application/merge-patch+json")
    assert path.endswith("/hostedengines/engine/status")
    client.patch_status(HOSTEDENGINES, "engine", {"host": None}, "he")
    assert "host" not in client.get(HOSTEDENGINES, "engine", "he")["status"]


def test_patch_metadata(api: Any) -> None:
    client, _ = api
    client.create(HOSTEDENGINES, engine())
    patched = client.patch(HOSTEDENGINES, "engine", {"metadata": {"labels": {"a": "b"}}}, "he")
    assert patched["metadata"]["labels"] == {"a": "b"}


def test_list_follows_continue_tokens(api: Any) -> None:
    client, _ = api
    assert client.list(HOSTS) == []
    for i in range(5):
        client.create(HOSTS, {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
                              "metadata": {"name": f"node-{i}"}})
    names = [h["metadata"]["name"] for h in client.list(HOSTS)]
    assert names == [f"node-{i}" for i in range(5)]


def test_list_across_and_within_namespaces(api: Any) -> None:
    client, _ = api
    client.create(HOSTEDENGINES, engine("a", "one"))
    client.create(HOSTEDENGINES, engine("b", "two"))
    client.create(HOSTEDENGINES, engine("c", "two"))
    assert [e["metadata"]["name"] for e in client.list(HOSTEDENGINES)] == ["a", "b", "c"]
    assert [e["metadata"]["name"] for e in client.list(HOSTEDENGINES, "two")] == ["b", "c"]


def test_delete_reports_whether_it_existed(api: Any) -> None:
    client, _ = api
    client.create(HOSTEDENGINES, engine())
    assert client.delete(HOSTEDENGINES, "engine", "he") is True
    assert client.delete(HOSTEDENGINES, "engine", "he") is False


def test_conflict_on_plain_create(api: Any) -> None:
    client, _ = api
    client.create(HOSTEDENGINES, engine())
    with pytest.raises(kube.Conflict) as exc:
        client.create(HOSTEDENGINES, engine())
    assert exc.value.status == 409


def test_post_event(api: Any) -> None:
    client, server = api
    owner = client.create(HOSTEDENGINES, engine())
    event = client.post_event(owner, reason="EngineStarted", message="on node-a")
    assert event["involvedObject"]["uid"] == owner["metadata"]["uid"]
    assert any(p.startswith("/api/v1/namespaces/he/events/") for p in server.objects)


def test_read_secret_decodes_and_hides_the_value(api: Any) -> None:
    client, _ = api
    client.create(kube.SECRETS, {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bmc", "namespace": "he"},
        "data": {"password": base64.b64encode(b"s3cr3t").decode(), "bad": "***"},
    })
    value = client.read_secret("he", "bmc", "password")
    assert value.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(value) and "s3cr3t" not in str(value)
    with pytest.raises(kube.NotFound, match="has no key 'user'"):
        client.read_secret("he", "bmc", "user")
    with pytest.raises(kube.Invalid, match="not base64") as exc:
        client.read_secret("he", "bmc", "bad")
    assert "***" not in str(exc.value)
