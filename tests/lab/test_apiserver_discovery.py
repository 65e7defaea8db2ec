"""Discovery and OpenAPI conformance."""

from __future__ import annotations

from lab_api import Api

CONCEPTS = "https://kubernetes.io/docs/concepts/overview/kubernetes-api/"


async def test_version(api: Api) -> None:
    """/version reports major, minor and gitVersion (kubernetes-api: "API versioning")."""
    body = await api.ok("GET", "/version")
    assert body["major"] == "1" and body["gitVersion"].startswith("v1.")


async def test_core_api_versions(api: Api) -> None:
    """/api lists the legacy core group's versions ["v1"] as APIVersions
    (kubernetes-api: "Discovery API", unaggregated discovery)."""
    body = await api.ok("GET", "/api")
    assert body["kind"] == "APIVersions" and body["versions"] == ["v1"]


async def test_core_resource_list_has_verbs_shortnames_namespaced(api: Api) -> None:
    """/api/v1 is an APIResourceList with name, namespaced, kind, verbs and shortNames, and
    subresources as name/sub entries (kubernetes-api: "Discovery API")."""
    body = await api.ok("GET", "/api/v1")
    assert body["kind"] == "APIResourceList" and body["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in body["resources"]}
    assert by_name["pods"]["namespaced"] is True and "watch" in by_name["pods"]["verbs"]
    assert by_name["pods"]["shortNames"] == ["po"] and "all" in by_name["pods"]["categories"]
    assert by_name["nodes"]["namespaced"] is False
    assert "pods/status" in by_name and "pods/eviction" in by_name and "pods/log" in by_name
    assert by_name["pods/eviction"]["group"] == "policy"


async def test_group_list_and_group(api: Api) -> None:
    """/apis lists APIGroups with preferredVersion; /apis/GROUP returns one APIGroup
    (kubernetes-api: "Discovery API")."""
    body = await api.ok("GET", "/apis")
    names = {g["name"]: g for g in body["groups"]}
    for group in ("apps", "batch", "coordination.k8s.io", "events.k8s.io", "policy",
                  "storage.k8s.io", "apiextensions.k8s.io", "rbac.authorization.k8s.io"):
        assert group in names
    assert names["apps"]["preferredVersion"]["groupVersion"] == "apps/v1"
    group = await api.ok("GET", "/apis/coordination.k8s.io")
    assert group["kind"] == "APIGroup" and group["versions"][0]["version"] == "v1"


async def test_unknown_group_is_404(api: Api) -> None:
    """An unknown group or resource answers 404 NotFound as a Status
    (api-conventions: "HTTP Status codes")."""
    resp = await api.req("GET", "/apis/nope.example.io/v1/things")
    assert resp.status == 404 and resp.body["kind"] == "Status"
    resp = await api.req("GET", "/api/v1/nothings")
    assert resp.status == 404 and resp.body["reason"] == "NotFound"


async def test_crd_appears_in_and_leaves_discovery(api: Api) -> None:
    """A CRD's group/version is listed in discovery once created and removed once deleted
    (custom-resource-definitions: "Create a CustomResourceDefinition", "Delete a CRD")."""
    await api.widgets()
    res = await api.ok("GET", "/apis/example.io/v1")
    widget = next(r for r in res["resources"] if r["name"] == "widgets")
    assert widget["kind"] == "Widget" and widget["shortNames"] == ["wd"]
    assert {r["name"] for r in res["resources"]} >= {"widgets/status", "widgets/scale"}
    await api.ok("DELETE",
                 "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.io")
    assert (await api.req("GET", "/apis/example.io/v1")).status == 404
    groups = await api.ok("GET", "/apis")
    assert "example.io" not in {g["name"] for g in groups["groups"]}


async def test_openapi_v3_index_and_group_version(api: Api) -> None:
    """/openapi/v3 lists one document per group/version with a serverRelativeURL, and each
    document's PATCH operations carry x-kubernetes-group-version-kind and the fieldValidation
    parameter kubectl checks (kubernetes-api: "OpenAPI V3")."""
    root = await api.ok("GET", "/openapi/v3")
    url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
    doc = await api.ok("GET", url.split("?")[0])
    op = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert op["x-kubernetes-group-version-kind"]["kind"] == "Deployment"
    assert "fieldValidation" in {p["name"] for p in op["parameters"]}


async def test_preferred_version_follows_version_priority(api: Api) -> None:
    """The preferred version of a group is the highest by Kubernetes version priority
    (GA > beta > alpha) whatever the order of the CRD's versions (custom-resource-definition-
    versioning: "Version priority")."""
    import copy

    from lab_api import WIDGET_CRD

    crd = copy.deepcopy(WIDGET_CRD)
    base = crd["spec"]["versions"][0]
    crd["spec"]["versions"] = [dict(copy.deepcopy(base), name=n, storage=n == "v1")
                               for n in ("v1alpha1", "v1", "v2beta1")]
    await api.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    group = await api.ok("GET", "/apis/example.io")
    assert group["preferredVersion"]["version"] == "v1"
    assert [v["version"] for v in group["versions"]] == ["v1", "v2beta1", "v1alpha1"]
