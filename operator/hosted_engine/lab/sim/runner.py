"""A :class:`~hosted_engine.lab.sim.lab.Lab` in a background thread with its own event loop,
for code that uses synchronous clients (the ``kubernetes`` client, kubectl, the CLI) next to it:
tests, benchmarks and ``hosted-engine lab up``.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from hosted_engine.lab.sim.lab import Lab

T = TypeVar("T")


class LabRunner:
    """Start with ``with LabRunner(Lab(...)) as run:``; ``run.call(fn)`` runs ``await fn()`` in
    the lab's loop; ``run.kubeconfig_path`` is written once the lab is up."""

    def __init__(self, lab: Lab, kubeconfig_path: Path | None = None) -> None:
        self.lab = lab
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if kubeconfig_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lab-kubeconfig-")
            kubeconfig_path = Path(self._tmp.name) / "kubeconfig"
        self.kubeconfig_path = Path(kubeconfig_path)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="lab", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.lab.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        try:
            self.loop.run_until_complete(self.lab.stop())
        finally:
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    def start(self, timeout: float = 60) -> LabRunner:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the lab did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the lab failed to start: {self._error}") from self._error
        self.lab.write_kubeconfig(self.kubeconfig_path)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(60)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def wait_stopped(self) -> None:
        """Block until the loop is stopped from elsewhere (a signal handler)."""
        self._thread.join()

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
        async def run() -> T:
            return await fn()

        future: Future[T] = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return future.result(timeout)

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` from the kubeconfig (CA and token)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig_path))

    def __enter__(self) -> LabRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
