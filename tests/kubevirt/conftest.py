"""Fixtures: a whole lab with fast timings and the KubeVirt simulator, per test, in its loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from kvlab import KubeVirtLab, start_lab

LabFactory = Callable[..., Awaitable[KubeVirtLab]]


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
            await kv.lab.stop()


@pytest.fixture
async def kvlab(make_kvlab: LabFactory) -> KubeVirtLab:
    return await make_kvlab()
