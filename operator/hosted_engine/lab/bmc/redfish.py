"""The lab's Redfish BMC: sushy-tools' emulator, serving one ComputerSystem per lab node.

sushy-tools (``sushy_tools.emulator.main``) is the OpenStack Ironic team's Redfish emulator: a
Flask application with pluggable *systems drivers*. Its ``fake`` driver keeps power in SQLite and
moves it 1-11 s after a command, on the next GET; here a driver of our own,
:class:`NodeSystemsDriver`, maps every system to a :class:`~hosted_engine.lab.bmc.power.PowerTarget`
so a Redfish ``ComputerSystem.Reset`` really powers the simulated node off or on. Everything
else (the resource tree, templates, error bodies, HTTP basic auth against an htpasswd file with
bcrypt hashes) is sushy-tools' own code.

The emulator keeps its Flask application in a module global, so each :class:`RedfishServer`
loads a private copy of ``sushy_tools.emulator.main`` (see docs/decisions/0006-lab-bmcs.md):
several servers can run in one process (a lab and a test) without sharing systems, users or
config.

The server speaks HTTPS with a certificate from a :class:`~hosted_engine.lab.bmc.tls.LabCA`,
binds 127.0.0.1 on a free port and runs in a background thread until :meth:`RedfishServer.stop`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import bcrypt
from sushy_tools import error as sushy_error
from sushy_tools.emulator.resources.systems.base import AbstractSystemsDriver
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from hosted_engine.lab.bmc.faults import BmcFaults
from hosted_engine.lab.bmc.power import PowerState, PowerTarget
from hosted_engine.lab.bmc.tls import LabCA

log = logging.getLogger(__name__)

_module_ids = itertools.count(1)


def system_uuid(name: str) -> str:
    """The stable SMBIOS-like UUID the lab gives a node's system."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.lab"))


class NodeSystemsDriver(AbstractSystemsDriver):  # type: ignore[misc]  # sushy-tools is untyped
    """A sushy-tools systems driver whose systems are lab nodes' power switches.

    System identity = node name; the system UUID is also accepted as an identity.
    """

    def __init__(self, targets: Mapping[str, PowerTarget], logger: logging.Logger) -> None:
        super().__init__()
        self._targets = dict(targets)
        self._by_uuid = {system_uuid(name): name for name in self._targets}
        self._boot: dict[str, str] = {}
        self._boot_mode: dict[str, str] = {}
        self._lock = threading.Lock()
        self._logger = logger

    def _resolve(self, identity: str) -> str:
        if identity in self._targets:
            return identity
        if identity in self._by_uuid:
            return self._by_uuid[identity]
        raise sushy_error.NotFound(f"System {identity} was not found")

    @property
    def driver(self) -> str:
        return "<hosted-engine-lab>"

    @property
    def systems(self) -> list[str]:
        return sorted(self._targets)

    def uuid(self, identity: str) -> str:
        return system_uuid(self._resolve(identity))

    def name(self, identity: str) -> str:
        return self._resolve(identity)

    def get_power_state(self, identity: str) -> str:
        return str(self._targets[self._resolve(identity)].power_state().value)

    def set_power_state(self, identity: str, state: str) -> None:
        """Redfish ResetType -> the switch: On/ForceOn, ForceOff, GracefulShutdown (soft off),
        ForceRestart (reset), GracefulRestart, PowerCycle, PushPowerButton; Nmi and anything
        else answer 501, as the fake driver does."""
        target = self._targets[self._resolve(identity)]
        if state in ("On", "ForceOn"):
            target.power_on()
        elif state == "ForceOff":
            target.power_off()
        elif state == "GracefulShutdown":
            target.soft_off()
        elif state == "ForceRestart":
            target.reset()
        elif state == "GracefulRestart":
            target.graceful_restart()
        elif state == "PowerCycle":
            target.cycle()
        elif state == "PushPowerButton":
            # the physical button: press to power on, press again for an ACPI shutdown
            if target.power_state() is PowerState.ON:
                target.soft_off()
            else:
                target.power_on()
        else:
            raise sushy_error.NotSupportedError(f"Power state {state} is not supported")

    def get_boot_device(self, identity: str) -> str:
        with self._lock:
            return self._boot.get(self._resolve(identity), "Hdd")

    def set_boot_device(self, identity: str, boot_source: str) -> None:
        with self._lock:
            self._boot[self._resolve(identity)] = boot_source

    def get_boot_mode(self, identity: str) -> str:
        with self._lock:
            return self._boot_mode.get(self._resolve(identity), "UEFI")

    def set_boot_mode(self, identity: str, boot_mode: str) -> None:
        with self._lock:
            self._boot_mode[self._resolve(identity)] = boot_mode

    def get_nics(self, identity: str) -> list[dict[str, str]]:
        index = self.systems.index(self._resolve(identity)) + 1
        mac = f"52:54:00:{index >> 16 & 0xFF:02x}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"
        return [{"id": mac, "mac": mac}]


