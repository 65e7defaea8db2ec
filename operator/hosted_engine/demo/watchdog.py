"""``python -m hosted_engine.demo.watchdog --lab-pid P [--pid-file F] -- COMMAND...``

Runs COMMAND (the operator, ``hosted-engine run``) as its child and stops it -- SIGTERM, then
SIGKILL after a grace -- when the lab process P is gone or when the watchdog itself gets
SIGTERM/SIGINT. It exits with the child's code when the child exits by itself. This is what
lets ``hosted-engine lab down`` after ``hosted-engine demo --keep`` stop the operator too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from hosted_engine.demo.processes import alive

POLL = 0.2
GRACE = 20.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hosted_engine.demo.watchdog")
    parser.add_argument("--lab-pid", type=int, required=True)
    parser.add_argument("--pid-file", type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = list(args.command[1:] if args.command[:1] == ["--"] else args.command)
    if not command:
        parser.error("no command after --")
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    if args.pid_file is not None:
        args.pid_file.write_text(f"{os.getpid()}\n")
    try:
        while True:
            code = child.poll()
            if code is not None:
                print(f"watchdog: the operator exited with {code}", flush=True)
                return code
            if stopping or not alive(args.lab_pid):
                why = "asked to stop" if stopping else f"the lab (pid {args.lab_pid}) is gone"
                print(f"watchdog: {why}; stopping the operator (pid {child.pid})", flush=True)
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(GRACE)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(10)
                return 0
            time.sleep(POLL)
    finally:
        if args.pid_file is not None:
            with contextlib.suppress(OSError):
                if args.pid_file.read_text().strip() == str(os.getpid()):
                    args.pid_file.unlink()


if __name__ == "__main__":
    sys.exit(main())
