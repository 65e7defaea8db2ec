"""BMC faults (hosted_engine.lab.bmc.faults): a down BMC answers nothing and carries nothing out,
a slow one answers late; the other nodes' BMCs and the shared service root are not affected."""

from __future__ import annotations

import time

import pytest
import requests
from bmc_helpers import PASSWORD, USER, wait_until
from hosted_engine.lab.bmc import BmcFarm, PowerState
from hosted_engine.lab.bmc.faults import BmcFaults


def system_url(farm: BmcFarm, node: str) -> str:
    endpoint = farm.endpoints[node]
    return f"{endpoint.redfish_url}{endpoint.redfish_system_path}"


def get(farm: BmcFarm, url: str, timeout: float = 5.0) -> requests.Response:
    ca = farm.endpoints["node-1"].redfish_ca_path
    return requests.get(url, auth=(USER, PASSWORD), verify=str(ca), timeout=timeout)


def force_off(farm: BmcFarm, node: str, timeout: float) -> requests.Response:
    ca = farm.endpoints[node].redfish_ca_path
    return requests.post(
        f"{system_url(farm, node)}/Actions/ComputerSystem.Reset",
        json={"ResetType": "ForceOff"},
        auth=(USER, PASSWORD),
        verify=str(ca),
        timeout=timeout,
    )


def test_a_down_bmc_answers_nothing_and_loses_commands(farm: BmcFarm) -> None:
    farm.faults.max_hold = 3.0
    farm.faults.set_down("node-1")
    with pytest.raises(requests.exceptions.ReadTimeout):
        get(farm, system_url(farm, "node-1"), timeout=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        force_off(farm, "node-1", timeout=0.5)
    # the other node's BMC and the service root answer
    assert get(farm, system_url(farm, "node-2")).json()["PowerState"] == "On"
    assert get(farm, f"{farm.endpoints['node-1'].redfish_url}/redfish/v1/").status_code == 200
    # a client that waits long enough gets a 503 after max_hold
    assert force_off(farm, "node-1", timeout=10).status_code == 503
    farm.faults.set_down("node-1", False)
    assert get(farm, system_url(farm, "node-1")).json()["PowerState"] == "On"
    # the commands sent while the BMC was down were never carried out
    power = farm.node_power("node-1")
    assert power.commands == []
    assert not wait_until(lambda: power.state is PowerState.OFF, timeout=0.3)
    assert farm.faults.held["node-1"] == 3


def test_a_slow_bmc_answers_late_and_carries_out(farm: BmcFarm) -> None:
    farm.faults.set_delay("node-1", 0.6)
    start = time.monotonic()
    assert force_off(farm, "node-1", timeout=10).status_code == 204
    assert time.monotonic() - start >= 0.6
    assert wait_until(lambda: farm.node_power("node-1").state is PowerState.OFF)
    farm.faults.clear()
    assert get(farm, system_url(farm, "node-2")).json()["PowerState"] == "On"
    assert farm.faults.held == {"node-1": 1}


def test_stop_releases_requests_held_by_a_down_bmc() -> None:
    faults = BmcFaults(max_hold=30)
    faults.set_down("node-1")
    faults.close()
    started = time.monotonic()
    assert faults.hold("node-1")  # closed: nothing is held any more
    assert time.monotonic() - started < 1.0
    with pytest.raises(ValueError):
        faults.set_delay("node-1", -1)
