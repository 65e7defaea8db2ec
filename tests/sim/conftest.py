"""Fixtures for the lab's simulators.

- ``sim_lab``: a :class:`Lab` (3 nodes, fast timings, plain HTTP, no BMCs, no plugins) running in
  the test's own event loop; use ``sim_lab.api`` / ``sim_lab.client`` and ``sim_lab.wait_for``.
- ``sim_lab_factory``: the same with other arguments (``await sim_lab_factory(hosts=2, ...)``).
- ``lab_cluster``: the whole lab (3 nodes, fast timings, HTTPS, Redfish and IPMI BMCs, plugins
  such as KubeVirt) in a background thread: ``lab_cluster.lab``, ``lab_cluster.kubeconfig_path``,
  ``lab_cluster.api_client()`` (the ``kubernetes`` client), ``lab_cluster.call(coro_fn)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from hosted_engine.lab.sim.lab import Lab
from hosted_engine.lab.sim.runner import LabRunner
from hosted_engine.lab.sim.timings import LabTimings


@pytest.fixture
async def sim_lab_factory() -> AsyncIterator[Callable[..., Awaitable[Lab]]]:
    labs: list[Lab] = []

    async def make(**kwargs: Any) -> Lab:
        kwargs.setdefault("hosts", 3)
        kwargs.setdefault("timings", LabTimings.fast())
        kwargs.setdefault("bmc", False)
        kwargs.setdefault("tls_enabled", False)
        kwargs.setdefault("plugins", False)
        lab = Lab(**kwargs)
        labs.append(lab)
        await lab.start()
        return lab

    yield make
    for lab in labs:
        await lab.stop()


@pytest.fixture
async def sim_lab(sim_lab_factory: Callable[..., Awaitable[Lab]]) -> Lab:
    return await sim_lab_factory()


@pytest.fixture
def lab_cluster() -> Iterator[LabRunner]:
    from hosted_engine.lab.testing import shared_certificates

    lab = Lab(hosts=3, timings=LabTimings.fast(), certificates=shared_certificates())
    with LabRunner(lab) as runner:
        yield runner
