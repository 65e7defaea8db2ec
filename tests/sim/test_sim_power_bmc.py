"""Power through the nodes' BMCs with real clients: the operator's Redfish (sushy) and IPMI
(pyghmi) adapters and ipmitool, against the lab's BMC farm bound to the simulated machines.

References: DMTF Redfish ComputerSystem.Reset (ForceOff, On); IPMI 2.0 chassis control;
kubernetes.io/docs/concepts/architecture/nodes/#node-controller (a powered-off node turns
Ready=Unknown); shared/reference/peers.md.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
from collections.abc import Awaitable, Callable

import pytest
from hosted_engine.adapters.power import BmcCredentials, BmcTarget, power_manager
from hosted_engine.lab.sim.api import CONFIGMAPS, PODS, SECRETS
from hosted_engine.lab.sim.lab import BMC_CONFIGMAP, LAB_NAMESPACE, Lab
from hosted_engine.models.host import PowerAction, PowerManagementType, PowerState
from simhelpers import cond, get_node, phase, pod


async def bmc_lab(factory: Callable[..., Awaitable[Lab]]) -> Lab:
    return await factory(bmc=True)


async def credentials(lab: Lab, node: str) -> BmcCredentials:
    secret = await lab.api.get(SECRETS, f"bmc-{node}", LAB_NAMESPACE)
    assert secret is not None
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    return BmcCredentials(data["username"], data["password"])


async def test_bmc_credentials_and_endpoints_are_published(
    sim_lab_factory: Callable[..., Awaitable[Lab]],
) -> None:
    lab = await bmc_lab(sim_lab_factory)
    shared = await lab.api.get(SECRETS, "bmc-credentials", LAB_NAMESPACE)
    assert shared is not None and {"username", "password", "ca.crt"} <= set(shared["data"])
    cm = await lab.api.get(CONFIGMAPS, BMC_CONFIGMAP, LAB_NAMESPACE)
    assert cm is not None
    ep = lab.bmc_endpoints()["node-2"]
    assert cm["data"]["node-2.redfish"] == f"{ep.redfish_url}/redfish/v1/Systems/node-2"
    assert cm["data"]["node-2.ipmi"] == f"127.0.0.1:{ep.ipmi_port}"
    # the BMC's system UUID is the one the kubelet reports
    node = get_node(lab, "node-2")
    assert cm["data"]["node-2.systemUUID"] == node["status"]["nodeInfo"]["systemUUID"]
    cfg = lab.kubeconfig()
    assert (await credentials(lab, "node-2")).password.get_secret_value() not in cfg


async def test_redfish_power_off_kills_the_node_and_power_on_brings_it_back(
    sim_lab_factory: Callable[..., Awaitable[Lab]],
) -> None:
    lab = await bmc_lab(sim_lab_factory)
    await lab.api.create(PODS, pod("guest", nodeName="node-2"), "default")
    await lab.wait_for(lambda: phase(lab, "guest") == "Running", timeout=5)
    ep = lab.bmc_endpoints()["node-2"]
    ca = ep.redfish_ca_path.read_text()
    target = BmcTarget(
        PowerManagementType.REDFISH,
        ep.address,
        ep.redfish_port,
        system_id=ep.redfish_system_id,
        ca_bundle_pem=ca,
    )
    manager = power_manager(
        target, await credentials(lab, "node-2"), timeout=10, poll_interval=0.05
    )
    try:
        status = await asyncio.to_thread(manager.run, PowerAction.STATUS)
        assert status.power_state is PowerState.ON
        off = await asyncio.to_thread(manager.run, PowerAction.OFF)
        assert off.succeeded, off.message
        assert lab.nodes["node-2"].state == "Off"
        await lab.wait_for(
            lambda: cond(get_node(lab, "node-2"), "Ready")["status"] == "Unknown", timeout=5
        )
        assert phase(lab, "guest") == "Running"  # the API still shows it running
        on = await asyncio.to_thread(manager.run, PowerAction.ON)
        assert on.succeeded, on.message
        await lab.wait_for(
            lambda: cond(get_node(lab, "node-2"), "Ready")["status"] == "True", timeout=5
        )
    finally:
        await asyncio.to_thread(manager.close)


async def test_ipmi_power_cycle_reboots_the_node(
    sim_lab_factory: Callable[..., Awaitable[Lab]],
) -> None:
    lab = await bmc_lab(sim_lab_factory)
    ep = lab.bmc_endpoints()["node-3"]
    boot_id = get_node(lab, "node-3")["status"]["nodeInfo"]["bootID"]
    target = BmcTarget(PowerManagementType.IPMI, ep.address, ep.ipmi_port)
    manager = power_manager(
        target, await credentials(lab, "node-3"), timeout=15, poll_interval=0.05, cycle_off_time=0.1
    )
    try:
        result = await asyncio.to_thread(manager.run, PowerAction.CYCLE)
        assert result.succeeded, result.message
    finally:
        await asyncio.to_thread(manager.close)
    await lab.wait_for(
        lambda: get_node(lab, "node-3")["status"]["nodeInfo"]["bootID"] != boot_id, timeout=5
    )
    assert cond(get_node(lab, "node-3"), "Ready")["status"] == "True"


@pytest.mark.skipif(shutil.which("ipmitool") is None, reason="ipmitool is not installed")
async def test_ipmitool_lanplus_reads_and_switches_the_power(
    sim_lab_factory: Callable[..., Awaitable[Lab]],
) -> None:
    lab = await bmc_lab(sim_lab_factory)
    ep = lab.bmc_endpoints()["node-1"]
    creds = await credentials(lab, "node-1")

    def ipmitool(*args: str) -> str:
        out = subprocess.run(
            [
                "ipmitool",
                "-I",
                "lanplus",
                "-H",
                ep.address,
                "-p",
                str(ep.ipmi_port),
                "-U",
                creds.username,
                "-E",
                "-C",
                "3",
                *args,
            ],
            env={"IPMI_PASSWORD": creds.password.get_secret_value(), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return out.stdout

    assert "Chassis Power is on" in await asyncio.to_thread(ipmitool, "chassis", "power", "status")
    await asyncio.to_thread(ipmitool, "chassis", "power", "off")
    await lab.wait_for(lambda: lab.nodes["node-1"].state == "Off", timeout=5)
    assert "Chassis Power is off" in await asyncio.to_thread(ipmitool, "chassis", "power", "status")
