"""The lab API server: :class:`ApiCore` + HTTP(S) front end + persistence, started and stopped
in an asyncio loop. ``server.client`` is the in-process :class:`LocalClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from hosted_engine.clock import Clock
from hosted_engine.lab.apiserver import persistence, tls
from hosted_engine.lab.apiserver.admission import AdmissionHook, FaultRule
from hosted_engine.lab.apiserver.core import (
    AggregatedHandler,
    ApiCore,
    LogProvider,
    ServerConfig,
)
from hosted_engine.lab.apiserver.http import build_app
from hosted_engine.lab.apiserver.local import LocalClient

log = logging.getLogger(__name__)


class LabApiServer:
    """A Kubernetes-API-compatible server on 127.0.0.1.

    ``tls=True`` serves HTTPS with a generated CA (kept in ``state_dir`` when given, so that a
    kubeconfig stays valid across restarts); ``token`` (generated when None) is required as a
    bearer token unless ``auth=False``. ``port=0`` picks a free port.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, tls_enabled: bool = True,
                 token: str | None = None, auth: bool = True, state_dir: Path | None = None,
                 config: ServerConfig | None = None, clock: Clock | None = None,
                 certificates: tls.Certificates | None = None,
                 save_interval: float = 2.0) -> None:
        self.host = host
        self.port = port
        self.tls_enabled = tls_enabled
        self.token = token or tls.new_token()
        self.auth = auth
        self.state_dir = Path(state_dir) if state_dir else None
        self.core = ApiCore(config, clock)
        self.client = LocalClient(self.core)
        self.certificates = certificates
        self.save_interval = save_interval
        self._runner: web.AppRunner | None = None
        self._saver: asyncio.Task[None] | None = None
        self._scratch: Path | None = None
        if self.state_dir is not None:
            persistence.load(self.core, self.state_dir)

    # -- extension points (see ApiCore and Admission for details) ---------------------------
    def register_admission(self, kind: str, group: str, resource: str, subresource: str,
                           operation: str, hook: AdmissionHook) -> Any:
        """A mutating or validating hook; returns a function that unregisters it."""
        return self.core.admission.register(kind, group, resource, subresource, operation, hook)

    def register_aggregated(self, group: str, version: str, resources: list[dict[str, Any]],
                            handler: AggregatedHandler) -> None:
        self.core.register_aggregated(group, version, resources, handler)

    def register_log_provider(self, provider: LogProvider) -> None:
        self.core.register_log_provider(provider)

    def add_fault(self, rule: FaultRule) -> FaultRule:
        return self.core.faults.add(rule)

    @property
    def faults(self) -> Any:
        return self.core.faults

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self.tls_enabled else 'http'}://{self.host}:{self.port}"

    def kubeconfig(self) -> str:
        ca = self.certificates.ca_pem if (self.tls_enabled and self.certificates) else None
        return tls.kubeconfig(self.url, self.token, ca)

    def write_kubeconfig(self, path: Path) -> Path:
        tls.write_kubeconfig(Path(path), self.kubeconfig())
        return Path(path)

    async def start(self) -> None:
        self.core.start()
        app = build_app(self.core, self.token if self.auth else None)
        # handler_cancellation: a client that goes away ends its watch at once
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        ssl_ctx = None
        if self.tls_enabled:
            if self.certificates is None and self.state_dir is not None:
                self.certificates = tls.Certificates.read(self.state_dir / "pki")
            if self.certificates is None:
                self.certificates = tls.generate()
                if self.state_dir is not None:
                    self.certificates.write(self.state_dir / "pki")
            self._scratch = Path(tempfile.mkdtemp(prefix="lab-tls-"))
            ssl_ctx = self.certificates.server_context(self._scratch)
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=ssl_ctx,
                           reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        if self.state_dir is not None:
            self._saver = asyncio.get_running_loop().create_task(self._save_loop())

    async def _save_loop(self) -> None:
        assert self.state_dir is not None
        while True:
            await asyncio.sleep(self.save_interval)
            if self.core.store.dirty:
                await asyncio.to_thread(persistence.save, self.core, self.state_dir)

    def save(self) -> None:
        if self.state_dir is not None:
            persistence.save(self.core, self.state_dir)

    async def stop(self) -> None:
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
            self._saver = None
        await self.core.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.save()

    async def __aenter__(self) -> LabApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
