"""Watch conformance (api-concepts: "Efficient detection of changes", "Watch bookmarks")."""

from __future__ import annotations

import asyncio
from typing import Any

from hosted_engine.lab.apiserver import LabApiServer, ServerConfig
from lab_api import Api

CM = "/api/v1/namespaces/default/configmaps"


async def _collect(stream: Any, n: int) -> list[dict[str, Any]]:
    out = []
    async for ev in stream:
        out.append(ev)
        if len(out) == n:
            break
    return out


async def test_watch_without_rv_sends_current_objects_then_changes(api: Api) -> None:
    """A watch without resourceVersion starts with ADDED for every current object, then
    streams ADDED/MODIFIED/DELETED with full objects ("Efficient detection of changes")."""
    await api.cm("a")
    c = api.client
    stream = c.watch("", "v1", "configmaps", "default")
    task = asyncio.ensure_future(_collect(stream, 4))
    await asyncio.sleep(0)
    await api.cm("b")
    await c.patch("", "v1", "configmaps", "b", {"data": {"k": "2"}}, "default")
    await c.delete("", "v1", "configmaps", "b", "default")
    events = await asyncio.wait_for(task, 5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "b"), ("DELETED", "b")]
    assert events[2]["object"]["data"] == {"k": "2"}


async def test_watch_from_resource_version_replays_only_newer(api: Api) -> None:
    """A watch from a list's resourceVersion delivers only later changes, no replay of
    existing objects ("Efficient detection of changes")."""
    await api.cm("a")
    listed = await api.ok("GET", CM)
    await api.cm("b")
    stream = api.client.watch("", "v1", "configmaps", "default",
                              resource_version=listed["metadata"]["resourceVersion"])
    events = await asyncio.wait_for(_collect(stream, 1), 5)
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "b"


async def test_watch_too_old_resource_version_is_410() -> None:
    """A watch from a resourceVersion older than the kept history gets an ERROR event with a
    410 Expired Status ("Efficient detection of changes": 410 Gone)."""
    server = LabApiServer(tls_enabled=False, config=ServerConfig(event_log_size=3))
    await server.start()
    try:
        for i in range(6):
            await server.client.create("", "v1", "configmaps", {"metadata": {"name": f"c{i}"}},
                                       "default")
        events = await asyncio.wait_for(_collect(server.client.watch(
            "", "v1", "configmaps", "default", resource_version="2"), 1), 5)
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
    finally:
        await server.stop()


async def test_watch_label_selector_transitions(api: Api) -> None:
    """With a selector, an object that starts matching arrives as ADDED and one that stops
    matching as DELETED ("Efficient detection of changes"; watch cache semantics)."""
    c = api.client
    await api.cm("a")
    listed = await api.ok("GET", CM)
    stream = c.watch("", "v1", "configmaps", "default", label_selector="app=x",
                     resource_version=listed["metadata"]["resourceVersion"])
    task = asyncio.ensure_future(_collect(stream, 3))
    await asyncio.sleep(0)
    await c.patch("", "v1", "configmaps", "a", {"metadata": {"labels": {"app": "x"}}}, "default")
    await c.patch("", "v1", "configmaps", "a", {"data": {"k": "z"}}, "default")
    await c.patch("", "v1", "configmaps", "a", {"metadata": {"labels": {"app": "y"}}}, "default")
    events = await asyncio.wait_for(task, 5)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


async def test_watch_field_selector_single_object(api: Api) -> None:
    """A watch with fieldSelector metadata.name=X sees only that object (field-selectors)."""
    c = api.client
    stream = c.watch("", "v1", "configmaps", "default", field_selector="metadata.name=b")
    task = asyncio.ensure_future(_collect(stream, 1))
    await asyncio.sleep(0)
    await api.cm("a")
    await api.cm("b")
    events = await asyncio.wait_for(task, 5)
    assert events[0]["object"]["metadata"]["name"] == "b"


async def test_watch_namespace_scoping(api: Api) -> None:
    """A namespaced watch sees only its namespace; an all-namespaces watch sees all
    ("Efficient detection of changes")."""
    c = api.client
    ns_stream = c.watch("", "v1", "configmaps", "kube-public")
    all_stream = c.watch("", "v1", "configmaps")
    t1 = asyncio.ensure_future(_collect(ns_stream, 1))
    t2 = asyncio.ensure_future(_collect(all_stream, 2))
    await asyncio.sleep(0)
    await api.cm("a")
    await api.cm("b", ns="kube-public")
    assert (await asyncio.wait_for(t1, 5))[0]["object"]["metadata"]["name"] == "b"
    assert len(await asyncio.wait_for(t2, 5)) == 2


