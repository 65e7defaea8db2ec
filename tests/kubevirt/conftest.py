"""Fixtures: a whole lab with fast timings and the KubeVirt simulator, per test, in its loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kvlab import KubeVirtLab, LabFactory, start_lab


@pytest.fixture
async def make_kvlab() -> AsyncIterator[LabFactory]:
    """``await make_kvlab(hosts=2, vm_boot_time=0.5, extra={...})``: a lab with these timings."""
    started: list[KubeVirtLab] = []

    async def make(hosts: int = 3, **overrides: Any) -> KubeVirtLab:
        kv = await start_lab(hosts, **overrides)
        started.append(kv)
        return kv

    try:
        yield make
    finally:
        for kv in started:
            await _stop(kv)


async def _stop(kv: KubeVirtLab) -> None:
    """Stop the lab. Workaround: on Python 3.11 ``asyncio.wait_for`` (used by the API server's
    watch streams) can swallow a cancellation that races with a queued event, and an informer
    then never stops; cancelling until the task is done avoids a hung teardown."""
    for informer in list(kv.lab._informers.values()):
        task = informer._task
        for _ in range(1000):
            if task is None or task.done():
                break
            task.cancel()
            await asyncio.sleep(0.001)
    await kv.lab.stop()


@pytest.fixture
async def kvlab(make_kvlab: LabFactory) -> KubeVirtLab:
    return await make_kvlab()
