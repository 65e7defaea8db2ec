"""Container processes of the simulated kubelet: a container's command run as a local process.

The image is ignored: ``command`` + ``args`` are executed with the container's environment, in a
per-pod sandbox directory where the pod's volumes (ConfigMap, Secret, emptyDir, hostPath, PVC)
are materialised. Mount paths that appear in arguments, environment values or the working
directory are rewritten to the volumes' local directories (see :func:`rewrite_path`), so a hook
that runs ``/bin/sh /hooks/run.sh`` from a mounted ConfigMap runs the real script. Paths written
inside a mounted file's content are not rewritten (there is no mount namespace). stdout and
stderr are captured together, as a container runtime's log does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: keep at most this many bytes of a container's log (a kubelet rotates at 10 MiB)
LOG_LIMIT = 10 * 1024 * 1024


@dataclass
class ContainerLog:
    """A container's captured output, with the time each chunk arrived (for sinceSeconds)."""

    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    size: int = 0

    def append(self, when: float, data: bytes) -> None:
        self.chunks.append((when, data))
        self.size += len(data)
        while self.size > LOG_LIMIT and len(self.chunks) > 1:
            _, dropped = self.chunks.pop(0)
            self.size -= len(dropped)

    def text(self, since: float | None = None) -> str:
        data = b"".join(chunk for when, chunk in self.chunks if since is None or when >= since)
        return data.decode("utf-8", errors="replace")


def rewrite_path(value: str, mounts: Mapping[str, str]) -> str:
    """``value`` with every container mount path in it replaced by its local directory.

    A mount path counts where it stands as a path of its own: at the start of the value or after
    a space, quote, ``=``, ``:``, ``(`` or ``;``, and followed by ``/``, the end, or such a
    separator. So ``/hooks/run.sh``, ``--dir=/data`` and ``sh -c 'touch /scratch/x'`` are all
    rewritten, ``/var/hooks`` is not.
    """
    if not mounts:
        return value
    alternatives = "|".join(
        re.escape(m.rstrip("/") or "/") for m in sorted(mounts, key=len, reverse=True)
    )
    pattern = re.compile(rf"(?<![\w./-])({alternatives})(?=/|$|[\s\"';:)&|>])")
    by_prefix = {m.rstrip("/") or "/": local for m, local in mounts.items()}
    return pattern.sub(lambda match: by_prefix[match.group(1)], value)


def exit_code_of(returncode: int) -> int:
    """A container runtime reports a signal death as 128 + the signal number."""
    return 128 - returncode if returncode < 0 else returncode


class ContainerProcess:
    """One running container: a process group, its log, and its exit code once it ends."""

    def __init__(self, log: ContainerLog) -> None:
        self.log = log
        self.exit_code: int | None = None
        self.started = False
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self.killed_by: str | None = None

    async def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
    ) -> None:
        """Start ``argv``; a command that cannot start ends at once with 127/126 like a shell."""
        loop = asyncio.get_running_loop()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                env=dict(env),
                cwd=str(cwd),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, OSError) as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            self.log.append(loop.time(), f"exec {argv[0] if argv else ''!s}: {exc}\n".encode())
            self.exit_code = code
            self._done.set()
            return
        self.started = True
        self._reader = asyncio.create_task(self._pump(), name=f"container-log-{self._proc.pid}")

    async def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self._proc.stdout.read(65536)
                if not data:
                    break
                self.log.append(loop.time(), data)
            returncode = await self._proc.wait()
            self.exit_code = exit_code_of(returncode)
        finally:
            self._done.set()

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    async def wait(self) -> int:
        await self._done.wait()
        assert self.exit_code is not None
        return self.exit_code

    def _signal(self, sig: int) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def stop(self, grace: float, reason: str = "Killing") -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (the kubelet's graceful stop)."""
        if not self.running:
            return
        self.killed_by = reason
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._done.wait(), timeout=max(grace, 0.0))
        except TimeoutError:
            self._signal(signal.SIGKILL)
            await self._done.wait()

    def kill_now(self) -> None:
        """The machine lost power: every process dies at once."""
        self.killed_by = "PowerOff"
        self._signal(signal.SIGKILL)
