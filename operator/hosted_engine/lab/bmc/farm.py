"""The lab's BMCs for N nodes: one Redfish service (one system per node) and one IPMI BMC per node.

>>> farm = BmcFarm(["node-1", "node-2"], power_delay=0.0).start()   # doctest: +SKIP
>>> farm.endpoints["node-1"].redfish_url, farm.endpoints["node-1"].ipmi_port   # doctest: +SKIP
>>> farm.stop()                                                                # doctest: +SKIP

Every node gets a :class:`NodePower` (or the caller's own :class:`PowerTarget`). The farm's
credentials are one user/password pair for every BMC, like a fleet provisioned from one
template; they are only handed to the caller (for the lab's Secrets), never logged.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hosted_engine.lab.bmc.faults import BmcFaults
from hosted_engine.lab.bmc.ipmi import IpmiPump, NodeIpmiBmc, close_bmcs, start_bmc
from hosted_engine.lab.bmc.power import (
    DEFAULT_CYCLE_OFF_TIME,
    DEFAULT_POWER_DELAY,
    DEFAULT_SHUTDOWN_TIME,
    NodePower,
    PowerTarget,
)
from hosted_engine.lab.bmc.redfish import RedfishServer, system_uuid
from hosted_engine.lab.bmc.tls import LabCA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BmcCredentials:
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"BmcCredentials(username={self.username!r}, password=***)"


@dataclass(frozen=True)
class NodeBmcEndpoints:
    """Where a node's BMCs answer: what a Host's ``powerManagement`` and its Secret need."""

    node: str
    address: str
    #: Redfish: HTTPS port, system id (= node name) and the CA bundle that signs its certificate
    redfish_port: int | None
    redfish_system_id: str
    redfish_ca_path: Path | None
    #: IPMI 2.0 (lanplus): UDP port
    ipmi_port: int | None
    system_uuid: str

    @property
    def redfish_url(self) -> str | None:
        if self.redfish_port is None:
            return None
        return f"https://{self.address}:{self.redfish_port}"

    @property
    def redfish_system_path(self) -> str:
        return f"/redfish/v1/Systems/{self.redfish_system_id}"


class BmcFarm:
    """Starts and stops the lab's BMCs for a set of nodes."""

    def __init__(
        self,
        nodes: Iterable[str] | Mapping[str, PowerTarget],
        *,
        credentials: BmcCredentials | None = None,
        redfish: bool = True,
        ipmi: bool | Iterable[str] = True,
        power_delay: float = DEFAULT_POWER_DELAY,
        shutdown_time: float = DEFAULT_SHUTDOWN_TIME,
        cycle_off_time: float = DEFAULT_CYCLE_OFF_TIME,
        dispatch: Callable[[Callable[[], None]], object] | None = None,
        workdir: Path | None = None,
    ) -> None:
        """``nodes``: node names (the farm makes a :class:`NodePower` each, powered on), or
        a mapping of node name to the caller's own :class:`PowerTarget`.

        ``ipmi``: True for an IPMI BMC per node, False for none, or the names of the nodes that
        get one. pyghmi waits on its sockets with ``select()``, which stops at file descriptor
        1024: for labs of many hundred nodes give IPMI to a subset.

        ``dispatch`` is passed to each :class:`NodePower` (e.g. ``loop.call_soon_threadsafe``).
        """
        self.credentials = credentials or BmcCredentials("admin", secrets.token_urlsafe(12))
        self.power: dict[str, PowerTarget] = {}
        self._owned_power: list[NodePower] = []
        if isinstance(nodes, Mapping):
            self.power.update(nodes)
        else:
            for name in nodes:
                node_power = NodePower(
                    name,
                    power_delay=power_delay,
                    shutdown_time=shutdown_time,
                    cycle_off_time=cycle_off_time,
                    dispatch=dispatch,
                )
                self._owned_power.append(node_power)
                self.power[name] = node_power
        if not self.power:
            raise ValueError("a BMC farm needs at least one node")
        self._want_redfish = redfish
        if ipmi is True:
            self._ipmi_nodes = list(self.power)
        elif ipmi is False:
            self._ipmi_nodes = []
        else:
            self._ipmi_nodes = list(ipmi)
            unknown = sorted(set(self._ipmi_nodes) - set(self.power))
            if unknown:
                raise ValueError(f"IPMI asked for unknown nodes: {unknown}")
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lab-bmc-"))
        self.ca: LabCA | None = None
        self.redfish: RedfishServer | None = None
        self.ipmi: dict[str, NodeIpmiBmc] = {}
        self._pump: IpmiPump | None = None
        self.endpoints: dict[str, NodeBmcEndpoints] = {}
        #: down or slow BMCs (Redfish), by node: see :mod:`.faults`
        self.faults = BmcFaults()

    def node_power(self, name: str) -> NodePower:
        """The farm-made power switch of ``name`` (only when the farm made them)."""
        target = self.power[name]
        if not isinstance(target, NodePower):
            raise TypeError(f"{name}'s power is the caller's {type(target).__name__}")
        return target

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> BmcFarm:
        users = {self.credentials.username: self.credentials.password}
        try:
            if self._want_redfish:
                self.ca = LabCA(self.workdir / "ca")
                self.redfish = RedfishServer(
                    self.power,
                    users,
                    ca=self.ca,
                    workdir=self.workdir / "redfish",
                    faults=self.faults,
                ).start()
            if self._ipmi_nodes:
                self._pump = IpmiPump().start()
                for name in self._ipmi_nodes:
                    self.ipmi[name] = start_bmc(self.power[name], users)
        except BaseException:
            self.stop()
            raise
        for name in self.power:
            bmc = self.ipmi.get(name)
            self.endpoints[name] = NodeBmcEndpoints(
                node=name,
                address="127.0.0.1",
                redfish_port=self.redfish.port if self.redfish else None,
                redfish_system_id=name,
                redfish_ca_path=self.ca.ca_path if self.ca else None,
                ipmi_port=bmc.port if bmc else None,
                system_uuid=system_uuid(name),
            )
        log.info(
            "BMC farm: %d node(s), Redfish %s, IPMI %s",
            len(self.power),
            self.redfish.base_url if self.redfish else "off",
            f"for {len(self.ipmi)} node(s)" if self.ipmi else "off",
        )
        return self

    def stop(self) -> None:
        if self.redfish is not None:
            self.redfish.stop()
            self.redfish = None
        close_bmcs(list(self.ipmi.values()))
        self.ipmi.clear()
        if self._pump is not None:
            self._pump.stop()
            self._pump = None
        for node_power in self._owned_power:
            node_power.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> BmcFarm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