def _load_emulator() -> ModuleType:
    """A private copy of ``sushy_tools.emulator.main`` (its Flask app is a module global)."""
    spec = importlib.util.find_spec("sushy_tools.emulator.main")
    if spec is None or spec.origin is None:
        raise RuntimeError("sushy-tools is not installed (pip install sushy-tools)")
    name = f"hosted_engine_lab_sushy_emulator_{next(_module_ids)}"
    private = importlib.util.spec_from_file_location(name, spec.origin)
    if private is None or private.loader is None:
        raise RuntimeError("cannot load sushy_tools.emulator.main")
    module = importlib.util.module_from_spec(private)
    # Flask finds its templates through sys.modules[import_name].__file__
    sys.modules[name] = module
    try:
        private.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


class _Handler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"
    #: an idle keep-alive connection is closed after this many seconds
    timeout = 30

    def log(self, type: str, message: str, *args: Any) -> None:
        level = logging.DEBUG if type == "info" else logging.WARNING
        log.log(level, "redfish %s: " + message, self.address_string(), *args)


class _Server(ThreadedWSGIServer):
    """Werkzeug's threaded server, TLS handshake in the request thread, connections tracked.

    Werkzeug would wrap the listening socket, so a client that connects and never speaks TLS
    would block the accept loop; here each accepted socket is wrapped without an immediate
    handshake, which then happens (with the handler's timeout) in its own thread.
    """

    def __init__(self, app: Any, tls: ssl.SSLContext | None) -> None:
        super().__init__("127.0.0.1", 0, app, handler=_Handler)
        self._tls = tls
        self.ssl_context = tls  # werkzeug uses it for wsgi.url_scheme and SSL error handling
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class RedfishServer:
    """sushy-tools' Redfish emulator over HTTPS for a set of lab nodes.

    ``users`` maps user names to passwords (HTTP basic auth; the service root stays open, as
    the emulator does). Pass ``ca=None`` and ``tls=False`` only for plain-HTTP experiments.
    ``faults`` (made here when not given): down or slow BMCs per system (:mod:`.faults`).
    """

    def __init__(
        self,
        targets: Mapping[str, PowerTarget],
        users: Mapping[str, str],
        *,
        ca: LabCA | None = None,
        tls: bool = True,
        workdir: Path | None = None,
        faults: BmcFaults | None = None,
    ) -> None:
        if not users:
            raise ValueError("a Redfish BMC needs at least one user")
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lab-redfish-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._targets = dict(targets)
        self._users = dict(users)
        self._tls_enabled = tls
        self._ca = ca
        self.faults = faults if faults is not None else BmcFaults()
        self._module: ModuleType | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> RedfishServer:
        if self._server is not None:
            return self
        context: ssl.SSLContext | None = None
        if self._tls_enabled:
            if self._ca is None:
                self._ca = LabCA(self.workdir / "ca")
            context = self._ca.server_context()

        htpasswd = self.workdir / "htpasswd"
        # bcrypt with a low cost: the emulator checks the file on every request
        lines = [
            f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}"
            for user, password in self._users.items()
        ]
        htpasswd.write_text("\n".join(lines) + "\n")
        htpasswd.chmod(0o600)

        module = _load_emulator()
        self._module = module
        app = module.app
        driver = NodeSystemsDriver(self._targets, app.logger)
        # this copy's Application class only: its memoized `systems` becomes our driver
        module.Application.systems = property(lambda _self: driver)
        app.configure(
            extra_config={
                "SUSHY_EMULATOR_LISTEN_IP": "127.0.0.1",
                "SUSHY_EMULATOR_STATE_DIR": str(self.workdir / "state"),
                "SUSHY_EMULATOR_FEATURE_SET": "full",
                "SUSHY_EMULATOR_AUTH_FILE": str(htpasswd),
            }
        )
        try:
            server = _Server(self.faults.middleware(app), context)
        except BaseException:
            self._unload()
            raise
        self._server = server
        self.port = server.port
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"redfish-bmc-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("Redfish BMC for %d system(s) on %s", len(self._targets), self.base_url)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self.faults.close()  # release requests held by a down BMC
        if server is not None:
            server.shutdown()  # stops serve_forever
            server.close_connections()
            server.server_close()  # joins request threads
        if thread is not None:
            thread.join()
        self._unload()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _unload(self) -> None:
        if self._module is not None:
            sys.modules.pop(self._module.__name__, None)
            self._module = None

    def __enter__(self) -> RedfishServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- where to reach it -----------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self._tls_enabled else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path | None:
        return self._ca.ca_path if self._ca is not None else None

    def system_path(self, name: str) -> str:
        return f"/redfish/v1/Systems/{name}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
