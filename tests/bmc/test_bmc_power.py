"""NodePower: the lab node's power switch that every BMC drives."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hosted_engine.lab.bmc.power import (
    NodePower,
    PowerCause,
    PowerEvent,
    PowerState,
    PowerTarget,
)

ON, OFF = PowerState.ON, PowerState.OFF


@pytest.fixture
def make_power() -> Iterator[Callable[..., NodePower]]:
    made: list[NodePower] = []

    def make(**kwargs: object) -> NodePower:
        kwargs.setdefault("power_delay", 0.0)
        kwargs.setdefault("shutdown_time", 0.0)
        kwargs.setdefault("cycle_off_time", 0.0)
        power = NodePower("node-1", **kwargs)  # type: ignore[arg-type]
        made.append(power)
        return power

    yield make
    for power in made:
        power.close()


def record(power: NodePower) -> list[PowerEvent]:
    events: list[PowerEvent] = []
    power.add_event_listener(events.append)
    return events


def transitions(events: list[PowerEvent]) -> list[tuple[PowerState, PowerCause]]:
    return [(e.state, e.cause) for e in events]


def test_implements_the_power_target_protocol(make_power: Callable[..., NodePower]) -> None:
    power = make_power()
    assert isinstance(power, PowerTarget)
    assert power.name == "node-1" and power.is_on and power.power_state() is ON


def test_off_and_on_without_delay_apply_at_once(make_power: Callable[..., NodePower]) -> None:
    power = make_power()
    events = record(power)
    seen: list[bool] = []
    power.add_listener(seen.append)

    power.power_off()
    assert power.power_state() is OFF
    power.power_off()  # already off: nothing happens
    power.power_on()
    assert power.power_state() is ON

    assert transitions(events) == [(OFF, PowerCause.OFF), (ON, PowerCause.ON)]
    assert [(e.previous, e.state) for e in events] == [(ON, OFF), (OFF, ON)]
    assert seen == [False, True]
    assert power.commands == [PowerCause.OFF, PowerCause.OFF, PowerCause.ON]


def test_power_delay_acknowledges_first_and_switches_later(
    make_power: Callable[..., NodePower],
) -> None:
    power = make_power(power_delay=0.2)
    events = record(power)
    asked = time.monotonic()
    power.power_off()
    # acknowledged, but the power has not moved yet
    assert power.power_state() is ON
    assert power.pending is OFF
    assert power.wait_for(OFF, timeout=5)
    assert power.pending is None
    assert events[0].at - asked >= 0.2


def test_soft_off_takes_the_shutdown_time(make_power: Callable[..., NodePower]) -> None:
    power = make_power(power_delay=0.0, shutdown_time=0.3)
    events = record(power)
    asked = time.monotonic()
    power.soft_off()
    assert power.power_state() is ON  # the OS is shutting down
    assert power.wait_for(OFF, timeout=5)
    assert transitions(events) == [(OFF, PowerCause.SOFT_OFF)]
    assert events[0].at - asked >= 0.3


def test_soft_off_ignored_by_an_os_that_does_not_honour_acpi(
    make_power: Callable[..., NodePower],
) -> None:
    power = make_power(shutdown_time=0.05, honours_soft_off=False)
    power.soft_off()
    assert power.pending is None
    assert not power.wait_for(OFF, timeout=0.3)
    assert power.commands == [PowerCause.SOFT_OFF]


def test_hard_off_during_a_soft_off_cuts_the_power(make_power: Callable[..., NodePower]) -> None:
    power = make_power(power_delay=0.0, shutdown_time=30.0)
    events = record(power)
    power.soft_off()
    assert power.pending is OFF
    power.power_off()
    assert power.power_state() is OFF
    assert transitions(events) == [(OFF, PowerCause.OFF)]


def test_power_on_cancels_a_pending_off(make_power: Callable[..., NodePower]) -> None:
    power = make_power(power_delay=0.3)
    events = record(power)
    power.power_off()
    power.power_on()
    assert power.pending is None
    assert not power.wait_for(OFF, timeout=0.5)
    assert events == []


def test_power_on_while_a_power_on_is_pending_keeps_it(
    make_power: Callable[..., NodePower],
) -> None:
    power = make_power(on=False, power_delay=0.1)
    power.power_on()
    power.power_on()
    assert power.pending is ON
    assert power.wait_for(ON, timeout=5)


def test_reset_goes_down_and_up(make_power: Callable[..., NodePower]) -> None:
    power = make_power(power_delay=0.05)
    events = record(power)
    power.reset()
    assert power.wait_for(ON, timeout=5)
    deadline = time.monotonic() + 5
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert transitions(events) == [(OFF, PowerCause.RESET), (ON, PowerCause.RESET)]


def test_cycle_stays_off_for_the_cycle_time(make_power: Callable[..., NodePower]) -> None:
    power = make_power(power_delay=0.0, cycle_off_time=0.2)
    events = record(power)
    power.cycle()
    assert power.power_state() is OFF
    assert power.pending is ON
    assert power.wait_for(ON, timeout=5)
    assert transitions(events) == [(OFF, PowerCause.CYCLE), (ON, PowerCause.CYCLE)]
    assert events[1].at - events[0].at >= 0.2


def test_reset_and_cycle_do_nothing_to_a_machine_that_is_off(
    make_power: Callable[..., NodePower],
) -> None:
    power = make_power(on=False)
    events = record(power)
    power.reset()
    power.cycle()
    power.soft_off()
    power.graceful_restart()
    assert power.power_state() is OFF
    assert events == []


def test_graceful_restart_shuts_down_then_boots(make_power: Callable[..., NodePower]) -> None:
    power = make_power(shutdown_time=0.05)
    events = record(power)
    power.graceful_restart()
    assert power.power_state() is ON and power.pending is OFF
    deadline = time.monotonic() + 5
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert transitions(events) == [
        (OFF, PowerCause.GRACEFUL_RESTART),
        (ON, PowerCause.GRACEFUL_RESTART),
    ]


def test_external_set_bypasses_the_bmc(make_power: Callable[..., NodePower]) -> None:
    power = make_power(power_delay=10.0)
    events = record(power)
    power.power_on()  # already on
    power.set(False)  # power loss
    assert power.power_state() is OFF
    assert transitions(events) == [(OFF, PowerCause.EXTERNAL)]
    assert power.commands == [PowerCause.ON]  # set() is not a BMC command


def test_a_failing_listener_does_not_break_the_switch(
    make_power: Callable[..., NodePower],
) -> None:
    power = make_power()

    def broken(_: bool) -> None:
        raise RuntimeError("listener bug")

    seen: list[bool] = []
    power.add_listener(broken)
    power.add_listener(seen.append)
    power.power_off()
    assert power.power_state() is OFF
    assert seen == [False]


def test_listeners_can_be_dispatched_elsewhere(make_power: Callable[..., NodePower]) -> None:
    queued: list[Callable[[], None]] = []
    power = make_power(dispatch=queued.append)
    seen: list[bool] = []
    power.add_listener(seen.append)
    power.power_off()
    assert seen == []  # handed to the dispatcher, not called in the BMC's thread
    for call in queued:
        call()
    assert seen == [False]


def test_a_listener_may_call_back_into_the_switch(make_power: Callable[..., NodePower]) -> None:
    power = make_power()
    states: list[PowerState] = []
    power.add_listener(lambda on: states.append(power.power_state()))
    power.power_off()
    assert states == [OFF]


def test_close_cancels_pending_transitions(make_power: Callable[..., NodePower]) -> None:
    power = make_power(power_delay=0.2)
    events = record(power)
    power.power_off()
    power.close()
    power.power_on()
    assert not power.wait_for(OFF, timeout=0.4)
    assert events == []


def test_concurrent_commands_leave_a_consistent_history(
    make_power: Callable[..., NodePower],
) -> None:
    power = make_power(power_delay=0.0)
    events = record(power)
    commands = [power.power_off, power.power_on, power.reset, power.cycle]

    def hammer(offset: int) -> None:
        for i in range(200):
            commands[(i + offset) % len(commands)]()

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert events, "the commands changed the power"
    # every event starts where the previous one ended: no lost or reordered change
    assert events[0].previous is ON
    for before, after in itertools.pairwise(events):
        assert after.previous is before.state
        assert after.state is not after.previous
    assert events[-1].state is power.power_state()


def test_negative_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="power_delay"):
        NodePower("node-1", power_delay=-1)
