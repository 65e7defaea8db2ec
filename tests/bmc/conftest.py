"""Fixtures for the BMC tests: the lab's BMC farm with short power delays, and a leak check.

Every test in this directory is checked for threads it leaves running (pyghmi's process-wide
I/O thread, created once by pyghmi itself, is the only one allowed to stay).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator

import pytest
from bmc_helpers import (
    CYCLE_OFF_TIME,
    PASSWORD,
    POWER_DELAY,
    SHUTDOWN_TIME,
    USER,
    bmc_farm_port,
    tcp_port_free,
    udp_port_free,
)
from hosted_engine.lab.bmc import BmcCredentials, BmcFarm


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


def _allowed(thread: threading.Thread) -> bool:
    # pyghmi's shared I/O thread lives as long as the process once any IPMI socket was made
    return type(thread).__name__ == "_IOWorker"


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    before = _threads()
    yield
    deadline = time.monotonic() + 10
    while True:
        leaked = [t for t in _threads() - before if not _allowed(t)]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads left behind: {[t.name for t in leaked]}"


@pytest.fixture
def farm() -> Iterator[BmcFarm]:
    """Two nodes, each with Redfish (one service) and IPMI; all powered on."""
    with BmcFarm(
        ["node-1", "node-2"],
        credentials=BmcCredentials(USER, PASSWORD),
        power_delay=POWER_DELAY,
        shutdown_time=SHUTDOWN_TIME,
        cycle_off_time=CYCLE_OFF_TIME,
    ) as bmc_farm:
        yield bmc_farm
    assert tcp_port_free(bmc_farm_port(bmc_farm.endpoints["node-1"].redfish_port))
    for endpoint in bmc_farm.endpoints.values():
        assert endpoint.ipmi_port is not None
        assert udp_port_free(endpoint.ipmi_port)


@pytest.fixture
def ipmitool() -> str:
    path = shutil.which("ipmitool")
    if path is None:
        pytest.skip("ipmitool is not installed (apt-get install ipmitool; scripts/system-deps.sh)")
    return path
