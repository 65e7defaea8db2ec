"""Extension points for the simulators: LocalClient, admission hooks, aggregated API groups,
pod logs, fault injection and the injectable clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hosted_engine.clock import ManualClock
from hosted_engine.lab.apiserver import (
    AdmissionRequest,
    ApiError,
    ApiRequest,
    ApiResponse,
    FaultRule,
    LabApiServer,
)
from lab_api import Api

PODS = "/api/v1/namespaces/default/pods"


async def test_local_client_crud_and_errors(api: Api) -> None:
    """The LocalClient goes through the same code path: 201-created objects with metadata,
    selectors, patches of each type, status patches, delete, and errors as ApiError."""
    c = api.client
    created = await c.create("", "v1", "configmaps", {"metadata": {"name": "a",
                                                                   "labels": {"x": "1"}}},
                             "default")
    assert created["metadata"]["uid"]
    with pytest.raises(ApiError) as exc:
        await c.create("", "v1", "configmaps", {"metadata": {"name": "a"}}, "default")
    assert exc.value.code == 409 and exc.value.reason == "AlreadyExists"
    listed = await c.list("", "v1", "configmaps", "default", label_selector="x=1")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["a"]
    await c.patch("", "v1", "configmaps", "a", {"data": {"m": "1"}}, "default")
    await c.patch("", "v1", "configmaps", "a", [{"op": "add", "path": "/data/j",
                                                 "value": "2"}], "default", "json")
    await c.patch("", "v1", "configmaps", "a", {"data": {"s": "3"}}, "default", "strategic")
    got = await c.get("", "v1", "configmaps", "a", "default")
    assert got["data"] == {"m": "1", "j": "2", "s": "3"}
    got["data"] = {"r": "4"}
    replaced = await c.replace("", "v1", "configmaps", "a", got, "default")
    assert replaced["data"] == {"r": "4"}
    node = await c.create("", "v1", "nodes", {"metadata": {"name": "n1"}})
    node = await c.patch_status("", "v1", "nodes", "n1", {"status": {"conditions": [
        {"type": "Ready", "status": "True"}]}})
    assert node["status"]["conditions"][0]["status"] == "True"
    await c.delete("", "v1", "configmaps", "a", "default")
    with pytest.raises(ApiError) as exc:
        await c.get("", "v1", "configmaps", "a", "default")
    assert exc.value.code == 404


async def test_local_client_results_are_private_copies(api: Api) -> None:
    """Changing a returned object does not change the stored one."""
    obj = await api.client.create("", "v1", "configmaps", {"metadata": {"name": "a"},
                                                           "data": {"k": "v"}}, "default")
    obj["data"]["k"] = "changed"
    again = await api.client.get("", "v1", "configmaps", "a", "default")
    assert again["data"] == {"k": "v"}


async def test_mutating_and_validating_admission(api: Api) -> None:
    """Mutating hooks change the object before validating hooks see it; a validating hook
    denies with its ApiError (admission-controllers: "What are they?")."""
    seen: list[str] = []

    def mutate(req: AdmissionRequest) -> None:
        assert req.object is not None
        req.object["metadata"].setdefault("labels", {})["mutated"] = "yes"

    async def validate(req: AdmissionRequest) -> None:
        assert req.object is not None
        seen.append(req.object["metadata"]["labels"]["mutated"])
        if req.name == "forbidden":
            raise ApiError(403, "denied by hook", "Forbidden")

    api.server.register_admission("mutating", "", "configmaps", "", "CREATE", mutate)
    api.server.register_admission("validating", "", "configmaps", "", "*", validate)
    out = await api.cm("ok")
    assert out["metadata"]["labels"]["mutated"] == "yes" and seen == ["yes"]
    resp = await api.req("POST", "/api/v1/namespaces/default/configmaps",
                         {"metadata": {"name": "forbidden"}})
    assert resp.status == 403 and resp.body["message"] == "denied by hook"


async def test_eviction_admission_hook_answers_429(api: Api) -> None:
    """A hook on pods/eviction can refuse an eviction with 429 (as KubeVirt's webhook does for
    live-migratable VMs) and the pod stays."""
    async def virt_launcher(req: AdmissionRequest) -> None:
        raise ApiError(429, "Eviction triggered evacuation of VMI", "TooManyRequests")

    api.server.register_admission("validating", "", "pods", "eviction", "CREATE", virt_launcher)
    await api.ok("POST", PODS, {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "i"}]}})
    resp = await api.req("POST", f"{PODS}/p/eviction", {"metadata": {"name": "p"}})
    assert resp.status == 429 and "evacuation" in resp.body["message"]
    assert (await api.req("GET", f"{PODS}/p")).status == 200


async def test_delete_admission_hook(api: Api) -> None:
    """Hooks for DELETE see the old object and can refuse the deletion."""
    async def keep(req: AdmissionRequest) -> None:
        assert req.old_object is not None and req.object is None
        raise ApiError(422, "protected", "Invalid")

    api.server.register_admission("validating", "", "configmaps", "", "DELETE", keep)
    await api.cm("a")
    assert (await api.req("DELETE", "/api/v1/namespaces/default/configmaps/a")).status == 422


async def test_aggregated_api_group(api: Api) -> None:
    """An aggregated group/version is listed in discovery and its requests reach the
    registered handler (apiserver-aggregation: "Aggregation layer")."""
    calls: list[tuple[str, list[str]]] = []

    async def handler(req: ApiRequest, parts: list[str]) -> ApiResponse:
        calls.append((req.method, parts))
        return ApiResponse(202, {"kind": "Status", "status": "Success"})

    api.server.register_aggregated(
        "subresources.kubevirt.io", "v1",
        [{"name": "virtualmachines/start", "namespaced": True, "kind": "VirtualMachine",
          "verbs": ["update"]}], handler)
    groups = await api.ok("GET", "/apis")
    assert "subresources.kubevirt.io" in {g["name"] for g in groups["groups"]}
    res = await api.ok("GET", "/apis/subresources.kubevirt.io/v1")
    assert res["resources"][0]["name"] == "virtualmachines/start"
    resp = await api.req("PUT", "/apis/subresources.kubevirt.io/v1/namespaces/default/"
                                "virtualmachines/vm1/start", {})
    assert resp.status == 202
    assert calls == [("PUT", ["namespaces", "default", "virtualmachines", "vm1", "start"])]


async def test_pod_logs_from_provider(api: Api) -> None:
    """/pods/NAME/log serves what the provider returns, honouring container and tailLines
    (kubectl logs; core/v1 PodLogOptions)."""
    def provider(ns: str, name: str, container: str, q: Any) -> str:
        return f"{ns}/{name}/{container} line1\nline2\nline3\n"

    api.server.register_log_provider(provider)
    await api.ok("POST", PODS, {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "i"}]}})
    resp = await api.req("GET", f"{PODS}/p/log")
    assert resp.status == 200 and resp.body.startswith(b"default/p/c line1")
    resp = await api.req("GET", f"{PODS}/p/log", query={"tailLines": "1"})
    assert resp.body == b"line3\n"
    resp = await api.req("GET", f"{PODS}/p/log", query={"container": "other"})
    assert resp.status == 400


async def test_pod_logs_follow_streams(api: Api) -> None:
    """With follow the provider's async iterator is streamed (PodLogOptions.follow)."""
    async def lines() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"{i}\n".encode()

    api.server.register_log_provider(lambda ns, name, c, q: lines())
    await api.ok("POST", PODS, {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "i"}]}})
    resp = await api.req("GET", f"{PODS}/p/log", query={"follow": "true"})
    assert resp.chunks is not None
    assert [c async for c in resp.chunks] == [b"0\n", b"1\n", b"2\n"]


