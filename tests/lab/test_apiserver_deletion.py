"""Deletion: finalizers, deletecollection, garbage collection, namespace deletion.
https://kubernetes.io/docs/concepts/overview/working-with-objects/finalizers/
https://kubernetes.io/docs/concepts/architecture/garbage-collection/
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from lab_api import Api

CM = "/api/v1/namespaces/default/configmaps"
MERGE = "application/merge-patch+json"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def _gone(api: Api, path: str) -> bool:
    return (await api.req("GET", path)).status == 404


def _owner(obj: dict[str, Any], block: bool = False) -> dict[str, Any]:
    ref = {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
           "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"]}
    if block:
        ref["blockOwnerDeletion"] = True
    return ref


async def test_delete_without_finalizers_removes_at_once(api: Api) -> None:
    """An object without finalizers is removed by DELETE (api-concepts: "Deletion")."""
    await api.cm("a")
    resp = await api.req("DELETE", f"{CM}/a")
    assert resp.status == 200 and resp.body["status"] == "Success"
    assert await _gone(api, f"{CM}/a")
    assert (await api.req("DELETE", f"{CM}/a")).status == 404


async def test_finalizer_keeps_object_with_deletion_timestamp(api: Api) -> None:
    """With finalizers DELETE only sets deletionTimestamp; the object goes when the last
    finalizer is removed ("Finalizers": How finalizers work)."""
    await api.cm("f", finalizers=["example.io/x"])
    resp = await api.req("DELETE", f"{CM}/f")
    assert resp.status == 200 and resp.body["metadata"]["deletionTimestamp"]
    obj = await api.ok("GET", f"{CM}/f")
    assert obj["metadata"]["deletionTimestamp"]
    await api.ok("PATCH", f"{CM}/f", {"metadata": {"finalizers": None}}, ctype=MERGE)
    assert await _gone(api, f"{CM}/f")


async def test_no_new_finalizers_while_deleting(api: Api) -> None:
    """No finalizer can be added to an object being deleted (422) ("Finalizers")."""
    await api.cm("f", finalizers=["a"])
    await api.ok("DELETE", f"{CM}/f")
    resp = await api.req("PATCH", f"{CM}/f", {"metadata": {"finalizers": ["a", "b"]}},
                         ctype=MERGE)
    assert resp.status == 422 and "no new finalizers" in resp.body["message"]


async def test_delete_preconditions(api: Api) -> None:
    """DeleteOptions preconditions on uid/resourceVersion answer 409 when they do not match
    (api-concepts: "Deletion", preconditions)."""
    await api.cm("p")
    resp = await api.req("DELETE", f"{CM}/p", {"preconditions": {"uid": "nope"}})
    assert resp.status == 409
    resp = await api.req("DELETE", f"{CM}/p", {"preconditions": {"resourceVersion": "1"}})
    assert resp.status == 409
    assert (await api.req("GET", f"{CM}/p")).status == 200


async def test_delete_collection_with_selector(api: Api) -> None:
    """DELETE on a collection deletes the objects matching the selector
    (api-concepts: "deletecollection")."""
    await api.cm("a", labels={"x": "1"})
    await api.cm("b", labels={"x": "1"})
    await api.cm("c")
    body = await api.ok("DELETE", CM, query={"labelSelector": "x=1"})
    assert {o["metadata"]["name"] for o in body["items"]} == {"a", "b"}
    names = [o["metadata"]["name"] for o in (await api.ok("GET", CM))["items"]]
    assert names == ["c"]


async def test_background_cascading_deletion(api: Api) -> None:
    """Deleting an owner deletes its dependents in the background
    ("Garbage collection": Background cascading deletion)."""
    owner = await api.cm("owner")
    await api.cm("dep", ownerReferences=[_owner(owner)])
    await api.ok("DELETE", f"{CM}/owner")
    await eventually(lambda: _gone(api, f"{CM}/dep"))


async def test_dependent_with_another_live_owner_stays(api: Api) -> None:
    """A dependent that still has a live owner is not collected ("Garbage collection":
    Owners and dependents)."""
    a, b = await api.cm("a"), await api.cm("b")
    await api.cm("dep", ownerReferences=[_owner(a), _owner(b)])
    await api.ok("DELETE", f"{CM}/a")
    await asyncio.sleep(0.05)
    assert (await api.req("GET", f"{CM}/dep")).status == 200


async def test_foreground_cascading_deletion(api: Api) -> None:
    """Foreground: the owner gets the foregroundDeletion finalizer and stays until its
    blocking dependents are gone ("Garbage collection": Foreground cascading deletion)."""
    owner = await api.cm("owner")
    await api.cm("dep", ownerReferences=[_owner(owner, block=True)], finalizers=["hold"])
    resp = await api.req("DELETE", f"{CM}/owner", {"propagationPolicy": "Foreground"})
    assert "foregroundDeletion" in resp.body["metadata"]["finalizers"]

    async def dep_deleting() -> bool:
        dep = (await api.req("GET", f"{CM}/dep")).body
        return bool(dep["metadata"].get("deletionTimestamp"))
    await eventually(dep_deleting)
    assert (await api.req("GET", f"{CM}/owner")).status == 200
    await api.ok("PATCH", f"{CM}/dep", {"metadata": {"finalizers": None}}, ctype=MERGE)
    await eventually(lambda: _gone(api, f"{CM}/owner"))


async def test_orphan_deletion(api: Api) -> None:
    """Orphan: dependents stay and lose their ownerReference ("Garbage collection":
    Orphaned dependents)."""
    owner = await api.cm("owner")
    await api.cm("dep", ownerReferences=[_owner(owner)])
    await api.ok("DELETE", f"{CM}/owner", {"propagationPolicy": "Orphan"})
    await eventually(lambda: _gone(api, f"{CM}/owner"))
    dep = await api.ok("GET", f"{CM}/dep")
    assert "ownerReferences" not in dep["metadata"]


async def test_namespace_deletion_removes_contents(api: Api) -> None:
    """Deleting a namespace marks it Terminating, refuses new content (403), deletes its
    objects and then the namespace (namespaces: "Deleting a namespace")."""
    await api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "tmp"}})
    await api.cm("a", ns="tmp", finalizers=["hold"])
    await api.cm("b", ns="tmp")
    ns = await api.ok("DELETE", "/api/v1/namespaces/tmp")
    assert ns["status"]["phase"] == "Terminating"
    resp = await api.req("POST", "/api/v1/namespaces/tmp/configmaps", {"metadata": {"name": "c"}})
    assert resp.status == 403 and resp.body["reason"] == "Forbidden"
    await eventually(lambda: _gone(api, "/api/v1/namespaces/tmp/configmaps/b"))
    assert (await api.req("GET", "/api/v1/namespaces/tmp")).status == 200
    await api.ok("PATCH", "/api/v1/namespaces/tmp/configmaps/a",
                 {"metadata": {"finalizers": None}}, ctype=MERGE)
    await eventually(lambda: _gone(api, "/api/v1/namespaces/tmp"))


async def test_pod_delete_returns_object(api: Api) -> None:
    """Deleting a pod answers with the pod object (api-concepts: "Deletion")."""
    await api.ok("POST", "/api/v1/namespaces/default/pods", {
        "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    resp = await api.req("DELETE", "/api/v1/namespaces/default/pods/p")
    assert resp.status == 200 and resp.body["kind"] == "Pod"


async def test_graceful_pod_deletion_waits_for_kubelet() -> None:
    """With pod_graceful_deletion (the kubelet simulator runs), a pod bound to a node stays
    Terminating with deletionGracePeriodSeconds until its kubelet deletes it with
    gracePeriodSeconds=0; unbound pods go at once (pod-lifecycle: "Termination of Pods")."""
    from hosted_engine.lab.apiserver import LabApiServer, ServerConfig

    server = LabApiServer(tls_enabled=False, config=ServerConfig(pod_graceful_deletion=True))
    await server.start()
    try:
        c = server.client
        spec = {"containers": [{"name": "c", "image": "i"}]}
        await c.create("", "v1", "pods", {"metadata": {"name": "bound"},
                                          "spec": {**spec, "nodeName": "n1"}}, "default")
        await c.create("", "v1", "pods", {"metadata": {"name": "free"}, "spec": spec},
                       "default")
        out = await c.delete("", "v1", "pods", "bound", "default")
        assert out["metadata"]["deletionGracePeriodSeconds"] == 30
        await c.delete("", "v1", "pods", "free", "default")
        names = [p["metadata"]["name"] for p in (await c.list("", "v1", "pods"))["items"]]
        assert names == ["bound"]
        await c.delete("", "v1", "pods", "bound", "default", grace_period_seconds=0)
        assert (await c.list("", "v1", "pods"))["items"] == []
    finally:
        await server.stop()
