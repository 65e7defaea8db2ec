"""Kill points: the operator as a real ``hosted-engine run`` process, killed with SIGKILL from
inside the lab's API server when it sends its Nth write after the point is armed.

:class:`KillAtWrite` is a lab :class:`~hosted_engine.lab.apiserver.admission.FaultRule` that
matches every write (create, update, patch, delete) of the operator's HTTP traffic (the lab's
own simulators use the in-process client and are never counted) and, at the ``nth`` one, kills
the operator process. ``before=True`` answers that request with a 503 (the write never
happened, like a process killed before sending it); otherwise the write is stored and only its
answer is lost (the process died waiting for it). Both are what a crash in the middle of a
handler looks like from the API server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hosted_engine.lab.apiserver.admission import FaultRule

WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass
class KillAtWrite(FaultRule):
    nth: int = 1
    before: bool = False
    pid: int = 0
    seen: int = 0
    killed_on: str = ""
    writes: list[str] = field(default_factory=list)

    def matches(self, verb: str, group: str, resource: str, subresource: str, namespace: str,
                name: str, local: bool, user_agent: str = "") -> bool:
        if local or verb not in WRITES or self.killed_on:
            return False
        self.seen += 1
        what = f"{verb} {group}/{resource}{'/' + subresource if subresource else ''} {name}"
        self.writes.append(what)
        if self.seen < self.nth:
            return False
        self.killed_on = what
        os.kill(self.pid, signal.SIGKILL)
        if self.before:
            self.status, self.reason = 503, "ServiceUnavailable"
        return self.before


class OperatorProcess:
    """``hosted-engine run --standalone`` against the lab's kubeconfig, logs in a file."""

    def __init__(self, kubeconfig: Path, log: Path, env: Mapping[str, str]) -> None:
        self.kubeconfig, self.log, self.env = kubeconfig, log, dict(env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        exe = Path(sys.executable).with_name("hosted-engine")
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [str(exe), "run", "--kubeconfig", str(self.kubeconfig), "--standalone"],
            stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        handle.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
