"""Shared fixtures: the lab API server in-process.

- ``lab``: a fresh server per test in a background thread (HTTPS, bearer token, kubeconfig);
  use it with sync clients (``kubernetes``, ``kubectl`` subprocesses, kopf subprocesses).
- ``lab_kubeconfig``: the path of that server's kubeconfig.
- ``k8s_api``: a configured ``kubernetes.client.ApiClient`` for ``lab``.
- ``lab_server``: a fresh server in the test's own event loop (plain HTTP) for async tests that
  use ``lab_server.client`` (the LocalClient) or aiohttp; never call sync clients there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hosted_engine.lab.apiserver import LabApiServer
from hosted_engine.lab.testing import LabThread


@pytest.fixture
def lab() -> Iterator[LabThread]:
    with LabThread() as server:
        yield server


@pytest.fixture
def lab_kubeconfig(lab: LabThread) -> Path:
    return lab.kubeconfig_path


@pytest.fixture
def k8s_api(lab: LabThread) -> Iterator[Any]:
    client = lab.api_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def lab_server() -> AsyncIterator[LabApiServer]:
    server = LabApiServer(tls_enabled=False)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
