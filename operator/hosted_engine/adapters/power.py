"""Power management through a host's BMC: Redfish (``sushy``) and IPMI 2.0 (``pyghmi``).

One interface for both protocols, modelled on CloudStack's out-of-band management
(``issueOutOfBandManagementPowerAction``): ``status``, ``on``, ``off``, ``soft`` (ACPI graceful
shutdown), ``reset`` (hard reset) and ``cycle`` (off for at least a second, then on). Each call
takes a timeout (default 60 s, CloudStack's ``outofbandmanagement.action.timeout``), waits until
the BMC reports the state the action implies (``off``/``soft`` -> Off, ``on``/``reset``/``cycle``
-> On) and returns a :class:`PowerResult`; it never raises for a BMC problem.

Both libraries are synchronous and the interface is too: callers in an event loop run it in a
thread (``asyncio.to_thread``). Each call runs in a worker thread so that a BMC that does not
answer (closed port, dropped packets, a hung TLS handshake) still ends the call within its
timeout, with result ``TimedOut``; the library's own time-outs (bounded by the remaining time
where the library allows it) then end the worker. :meth:`PowerManager.close` waits for such
workers.

Security: TLS verification is on by default (``verify_tls=True``; a CA bundle can be given as a
path or as PEM text); ``verify_tls=False`` only when asked. Credentials are arguments (the
caller reads the Secret) held as :class:`pydantic.SecretStr`; they are never logged, and every
message that leaves this module is scrubbed of the password.

Deadlines use :func:`time.monotonic`: they measure real waits on a network peer. Timestamps in
results (``started_at``, ``finished_at``) come from :func:`hosted_engine.clock.get_clock`.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sushy
from pydantic import SecretStr
from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi import command as ipmi_command
from sushy import ResetType
from sushy import exceptions as sushy_exc

from hosted_engine.clock import get_clock
from hosted_engine.models.host import (
    PowerAction,
    PowerActionResult,
    PowerManagement,
    PowerManagementType,
    PowerState,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
DEFAULT_POLL_INTERVAL = 1.0
#: CloudStack: a power cycle keeps the power off for at least 1 s.
DEFAULT_CYCLE_OFF_TIME = 1.0

#: the state each action leads to (status leads nowhere)
EXPECTED_STATE: dict[PowerAction, PowerState | None] = {
    PowerAction.STATUS: None,
    PowerAction.ON: PowerState.ON,
    PowerAction.OFF: PowerState.OFF,
    PowerAction.SOFT: PowerState.OFF,
    PowerAction.RESET: PowerState.ON,
    PowerAction.CYCLE: PowerState.ON,
}


class PowerError(enum.StrEnum):
    """Why an action did not succeed (finer than the result)."""

    AUTH = "AuthError"
    UNREACHABLE = "Unreachable"
    TLS = "TLSError"
    NOT_FOUND = "NotFound"
    UNSUPPORTED = "Unsupported"
    REJECTED = "Rejected"
    NOT_CONFIRMED = "NotConfirmed"
    TIMEOUT = "Timeout"
    PROTOCOL = "ProtocolError"


@dataclass(frozen=True)
class BmcCredentials:
    """User and password for a BMC; the password never shows in a repr or a log."""

    username: str
    password: SecretStr

    def __init__(self, username: str, password: str | SecretStr) -> None:
        object.__setattr__(self, "username", username)
        if not isinstance(password, SecretStr):
            password = SecretStr(password)
        object.__setattr__(self, "password", password)


@dataclass(frozen=True)
class BmcTarget:
    """Where a BMC answers and how to talk to it (the non-secret part of ``powerManagement``)."""

    type: PowerManagementType
    address: str
    port: int | None = None
    #: Redfish: the ComputerSystem id (``/redfish/v1/Systems/<id>``); None: the only system
    system_id: str | None = None
    verify_tls: bool = True
    #: Redfish: a CA bundle file, or PEM text, that signs the BMC's certificate
    ca_bundle_path: str | None = None
    ca_bundle_pem: str | None = field(default=None, repr=False)

    @classmethod
    def from_spec(cls, spec: PowerManagement, ca_bundle_pem: str | None = None) -> BmcTarget:
        """From a Host's ``spec.powerManagement`` (the CA bundle is read from its Secret)."""
        return cls(
            type=spec.type,
            address=spec.address,
            port=spec.effective_port(),
            system_id=spec.system_id,
            verify_tls=spec.verify_tls,
            ca_bundle_pem=ca_bundle_pem,
        )

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 443 if self.type is PowerManagementType.REDFISH else 623

    def describe(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.type.value} BMC {host}:{self.effective_port}"


@dataclass(frozen=True)
class PowerResult:
    action: PowerAction
    result: PowerActionResult
    #: the last power state the BMC reported (Unknown when it could not be read)
    power_state: PowerState
    #: seconds from the start of the call to its end
    duration: float
    message: str
    error: PowerError | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def succeeded(self) -> bool:
        return self.result is PowerActionResult.SUCCEEDED


class BmcFailure(Exception):
    """Raised inside a driver; becomes a failed :class:`PowerResult`."""

    def __init__(
        self,
        error: PowerError,
        message: str,
        result: PowerActionResult = PowerActionResult.FAILED,
    ) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.result = result


@dataclass
class _Progress:
    """What a worker has seen so far: reported if the caller stops waiting."""

    phase: str = "connecting to the BMC"
    state: PowerState = PowerState.UNKNOWN


class PowerManager(abc.ABC):
    """Power actions on one host's BMC. Thread-safe; each call is independent."""

    def __init__(
        self,
        target: BmcTarget,
        credentials: BmcCredentials,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        cycle_off_time: float = DEFAULT_CYCLE_OFF_TIME,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.target = target
        self._credentials = credentials
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.cycle_off_time = cycle_off_time
        self._workers: set[threading.Thread] = set()
        self._workers_lock = threading.Lock()

    # -- the interface ---------------------------------------------------------------------

    def status(self, timeout: float | None = None) -> PowerResult:
        return self.run(PowerAction.STATUS, timeout)

    def on(self, timeout: float | None = None) -> PowerResult:
        return self.run(PowerAction.ON, timeout)

    def off(self, timeout: float | None = None) -> PowerResult:
        return self.run(PowerAction.OFF, timeout)

    def soft(self, timeout: float | None = None) -> PowerResult:
        return self.run(PowerAction.SOFT, timeout)

    def reset(self, timeout: float | None = None) -> PowerResult:
        return self.run(PowerAction.RESET, timeout)

    def cycle(self, timeout: float | None = None) -> PowerResult:
        return self.run(PowerAction.CYCLE, timeout)

    def run(self, action: PowerAction | str, timeout: float | None = None) -> PowerResult:
        """Carry out ``action`` within ``timeout`` seconds (default: the manager's)."""
        action = PowerAction(action)
        budget = self.timeout if timeout is None else timeout
        if budget <= 0:
            raise ValueError("timeout must be > 0")
        started_at = get_clock().now()
        start = time.monotonic()
        deadline = start + budget
        progress = _Progress()
        box: list[PowerResult] = []
        log.info("%s: %s requested", self.target.describe(), action.value)

        def work() -> None:
            try:
                box.append(self._guarded(action, deadline, progress, start, started_at))
            finally:
                with self._workers_lock:
                    self._workers.discard(threading.current_thread())

        worker = threading.Thread(
            target=work, name=f"bmc-{action.value}-{self.target.address}", daemon=True
        )
        with self._workers_lock:
            self._workers.add(worker)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()) + 0.2)
        if box:
            result = box[0]
        else:
            result = self._result(
                action,
                PowerActionResult.TIMED_OUT,
                progress.state,
                start,
                started_at,
                f"timed out after {budget:g}s while {progress.phase}",
                PowerError.TIMEOUT,
            )
        level = logging.INFO if result.succeeded else logging.WARNING
        log.log(
            level,
            "%s: %s -> %s, power %s, %.2fs: %s",
            self.target.describe(),
            action.value,
            result.result.value,
            result.power_state.value,
            result.duration,
            result.message,
        )
        return result

    def close(self, timeout: float = 15.0) -> None:
        """Wait (up to ``timeout``) for workers of timed-out calls to end; free resources."""
        deadline = time.monotonic() + timeout
        with self._workers_lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> PowerManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the template ----------------------------------------------------------------------

    def _guarded(
        self,
        action: PowerAction,
        deadline: float,
        progress: _Progress,
        start: float,
        started_at: datetime,
    ) -> PowerResult:
        try:
            state, message = self._perform(action, deadline, progress)
            return self._result(
                action, PowerActionResult.SUCCEEDED, state, start, started_at, message
            )
        except BmcFailure as failure:
            return self._result(
                action,
                failure.result,
                progress.state,
                start,
                started_at,
                failure.message,
                failure.error,
            )
        except Exception as exc:  # a library surprise: report it, never crash the caller
            return self._result(
                action,
                PowerActionResult.FAILED,
                progress.state,
                start,
                started_at,
                f"unexpected {type(exc).__name__} while {progress.phase}: {exc}",
                PowerError.PROTOCOL,
            )

    def _perform(
        self, action: PowerAction, deadline: float, progress: _Progress
    ) -> tuple[PowerState, str]:
        with self._session(deadline, progress) as session:
            progress.phase = "reading the power state"
            before = session.power_state(deadline)
            progress.state = before
            if action is PowerAction.STATUS:
                return before, f"power is {before.value}"
            expected = EXPECTED_STATE[action]
            if action in (PowerAction.RESET, PowerAction.CYCLE) and before is PowerState.OFF:
                raise BmcFailure(
                    PowerError.REJECTED,
                    f"power is Off: {action.value} only acts on a running host (use on)",
                    PowerActionResult.REJECTED,
                )
            if action in (PowerAction.ON, PowerAction.OFF, PowerAction.SOFT) and before is expected:
                return before, f"power was already {before.value}"
            progress.phase = f"sending {action.value}"
            session.command(action, deadline, progress)
            assert expected is not None
            progress.phase = f"waiting for power {expected.value}"
            state = self._confirm(session, expected, deadline, progress)
            return state, f"{action.value} done, power is {state.value}"

    def _confirm(
        self,
        session: _Session,
        expected: PowerState,
        deadline: float,
        progress: _Progress,
    ) -> PowerState:
        while True:
            state = session.power_state(deadline)
            progress.state = state
            if state is expected:
                return state
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BmcFailure(
                    PowerError.NOT_CONFIRMED,
                    f"power still {state.value}, not {expected.value}, when the timeout expired",
                    PowerActionResult.TIMED_OUT,
                )
            time.sleep(min(self.poll_interval, remaining))

    def _result(
        self,
        action: PowerAction,
        result: PowerActionResult,
        state: PowerState,
        start: float,
        started_at: datetime,
        message: str,
        error: PowerError | None = None,
    ) -> PowerResult:
        return PowerResult(
            action=action,
            result=result,
            power_state=state,
            duration=time.monotonic() - start,
            message=self._scrub(message),
            error=error,
            started_at=started_at,
            finished_at=get_clock().now(),
        )

    def _scrub(self, text: str) -> str:
        secret = self._credentials.password.get_secret_value()
        if secret:
            text = text.replace(secret, "***")
        return text

    @abc.abstractmethod
    def _session(
        self, deadline: float, progress: _Progress
    ) -> contextlib.AbstractContextManager[_Session]:
        """A logged-in session to the BMC, closed at the end."""


class _Session(abc.ABC):
    @abc.abstractmethod
    def power_state(self, deadline: float) -> PowerState: ...

    @abc.abstractmethod
    def command(self, action: PowerAction, deadline: float, progress: _Progress) -> None: ...


def _remaining(deadline: float, floor: float = 0.1) -> float:
    return max(floor, deadline - time.monotonic())


# --- Redfish ----------------------------------------------------------------------------------


class RedfishPowerManager(PowerManager):
    """Redfish through ``sushy``: ``ComputerSystem.Reset`` and ``PowerState``.

    on -> On (ForceOn if On is not offered), off -> ForceOff, soft -> GracefulShutdown,
    reset -> ForceRestart, cycle -> PowerCycle, or, when the BMC does not offer PowerCycle,
    ForceOff, confirm Off, wait ``cycle_off_time``, On.
    """

    def __init__(self, target: BmcTarget, credentials: BmcCredentials, **kwargs: Any) -> None:
        super().__init__(target, credentials, **kwargs)
        self._ca_file: str | None = None
        if target.verify_tls and target.ca_bundle_pem:
            fd, path = tempfile.mkstemp(prefix="bmc-ca-", suffix=".pem")
            with os.fdopen(fd, "w") as handle:
                handle.write(target.ca_bundle_pem)
            self._ca_file = path

    @property
    def base_url(self) -> str:
        host = f"[{self.target.address}]" if ":" in self.target.address else self.target.address
        return f"https://{host}:{self.target.effective_port}"

    def _verify(self) -> bool | str:
        if not self.target.verify_tls:
            return False
        return self._ca_file or self.target.ca_bundle_path or True

    @contextlib.contextmanager
    def _session(self, deadline: float, progress: _Progress) -> Any:

        root: Any = None
        try:
            progress.phase = "connecting to the BMC"
            budget = _remaining(deadline)
            try:
                root = sushy.Sushy(
                    f"{self.base_url}/redfish/v1",
                    username=self._credentials.username,
                    password=self._credentials.password.get_secret_value(),
                    verify=self._verify(),
                    server_side_retries=1,
                    server_side_retries_delay=min(1.0, budget / 4),
                    read_timeout=budget,
                    connect_timeout=min(budget, 10.0),
                )
                progress.phase = "finding the system"
                system = root.get_system(self._system_path(root))
            except sushy_exc.SushyError as exc:
                raise _redfish_failure(exc) from None
            yield _RedfishSession(self, system)
        finally:
            if root is not None:
                _close_sushy(root)

    def _system_path(self, root: Any) -> str | None:
        if self.target.system_id is None:
            return None  # sushy picks the only system, or fails clearly
        if self.target.system_id.startswith("/"):
            return self.target.system_id
        return f"{root.get_system_collection().path.rstrip('/')}/{self.target.system_id}"

    def close(self, timeout: float = 15.0) -> None:
        super().close(timeout)
        if self._ca_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._ca_file)
            self._ca_file = None


def _close_sushy(root: Any) -> None:
    # Sushy has no public close: log out of a Redfish session (if one was made) and drop the
    # HTTP connection pool, as its __del__ would.
    with contextlib.suppress(Exception):
        auth = getattr(root, "_auth", None)
        if auth is not None:
            auth.close()
            root._auth = None
    with contextlib.suppress(Exception):
        root._conn.close()


def _redfish_failure(exc: Exception) -> BmcFailure:

    text = str(getattr(exc, "message", None) or exc)
    if isinstance(exc, sushy_exc.AccessError):
        return BmcFailure(PowerError.AUTH, f"authentication failed: {text}")
    if isinstance(exc, sushy_exc.ResourceNotFoundError):
        return BmcFailure(PowerError.NOT_FOUND, f"system not found: {text}")
    if isinstance(exc, sushy_exc.ConnectionError):
        if "SSL" in text or "certificate" in text.lower():
            return BmcFailure(PowerError.TLS, f"TLS verification failed: {text}")
        if "timed out" in text.lower() or "timeout" in text.lower():
            return BmcFailure(
                PowerError.TIMEOUT, f"no answer from the BMC: {text}", PowerActionResult.TIMED_OUT
            )
        return BmcFailure(PowerError.UNREACHABLE, f"BMC unreachable: {text}")
    if isinstance(exc, sushy_exc.InvalidParameterValueError | sushy_exc.MissingActionError):
        return BmcFailure(PowerError.UNSUPPORTED, f"not supported by the BMC: {text}")
    if isinstance(exc, sushy_exc.UnknownDefaultError):
        return BmcFailure(
            PowerError.NOT_FOUND, f"several systems on this BMC, set systemID: {text}"
        )
    if isinstance(exc, sushy_exc.BadRequestError):
        return BmcFailure(PowerError.REJECTED, f"the BMC refused the request: {text}")
    return BmcFailure(PowerError.PROTOCOL, f"Redfish error: {text}")


_REDFISH_STATES = {
    "On": PowerState.ON,
    "Off": PowerState.OFF,
    # transitional: the action is not confirmed yet
    "PoweringOn": PowerState.OFF,
    "PoweringOff": PowerState.ON,
}


class _RedfishSession(_Session):
    def __init__(self, manager: RedfishPowerManager, system: Any) -> None:
        self._manager = manager
        self._system = system

    def power_state(self, deadline: float) -> PowerState:

        try:
            self._system.refresh(force=True)
        except sushy_exc.SushyError as exc:
            raise _redfish_failure(exc) from None
        value = self._system.power_state
        raw = getattr(value, "value", value)
        return _REDFISH_STATES.get(str(raw), PowerState.UNKNOWN)

    def command(self, action: PowerAction, deadline: float, progress: _Progress) -> None:

        try:
            allowed = self._system.get_allowed_reset_system_values()
            if action is PowerAction.ON:
                self._reset(ResetType.ON if ResetType.ON in allowed else ResetType.FORCE_ON)
            elif action is PowerAction.OFF:
                self._reset(ResetType.FORCE_OFF)
            elif action is PowerAction.SOFT:
                self._reset(ResetType.GRACEFUL_SHUTDOWN)
            elif action is PowerAction.RESET:
                self._reset(ResetType.FORCE_RESTART)
            elif action is PowerAction.CYCLE:
                if ResetType.POWER_CYCLE in allowed:
                    self._reset(ResetType.POWER_CYCLE)
                else:
                    self._emulated_cycle(allowed, deadline, progress)
            else:
                raise ValueError(f"not a power command: {action}")
        except sushy_exc.SushyError as exc:
            raise _redfish_failure(exc) from None

    def _reset(self, value: Any) -> None:
        self._system.reset_system(value)

    def _emulated_cycle(self, allowed: Any, deadline: float, progress: _Progress) -> None:

        self._reset(ResetType.FORCE_OFF)
        progress.phase = "waiting for power Off (cycle)"
        self._manager._confirm(self, PowerState.OFF, deadline, progress)
        time.sleep(min(self._manager.cycle_off_time, _remaining(deadline, 0.0)))
        progress.phase = "powering on (cycle)"
        self._reset(ResetType.ON if ResetType.ON in allowed else ResetType.FORCE_ON)


# --- IPMI -------------------------------------------------------------------------------------

#: IPMI Chassis Control (netfn 0x00, command 0x02) data byte
_CHASSIS_CONTROL = {
    PowerAction.OFF: 0x00,
    PowerAction.ON: 0x01,
    PowerAction.CYCLE: 0x02,
    PowerAction.RESET: 0x03,
    PowerAction.SOFT: 0x05,
}


class IpmiPowerManager(PowerManager):
    """IPMI 2.0 (RMCP+, like ``ipmitool -I lanplus``) through ``pyghmi.ipmi.command.Command``."""

    @contextlib.contextmanager
    def _session(self, deadline: float, progress: _Progress) -> Any:

        progress.phase = "logging in to the BMC"
        try:
            # bytes, not str: pyghmi keys its half-open sessions by the credentials as given
            # but removes them by their encoded form, so with str a later login with the same
            # credentials would pick up a stale, logged-out session
            cmd = ipmi_command.Command(
                bmc=self.target.address,
                userid=self._credentials.username.encode(),
                password=self._credentials.password.get_secret_value().encode(),
                port=self.target.effective_port,
            )
        except pyghmi_exc.IpmiException as exc:
            raise _ipmi_failure(exc, "logging in") from None
        except AttributeError as exc:
            # pyghmi shares its event loop between threads: when another thread handles this
            # session's failed login, the session is marked broken before its error is set
            if "errormsg" not in str(exc):
                raise
            raise BmcFailure(
                PowerError.PROTOCOL, "login failed (pyghmi reported no reason)"
            ) from None
        try:
            yield _IpmiSession(cmd)
        finally:
            with contextlib.suppress(Exception):
                cmd.ipmi_session.logout()


def _ipmi_failure(exc: Exception, phase: str) -> BmcFailure:
    text = str(exc.args[0]) if exc.args and exc.args[0] else ""
    lowered = text.lower()
    if "password" in lowered or "unauthorized" in lowered or "rakp" in lowered:
        return BmcFailure(PowerError.AUTH, f"authentication failed: {text}")
    if not text or "timeout" in lowered or "no longer connected" in lowered:
        return BmcFailure(
            PowerError.TIMEOUT,
            f"no answer from the BMC while {phase}",
            PowerActionResult.TIMED_OUT,
        )
    if "unable to transmit" in lowered:
        return BmcFailure(PowerError.UNREACHABLE, f"BMC unreachable: {text}")
    return BmcFailure(PowerError.PROTOCOL, f"IPMI error while {phase}: {text}")


class _IpmiSession(_Session):
    def __init__(self, cmd: Any) -> None:
        self._cmd = cmd

    def power_state(self, deadline: float) -> PowerState:

        try:
            reply = self._cmd.get_power()
        except pyghmi_exc.IpmiException as exc:
            raise _ipmi_failure(exc, "reading the power state") from None
        value = reply.get("powerstate") if isinstance(reply, dict) else None
        return {"on": PowerState.ON, "off": PowerState.OFF}.get(str(value), PowerState.UNKNOWN)

    def command(self, action: PowerAction, deadline: float, progress: _Progress) -> None:

        try:
            reply = self._cmd.raw_command(netfn=0x00, command=0x02, data=[_CHASSIS_CONTROL[action]])
        except pyghmi_exc.IpmiException as exc:
            raise _ipmi_failure(exc, f"sending {action.value}") from None
        if "error" in reply:
            raise BmcFailure(
                PowerError.REJECTED,
                f"the BMC refused {action.value}: {reply['error']}",
                PowerActionResult.REJECTED,
            )
        code = reply.get("code", 0)
        if code:
            raise BmcFailure(
                PowerError.REJECTED,
                f"the BMC refused {action.value}: completion code 0x{code:02x}",
                PowerActionResult.REJECTED,
            )


# --- factory ----------------------------------------------------------------------------------


def power_manager(
    target: BmcTarget,
    credentials: BmcCredentials,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    cycle_off_time: float = DEFAULT_CYCLE_OFF_TIME,
) -> PowerManager:
    """The power manager for ``target``'s protocol."""
    kinds: dict[PowerManagementType, Callable[..., PowerManager]] = {
        PowerManagementType.REDFISH: RedfishPowerManager,
        PowerManagementType.IPMI: IpmiPowerManager,
    }
    return kinds[target.type](
        target,
        credentials,
        timeout=timeout,
        poll_interval=poll_interval,
        cycle_off_time=cycle_off_time,
    )


__all__ = [
    "DEFAULT_TIMEOUT",
    "EXPECTED_STATE",
    "BmcCredentials",
    "BmcFailure",
    "BmcTarget",
    "IpmiPowerManager",
    "PowerError",
    "PowerManager",
    "PowerResult",
    "RedfishPowerManager",
    "power_manager",
]
