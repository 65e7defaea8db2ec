"""The lab's IPMI BMCs (pyghmi's server) driven by ipmitool -I lanplus and by pyghmi's client."""

from __future__ import annotations

import subprocess

import pytest
from bmc_helpers import PASSWORD, SHUTDOWN_TIME, USER, udp_port_free, wait_until
from hosted_engine.lab.bmc import BmcFarm, NodePower, PowerCause, PowerState
from hosted_engine.lab.bmc.ipmi import IpmiPump, start_bmc
from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi import command as ipmi_command

ON, OFF = PowerState.ON, PowerState.OFF


def ipmitool_run(
    ipmitool: str, port: int, *args: str, password: str = PASSWORD
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            ipmitool,
            "-I",
            "lanplus",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            USER,
            "-P",
            password,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def port_of(farm: BmcFarm, node: str) -> int:
    port = farm.endpoints[node].ipmi_port
    assert port is not None
    return port


def test_chassis_power_status_on_and_off(farm: BmcFarm, ipmitool: str) -> None:
    port = port_of(farm, "node-1")
    power = farm.node_power("node-1")

    status = ipmitool_run(ipmitool, port, "chassis", "power", "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip() == "Chassis Power is on"

    off = ipmitool_run(ipmitool, port, "chassis", "power", "off")
    assert off.returncode == 0, off.stderr
    assert power.wait_for(OFF, timeout=5)
    assert ipmitool_run(ipmitool, port, "chassis", "power", "status").stdout.strip() == (
        "Chassis Power is off"
    )
    assert farm.node_power("node-2").power_state() is ON  # each node has its own BMC

    assert ipmitool_run(ipmitool, port, "chassis", "power", "on").returncode == 0
    assert power.wait_for(ON, timeout=5)
    assert power.commands == [PowerCause.OFF, PowerCause.ON]


def test_chassis_power_soft_waits_for_the_os(farm: BmcFarm, ipmitool: str) -> None:
    port = port_of(farm, "node-2")
    power = farm.node_power("node-2")
    assert ipmitool_run(ipmitool, port, "chassis", "power", "soft").returncode == 0
    # acknowledged at once; the power drops when the OS has shut down
    assert power.pending is OFF
    assert power.wait_for(OFF, timeout=5 + SHUTDOWN_TIME)
    assert power.commands == [PowerCause.SOFT_OFF]


@pytest.mark.parametrize(
    ("verb", "cause"), [("reset", PowerCause.RESET), ("cycle", PowerCause.CYCLE)]
)
def test_chassis_power_reset_and_cycle_reboot_the_node(
    farm: BmcFarm, ipmitool: str, verb: str, cause: PowerCause
) -> None:
    power = farm.node_power("node-1")
    changes: list[tuple[PowerState, PowerCause]] = []
    power.add_event_listener(lambda event: changes.append((event.state, event.cause)))
    done = ipmitool_run(ipmitool, port_of(farm, "node-1"), "chassis", "power", verb)
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: len(changes) == 2)
    assert changes == [(OFF, cause), (ON, cause)]


def test_mc_info_and_boot_device(farm: BmcFarm, ipmitool: str) -> None:
    port = port_of(farm, "node-1")
    info = ipmitool_run(ipmitool, port, "mc", "info")
    assert info.returncode == 0 and "IPMI Version" in info.stdout
    assert ipmitool_run(ipmitool, port, "chassis", "bootdev", "pxe").returncode == 0
    assert farm.ipmi["node-1"].boot_device == "network"


def test_wrong_password_is_refused(farm: BmcFarm, ipmitool: str) -> None:
    refused = ipmitool_run(
        ipmitool, port_of(farm, "node-1"), "chassis", "power", "off", password="not-the-password"
    )
    assert refused.returncode != 0
    assert "RMCP+ session" in refused.stderr
    assert farm.node_power("node-1").power_state() is ON
    assert farm.node_power("node-1").commands == []


def test_pyghmi_client(farm: BmcFarm) -> None:
    port = port_of(farm, "node-2")
    client = ipmi_command.Command(
        bmc="127.0.0.1", userid=USER.encode(), password=PASSWORD.encode(), port=port
    )
    try:
        assert client.get_power() == {"powerstate": "on"}
        client.set_power("off")
        assert farm.node_power("node-2").wait_for(OFF, timeout=5)
        assert client.get_power() == {"powerstate": "off"}
    finally:
        client.ipmi_session.logout()


def test_pyghmi_client_wrong_password_and_unknown_user(farm: BmcFarm) -> None:
    port = port_of(farm, "node-2")
    with pytest.raises(pyghmi_exc.IpmiException, match="Incorrect password"):
        ipmi_command.Command(
            bmc="127.0.0.1", userid=USER.encode(), password=b"wrong-password", port=port
        )
    # a real BMC answers "unauthorized name" (pyghmi's stock server would not answer at all)
    with pytest.raises(pyghmi_exc.IpmiException, match="Unauthorized name"):
        ipmi_command.Command(
            bmc="127.0.0.1", userid=b"nobody", password=PASSWORD.encode(), port=port
        )


def test_a_bmc_can_be_closed_alone_and_frees_its_port(ipmitool: str) -> None:
    first, second = NodePower("n-1", power_delay=0), NodePower("n-2", power_delay=0)
    pump = IpmiPump().start()
    bmc_1 = start_bmc(first, {USER: PASSWORD})
    bmc_2 = start_bmc(second, {USER: PASSWORD})
    try:
        assert bmc_1.port != bmc_2.port
        bmc_1.close()
        assert udp_port_free(bmc_1.port)
        # the other BMC keeps working
        done = ipmitool_run(ipmitool, bmc_2.port, "chassis", "power", "off")
        assert done.returncode == 0, done.stderr
        assert second.power_state() is OFF and first.power_state() is ON
    finally:
        bmc_1.close()
        bmc_2.close()
        pump.stop()
        first.close()
        second.close()
    assert udp_port_free(bmc_2.port)
