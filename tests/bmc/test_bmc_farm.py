"""BmcFarm: the lab's BMCs for N nodes and the endpoints handed to Hosts and Secrets."""

from __future__ import annotations

import subprocess
import threading

import pytest
import sushy
from bmc_helpers import PASSWORD, USER, tcp_port_free, udp_port_free
from hosted_engine.lab.bmc import BmcCredentials, BmcFarm, PowerState
from hosted_engine.lab.bmc.redfish import system_uuid


class RecordingTarget:
    """A node simulator's own power object, implementing PowerTarget without NodePower."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.state = PowerState.ON
        self.calls: list[str] = []
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    def power_state(self) -> PowerState:
        with self._lock:
            return self.state

    def _record(self, call: str, state: PowerState | None) -> None:
        with self._lock:
            self.calls.append(call)
            if state is not None:
                self.state = state

    def power_on(self) -> None:
        self._record("power_on", PowerState.ON)

    def power_off(self) -> None:
        self._record("power_off", PowerState.OFF)

    def soft_off(self) -> None:
        self._record("soft_off", PowerState.OFF)

    def reset(self) -> None:
        self._record("reset", None)

    def cycle(self) -> None:
        self._record("cycle", None)

    def graceful_restart(self) -> None:
        self._record("graceful_restart", None)


def test_endpoints_describe_every_node(farm: BmcFarm) -> None:
    assert set(farm.endpoints) == {"node-1", "node-2"}
    one, two = farm.endpoints["node-1"], farm.endpoints["node-2"]
    # one Redfish service, one system per node; one IPMI BMC per node
    assert one.redfish_port == two.redfish_port
    assert one.ipmi_port != two.ipmi_port
    assert one.redfish_url == f"https://127.0.0.1:{one.redfish_port}"
    assert one.redfish_system_path == "/redfish/v1/Systems/node-1"
    assert one.system_uuid == system_uuid("node-1")
    assert one.redfish_ca_path is not None and one.redfish_ca_path.read_text().startswith(
        "-----BEGIN CERTIFICATE-----"
    )
    assert farm.credentials.username == USER
    assert PASSWORD not in repr(farm.credentials)


def test_generated_credentials_and_ipmi_for_a_subset() -> None:
    with BmcFarm(["a", "b", "c"], ipmi=["b"], power_delay=0) as farm:
        assert len(farm.credentials.password) >= 12
        assert farm.credentials.password not in repr(farm.credentials)
        assert farm.endpoints["a"].ipmi_port is None
        assert farm.endpoints["b"].ipmi_port is not None
        assert farm.endpoints["c"].redfish_port is not None
        ipmi_port = farm.endpoints["b"].ipmi_port
        redfish_port = farm.endpoints["a"].redfish_port
    assert udp_port_free(ipmi_port) and redfish_port is not None
    assert tcp_port_free(redfish_port)
    with pytest.raises(ValueError, match="unknown nodes"):
        BmcFarm(["a"], ipmi=["z"])


def test_a_simulator_may_bring_its_own_power_target(ipmitool: str) -> None:
    target = RecordingTarget("node-7")
    credentials = BmcCredentials(USER, PASSWORD)
    with BmcFarm({"node-7": target}, credentials=credentials) as farm:
        endpoint = farm.endpoints["node-7"]
        root = sushy.Sushy(
            f"{endpoint.redfish_url}/redfish/v1",
            username=USER,
            password=PASSWORD,
            verify=str(endpoint.redfish_ca_path),
        )
        root.get_system(endpoint.redfish_system_path).reset_system(sushy.ResetType.FORCE_RESTART)
        done = subprocess.run(
            [ipmitool, "-I", "lanplus", "-H", "127.0.0.1", "-p", str(endpoint.ipmi_port),
             "-U", USER, "-P", PASSWORD, "chassis", "power", "off"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        with pytest.raises(TypeError):
            farm.node_power("node-7")
    assert target.calls == ["reset", "power_off"]
    assert target.state is PowerState.OFF
