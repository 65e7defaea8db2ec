"""Fixtures of the API server conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hosted_engine.lab.apiserver import LabApiServer
from lab_api import Api


@pytest.fixture
async def api(lab_server: LabApiServer) -> AsyncIterator[Api]:
    yield Api(lab_server)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of tests/lab needs the lab API server (marker ``lab``)."""
    here = str(Path(__file__).parent)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.lab)