async def test_fault_injection_status_and_count(api: Api) -> None:
    """A fault rule answers matching requests with its status, only ``count`` times, and
    leaves other requests alone."""
    await api.cm("a")
    api.server.add_fault(FaultRule(verb="get", resource="configmaps", name="a", status=500,
                                   count=2, local=True))
    path = "/api/v1/namespaces/default/configmaps/a"
    assert [(await api.req("GET", path)).status for _ in range(3)] == [500, 500, 200]
    api.server.add_fault(FaultRule(verb="patch", status=409, reason="Conflict", local=True))
    resp = await api.req("PATCH", path, {"data": {}}, ctype="application/merge-patch+json")
    assert resp.status == 409 and resp.body["reason"] == "Conflict"
    assert (await api.req("GET", "/api/v1/namespaces/default/configmaps")).status == 200


async def test_fault_rate_zero_never_fires(api: Api) -> None:
    """A rule with rate 0 never fires; faults are off for the LocalClient unless local=True."""
    await api.cm("a")
    api.server.add_fault(FaultRule(verb="get", status=500, rate=0.0, local=True))
    api.server.add_fault(FaultRule(verb="get", status=503))
    assert (await api.req("GET", "/api/v1/namespaces/default/configmaps/a")).status == 200


async def test_fault_drops_watches(api: Api) -> None:
    """A drop_watch rule ends open watch streams of the matching resource."""
    stream = api.client.watch("", "v1", "configmaps", "default")

    async def consume() -> list[Any]:
        return [e async for e in stream]

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.01)
    api.server.add_fault(FaultRule(resource="configmaps", drop_watch=True, count=0))
    assert await asyncio.wait_for(task, 5) == []


async def test_injectable_clock() -> None:
    """Server timestamps come from the injected clock."""
    clock = ManualClock(datetime(2030, 5, 1, 12, 0, tzinfo=UTC))
    server = LabApiServer(tls_enabled=False, clock=clock)
    await server.start()
    try:
        obj = await server.client.create("", "v1", "configmaps", {"metadata": {"name": "a"}},
                                         "default")
        assert obj["metadata"]["creationTimestamp"] == "2030-05-01T12:00:00Z"
        clock.advance(60)
        await server.client.patch("", "v1", "configmaps", "a",
                                  {"metadata": {"finalizers": ["x"]}}, "default")
        gone = await server.client.delete("", "v1", "configmaps", "a", "default")
        assert gone["metadata"]["deletionTimestamp"] == "2030-05-01T12:01:00Z"
    finally:
        await server.stop()