async def test_watch_timeout_seconds_ends_stream(api: Api) -> None:
    """timeoutSeconds closes the stream (api-concepts: "Efficient detection of changes")."""
    stream = api.client.watch("", "v1", "configmaps", "default", timeout_seconds=0.05)
    events = await asyncio.wait_for(_collect(stream, 100), 5)
    assert events == []


async def test_watch_bookmarks() -> None:
    """allowWatchBookmarks=true sends BOOKMARK events carrying only the current
    resourceVersion ("Watch bookmarks")."""
    server = LabApiServer(tls_enabled=False, config=ServerConfig(bookmark_interval=0.01))
    await server.start()
    try:
        await server.client.create("", "v1", "configmaps", {"metadata": {"name": "a"}},
                                   "default")
        rv = str(server.core.store.rv)
        stream = server.client.watch("", "v1", "configmaps", "default", resource_version=rv,
                                     allow_bookmarks=True)
        events = await asyncio.wait_for(_collect(stream, 1), 5)
        assert events[0]["type"] == "BOOKMARK"
        assert events[0]["object"]["metadata"] == {"resourceVersion": rv}
        assert events[0]["object"]["kind"] == "ConfigMap"
    finally:
        await server.stop()


async def test_many_concurrent_watchers(api: Api) -> None:
    """Many watchers of one resource all receive every event in order
    ("Efficient detection of changes")."""
    streams = [api.client.watch("", "v1", "configmaps", "default") for _ in range(100)]
    tasks = [asyncio.ensure_future(_collect(s, 3)) for s in streams]
    await asyncio.sleep(0.01)
    for name in ("a", "b", "c"):
        await api.cm(name)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert all([e["object"]["metadata"]["name"] for e in r] == ["a", "b", "c"] for r in results)


async def test_watch_event_resource_versions_increase(api: Api) -> None:
    """Watch events carry the object's new resourceVersion, increasing
    (api-concepts: "Resource versions")."""
    stream = api.client.watch("", "v1", "configmaps", "default")
    task = asyncio.ensure_future(_collect(stream, 3))
    await asyncio.sleep(0)
    await api.cm("a")
    await api.client.patch("", "v1", "configmaps", "a", {"data": {"q": "1"}}, "default")
    await api.client.delete("", "v1", "configmaps", "a", "default")
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in await task]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3


async def test_watch_without_timeout_ends_after_min_request_timeout() -> None:
    """A watch without timeoutSeconds is closed by the server after a randomized
    min-request-timeout, and the client re-watches (kube-apiserver --min-request-timeout)."""
    server = LabApiServer(tls_enabled=False, config=ServerConfig(min_request_timeout=0.01))
    await server.start()
    try:
        stream = server.client.watch("", "v1", "configmaps", "default",
                                     resource_version=str(server.core.store.rv))
        assert await asyncio.wait_for(_collect(stream, 10), 5) == []
    finally:
        await server.stop()


async def test_http_watch_client_disconnect_releases_watcher() -> None:
    """A watcher whose HTTP client goes away is released without waiting for an event."""
    import aiohttp

    server = LabApiServer(tls_enabled=False)
    await server.start()
    try:
        bucket = server.core.store.bucket(("", "configmaps"))
        headers = {"Authorization": f"Bearer {server.token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            resp = await session.get(f"{server.url}/api/v1/configmaps",
                                     params={"watch": "true"})
            for _ in range(100):
                if bucket.watchers:
                    break
                await asyncio.sleep(0.01)
            assert len(bucket.watchers) == 1
            resp.close()
        for _ in range(200):
            if not bucket.watchers:
                break
            await asyncio.sleep(0.01)
        assert not bucket.watchers
    finally:
        await server.stop()


async def test_watch_list_send_initial_events(api: Api) -> None:
    """sendInitialEvents=true streams the current objects as ADDED, then a BOOKMARK annotated
    k8s.io/initial-events-end (api-concepts: "Streaming lists")."""
    await api.cm("a")
    await api.cm("b")
    resp = await api.req("GET", CM, query={"watch": "true", "sendInitialEvents": "true",
                                           "allowWatchBookmarks": "true",
                                           "resourceVersionMatch": "NotOlderThan"})
    assert resp.events is not None
    events = await asyncio.wait_for(_collect(resp.events, 3), 5)
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events[:2]] == [
        ("ADDED", "a"), ("ADDED", "b")]
    assert events[2]["type"] == "BOOKMARK"
    assert events[2]["object"]["metadata"]["annotations"] == {
        "k8s.io/initial-events-end": "true"}
