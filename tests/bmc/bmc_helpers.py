"""Constants and small helpers shared by the BMC tests."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

USER = "admin"
#: a password that must never show up in a log line, a message or an exception
PASSWORD = "Zq7-bmc-Secret-9x"

#: short lab durations: a power command takes effect after POWER_DELAY, an OS needs
#: SHUTDOWN_TIME to shut down after an ACPI request, a power cycle stays off CYCLE_OFF_TIME
POWER_DELAY = 0.02
SHUTDOWN_TIME = 0.3
CYCLE_OFF_TIME = 0.05


def bmc_farm_port(port: int | None) -> int:
    assert port is not None
    return port


def tcp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def closed_tcp_port() -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
