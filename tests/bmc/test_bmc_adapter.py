"""The operator's power-management adapter against the lab's Redfish and IPMI BMCs."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator

import pytest
from bmc_helpers import (
    PASSWORD,
    SHUTDOWN_TIME,
    USER,
    closed_tcp_port,
    closed_udp_port,
    wait_until,
)
from hosted_engine.adapters.power import (
    BmcCredentials,
    BmcTarget,
    PowerError,
    PowerManager,
    PowerResult,
    power_manager,
)
from hosted_engine.lab.bmc import BmcFarm, PowerCause
from hosted_engine.lab.bmc import PowerState as LabPower
from hosted_engine.models.base import ClusterSecretRef
from hosted_engine.models.host import (
    PowerAction,
    PowerActionResult,
    PowerManagement,
    PowerManagementType,
    PowerState,
)

REDFISH, IPMI = PowerManagementType.REDFISH, PowerManagementType.IPMI
CREDENTIALS = BmcCredentials(USER, PASSWORD)
#: the adapter polls this often in tests (its default is 1 s)
POLL = 0.02


def target_for(
    farm: BmcFarm, node: str, kind: PowerManagementType, **overrides: object
) -> BmcTarget:
    endpoint = farm.endpoints[node]
    if kind is REDFISH:
        fields: dict[str, object] = {
            "type": REDFISH,
            "address": endpoint.address,
            "port": endpoint.redfish_port,
            "system_id": endpoint.redfish_system_id,
            "ca_bundle_path": str(endpoint.redfish_ca_path),
        }
    else:
        fields = {"type": IPMI, "address": endpoint.address, "port": endpoint.ipmi_port}
    fields.update(overrides)
    return BmcTarget(**fields)  # type: ignore[arg-type]


@pytest.fixture
def managers() -> Iterator[Callable[..., PowerManager]]:
    made: list[PowerManager] = []

    def make(
        target: BmcTarget, credentials: BmcCredentials = CREDENTIALS, **kwargs: object
    ) -> PowerManager:
        kwargs.setdefault("poll_interval", POLL)
        kwargs.setdefault("timeout", 10.0)
        kwargs.setdefault("cycle_off_time", 0.05)
        manager = power_manager(target, credentials, **kwargs)  # type: ignore[arg-type]
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()


@pytest.fixture(params=[REDFISH, IPMI], ids=["redfish", "ipmi"])
def kind(request: pytest.FixtureRequest) -> PowerManagementType:
    """Both protocols (the adapter's IPMI client is pyghmi: no ipmitool needed)."""
    value: PowerManagementType = request.param
    return value


def check(
    result: PowerResult, action: PowerAction, outcome: PowerActionResult, state: PowerState
) -> None:
    assert result.action is action
    assert result.result is outcome, result.message
    assert result.power_state is state, result.message
    assert result.duration >= 0
    assert result.started_at is not None and result.finished_at is not None
    assert result.finished_at >= result.started_at


def test_every_action_moves_the_node_power(
    farm: BmcFarm, managers: Callable[..., PowerManager], kind: PowerManagementType
) -> None:
    node = "node-1" if kind is REDFISH else "node-2"
    power = farm.node_power(node)
    manager = managers(target_for(farm, node, kind))

    check(manager.status(), PowerAction.STATUS, PowerActionResult.SUCCEEDED, PowerState.ON)

    result = manager.off()
    check(result, PowerAction.OFF, PowerActionResult.SUCCEEDED, PowerState.OFF)
    assert power.power_state() is LabPower.OFF

    again = manager.off()
    check(again, PowerAction.OFF, PowerActionResult.SUCCEEDED, PowerState.OFF)
    assert "already Off" in again.message

    check(manager.on(), PowerAction.ON, PowerActionResult.SUCCEEDED, PowerState.ON)
    assert power.power_state() is LabPower.ON

    changes: list[tuple[LabPower, PowerCause]] = []
    power.add_event_listener(lambda event: changes.append((event.state, event.cause)))
    check(manager.reset(), PowerAction.RESET, PowerActionResult.SUCCEEDED, PowerState.ON)
    assert wait_until(lambda: len(changes) == 2)
    assert changes == [(LabPower.OFF, PowerCause.RESET), (LabPower.ON, PowerCause.RESET)]

    changes.clear()
    check(manager.cycle(), PowerAction.CYCLE, PowerActionResult.SUCCEEDED, PowerState.ON)
    assert wait_until(lambda: len(changes) == 2)
    assert [state for state, _ in changes] == [LabPower.OFF, LabPower.ON]
    assert power.power_state() is LabPower.ON

    # the other node was never touched
    other = "node-2" if node == "node-1" else "node-1"
    assert farm.node_power(other).commands == []


def test_cycle_without_power_cycle_support_is_off_then_on(
    farm: BmcFarm, managers: Callable[..., PowerManager]
) -> None:
    # sushy-tools does not offer ResetType PowerCycle: the adapter turns it off, confirms Off,
    # waits the cycle's off time and turns it on again
    power = farm.node_power("node-1")
    result = managers(target_for(farm, "node-1", REDFISH)).cycle()
    check(result, PowerAction.CYCLE, PowerActionResult.SUCCEEDED, PowerState.ON)
    assert power.commands == [PowerCause.OFF, PowerCause.ON]


def test_soft_takes_the_shutdown_time(
    farm: BmcFarm, managers: Callable[..., PowerManager], kind: PowerManagementType
) -> None:
    power = farm.node_power("node-1")
    result = managers(target_for(farm, "node-1", kind)).soft()
    check(result, PowerAction.SOFT, PowerActionResult.SUCCEEDED, PowerState.OFF)
    assert result.duration >= SHUTDOWN_TIME
    assert power.commands == [PowerCause.SOFT_OFF]
    assert power.power_state() is LabPower.OFF


def test_soft_ignored_by_the_os_times_out_with_power_still_on(
    farm: BmcFarm, managers: Callable[..., PowerManager], kind: PowerManagementType
) -> None:
    farm.node_power("node-1").honours_soft_off = False
    result = managers(target_for(farm, "node-1", kind)).soft(timeout=0.5)
    check(result, PowerAction.SOFT, PowerActionResult.TIMED_OUT, PowerState.ON)
    assert result.error is PowerError.NOT_CONFIRMED
    assert "still On" in result.message


def test_reset_of_a_host_that_is_off_is_rejected(
    farm: BmcFarm, managers: Callable[..., PowerManager], kind: PowerManagementType
) -> None:
    power = farm.node_power("node-2")
    power.set(False)
    manager = managers(target_for(farm, "node-2", kind))
    for action in (PowerAction.RESET, PowerAction.CYCLE):
        result = manager.run(action)
        check(result, action, PowerActionResult.REJECTED, PowerState.OFF)
        assert "use on" in result.message
    assert power.commands == []


def test_wrong_password_is_an_auth_error(
    farm: BmcFarm, managers: Callable[..., PowerManager], kind: PowerManagementType
) -> None:
    result = managers(
        target_for(farm, "node-1", kind), BmcCredentials(USER, "not-the-password")
    ).off()
    check(result, PowerAction.OFF, PowerActionResult.FAILED, PowerState.UNKNOWN)
    assert result.error is PowerError.AUTH
    assert "authentication failed" in result.message
    assert farm.node_power("node-1").commands == []


def test_unknown_ipmi_user_is_an_auth_error(
    farm: BmcFarm, managers: Callable[..., PowerManager]
) -> None:
    result = managers(target_for(farm, "node-1", IPMI), BmcCredentials("nobody", PASSWORD)).status()
    assert result.result is PowerActionResult.FAILED and result.error is PowerError.AUTH


def test_tls_is_verified_by_default(farm: BmcFarm, managers: Callable[..., PowerManager]) -> None:
    untrusted = managers(target_for(farm, "node-1", REDFISH, ca_bundle_path=None)).status()
    check(untrusted, PowerAction.STATUS, PowerActionResult.FAILED, PowerState.UNKNOWN)
    assert untrusted.error is PowerError.TLS

    # the CA bundle as PEM text (as read from the Host's caBundleSecretRef)
    ca_path = farm.endpoints["node-1"].redfish_ca_path
    assert ca_path is not None
    pem = ca_path.read_text()
    trusted = managers(
        target_for(farm, "node-1", REDFISH, ca_bundle_path=None, ca_bundle_pem=pem)
    ).status()
    check(trusted, PowerAction.STATUS, PowerActionResult.SUCCEEDED, PowerState.ON)

    # verification off only when asked for
    unverified = managers(
        target_for(farm, "node-1", REDFISH, ca_bundle_path=None, verify_tls=False)
    ).status()
    check(unverified, PowerAction.STATUS, PowerActionResult.SUCCEEDED, PowerState.ON)


def test_unknown_redfish_system(farm: BmcFarm, managers: Callable[..., PowerManager]) -> None:
    result = managers(target_for(farm, "node-1", REDFISH, system_id="node-9")).on()
    assert result.result is PowerActionResult.FAILED
    assert result.error is PowerError.NOT_FOUND


def test_redfish_refused_connection_fails_fast(managers: Callable[..., PowerManager]) -> None:
    target = BmcTarget(REDFISH, "127.0.0.1", closed_tcp_port())
    result = managers(target).off(timeout=20)
    check(result, PowerAction.OFF, PowerActionResult.FAILED, PowerState.UNKNOWN)
    assert result.error is PowerError.UNREACHABLE
    assert result.duration < 20


def test_redfish_bmc_that_never_answers_times_out(
    managers: Callable[..., PowerManager],
) -> None:
    # accepts TCP connections (backlog) but never speaks: the TLS handshake hangs
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        target = BmcTarget(REDFISH, "127.0.0.1", silent.getsockname()[1])
        result = managers(target).off(timeout=0.5)
    check(result, PowerAction.OFF, PowerActionResult.TIMED_OUT, PowerState.UNKNOWN)
    assert result.error is PowerError.TIMEOUT
    assert result.duration < 5


def test_ipmi_bmc_that_never_answers_times_out(managers: Callable[..., PowerManager]) -> None:
    manager = managers(BmcTarget(IPMI, "127.0.0.1", closed_udp_port()))
    result = manager.off(timeout=0.5)
    check(result, PowerAction.OFF, PowerActionResult.TIMED_OUT, PowerState.UNKNOWN)
    assert result.error is PowerError.TIMEOUT
    assert "logging in" in result.message
    assert result.duration < 5
    manager.close()  # waits for pyghmi to give up on its side


def test_secrets_stay_out_of_logs_messages_and_reprs(
    farm: BmcFarm, managers: Callable[..., PowerManager], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    results: list[PowerResult] = []
    for kind in (REDFISH, IPMI):
        manager = managers(target_for(farm, "node-1", kind))
        results += [manager.status(), manager.off(), manager.on()]
        bad = managers(target_for(farm, "node-1", kind), BmcCredentials(USER, PASSWORD + "x"))
        results.append(bad.status())
    assert len(caplog.records) > 0
    assert PASSWORD not in caplog.text
    for result in results:
        assert PASSWORD not in result.message
        assert PASSWORD not in repr(result)
    assert PASSWORD not in repr(CREDENTIALS)
    assert PASSWORD not in str(CREDENTIALS)


def test_messages_are_scrubbed_of_the_password(
    farm: BmcFarm, managers: Callable[..., PowerManager]
) -> None:
    # a careless spec that puts the password into a non-secret field (the system id) would make
    # the library's error carry it: the adapter's message still does not
    echo = managers(target_for(farm, "node-1", REDFISH, system_id=PASSWORD)).status()
    assert echo.error is PowerError.NOT_FOUND
    assert PASSWORD not in echo.message and "***" in echo.message


def test_target_from_a_host_spec(farm: BmcFarm, managers: Callable[..., PowerManager]) -> None:
    endpoint = farm.endpoints["node-2"]
    spec = PowerManagement(
        type=REDFISH,
        address=endpoint.address,
        port=endpoint.redfish_port,
        system_id="node-2",
        credentials_secret_ref=ClusterSecretRef(name="bmc-node-2", namespace="hosted-engine"),
    )
    assert endpoint.redfish_ca_path is not None
    target = BmcTarget.from_spec(spec, ca_bundle_pem=endpoint.redfish_ca_path.read_text())
    assert target.verify_tls and target.system_id == "node-2"
    result = managers(target).off()
    check(result, PowerAction.OFF, PowerActionResult.SUCCEEDED, PowerState.OFF)
    assert farm.node_power("node-2").power_state() is LabPower.OFF

    ipmi_spec = PowerManagement(
        type=IPMI,
        address=endpoint.address,
        port=endpoint.ipmi_port,
        credentials_secret_ref=ClusterSecretRef(name="bmc-node-2", namespace="hosted-engine"),
    )
    ipmi_result = managers(BmcTarget.from_spec(ipmi_spec)).on()
    check(ipmi_result, PowerAction.ON, PowerActionResult.SUCCEEDED, PowerState.ON)


def test_default_timeout_and_ports_follow_cloudstack() -> None:
    redfish = BmcTarget(REDFISH, "bmc.example")
    ipmi = BmcTarget(IPMI, "bmc.example")
    assert (redfish.effective_port, ipmi.effective_port) == (443, 623)
    manager = power_manager(redfish, CREDENTIALS)
    assert manager.timeout == 60.0
    with pytest.raises(ValueError, match="timeout"):
        manager.run(PowerAction.STATUS, timeout=0)
