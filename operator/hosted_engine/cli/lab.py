"""``hosted-engine lab up|down``: run the lab API server (and, later, its simulators).

Extension: other modules add ``lab`` sub-commands and hook into ``lab up`` without touching this
file. Any module ``hosted_engine.cli.lab_*`` is imported when the parser is built; at import time
it calls :func:`register_lab_command` (a function ``(lab_subparsers) -> None`` that adds parsers
with ``func`` set, like ``COMMAND_MODULES`` in ``cli.main``) and/or :func:`register_up_hook`
(an :class:`UpHook`: extra ``lab up`` options, and an async ``start(server, args)`` run once
the API server serves, returning an optional async stop function).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import pkgutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from hosted_engine.cli.main import CliError

LabCommand = Callable[[Any], None]
StopFn = Callable[[], Awaitable[None]]


class UpHook(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    async def start(self, server: Any, args: argparse.Namespace) -> StopFn | None: ...


LAB_COMMANDS: list[LabCommand] = []
UP_HOOKS: list[UpHook] = []


def register_lab_command(register: LabCommand) -> LabCommand:
    """Add a ``lab`` sub-command: ``register(lab_subparsers)`` adds a parser with ``func``."""
    if register not in LAB_COMMANDS:
        LAB_COMMANDS.append(register)
    return register


def register_up_hook(hook: UpHook) -> UpHook:
    """Run ``hook.start(server, args)`` in ``lab up`` once the API server serves."""
    if hook not in UP_HOOKS:
        UP_HOOKS.append(hook)
    return hook


def _load_plugins() -> None:
    package = importlib.import_module("hosted_engine.cli")
    for mod in pkgutil.iter_modules(package.__path__):
        if mod.name.startswith("lab_"):
            importlib.import_module(f"hosted_engine.cli.{mod.name}")


def default_kubeconfig() -> str | None:
    return os.environ.get("KUBECONFIG") or None


def pid_file(kubeconfig: Path) -> Path:
    return kubeconfig.with_name(kubeconfig.name + ".pid")


def log_file(kubeconfig: Path) -> Path:
    return kubeconfig.with_name(kubeconfig.name + ".log")


def register(subparsers: Any) -> None:
    _load_plugins()
    lab = subparsers.add_parser("lab", help="run the lab cluster (API server and simulators)",
                                description="The lab: a Kubernetes API server on 127.0.0.1.")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND")

    up = lab_sub.add_parser("up", help="start the lab",
                            epilog="Example: hosted-engine lab up --kubeconfig /tmp/lab.kubeconfig"
                                   " --hosts 3 --detach")
    up.add_argument("--kubeconfig", default=default_kubeconfig(),
                    help="where to write the kubeconfig (default: $KUBECONFIG)")
    up.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free)")
    up.add_argument("--hosts", type=int, default=0, help="number of simulated nodes")
    up.add_argument("--state-dir", type=Path, default=None,
                    help="keep objects here so they survive a restart")
    up.add_argument("--detach", action="store_true",
                    help="return once the lab serves; stop it with `lab down`")
    up.add_argument("--insecure-http", action="store_true", help="serve plain HTTP, not HTTPS")
    for hook in UP_HOOKS:
        hook.add_arguments(up)
    up.set_defaults(func=cmd_up)

    down = lab_sub.add_parser("down", help="stop a lab started with --detach")
    down.add_argument("--kubeconfig", default=default_kubeconfig(),
                      help="the lab's kubeconfig (default: $KUBECONFIG)")
    down.add_argument("--timeout", type=float, default=30.0)
    down.set_defaults(func=cmd_down)
    for command in LAB_COMMANDS:
        command(lab_sub)
    lab.set_defaults(func=lambda args: (lab.print_help(), 2)[1])


def _kubeconfig_arg(args: argparse.Namespace) -> Path:
    if not args.kubeconfig:
        raise CliError("--kubeconfig is required (or set KUBECONFIG)", 2)
    return Path(args.kubeconfig).expanduser().absolute()


def cmd_up(args: argparse.Namespace) -> int:
    kubeconfig = _kubeconfig_arg(args)
    if args.detach:
        return _detach(args, kubeconfig)
    try:
        return asyncio.run(_serve(args, kubeconfig))
    except OSError as exc:
        raise CliError(f"cannot serve: {exc}") from exc


def _detach(args: argparse.Namespace, kubeconfig: Path) -> int:
    argv = [sys.executable, "-m", "hosted_engine"] + [
        a for a in sys.argv[1:] if a != "--detach"] if _argv_is_up() else None
    if argv is None:
        argv = [sys.executable, "-m", "hosted_engine", "lab", "up", "--kubeconfig",
                str(kubeconfig), "--port", str(args.port), "--hosts", str(args.hosts)]
        if args.state_dir:
            argv += ["--state-dir", str(args.state_dir)]
        if args.insecure_http:
            argv.append("--insecure-http")
    logpath = log_file(kubeconfig)
    logpath.parent.mkdir(parents=True, exist_ok=True)
    with open(logpath, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = logpath.read_text(errors="replace")
        for line in text.splitlines():
            if "ready" in line:
                print(line, flush=True)
                return 0
        if proc.poll() is not None:
            raise CliError(f"the lab exited with {proc.returncode}: {text.strip()[-500:]}")
        time.sleep(0.05)
    proc.terminate()
    raise CliError(f"the lab did not become ready in 60 s (log: {logpath})")


def _argv_is_up() -> bool:
    return "lab" in sys.argv[1:3] and "up" in sys.argv[1:4]


async def _serve(args: argparse.Namespace, kubeconfig: Path) -> int:
    from hosted_engine.lab.apiserver import LabApiServer

    token = None
    if args.state_dir:
        token_path = Path(args.state_dir) / "token"
        if token_path.exists():
            token = token_path.read_text().strip()
    server = LabApiServer(port=args.port, tls_enabled=not args.insecure_http, token=token,
                          state_dir=args.state_dir)
    await server.start()
    if args.state_dir:
        token_path = Path(args.state_dir) / "token"
        token_path.parent.mkdir(parents=True, exist_ok=True)
        token_path.write_text(server.token)
        os.chmod(token_path, 0o600)
    server.write_kubeconfig(kubeconfig)
    pidpath = pid_file(kubeconfig)
    stops: list[StopFn] = []
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_event.set)
    try:
        for hook in UP_HOOKS:
            stop = await hook.start(server, args)
            if stop is not None:
                stops.append(stop)
        pidpath.write_text(str(os.getpid()))
        print(f"lab API server ready at {server.url} (kubeconfig {kubeconfig})", flush=True)
        await stop_event.wait()
    finally:
        for stop in reversed(stops):
            with contextlib.suppress(Exception):
                await stop()
        await server.stop()
        with contextlib.suppress(FileNotFoundError):
            if pidpath.read_text().strip() == str(os.getpid()):
                pidpath.unlink()
    print("lab stopped", flush=True)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    kubeconfig = _kubeconfig_arg(args)
    pidpath = pid_file(kubeconfig)
    try:
        pid = int(pidpath.read_text().strip())
    except (OSError, ValueError) as exc:
        raise CliError(f"no lab is running for {kubeconfig} (no {pidpath.name})") from exc
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        cmdline = b""
    if b"hosted_engine" not in cmdline and b"hosted-engine" not in cmdline:
        pidpath.unlink(missing_ok=True)
        raise CliError(f"the lab for {kubeconfig} is not running (stale pid {pid})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or b"zombie" in _state(pid):
            print(f"lab stopped (pid {pid})")
            return 0
        time.sleep(0.05)
    raise CliError(f"the lab (pid {pid}) did not stop within {args.timeout} s")


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/status").read_bytes().lower()
    except OSError:
        return b"zombie"
