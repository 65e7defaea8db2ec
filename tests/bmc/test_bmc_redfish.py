"""The lab's Redfish BMC (sushy-tools' emulator) driven by real clients: sushy and requests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import sushy
from bmc_helpers import PASSWORD, SHUTDOWN_TIME, USER, tcp_port_free, wait_until
from hosted_engine.lab.bmc import BmcFarm, NodePower, PowerCause, PowerState
from hosted_engine.lab.bmc.redfish import RedfishServer, system_uuid
from sushy import exceptions as sushy_exc

ON, OFF = PowerState.ON, PowerState.OFF


def client(farm: BmcFarm, password: str = PASSWORD) -> sushy.Sushy:
    endpoint = farm.endpoints["node-1"]
    assert endpoint.redfish_url is not None and endpoint.redfish_ca_path is not None
    return sushy.Sushy(
        f"{endpoint.redfish_url}/redfish/v1",
        username=USER,
        password=password,
        verify=str(endpoint.redfish_ca_path),
    )


@pytest.fixture
def root(farm: BmcFarm) -> Iterator[sushy.Sushy]:
    yield client(farm)


def reset_url(farm: BmcFarm, node: str) -> str:
    endpoint = farm.endpoints[node]
    return f"{endpoint.redfish_url}{endpoint.redfish_system_path}/Actions/ComputerSystem.Reset"


def post_reset(farm: BmcFarm, node: str, reset_type: str) -> requests.Response:
    endpoint = farm.endpoints[node]
    return requests.post(
        reset_url(farm, node),
        json={"ResetType": reset_type},
        auth=(USER, PASSWORD),
        verify=str(endpoint.redfish_ca_path),
        timeout=10,
    )


def test_systems_are_the_nodes_over_verified_tls(farm: BmcFarm, root: sushy.Sushy) -> None:
    members = root.get_system_collection().members_identities
    assert sorted(members) == ["/redfish/v1/Systems/node-1", "/redfish/v1/Systems/node-2"]
    system = root.get_system("/redfish/v1/Systems/node-2")
    assert system.identity == "node-2"
    assert system.uuid == system_uuid("node-2")
    assert system.power_state == sushy.PowerState.ON
    assert farm.endpoints["node-2"].redfish_url.startswith("https://127.0.0.1:")  # type: ignore[union-attr]


def test_force_off_and_on_move_the_node_power(farm: BmcFarm, root: sushy.Sushy) -> None:
    system = root.get_system("/redfish/v1/Systems/node-1")
    power = farm.node_power("node-1")

    system.reset_system(sushy.ResetType.FORCE_OFF)
    assert power.wait_for(OFF, timeout=5)
    system.refresh()
    assert system.power_state == sushy.PowerState.OFF
    assert farm.node_power("node-2").power_state() is ON  # only the addressed system

    system.reset_system(sushy.ResetType.ON)
    assert power.wait_for(ON, timeout=5)
    system.refresh()
    assert system.power_state == sushy.PowerState.ON
    assert power.commands == [PowerCause.OFF, PowerCause.ON]


def test_graceful_shutdown_takes_the_shutdown_time(farm: BmcFarm, root: sushy.Sushy) -> None:
    system = root.get_system("/redfish/v1/Systems/node-1")
    power = farm.node_power("node-1")
    events: list[object] = []
    power.add_event_listener(events.append)

    system.reset_system(sushy.ResetType.GRACEFUL_SHUTDOWN)
    system.refresh()
    assert system.power_state == sushy.PowerState.ON  # the OS is still shutting down
    assert power.pending is OFF
    assert power.wait_for(OFF, timeout=5 + SHUTDOWN_TIME)
    system.refresh()
    assert system.power_state == sushy.PowerState.OFF
    assert power.commands == [PowerCause.SOFT_OFF]


@pytest.mark.parametrize(
    ("reset_type", "cause"),
    [
        (sushy.ResetType.FORCE_RESTART, PowerCause.RESET),
        (sushy.ResetType.GRACEFUL_RESTART, PowerCause.GRACEFUL_RESTART),
    ],
)
def test_restarts_take_the_node_down_and_up(
    farm: BmcFarm, root: sushy.Sushy, reset_type: sushy.ResetType, cause: PowerCause
) -> None:
    power = farm.node_power("node-1")
    changes: list[tuple[PowerState, PowerCause]] = []
    power.add_event_listener(lambda event: changes.append((event.state, event.cause)))
    root.get_system("/redfish/v1/Systems/node-1").reset_system(reset_type)
    assert wait_until(lambda: len(changes) == 2)
    assert changes == [(OFF, cause), (ON, cause)]


def test_power_cycle_and_push_button_through_the_raw_api(farm: BmcFarm) -> None:
    power = farm.node_power("node-2")
    changes: list[PowerState] = []
    power.add_event_listener(lambda event: changes.append(event.state))
    assert post_reset(farm, "node-2", "PowerCycle").status_code == 204
    assert wait_until(lambda: changes == [OFF, ON])
    assert power.commands == [PowerCause.CYCLE]

    # the power button: pressed while on asks the OS to shut down
    assert post_reset(farm, "node-2", "PushPowerButton").status_code == 204
    assert power.wait_for(OFF, timeout=5)
    assert post_reset(farm, "node-2", "PushPowerButton").status_code == 204
    assert power.wait_for(ON, timeout=5)
    assert power.commands == [PowerCause.CYCLE, PowerCause.SOFT_OFF, PowerCause.ON]


def test_unsupported_reset_type_is_refused(farm: BmcFarm) -> None:
    response = post_reset(farm, "node-1", "Nmi")
    assert response.status_code == 501
    assert response.json()["error"]["code"] == "Base.1.0.GeneralError"
    assert farm.node_power("node-1").power_state() is ON


def test_system_by_uuid_and_unknown_system(farm: BmcFarm, root: sushy.Sushy) -> None:
    by_uuid = root.get_system(f"/redfish/v1/Systems/{system_uuid('node-1')}")
    assert by_uuid.name == "node-1"
    with pytest.raises(sushy_exc.ResourceNotFoundError):
        root.get_system("/redfish/v1/Systems/node-9")


def test_wrong_password_is_an_auth_error(farm: BmcFarm) -> None:
    with pytest.raises(sushy_exc.AccessError) as caught:
        client(farm, password="not-the-password").get_system("/redfish/v1/Systems/node-1")
    assert "401" in str(caught.value)
    assert farm.node_power("node-1").commands == []


def test_no_credentials_get_401_but_the_service_root_is_open(farm: BmcFarm) -> None:
    endpoint = farm.endpoints["node-1"]
    ca = str(endpoint.redfish_ca_path)
    assert requests.get(f"{endpoint.redfish_url}/redfish/v1/", verify=ca, timeout=10).ok
    denied = requests.post(
        reset_url(farm, "node-1"), json={"ResetType": "ForceOff"}, verify=ca, timeout=10
    )
    assert denied.status_code == 401
    assert farm.node_power("node-1").power_state() is ON


def test_an_untrusted_certificate_is_rejected(farm: BmcFarm) -> None:
    endpoint = farm.endpoints["node-1"]
    with pytest.raises(sushy_exc.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        sushy.Sushy(
            f"{endpoint.redfish_url}/redfish/v1", username=USER, password=PASSWORD, verify=True
        )


def test_two_servers_in_one_process_are_independent(tmp_path: object) -> None:
    a_power = NodePower("a-1", power_delay=0)
    b_power = NodePower("b-1", power_delay=0)
    with (
        RedfishServer({"a-1": a_power}, {"alice": "pw-a"}) as a,
        RedfishServer({"b-1": b_power}, {"bob": "pw-b"}) as b,
    ):
        assert a.port != b.port
        root_a = sushy.Sushy(
            f"{a.base_url}/redfish/v1", username="alice", password="pw-a", verify=str(a.ca_path)
        )
        root_b = sushy.Sushy(
            f"{b.base_url}/redfish/v1", username="bob", password="pw-b", verify=str(b.ca_path)
        )
        assert root_a.get_system_collection().members_identities == ("/redfish/v1/Systems/a-1",)
        assert root_b.get_system_collection().members_identities == ("/redfish/v1/Systems/b-1",)
        root_a.get_system("/redfish/v1/Systems/a-1").reset_system(sushy.ResetType.FORCE_OFF)
        assert a_power.power_state() is OFF and b_power.power_state() is ON
        # users are per server
        with pytest.raises(sushy_exc.AccessError):
            sushy.Sushy(
                f"{b.base_url}/redfish/v1", username="alice", password="pw-a", verify=str(b.ca_path)
            ).get_system("/redfish/v1/Systems/b-1")
        ports = (a.port, b.port)
    assert all(tcp_port_free(port) for port in ports)
    assert not a.running and not b.running


def test_stop_closes_idle_keep_alive_connections(farm: BmcFarm) -> None:
    # a client that keeps its connection open must not hold the server's stop
    session = requests.Session()
    endpoint = farm.endpoints["node-1"]
    response = session.get(
        f"{endpoint.redfish_url}/redfish/v1/Systems",
        auth=(USER, PASSWORD),
        verify=str(endpoint.redfish_ca_path),
        timeout=10,
    )
    assert response.json()["Members@odata.count"] == 2
    assert farm.redfish is not None
    farm.redfish.stop()
    assert not farm.redfish.running
    session.close()
