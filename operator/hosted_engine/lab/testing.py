"""Helpers for tests and benchmarks: the lab API server in a background thread with its own
event loop (so that sync clients such as ``kubernetes`` and ``kubectl`` can be used from plain
test code without deadlocking), plus configured clients.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from hosted_engine.clock import Clock
from hosted_engine.lab.apiserver import tls
from hosted_engine.lab.apiserver.core import ServerConfig
from hosted_engine.lab.apiserver.server import LabApiServer

T = TypeVar("T")
_CERTS: tls.Certificates | None = None
_CERTS_LOCK = threading.Lock()


def shared_certificates() -> tls.Certificates:
    """One generated CA and server certificate per process (generating costs milliseconds,
    but hundreds of tests add up)."""
    global _CERTS
    with _CERTS_LOCK:
        if _CERTS is None:
            _CERTS = tls.generate()
        return _CERTS


class LabThread:
    """A :class:`LabApiServer` running in a daemon thread with its own event loop.

    Use as a context manager. ``kubeconfig_path`` is written on start. ``call(fn)`` runs
    ``fn()`` (a coroutine function) in the server's loop and returns its result, e.g.
    ``lab.call(lambda: lab.server.client.get("", "v1", "namespaces", "default"))``.
    """

    def __init__(self, *, tls_enabled: bool = True, state_dir: Path | None = None,
                 config: ServerConfig | None = None, clock: Clock | None = None,
                 kubeconfig_path: Path | None = None, port: int = 0) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if kubeconfig_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lab-")
            kubeconfig_path = Path(self._tmp.name) / "kubeconfig"
        self.kubeconfig_path = Path(kubeconfig_path)
        self.server = LabApiServer(
            port=port, tls_enabled=tls_enabled, state_dir=state_dir, config=config, clock=clock,
            certificates=shared_certificates() if tls_enabled and state_dir is None else None)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="lab-apiserver", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        return self.server.token

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def start(self) -> LabThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError("lab API server failed to start") from self._error
        self.server.write_kubeconfig(self.kubeconfig_path)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
        """Run a coroutine function in the server's loop and wait for its result."""
        async def run() -> T:
            return await fn()
        fut: Future[T] = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return fut.result(timeout)

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` configured from the kubeconfig (CA and token)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig_path))

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (kubectl, kopf) pointing at this lab."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig_path)
        return env

    def __enter__(self) -> LabThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
