"""A kopf re-list delivers, as DELETED, the objects it no longer has (handlers/kopf_relist.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hosted_engine.handlers import kopf_relist
from kopf._cogs.clients import watching


def obj(name: str, uid: str, rv: str = "1", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": "engine", "uid": uid,
                         "resourceVersion": rv, "labels": labels},
            "status": {"nodeName": "node-1", "phase": "Running"}}


def run(script: list[Any], settings: object) -> list[Any]:
    async def original(**_: Any) -> AsyncIterator[Any]:
        for item in script:
            yield item

    async def collect() -> list[Any]:
        return [item async for item in kopf_relist.continuous_watch(
            settings=settings, resource="vmis", namespace=None, operator_pause_waiter=None)]

    saved = kopf_relist._ORIGINAL
    kopf_relist._ORIGINAL = original
    try:
        return asyncio.run(collect())
    finally:
        kopf_relist._ORIGINAL = saved


@pytest.fixture(autouse=True)
def _fresh() -> None:
    kopf_relist.forget()


def test_objects_missing_from_a_new_listing_are_delivered_as_deleted() -> None:
    settings = object()
    listed = watching.Bookmark.LISTED
    first = run([{"type": None, "object": obj("a", "u-a")},
                 {"type": None, "object": obj("old", "u-old", engine="true")}, listed,
                 {"type": "MODIFIED", "object": obj("old", "u-old", "7", engine="true")},
                 {"type": "ADDED", "object": obj("b", "u-b")},
                 {"type": "DELETED", "object": obj("b", "u-b", "9")}], settings)
    assert [i["type"] if isinstance(i, dict) else i for i in first] == [
        None, None, listed, "MODIFIED", "ADDED", "DELETED"]  # a first listing: nothing added
    # paused, resumed: the listing has "a" and a new "new"; "old" went meanwhile
    again = run([{"type": None, "object": obj("a", "u-a", "8")},
                 {"type": None, "object": obj("new", "u-new", "10")}, listed], settings)
    assert [i["type"] if isinstance(i, dict) else i for i in again] == [
        None, None, "DELETED", listed]
    gone = again[2]["object"]
    assert gone["metadata"] == {"name": "old", "namespace": "engine", "uid": "u-old",
                                "resourceVersion": "7", "labels": {"engine": "true"}}
    assert "status" not in gone  # metadata only: what indexes and deletion handlers read
    # "b" was deleted while watched: not delivered twice; a third listing owes nothing
    third = run([{"type": None, "object": obj("a", "u-a", "8")},
                 {"type": None, "object": obj("new", "u-new", "10")}, listed], settings)
    assert [i for i in third if isinstance(i, dict) and i["type"] == "DELETED"] == []


def test_each_operator_remembers_its_own_objects() -> None:
    listed = watching.Bookmark.LISTED
    run([{"type": None, "object": obj("a", "u-a")}, listed], object())
    other = run([{"type": None, "object": obj("z", "u-z")}, listed], object())
    assert [i for i in other if isinstance(i, dict) and i["type"] == "DELETED"] == []


def test_installed_in_place_of_kopfs_own() -> None:
    assert watching.continuous_watch is kopf_relist.continuous_watch
    assert kopf_relist._compatible()
