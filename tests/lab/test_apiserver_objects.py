"""Object metadata, errors as Status, create/read/update conformance."""

from __future__ import annotations

import re

from lab_api import Api

CONV = "https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md"


async def test_create_answers_201_with_server_metadata(api: Api) -> None:
    """POST creates with 201 Created and sets uid, resourceVersion, creationTimestamp and
    generation 1 (api-conventions: "Metadata"; api-concepts: "Resource versions")."""
    resp = await api.req("POST", "/api/v1/namespaces/default/configmaps",
                         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})
    assert resp.status == 201
    meta = resp.body["metadata"]
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert meta["resourceVersion"].isdigit() and meta["generation"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])


async def test_namespace_injected_from_url(api: Api) -> None:
    """An object created without metadata.namespace gets the namespace of the URL
    (namespaces: "Working with namespaces")."""
    body = await api.ok("POST", "/api/v1/namespaces/kube-system/configmaps",
                        {"metadata": {"name": "x"}})
    assert body["metadata"]["namespace"] == "kube-system"


async def test_namespace_mismatch_is_400(api: Api) -> None:
    """A body namespace that differs from the URL's is rejected with 400 BadRequest
    (api-conventions: "Metadata", namespace)."""
    resp = await api.req("POST", "/api/v1/namespaces/default/configmaps",
                         {"metadata": {"name": "x", "namespace": "kube-system"}})
    assert resp.status == 400 and resp.body["reason"] == "BadRequest"


async def test_create_in_missing_namespace_is_404(api: Api) -> None:
    """Creating in a namespace that does not exist answers 404 for the namespace
    (namespaces: "Working with namespaces"; NamespaceLifecycle admission)."""
    resp = await api.req("POST", "/api/v1/namespaces/nope/configmaps",
                         {"metadata": {"name": "x"}})
    assert resp.status == 404 and 'namespaces "nope" not found' in resp.body["message"]


async def test_already_exists_is_409(api: Api) -> None:
    """Creating a name twice answers 409 AlreadyExists with details
    (api-conventions: "HTTP Status codes", 409)."""
    await api.cm("dup")
    resp = await api.req("POST", "/api/v1/namespaces/default/configmaps",
                         {"metadata": {"name": "dup"}})
    assert resp.status == 409 and resp.body["reason"] == "AlreadyExists"
    assert resp.body["details"] == {"name": "dup", "kind": "configmaps"}
    assert resp.body["message"] == 'configmaps "dup" already exists'


async def test_not_found_is_404_status(api: Api) -> None:
    """GET of a missing object answers 404 with a Status of reason NotFound
    (api-conventions: "Response Status Kind")."""
    resp = await api.req("GET", "/apis/apps/v1/namespaces/default/deployments/nope")
    assert resp.status == 404
    assert resp.body == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                         "status": "Failure", "message": 'deployments.apps "nope" not found',
                         "reason": "NotFound", "details": {"name": "nope", "group": "apps",
                                                           "kind": "deployments"},
                         "code": 404}


async def test_generate_name(api: Api) -> None:
    """generateName gets a random 5-character suffix when name is empty
    (api-concepts: "Generated values"; api-conventions: "Idempotency")."""
    body = await api.ok("POST", "/api/v1/namespaces/default/events",
                        {"metadata": {"generateName": "ev-"}, "reason": "X",
                         "involvedObject": {"kind": "Pod", "name": "p"}})
    assert re.fullmatch(r"ev-[a-z0-9]{5}", body["metadata"]["name"])


async def test_name_required_and_validated(api: Api) -> None:
    """A missing name is 422 (Required value); a name that is not a DNS subdomain is 422
    Invalid (working-with-objects/names: "DNS Subdomain Names")."""
    resp = await api.req("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {}})
    assert resp.status == 422 and "Required value" in resp.body["message"]
    resp = await api.req("POST", "/api/v1/namespaces/default/configmaps",
                         {"metadata": {"name": "Bad_Name"}})
    assert resp.status == 422 and resp.body["reason"] == "Invalid"
    assert resp.body["details"]["causes"][0]["field"] == "metadata.name"


async def test_kind_mismatch_is_400(api: Api) -> None:
    """A body whose kind or apiVersion does not match the URL is 400 BadRequest
    (api-conventions: "Types (Kinds)")."""
    resp = await api.req("POST", "/api/v1/namespaces/default/configmaps",
                         {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})
    assert resp.status == 400


async def test_resource_version_is_one_monotonic_counter(api: Api) -> None:
    """resourceVersions of all kinds come from one increasing counter; the list RV is the
    newest (api-concepts: "Resource versions")."""
    a = await api.cm("a")
    s = await api.ok("POST", "/api/v1/namespaces/default/secrets", {"metadata": {"name": "s"}})
    b = await api.cm("b")
    rvs = [int(x["metadata"]["resourceVersion"]) for x in (a, s, b)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    listed = await api.ok("GET", "/api/v1/namespaces/default/configmaps")
    assert int(listed["metadata"]["resourceVersion"]) >= rvs[-1]


async def test_put_with_stale_resource_version_is_409(api: Api) -> None:
    """PUT with an outdated resourceVersion answers 409 Conflict (api-conventions:
    "Concurrency Control and Consistency")."""
    obj = await api.cm("c")
    obj["data"] = {"k": "2"}
    await api.ok("PUT", "/api/v1/namespaces/default/configmaps/c", obj)
    obj["data"] = {"k": "3"}
    resp = await api.req("PUT", "/api/v1/namespaces/default/configmaps/c", obj)
    assert resp.status == 409 and resp.body["reason"] == "Conflict"
    assert "the object has been modified" in resp.body["message"]


async def test_put_of_custom_resource_requires_resource_version(api: Api) -> None:
    """An update of a custom resource without metadata.resourceVersion is 422
    (custom-resource-definitions: "Optimistic concurrency"; api-conventions)."""
    await api.widgets()
    obj = await api.widget()
    del obj["metadata"]["resourceVersion"]
    resp = await api.req("PUT", "/apis/example.io/v1/namespaces/default/widgets/w1", obj)
    assert resp.status == 422 and "resourceVersion" in resp.body["message"]


async def test_put_of_missing_object_is_404(api: Api) -> None:
    """PUT of an object that does not exist is 404 NotFound (api-concepts: "Updates")."""
    resp = await api.req("PUT", "/api/v1/namespaces/default/configmaps/zz",
                         {"metadata": {"name": "zz"}})
    assert resp.status == 404


async def test_generation_bumps_on_spec_not_metadata(api: Api) -> None:
    """metadata.generation increases on spec changes only, not on label or status changes
    (api-conventions: "Metadata", generation)."""
    await api.widgets()
    await api.widget()
    path = "/apis/example.io/v1/namespaces/default/widgets/w1"
    ctype = "application/merge-patch+json"
    o = await api.ok("PATCH", path, {"metadata": {"labels": {"a": "b"}}}, ctype=ctype)
    assert o["metadata"]["generation"] == 1
    o = await api.ok("PATCH", path + "/status", {"status": {"phase": "Up"}}, ctype=ctype)
    assert o["metadata"]["generation"] == 1
    o = await api.ok("PATCH", path, {"spec": {"replicas": 2}}, ctype=ctype)
    assert o["metadata"]["generation"] == 2


async def test_noop_update_keeps_resource_version(api: Api) -> None:
    """An update that changes nothing does not write: same resourceVersion, no watch event
    (api-concepts: "Resource versions")."""
    obj = await api.cm("n")
    again = await api.ok("PATCH", "/api/v1/namespaces/default/configmaps/n",
                         {"data": {"k": "v"}}, ctype="application/merge-patch+json")
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


async def test_immutable_metadata_is_kept(api: Api) -> None:
    """uid and creationTimestamp cannot be changed by an update (api-conventions: "Metadata")."""
    obj = await api.cm("m")
    patched = await api.ok("PATCH", "/api/v1/namespaces/default/configmaps/m",
                           {"metadata": {"creationTimestamp": "2000-01-01T00:00:00Z"}},
                           ctype="application/merge-patch+json")
    assert patched["metadata"]["creationTimestamp"] == obj["metadata"]["creationTimestamp"]
    assert patched["metadata"]["uid"] == obj["metadata"]["uid"]


async def test_status_subresource_isolation(api: Api) -> None:
    """With the status subresource the main endpoint ignores status and /status ignores
    everything but status (custom-resource-definitions: "Status subresource")."""
    await api.widgets()
    body = {"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "s"},
            "spec": {"color": "red"}, "status": {"phase": "Fake"}}
    created = await api.ok("POST", "/apis/example.io/v1/namespaces/default/widgets", body)
    assert "status" not in created
    path = "/apis/example.io/v1/namespaces/default/widgets/s"
    ctype = "application/merge-patch+json"
    o = await api.ok("PATCH", path, {"status": {"phase": "Ignored"}}, ctype=ctype)
    assert "status" not in o
    o = await api.ok("PATCH", path + "/status", {"spec": {"replicas": 7},
                                                 "status": {"phase": "Up"}}, ctype=ctype)
    assert o["status"] == {"phase": "Up"} and o["spec"]["replicas"] == 1


async def test_dry_run_does_not_persist(api: Api) -> None:
    """dryRun=All runs the request through validation and defaulting but stores nothing
    (api-concepts: "Dry-run")."""
    await api.widgets()
    resp = await api.req("POST", "/apis/example.io/v1/namespaces/default/widgets",
                         {"metadata": {"name": "dry"}, "spec": {"color": "red"}},
                         query={"dryRun": "All"})
    assert resp.status == 201 and resp.body["spec"]["replicas"] == 1
    assert (await api.req("GET", "/apis/example.io/v1/namespaces/default/widgets/dry")
            ).status == 404
    bad = await api.req("POST", "/apis/example.io/v1/namespaces/default/widgets",
                        {"metadata": {"name": "dry"}, "spec": {"color": "pink"}},
                        query={"dryRun": "All"})
    assert bad.status == 422


async def test_cluster_scoped_object_has_no_namespace(api: Api) -> None:
    """Cluster-scoped objects (nodes) carry no namespace and are served without one
    (namespaces: "Not all objects are in a namespace")."""
    node = await api.ok("POST", "/api/v1/nodes", {"metadata": {"name": "n1", "namespace": "x"}})
    assert "namespace" not in node["metadata"]
    assert (await api.req("GET", "/api/v1/namespaces/default/nodes/n1")).status == 404


async def test_seeded_namespaces_are_active(api: Api) -> None:
    """A new cluster has default, kube-system, kube-public and kube-node-lease, Active and
    labelled kubernetes.io/metadata.name (namespaces: "Initial namespaces")."""
    body = await api.ok("GET", "/api/v1/namespaces")
    names = {n["metadata"]["name"]: n for n in body["items"]}
    assert set(names) >= {"default", "kube-system", "kube-public", "kube-node-lease"}
    assert names["default"]["status"]["phase"] == "Active"
    assert names["default"]["metadata"]["labels"]["kubernetes.io/metadata.name"] == "default"


async def test_list_has_kind_and_api_version(api: Api) -> None:
    """A list is a KIND+List with apiVersion and metadata.resourceVersion
    (api-concepts: "Collections")."""
    body = await api.ok("GET", "/apis/coordination.k8s.io/v1/leases")
    assert body["kind"] == "LeaseList" and body["apiVersion"] == "coordination.k8s.io/v1"
    assert body["metadata"]["resourceVersion"].isdigit() and body["items"] == []


async def test_pod_create_sets_pending_status(api: Api) -> None:
    """A created Pod starts in phase Pending whatever status the client sent
    (pod-lifecycle: "Pod phase")."""
    pod = await api.ok("POST", "/api/v1/namespaces/default/pods",
                       {"metadata": {"name": "p"}, "spec": {"containers": [
                           {"name": "c", "image": "i"}]}, "status": {"phase": "Running"}})
    assert pod["status"]["phase"] == "Pending"
