"""``hosted-engine demo``: the scripted end-to-end demo on the lab (see
:mod:`hosted_engine.demo`). Exits 0 only when every step succeeded."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from hosted_engine.cli.main import CliError

DEFAULT_KUBECONFIG = Path(".lab/demo.kubeconfig")

DESCRIPTION = """\
Start the lab (HTTPS API server, N nodes with KubeVirt, Redfish and IPMI BMCs), install the
CRDs, apply examples/lab with kubectl, start the operator (hosted-engine run, peering on), then
show step by step, with timestamps: Hosts Up with their power state read from their BMCs,
StorageDomains Active, the HostedEngine Up on the best host, and a power loss of the engine's
node: detection, fencing through the BMC, the out-of-service taint and the engine healthy on
another host, with the measured times. Every step has a timeout; the exit code is 0 only when
every step succeeded. Without --keep, everything is stopped at the end.
"""

EPILOG = """\
examples:
  hosted-engine demo
  hosted-engine demo --keep --kubeconfig /tmp/demo.kubeconfig
  make demo DEMO_ARGS="--realistic"
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the scripted end-to-end demo on the lab", description=DESCRIPTION,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true",
                        help="leave the lab and the operator running and say how to use them")
    parser.add_argument("--hosts", type=int, default=3, metavar="N",
                        help="number of lab nodes (default: %(default)s, at least 2)")
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--fast", dest="realistic", action="store_false",
                        help="short simulated durations, about a minute in all (the default)")
    timing.add_argument("--realistic", dest="realistic", action="store_true",
                        help="real Kubernetes/KubeVirt/BMC durations and operator thresholds "
                             "(several minutes)")
    parser.add_argument("--kubeconfig", type=Path, default=DEFAULT_KUBECONFIG, metavar="PATH",
                        help="where the lab's kubeconfig is written (default: %(default)s)")
    parser.set_defaults(func=demo_command, realistic=False)


def demo_command(args: argparse.Namespace) -> int:
    from hosted_engine.demo.processes import running_lab_pid
    from hosted_engine.demo.scenario import FAST, REALISTIC, DemoOptions, run_demo

    if args.hosts < 2:
        raise CliError("--hosts must be at least 2 (the engine fails over to another host)", 2)
    kubeconfig = Path(args.kubeconfig).expanduser().absolute()
    pid = running_lab_pid(kubeconfig)
    if pid is not None:
        raise CliError(f"a lab already runs for {kubeconfig} (pid {pid}); stop it with "
                       f"`hosted-engine lab down --kubeconfig {kubeconfig}`", 2)
    options = DemoOptions(kubeconfig=kubeconfig, hosts=args.hosts, keep=args.keep,
                          profile=REALISTIC if args.realistic else FAST)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # stop what was started, as on Ctrl-C
    try:
        return run_demo(options)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt
