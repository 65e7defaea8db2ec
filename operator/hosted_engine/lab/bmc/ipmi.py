"""The lab's IPMI BMCs: pyghmi's BMC server, one per node, on 127.0.0.1 and its own UDP port.

:class:`NodeIpmiBmc` subclasses ``pyghmi.ipmi.bmc.Bmc`` (IPMI 2.0 / RMCP+, cipher suite 3) and
maps chassis control to the node's :class:`~hosted_engine.lab.bmc.power.PowerTarget`:
``ipmitool -I lanplus -H 127.0.0.1 -p PORT -U USER -P PASS chassis power status|on|off|soft|
reset|cycle`` works against it, and so does pyghmi's own client.

pyghmi runs every IPMI socket of a process (clients and servers) on one shared I/O thread and
one shared session table; whoever calls ``Session.wait_for_rsp`` processes the packets that
arrived. :class:`IpmiPump` is that caller for the lab's BMCs, one thread for all of them.

Two behaviours of pyghmi's server are corrected to match real BMCs (see shared peers.md §2.2),
for the lab's BMCs only:

* a client asking for SHA-256 (cipher suite 17) gets "invalid authentication algorithm" (0x11)
  instead of a silent downgrade to suite 3, which crashes pyghmi's own client;
* an unknown user name gets RAKP 2 with "unauthorized name" (0x0D) instead of no answer.

Server-side packet handling of the lab's BMCs is serialized by one lock, since any thread that
runs pyghmi's event loop may pick up a server session (see :class:`IpmiPump`).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
import uuid
from typing import Any

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.private.constants as ipmi_constants
import pyghmi.ipmi.private.serversession as serversession
import pyghmi.ipmi.private.session as ipmisession

from hosted_engine.lab.bmc.power import PowerState, PowerTarget

log = logging.getLogger(__name__)

_RMCP_INVALID_AUTH_ALGORITHM = 0x11
_RMCP_UNAUTHORIZED_NAME = 0x0D
_IPMI_INVALID_DATA = 0xCC

_patch_lock = threading.Lock()
_patched = False
_registry_lock = threading.Lock()
#: server-side packet handling of the lab's BMCs is serialized: whichever thread picks a
#: session from pyghmi's shared queue (the pump, or a client in the same process), one at a time
_serve_lock = threading.RLock()


def _install_server_fixes() -> None:
    """Make pyghmi's server answer like a real BMC, for :class:`NodeIpmiBmc` sessions only."""
    global _patched
    with _patch_lock:
        if _patched:
            return
        original_open = serversession.ServerSession.create_open_session_response
        original_rakp1 = serversession.ServerSession._got_rakp1

        def create_open_session_response(self: Any, request: bytearray) -> bytearray:
            if isinstance(getattr(self, "bmc", None), NodeIpmiBmc) and len(request) >= 32:
                auth_algorithm = request[12] & 0x3F
                integrity_algorithm = request[20] & 0x3F
                if auth_algorithm not in (0, 1) or integrity_algorithm not in (0, 1):
                    self.clientsessionid = request[4:8]
                    return bytearray([request[0], _RMCP_INVALID_AUTH_ALGORITHM, 0, 0]) + bytearray(
                        request[4:8]
                    )
            result: bytearray = original_open(self, request)
            return result

        def got_rakp1(self: Any, data: Any) -> None:
            if isinstance(getattr(self, "bmc", None), NodeIpmiBmc) and len(data) >= 28:
                username = bytes(data[28:]).decode("utf-8", "replace")
                if self.authdata.get(username) is None:
                    reply = bytearray([data[0], _RMCP_UNAUTHORIZED_NAME, 0, 0]) + bytearray(
                        self.clientsessionid
                    )
                    self.send_payload(reply, ipmi_constants.payload_types["rakp2"], retry=False)
                    return
            original_rakp1(self, data)

        original_process = serversession.ServerSession.process_pktqueue

        def process_pktqueue(self: Any) -> None:
            if isinstance(getattr(self, "bmc", None), NodeIpmiBmc):
                with _serve_lock:
                    original_process(self)
            else:
                original_process(self)

        serversession.ServerSession.create_open_session_response = create_open_session_response
        serversession.ServerSession._got_rakp1 = got_rakp1
        serversession.ServerSession.process_pktqueue = process_pktqueue
        _patched = True


class _NonBlockingSocket:
    """A BMC's UDP socket that stays non-blocking whatever pyghmi asks.

    pyghmi sets a socket blocking before each send and non-blocking before each read, from
    whichever thread does either. When a send (a BMC's reply, from the serving thread) lands
    between the I/O thread's ``setblocking(0)`` and its ``recvfrom``, the I/O thread blocks in
    ``recvfrom`` until the next packet reaches that socket; for a BMC that may be never, and
    every pyghmi session of the process (the operator's clients too) stalls with it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        sock.setblocking(False)

    def setblocking(self, flag: bool) -> None:
        """Ignored: see the class doc."""

    def fileno(self) -> int:
        return self._sock.fileno()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def recvfrom(self, size: int) -> tuple[bytes, Any]:
        return self._sock.recvfrom(size)

    def sendto(self, data: bytes, address: Any) -> int:
        for _ in range(50):
            try:
                return self._sock.sendto(data, address)
            except BlockingIOError:  # send buffer full: wait until writable, briefly
                select.select([], [self._sock], [], 0.1)
        return 0

    def close(self) -> None:
        self._sock.close()


def _prime_pyghmi() -> None:
    """Create pyghmi's first socket as a client socket.

    pyghmi wakes its I/O thread by sending to ``iosockets[0]`` from itself over IPv6; if the
    first socket of the process were a BMC's IPv4 server socket, that wake-up would fail (and
    the server socket could never be removed again).
    """
    with _registry_lock:
        if not ipmisession.iosockets:
            ipmisession.Session._assignsocket()


class NodeIpmiBmc(pyghmi_bmc.Bmc):  # type: ignore[misc]  # pyghmi is untyped
    """One node's IPMI BMC, bound to its power target."""

    serversocket: Any

    def __init__(
        self,
        target: PowerTarget,
        users: dict[str, str],
        port: int,
        address: str = "127.0.0.1",
    ) -> None:
        _install_server_fixes()
        _prime_pyghmi()
        self.target = target
        self.boot_device = "default"
        self.bmc_uuid = uuid.uuid5(uuid.NAMESPACE_DNS, f"{target.name}.bmc.lab")
        with _registry_lock:
            super().__init__(dict(users), port=port, bmcuuid=self.bmc_uuid, address=address)
            self._wrap_socket()
        self.address = address
        self.closed = False

    def _wrap_socket(self) -> None:
        raw = self.serversocket
        wrapped = _NonBlockingSocket(raw)
        handlers = ipmisession.Session.bmc_handlers
        handlers[wrapped] = handlers.pop(raw)
        index = ipmisession.iosockets.index(raw)
        ipmisession.iosockets[index] = wrapped
        self.serversocket = wrapped

    # -- what pyghmi's server asks -----------------------------------------------------------

    def get_power_state(self) -> str:
        return "on" if self.target.power_state() is PowerState.ON else "off"

    def is_active(self) -> bool:
        return self.target.power_state() is PowerState.ON

    def power_on(self) -> None:
        self.target.power_on()

    def power_off(self) -> None:
        self.target.power_off()

    def power_shutdown(self) -> None:
        self.target.soft_off()

    def power_reset(self) -> None:
        self.target.reset()

    def power_cycle(self) -> None:
        self.target.cycle()

    def pulse_diag(self) -> int:
        return _IPMI_INVALID_DATA  # no NMI in the lab

    def get_boot_device(self) -> str:
        return self.boot_device

    def set_boot_device(self, bootdevice: str) -> None:
        self.boot_device = bootdevice

    def cold_reset(self) -> int:
        return 0  # the BMC itself restarts; the host's power is untouched

    def get_system_guid(self) -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.target.name}.lab")

    def process_pktqueue(self) -> None:
        with _serve_lock:
            super().process_pktqueue()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Unregister from pyghmi's shared tables and close the UDP socket."""
        close_bmcs([self])


def close_bmcs(bmcs: list[NodeIpmiBmc]) -> None:
    """Close several BMCs at once (one wake-up of pyghmi's I/O thread for all of them)."""
    sockets = []
    with _registry_lock:
        for bmc in bmcs:
            if bmc.closed:
                continue
            bmc.closed = True
            sockets.append(bmc.serversocket)
            _unregister(bmc)
        if not sockets:
            return
        _wake_io_thread()
    # let the I/O thread leave the select() that may still hold the sockets
    time.sleep(0.05)
    for sock in sockets:
        sock.close()


def _unregister(bmc: NodeIpmiBmc) -> None:
    sock = bmc.serversocket
    handlers = ipmisession.Session.bmc_handlers
    handlers.pop(sock, None)
    for key in list(handlers):
        ports = handlers.get(key)
        if not isinstance(ports, dict):
            continue
        for port, session in list(ports.items()):
            if getattr(session, "bmc", None) is bmc:
                del ports[port]
        if not ports:
            handlers.pop(key, None)
    if sock in ipmisession.iosockets:
        ipmisession.iosockets.remove(sock)


def _wake_io_thread() -> None:
    if not ipmisession.iosockets or ipmisession.myself is None:
        return
    waker = ipmisession.iosockets[0]
    with contextlib.suppress(OSError):
        waker.sendto(b"\x01", (ipmisession.myself, waker.getsockname()[1]))


class IpmiPump:
    """The thread that serves the lab's BMCs: it processes their packets, and only theirs.

    pyghmi's ``Session.wait_for_rsp`` would also process the packets of *client* sessions
    (an operator's pyghmi ``Command`` in the same process); a client session handled in another
    thread can be marked broken before its error message is set, so its own thread sees a
    half-failed login. The pump therefore waits on pyghmi's I/O thread and takes only server
    sessions from the shared queue.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> IpmiPump:
        if self._thread is None:
            _prime_pyghmi()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="ipmi-bmc-pump", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._serve_queued()
                ipmisession._io_wait(self._interval)
            except Exception:  # one bad packet must not stop every BMC
                log.exception("IPMI BMC event loop")
                time.sleep(self._interval)

    @staticmethod
    def _serve_queued() -> None:
        queue = ipmisession.sessionqueue
        for session in list(queue):
            if not _is_lab_server(session):
                continue
            try:
                queue.remove(session)
            except ValueError:
                continue  # another thread took it
            session.process_pktqueue()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()


def _is_lab_server(session: object) -> bool:
    if isinstance(session, NodeIpmiBmc):
        return True
    return isinstance(getattr(session, "bmc", None), NodeIpmiBmc)


def free_udp_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


def start_bmc(target: PowerTarget, users: dict[str, str], attempts: int = 5) -> NodeIpmiBmc:
    """A BMC for ``target`` on a free UDP port of 127.0.0.1 (retried if the port was taken)."""
    last: OSError | None = None
    for _ in range(attempts):
        try:
            return NodeIpmiBmc(target, users, free_udp_port())
        except OSError as exc:  # the free port was taken between probe and bind
            last = exc
    raise RuntimeError(f"no free UDP port for the IPMI BMC of {target.name}") from last
