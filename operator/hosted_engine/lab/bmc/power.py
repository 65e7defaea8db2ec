"""A lab machine's power switch, as its BMC drives it.

:class:`NodePower` is the power of one simulated node: On or Off, changed by the BMC's commands
(on, off, soft off, reset, cycle, graceful restart) after a configurable *power delay*, like a
real BMC that acknowledges a command at once and moves the power a moment later. A soft off is
an ACPI request to the operating system: the power drops only after the OS has shut down
(``shutdown_time``), and not at all if the OS ignores ACPI (``honours_soft_off=False``).

The BMC servers (Redfish, IPMI) run in threads, so every method is thread-safe. Listeners are
told about every change, in order, outside the switch's lock: ``add_listener`` takes the simple
``callback(is_on)`` form the node simulator uses, ``add_event_listener`` gets a
:class:`PowerEvent` with the cause. A listener runs in the thread that made the change (a BMC
request thread or a power timer) unless a ``dispatch`` function is given, e.g. an asyncio loop's
``call_soon_threadsafe``.

Semantics follow IPMI's chassis control: reset and cycle do nothing to a machine that is off
(or about to be). A command is judged against where the power is heading: one that changes
that replaces the pending transition (a power off sent during a soft off cuts the power after
the power delay; a power on cancels a pending off, including an OS shutdown in progress), one
that does not (power on while a power-on is pending) leaves it alone. Soft off and graceful
restart reach only a running OS: they are ignored while the machine is off or going down.
"""

from __future__ import annotations

import enum
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)

#: Default delay between a BMC command and the power actually changing (seconds).
DEFAULT_POWER_DELAY = 5.0
#: Default time an operating system takes to shut down after an ACPI soft-off request.
DEFAULT_SHUTDOWN_TIME = 30.0
#: Minimum off interval of a power cycle (IPMI: at least 1 s).
DEFAULT_CYCLE_OFF_TIME = 1.0


class PowerState(enum.StrEnum):
    ON = "On"
    OFF = "Off"


class PowerCause(enum.StrEnum):
    """What made the power change."""

    ON = "on"
    OFF = "off"
    SOFT_OFF = "soft-off"
    RESET = "reset"
    CYCLE = "cycle"
    GRACEFUL_RESTART = "graceful-restart"
    #: set directly by the simulator (power loss, a recovered node), not by a BMC command
    EXTERNAL = "external"


@dataclass(frozen=True)
class PowerEvent:
    node: str
    previous: PowerState
    state: PowerState
    cause: PowerCause
    #: ``time.monotonic()`` when the change happened
    at: float


@runtime_checkable
class PowerTarget(Protocol):
    """What a lab BMC drives. :class:`NodePower` implements it; a node simulator may too.

    Every command returns at once; the power changes later (or never, see the module doc).
    """

    @property
    def name(self) -> str: ...

    def power_state(self) -> PowerState: ...

    def power_on(self) -> None: ...

    def power_off(self) -> None: ...

    def soft_off(self) -> None: ...

    def reset(self) -> None: ...

    def cycle(self) -> None: ...

    def graceful_restart(self) -> None: ...


_Step = tuple[float, PowerState]


class NodePower:
    """The power switch of one lab node (see the module doc)."""

    def __init__(
        self,
        name: str,
        *,
        on: bool = True,
        power_delay: float = DEFAULT_POWER_DELAY,
        shutdown_time: float = DEFAULT_SHUTDOWN_TIME,
        cycle_off_time: float = DEFAULT_CYCLE_OFF_TIME,
        honours_soft_off: bool = True,
        dispatch: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        for label, value in (
            ("power_delay", power_delay),
            ("shutdown_time", shutdown_time),
            ("cycle_off_time", cycle_off_time),
        ):
            if value < 0:
                raise ValueError(f"{label} must be >= 0, got {value}")
        self._name = name
        self.power_delay = power_delay
        self.shutdown_time = shutdown_time
        self.cycle_off_time = cycle_off_time
        self.honours_soft_off = honours_soft_off
        self._dispatch = dispatch
        self._state = PowerState.ON if on else PowerState.OFF
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._dispatch_lock = threading.RLock()
        self._queue: deque[PowerEvent] = deque()
        self._listeners: list[Callable[[bool], None]] = []
        self._event_listeners: list[Callable[[PowerEvent], None]] = []
        self._generation = 0
        self._timer: threading.Timer | None = None
        self._pending: PowerState | None = None
        self._final: PowerState | None = None
        self._plan_cause: PowerCause | None = None
        self._closed = False
        #: every command the BMCs passed on, in order (an audit trail for tests and the demo)
        self.commands: list[PowerCause] = []

    # -- reading ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    def power_state(self) -> PowerState:
        with self._lock:
            return self._state

    @property
    def state(self) -> PowerState:
        return self.power_state()

    @property
    def is_on(self) -> bool:
        return self.power_state() is PowerState.ON

    @property
    def pending(self) -> PowerState | None:
        """The state a scheduled transition will reach next, if any."""
        with self._lock:
            return self._pending

    def wait_for(self, state: PowerState, timeout: float) -> bool:
        """Block until the power is ``state`` (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._state is not state:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    # -- listeners -------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[bool], None]) -> None:
        """``callback(is_on)`` after every change of the power."""
        with self._lock:
            self._listeners.append(callback)

    def add_event_listener(self, callback: Callable[[PowerEvent], None]) -> None:
        """``callback(event)`` after every change of the power, with its cause."""
        with self._lock:
            self._event_listeners.append(callback)

    def remove_listener(self, callback: Callable[..., None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)
            if callback in self._event_listeners:
                self._event_listeners.remove(callback)

    # -- BMC commands ----------------------------------------------------------------------

    def power_on(self) -> None:
        with self._lock:
            self._command(PowerCause.ON)
            if self._effective() is PowerState.OFF:
                self._cancel()
                if self._state is PowerState.OFF:
                    self._plan([(self.power_delay, PowerState.ON)], PowerCause.ON)
        self._drain()

    def power_off(self) -> None:
        with self._lock:
            self._command(PowerCause.OFF)
            # a hard off also overrides a slower way down (an OS shutdown in progress)
            heading_off_slowly = self._state is PowerState.ON and self._plan_cause not in (
                None,
                PowerCause.OFF,
            )
            if self._effective() is PowerState.ON or heading_off_slowly:
                self._cancel()
                if self._state is PowerState.ON:
                    self._plan([(self.power_delay, PowerState.OFF)], PowerCause.OFF)
        self._drain()

    def soft_off(self) -> None:
        with self._lock:
            self._command(PowerCause.SOFT_OFF)
            if self._os_running() and self.honours_soft_off:
                self._cancel()
                self._plan([(self.shutdown_time, PowerState.OFF)], PowerCause.SOFT_OFF)
        self._drain()

    def reset(self) -> None:
        with self._lock:
            self._command(PowerCause.RESET)
            if self._effective() is PowerState.ON:
                self._cancel()
                self._plan(
                    [(self.power_delay, PowerState.OFF), (0.0, PowerState.ON)], PowerCause.RESET
                )
        self._drain()

    def cycle(self) -> None:
        with self._lock:
            self._command(PowerCause.CYCLE)
            if self._effective() is PowerState.ON:
                self._cancel()
                self._plan(
                    [(self.power_delay, PowerState.OFF), (self.cycle_off_time, PowerState.ON)],
                    PowerCause.CYCLE,
                )
        self._drain()

    def graceful_restart(self) -> None:
        with self._lock:
            self._command(PowerCause.GRACEFUL_RESTART)
            if self._os_running() and self.honours_soft_off:
                self._cancel()
                self._plan(
                    [(self.shutdown_time, PowerState.OFF), (0.0, PowerState.ON)],
                    PowerCause.GRACEFUL_RESTART,
                )
        self._drain()

    # -- the simulator's own hand ----------------------------------------------------------

    def set(self, on: bool) -> None:
        """Change the power at once, not through a BMC (power loss, a repaired node)."""
        with self._lock:
            self._cancel()
            self._apply(PowerState.ON if on else PowerState.OFF, PowerCause.EXTERNAL)
        self._drain()

    def close(self) -> None:
        """Cancel any pending transition and wait for its timer thread; commands become no-ops."""
        with self._lock:
            self._closed = True
            timer = self._timer
            self._cancel()
        if timer is not None and timer is not threading.current_thread():
            timer.join()

    # -- internals (called with the lock held) ---------------------------------------------

    def _command(self, cause: PowerCause) -> None:
        self.commands.append(cause)
        log.info("power %s: %s requested (state %s)", self._name, cause.value, self._state.value)

    def _effective(self) -> PowerState:
        """Where the power is heading: the end of the pending plan, else the current state."""
        return self._final if self._final is not None else self._state

    def _os_running(self) -> bool:
        """On and not already going down: the only time an ACPI request is heard."""
        return self._state is PowerState.ON and self._effective() is PowerState.ON

    def _cancel(self) -> None:
        self._generation += 1
        self._pending = None
        self._final = None
        self._plan_cause = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _plan(self, steps: list[_Step], cause: PowerCause) -> None:
        if self._closed:
            return
        self._final = steps[-1][1]
        self._plan_cause = cause
        self._run_steps(self._generation, cause, steps)

    def _run_steps(self, generation: int, cause: PowerCause, steps: list[_Step]) -> None:
        # apply every step that is due now; schedule a timer for the first one that is not
        while steps:
            delay, state = steps[0]
            if delay > 0:
                self._pending = state
                rest = [(0.0, state), *steps[1:]]
                timer = threading.Timer(delay, self._fire, args=(generation, cause, rest))
                timer.name = f"power-{self._name}"
                timer.daemon = True
                self._timer = timer
                timer.start()
                return
            steps = steps[1:]
            self._pending = None
            self._apply(state, cause)
        self._timer = None
        self._final = None
        self._plan_cause = None

    def _fire(self, generation: int, cause: PowerCause, steps: list[_Step]) -> None:
        with self._lock:
            if generation != self._generation or self._closed:
                return  # superseded by a newer command
            self._run_steps(generation, cause, steps)
        self._drain()

    def _apply(self, state: PowerState, cause: PowerCause) -> None:
        if state is self._state:
            return
        event = PowerEvent(self._name, self._state, state, cause, time.monotonic())
        self._state = state
        log.info("power %s: %s -> %s (%s)", self._name, event.previous, state, cause.value)
        self._queue.append(event)
        self._changed.notify_all()

    # -- listener dispatch (without the state lock, in order) ------------------------------

    def _drain(self) -> None:
        with self._dispatch_lock:
            while True:
                with self._lock:
                    if not self._queue:
                        return
                    event = self._queue.popleft()
                    simple = list(self._listeners)
                    rich = list(self._event_listeners)
                is_on = event.state is PowerState.ON
                for callback in simple:
                    self._call(functools.partial(callback, is_on))
                for rich_callback in rich:
                    self._call(functools.partial(rich_callback, event))

    def _call(self, fn: Callable[[], None]) -> None:
        if self._dispatch is not None:
            self._dispatch(fn)
            return
        try:
            fn()
        except Exception:  # a listener's bug must not break the BMC
            log.exception("power %s: a listener failed", self._name)

    def __repr__(self) -> str:
        return f"NodePower({self._name!r}, {self.power_state().value})"
