"""The kopf settings of handlers/startup.py, checked through kopf's own storages and probes."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import kopf
import pytest
from hosted_engine import FINALIZER
from hosted_engine.handlers import startup


def fresh() -> kopf.OperatorSettings:
    return startup.configure_settings(kopf.OperatorSettings())


def body(annotations: dict[str, str] | None = None) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "hostedengine.io/v1alpha1",
            "kind": "HostedEngine",
            "metadata": {"name": "engine", "namespace": "he", "annotations": annotations or {}},
            "spec": {"hosts": ["a"]},
        }
    )


def test_finalizer_is_the_project_one() -> None:
    assert startup.FINALIZER == FINALIZER == "hostedengine.io/finalizer"
    assert fresh().persistence.finalizer == FINALIZER


def test_progress_is_stored_in_hostedengine_annotations() -> None:
    settings = fresh()
    patch = kopf.Patch()
    settings.persistence.progress_storage.store(
        key=kopf.HandlerId("reconcile"),
        record={"started": "2026-01-01T00:00:00", "retries": 1},
        body=body(),
        patch=patch,
    )
    written = patch["metadata"]["annotations"]
    assert written, "nothing stored"
    assert all(key.startswith("hostedengine.io/") for key in written)
    # And kopf reads it back from there.
    fetched = settings.persistence.progress_storage.fetch(
        key=kopf.HandlerId("reconcile"), body=body({k: v for k, v in written.items() if v})
    )
    assert fetched is not None and fetched["retries"] == 1


def test_diffbase_is_stored_in_a_hostedengine_annotation() -> None:
    settings = fresh()
    patch = kopf.Patch()
    storage = settings.persistence.diffbase_storage
    essence = storage.build(body=body())
    storage.store(body=body(), patch=patch, essence=essence)
    written = patch["metadata"]["annotations"]
    assert "hostedengine.io/last-handled-configuration" in written
    assert all(key.startswith("hostedengine.io/") for key in written)
    stored = body(dict(patch["metadata"]["annotations"]))
    assert storage.fetch(body=stored) == essence


def test_events_and_peering_and_limits() -> None:
    settings = fresh()
    assert settings.posting.enabled
    assert not settings.posting.loggers  # log lines do not become Events by themselves
    assert settings.posting.reporting_component == "hosted-engine-operator"
    assert settings.peering.stealth
    assert settings.peering.lifetime == startup.PEERING_LIFETIME
    assert settings.queueing.worker_limit == startup.QUEUE_WORKER_LIMIT
    assert settings.execution.max_workers == startup.WORKER_LIMIT
    assert settings.watching.server_timeout is not None
    assert settings.watching.client_timeout is not None
    assert settings.watching.client_timeout > settings.watching.server_timeout


def test_reporting_instance_is_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_ID", "hosted-engine-operator-7c9d-abcde")
    assert fresh().posting.reporting_instance == "hosted-engine-operator-7c9d-abcde"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_liveness_endpoint_answers_with_our_probe() -> None:
    """kopf's own health reporter, on the path the manifests probe, answers 200 with our probe."""
    from kopf._cogs.structs import ephemera  # test-only: kopf's probe server internals
    from kopf._core.engines import indexing, probing
    from kopf._core.intents import registries

    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(
        probing.health_reporter(
            f"http://127.0.0.1:{port}/healthz",
            memo=ephemera.AnyMemo(kopf.Memo()),
            indices=indexing.OperatorIndexers().indices,
            registry=registries.get_default_registry(),
            settings=fresh(),
            ready_flag=ready,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), timeout=10)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as rsp,
        ):
            assert rsp.status == 200
            payload: dict[str, Any] = await rsp.json()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "now" in payload  # the probe handler registered by handlers/startup.py
