"""Patch conformance: JSON merge patch, JSON patch, strategic merge patch, server-side apply,
field validation."""

from __future__ import annotations

from lab_api import Api

MERGE = "application/merge-patch+json"
JSON = "application/json-patch+json"
SMP = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
CM = "/api/v1/namespaces/default/configmaps"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"


def _deployment(name: str = "d") -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [{"name": "a", "image": "a:1",
                                         "env": [{"name": "X", "value": "1"}]},
                                        {"name": "b", "image": "b:1"}]}}}}


async def test_merge_patch_null_deletes_and_objects_merge(api: Api) -> None:
    """RFC 7386: objects merge, null removes a key, lists replace
    (update-api-object-kubectl-patch: "Use a JSON merge patch")."""
    await api.ok("POST", CM, {"metadata": {"name": "m", "labels": {"a": "1", "b": "2"}},
                              "data": {"x": "1", "y": "2"}})
    out = await api.ok("PATCH", f"{CM}/m", {"metadata": {"labels": {"a": None, "c": "3"}},
                                            "data": {"y": None}}, ctype=MERGE)
    assert out["metadata"]["labels"] == {"b": "2", "c": "3"} and out["data"] == {"x": "1"}


async def test_json_patch_ops(api: Api) -> None:
    """RFC 6902 add/replace/remove apply in order (update-api-object-kubectl-patch:
    "Use a JSON patch")."""
    await api.cm("j")
    out = await api.ok("PATCH", f"{CM}/j", [
        {"op": "add", "path": "/data/n", "value": "1"},
        {"op": "replace", "path": "/data/k", "value": "w"},
        {"op": "remove", "path": "/data/n"}], ctype=JSON)
    assert out["data"] == {"k": "w"}


async def test_json_patch_failed_test_op_is_422(api: Api) -> None:
    """A JSON patch whose test operation fails is rejected with 422 and changes nothing;
    kopf relies on this for its resourceVersion-guarded finalizer patches (RFC 6902 §4.6)."""
    obj = await api.cm("t")
    resp = await api.req("PATCH", f"{CM}/t", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "999999"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}], ctype=JSON)
    assert resp.status == 422
    again = await api.ok("GET", f"{CM}/t")
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    ok = await api.req("PATCH", f"{CM}/t", [
        {"op": "test", "path": "/metadata/resourceVersion",
         "value": obj["metadata"]["resourceVersion"]},
        {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}], ctype=JSON)
    assert ok.status == 200 and ok.body["metadata"]["finalizers"] == ["f"]


async def test_merge_patch_with_stale_resource_version_is_409(api: Api) -> None:
    """A patch carrying metadata.resourceVersion is a precondition: stale gives 409
    (api-conventions: "Concurrency Control and Consistency")."""
    await api.cm("p")
    resp = await api.req("PATCH", f"{CM}/p", {"metadata": {"resourceVersion": "1"},
                                              "data": {"k": "x"}}, ctype=MERGE)
    assert resp.status == 409


async def test_patch_of_missing_object_is_404(api: Api) -> None:
    """PATCH of a missing object is 404 (api-concepts: "Patch")."""
    resp = await api.req("PATCH", f"{CM}/none", {"data": {}}, ctype=MERGE)
    assert resp.status == 404


