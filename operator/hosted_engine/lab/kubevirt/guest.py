"""Simulated guest services: an HTTP endpoint per running guest on the VMI's own loopback IP.

Each VMI gets a unique address in 127.77.0.0/16 (all of 127/8 is loopback on Linux), reported in
``vmi.status.interfaces[0].ipAddress``. A VM annotated ``lab.hostedengine.io/guest-http: KIND``
serves HTTP on that address while its guest runs:

- ``engine``: ``GET /ovirt-engine/services/health`` answers ``DB Up!Welcome to Health Status!``
  (200) while healthy, ``DB Down!`` (503) while the engine is still starting (the start-up time)
  or forever when the guest image is "broken": a containerDisk image, the annotation
  ``lab.hostedengine.io/guest-image``, or a disk's import URL / content seed containing
  ``broken`` (an upgrade to a bad engine image);
- any kind: ``GET /`` answers the kind, ``GET /lab/guest`` a JSON description (VM, node, boot).

The endpoint is gone (connection refused) when the guest stops, crashes or its node loses power;
:meth:`GuestService.hang` makes it accept connections and never answer, :meth:`heal` undoes that.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ENGINE_HEALTH_PATH = "/ovirt-engine/services/health"
HEALTHY_BODY = "DB Up!Welcome to Health Status!"
UNHEALTHY_BODY = "DB Down!"


class IpAllocator:
    """Unique addresses in a loopback /16 (127.77.0.0/16 by default), reused after release."""


    def __init__(self, network: str = "127.77.0.0/16", start: int | None = None) -> None:
        """``start``: offset of the first address (random by default, so that several labs on
        one machine rarely compete for the same addresses)."""
        self._network = ipaddress.ip_network(network)
        first = int(self._network.network_address)
        size = int(self._network.broadcast_address) - first
        offset = start if start is not None else secrets.randbelow(max(1, size - 1))
        self._first = first
        self._size = size
        self._next = first + 2 + offset % max(1, size - 2)
        self._issued = 0
        self._free: list[str] = []
        self._by_key: dict[str, str] = {}

    def allocate(self, key: str) -> str:
        if key in self._by_key:
            return self._by_key[key]
        if self._free:
            address = self._free.pop()
        else:
            while True:
                if self._issued >= self._size:
                    raise RuntimeError(f"no free guest address left in {self._network}")
                if self._next >= self._first + self._size:
                    self._next = self._first + 1
                candidate = self._next
                self._next += 1
                self._issued += 1
                if candidate & 0xFF not in (0, 255):
                    break
            address = str(ipaddress.ip_address(candidate))
        self._by_key[key] = address
        return address

    def release(self, key: str, reuse: bool = True) -> None:
        """Free ``key``'s address; ``reuse=False`` retires it (it is taken elsewhere)."""
        address = self._by_key.pop(key, None)
        if address is not None and reuse:
            self._free.append(address)

    def get(self, key: str) -> str | None:
        return self._by_key.get(key)


@dataclass
class GuestService:
    """One guest's HTTP endpoint. ``startup_time`` counts from :meth:`start`."""

    vm: str  # namespace/name
    kind: str
    ip: str
    port: int
    node: str
    startup_time: float = 0.0
    broken: bool = False
    boot: int = 1
    _runner: web.AppRunner | None = field(default=None, repr=False)
    _healthy_at: float = field(default=0.0, repr=False)
    _healed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    hung: bool = False
    _stopped: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self._healed.set()

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def healthy(self) -> bool:
        loop = asyncio.get_running_loop()
        return not self.broken and loop.time() >= self._healthy_at

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._stopped = False
        app = web.Application()
        app.router.add_get(ENGINE_HEALTH_PATH, self._health)
        app.router.add_get("/lab/guest", self._describe)
        app.router.add_get("/", self._root)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, self.ip, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._healthy_at = asyncio.get_running_loop().time() + self.startup_time

    async def stop(self) -> None:
        """The guest is gone: the address refuses connections; hung requests are cut."""
        runner, self._runner = self._runner, None
        self._stopped = True
        self._healed.set()  # wake hung requests: they end with the server
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()

    def hang(self) -> None:
        self.hung = True
        self._healed.clear()

    def heal(self) -> None:
        self.hung = False
        self._healed.set()

    async def _wait_if_hung(self) -> None:
        while self.hung and not self._stopped:
            await self._healed.wait()  # cleared while hung: this suspends
        if self._stopped:
            raise web.HTTPServiceUnavailable()

    async def _health(self, request: web.Request) -> web.Response:
        await self._wait_if_hung()
        if self.kind != "engine":
            raise web.HTTPNotFound()
        if self.healthy():
            return web.Response(text=HEALTHY_BODY)
        return web.Response(text=UNHEALTHY_BODY, status=503)

    async def _describe(self, request: web.Request) -> web.Response:
        await self._wait_if_hung()
        body: dict[str, Any] = {
            "vm": self.vm,
            "kind": self.kind,
            "node": self.node,
            "boot": self.boot,
            "healthy": self.healthy(),
        }
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def _root(self, request: web.Request) -> web.Response:
        await self._wait_if_hung()
        return web.Response(text=f"{self.kind}\n")
