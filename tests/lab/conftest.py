"""Fixtures of the API server conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hosted_engine.lab.apiserver import LabApiServer
from lab_api import Api


@pytest.fixture
async def api(lab_server: LabApiServer) -> AsyncIterator[Api]:
    yield Api(lab_server)