async def test_strategic_merge_patch_merges_containers_by_name(api: Api) -> None:
    """Strategic merge patch merges lists with a patchMergeKey (containers by name, env by
    name) instead of replacing them (update-api-object-kubectl-patch: "Use a strategic merge
    patch")."""
    await api.ok("POST", DEPLOY, _deployment())
    out = await api.ok("PATCH", f"{DEPLOY}/d", {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}]}}}}, ctype=SMP)
    containers = out["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["a", "b"]
    assert containers[0]["image"] == "a:2"
    assert containers[0]["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]


async def test_strategic_merge_patch_directives(api: Api) -> None:
    """$patch: delete removes a list element by key; $patch: replace replaces a map
    (strategic-merge-patch.md: "$patch directive")."""
    await api.ok("POST", DEPLOY, _deployment("e"))
    out = await api.ok("PATCH", f"{DEPLOY}/e", {"spec": {"template": {"spec": {"containers": [
        {"name": "b", "$patch": "delete"}]}}}}, ctype=SMP)
    assert [c["name"] for c in out["spec"]["template"]["spec"]["containers"]] == ["a"]
    out = await api.ok("PATCH", f"{DEPLOY}/e", {"spec": {"selector": {
        "$patch": "replace", "matchLabels": {"app": "e", "tier": "x"}}}}, ctype=SMP)
    assert out["spec"]["selector"] == {"matchLabels": {"app": "e", "tier": "x"}}


async def test_strategic_merge_patch_on_custom_resource_is_415(api: Api) -> None:
    """Custom resources do not support strategic merge patch: 415 UnsupportedMediaType
    (custom-resource-definitions: "Advanced topics", patch types)."""
    await api.widgets()
    await api.widget()
    resp = await api.req("PATCH", "/apis/example.io/v1/namespaces/default/widgets/w1",
                         {"spec": {"replicas": 2}}, ctype=SMP)
    assert resp.status == 415 and resp.body["reason"] == "UnsupportedMediaType"


async def test_server_side_apply_creates_and_updates(api: Api) -> None:
    """Server-side apply creates an absent object (201) and later merges the applied
    configuration, removing fields the manager no longer applies (server-side-apply:
    "Merge strategy")."""
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"},
            "data": {"a": "1", "b": "2"}}
    resp = await api.req("PATCH", f"{CM}/ssa", body, ctype=APPLY,
                         query={"fieldManager": "me"})
    assert resp.status == 201
    await api.ok("PATCH", f"{CM}/ssa", {"data": {"other": "x"}}, ctype=MERGE)
    body["data"] = {"a": "9"}
    out = await api.ok("PATCH", f"{CM}/ssa", body, ctype=APPLY, query={"fieldManager": "me"})
    assert out["data"] == {"a": "9", "other": "x"}


async def test_server_side_apply_requires_field_manager(api: Api) -> None:
    """Apply without fieldManager is 400 (server-side-apply: "Field management")."""
    resp = await api.req("PATCH", f"{CM}/x", {"metadata": {"name": "x"}}, ctype=APPLY)
    assert resp.status == 400


async def test_unknown_patch_type_is_415(api: Api) -> None:
    """An unsupported patch content type is 415 (api-concepts: "Patch")."""
    await api.cm("u")
    resp = await api.req("PATCH", f"{CM}/u", {"data": {}}, ctype="text/plain")
    assert resp.status == 415


async def test_field_validation_strict_rejects_unknown_fields(api: Api) -> None:
    """fieldValidation=Strict rejects unknown fields with 400; the default (Warn) prunes them
    (api-concepts: "Field validation")."""
    await api.widgets()
    body = {"metadata": {"name": "fv"}, "spec": {"color": "red", "bogus": 1}}
    resp = await api.req("POST", "/apis/example.io/v1/namespaces/default/widgets", body,
                         query={"fieldValidation": "Strict"})
    assert resp.status == 400 and 'unknown field "spec.bogus"' in resp.body["message"]
    resp = await api.req("POST", "/apis/example.io/v1/namespaces/default/widgets", body)
    assert resp.status == 201 and "bogus" not in resp.body["spec"]
    assert resp.headers["Warning"] == '299 - "unknown field \\"spec.bogus\\""'


async def test_strategic_merge_patch_merges_conditions_and_replaces_taints(api: Api) -> None:
    """Node status conditions merge by type (patchMergeKey), node taints have no merge key and
    are replaced (core/v1 types: NodeStatus.conditions, NodeSpec.taints)."""
    await api.ok("POST", "/api/v1/nodes", {"metadata": {"name": "n"}, "spec": {"taints": [
        {"key": "a", "effect": "NoSchedule"}]}, "status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]}})
    out = await api.ok("PATCH", "/api/v1/nodes/n/status", {"status": {"conditions": [
        {"type": "Ready", "status": "Unknown"}]}}, ctype=SMP)
    assert [(c["type"], c["status"]) for c in out["status"]["conditions"]] == [
        ("Ready", "Unknown"), ("DiskPressure", "False")]
    out = await api.ok("PATCH", "/api/v1/nodes/n", {"spec": {"taints": [
        {"key": "b", "effect": "NoExecute"}]}}, ctype=SMP)
    assert out["spec"]["taints"] == [{"key": "b", "effect": "NoExecute"}]
