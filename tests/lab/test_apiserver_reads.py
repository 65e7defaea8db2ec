"""Reads: label and field selectors, limit/continue, resourceVersion semantics on list."""

from __future__ import annotations

from lab_api import Api

CM = "/api/v1/namespaces/default/configmaps"
LABELS = "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/"


async def _names(api: Api, path: str, **query: str) -> list[str]:
    body = await api.ok("GET", path, query=query)
    return [o["metadata"]["name"] for o in body["items"]]


async def _fixture(api: Api) -> None:
    await api.cm("a", labels={"env": "prod", "tier": "web"})
    await api.cm("b", labels={"env": "dev", "tier": "web"})
    await api.cm("c", labels={"env": "qa"})
    await api.cm("d")


async def test_equality_selectors(api: Api) -> None:
    """=, == and != select by label value ("Label selectors", equality-based)."""
    await _fixture(api)
    assert await _names(api, CM, labelSelector="env=prod") == ["a"]
    assert await _names(api, CM, labelSelector="env==dev,tier=web") == ["b"]
    assert await _names(api, CM, labelSelector="env!=prod") == ["b", "c", "d"]


async def test_set_based_selectors(api: Api) -> None:
    """in, notin, exists and !exists ("Label selectors", set-based)."""
    await _fixture(api)
    assert await _names(api, CM, labelSelector="env in (prod,qa)") == ["a", "c"]
    assert await _names(api, CM, labelSelector="env notin (prod,qa)") == ["b", "d"]
    assert await _names(api, CM, labelSelector="tier") == ["a", "b"]
    assert await _names(api, CM, labelSelector="!tier") == ["c", "d"]


async def test_bad_label_selector_is_400(api: Api) -> None:
    """An unparsable selector is 400 BadRequest ("Label selectors")."""
    resp = await api.req("GET", CM, query={"labelSelector": "env in prod"})
    assert resp.status == 400


async def test_field_selector_name_and_namespace(api: Api) -> None:
    """metadata.name and metadata.namespace are supported field selectors for every
    resource (field-selectors: "Supported fields")."""
    await _fixture(api)
    await api.cm("a", ns="kube-system")
    assert await _names(api, CM, fieldSelector="metadata.name=b") == ["b"]
    assert await _names(api, "/api/v1/configmaps",
                        fieldSelector="metadata.name=a,metadata.namespace!=default") == ["a"]


async def test_field_selector_pod_node_and_phase(api: Api) -> None:
    """Pods support spec.nodeName and status.phase field selectors
    (field-selectors: "Supported fields")."""
    for name, node in (("p1", "n1"), ("p2", "n2")):
        await api.ok("POST", "/api/v1/namespaces/default/pods", {
            "metadata": {"name": name}, "spec": {"nodeName": node, "containers": [
                {"name": "c", "image": "i"}]}})
    await api.ok("PATCH", "/api/v1/namespaces/default/pods/p2/status",
                 {"status": {"phase": "Running"}}, ctype="application/merge-patch+json")
    path = "/api/v1/namespaces/default/pods"
    assert await _names(api, path, fieldSelector="spec.nodeName=n1") == ["p1"]
    assert await _names(api, path, fieldSelector="status.phase=Running") == ["p2"]
    assert await _names(api, path, fieldSelector="status.phase!=Running") == ["p1"]


async def test_field_selector_events_involved_object(api: Api) -> None:
    """Events support involvedObject.* field selectors (field-selectors)."""
    for name, obj in (("e1", "x"), ("e2", "y")):
        await api.ok("POST", "/api/v1/namespaces/default/events", {
            "metadata": {"name": name}, "reason": "R",
            "involvedObject": {"kind": "Pod", "name": obj, "namespace": "default"}})
    assert await _names(api, "/api/v1/namespaces/default/events",
                        fieldSelector="involvedObject.name=y,involvedObject.kind=Pod") == ["e2"]


async def test_unsupported_field_selector_is_400(api: Api) -> None:
    """Field labels a resource does not support are 400 (field-selectors: "Supported
    fields")."""
    resp = await api.req("GET", CM, query={"fieldSelector": "data.k=v"})
    assert resp.status == 400 and "field label not supported" in resp.body["message"]


async def test_limit_and_continue(api: Api) -> None:
    """limit returns a chunk with metadata.continue and remainingItemCount; continue fetches
    the rest (api-concepts: "Retrieving large results sets in chunks")."""
    for i in range(5):
        await api.cm(f"c{i}")
    first = await api.ok("GET", CM, query={"limit": "2"})
    assert [o["metadata"]["name"] for o in first["items"]] == ["c0", "c1"]
    assert first["metadata"]["remainingItemCount"] == 3
    token = first["metadata"]["continue"]
    second = await api.ok("GET", CM, query={"limit": "2", "continue": token})
    assert [o["metadata"]["name"] for o in second["items"]] == ["c2", "c3"]
    third = await api.ok("GET", CM, query={"limit": "2",
                                           "continue": second["metadata"]["continue"]})
    assert [o["metadata"]["name"] for o in third["items"]] == ["c4"]
    assert "continue" not in third["metadata"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


async def test_list_across_namespaces(api: Api) -> None:
    """Listing without a namespace returns objects of all namespaces (api-concepts:
    "Collections")."""
    await api.cm("x")
    await api.cm("y", ns="kube-public")
    body = await api.ok("GET", "/api/v1/configmaps")
    assert {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in body["items"]} == {
        ("default", "x"), ("kube-public", "y")}


async def test_list_resource_version_too_large_is_504(api: Api) -> None:
    """A list at a resourceVersion newer than the server's answers 504 Timeout with
    ResourceVersionTooLarge (api-concepts: "Semantics for get and list")."""
    resp = await api.req("GET", CM, query={"resourceVersion": "99999999"})
    assert resp.status == 504


async def test_list_exact_old_resource_version_is_410(api: Api) -> None:
    """resourceVersionMatch=Exact for a version the server no longer has answers 410 Gone
    (api-concepts: "Semantics for get and list")."""
    await api.cm("a")
    await api.cm("b")
    resp = await api.req("GET", CM, query={"resourceVersion": "2",
                                           "resourceVersionMatch": "Exact"})
    assert resp.status == 410 and resp.body["reason"] == "Expired"


async def test_builtin_table_for_pods(api: Api) -> None:
    """Built-in kinds render tables with their usual columns (api-concepts: "Receiving
    resources as Tables")."""
    await api.ok("POST", "/api/v1/namespaces/default/pods", {
        "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    table = await api.ok("GET", "/api/v1/namespaces/default/pods",
                         accept="application/json;as=Table;v=v1;g=meta.k8s.io")
    cols = [c["name"] for c in table["columnDefinitions"]]
    assert cols[:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert table["rows"][0]["cells"][:3] == ["p", "0/1", "Pending"]
