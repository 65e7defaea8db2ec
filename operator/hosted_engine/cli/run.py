"""``hosted-engine run``: the operator itself, kopf in this process.

The cluster is the one the kubeconfig names (``--kubeconfig``, else ``$KUBECONFIG`` or
``~/.kube/config``, else the in-cluster service account). Peering is on unless ``--standalone``:
every replica joins the kopf peering object (``--peering``) with a priority that favours the
oldest replica; the highest live one acts and the others wait, so two replicas never act at
once. Missing peering objects stop the operator at start instead of letting it run unguarded.
"""

from __future__ import annotations

import argparse
import importlib
import os
import secrets
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from hosted_engine.adapters import kube, metrics
from hosted_engine.cli.main import CliError
from hosted_engine.clock import get_clock
from hosted_engine.handlers.startup import PEERING_NAME

#: The module whose import registers every handler.
HANDLERS_MODULE: Final = "hosted_engine.handlers"
#: kopf's liveness endpoint as the manifests and the chart probe it.
DEFAULT_LIVENESS: Final = "http://0.0.0.0:8080/healthz"
#: Low bits of the default peering priority that are random (ties pause every replica).
PRIORITY_RANDOM_BITS: Final = 20

DESCRIPTION = """\
Run the operator: kopf, with every handler of hosted_engine.handlers, in this process.

The cluster is the one the kubeconfig names (--kubeconfig, else $KUBECONFIG or ~/.kube/config,
else the in-cluster service account). Peering is on unless --standalone: the replicas share one
kopf peering object; the oldest live replica acts, the others wait (--priority overrides).
"""

EXAMPLE = """\
examples:
  hosted-engine run --kubeconfig /tmp/lab.kubeconfig --all-namespaces --standalone
  hosted-engine run --namespace engine --liveness http://0.0.0.0:8080/healthz
"""


@dataclass(frozen=True)
class RunOptions:
    kubeconfig: str | None
    context: str | None
    namespaces: tuple[str, ...]
    standalone: bool
    liveness: str | None
    peering: str
    priority: int
    verbose: bool
    metrics_port: int | None = None
    log_format: str = "text"

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    def kopf_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`kopf.run` / :func:`kopf.operator`."""
        kwargs: dict[str, Any] = {
            "clusterwide": self.clusterwide,
            "namespaces": list(self.namespaces),
            "liveness_endpoint": self.liveness,
            "priority": self.priority,
        }
        if self.standalone:
            kwargs["standalone"] = True
        else:
            kwargs["peering_name"] = self.peering  # mandatory peering: no object, no start
        return kwargs


def _liveness(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme != "http" or not parts.hostname or not parts.path.startswith("/"):
        raise argparse.ArgumentTypeError(f"expected http://HOST:PORT/PATH, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad port in {value!r}: {exc}") from None
    return value


def _dns_label(value: str) -> str:
    if not value or len(value) > 253 or not all(
        part and part.isascii() and part.replace("-", "").isalnum() and part == part.lower()
        for part in value.split(".")
    ):
        raise argparse.ArgumentTypeError(f"not a valid Kubernetes name: {value!r}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the operator (kopf) against a cluster",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig of the cluster")
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context to use")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        dest="namespaces",
        action="append",
        type=_dns_label,
        metavar="NS",
        help="serve only this namespace (repeatable); cluster-scoped kinds are always served",
    )
    scope.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help="serve every namespace (the default)",
    )
    parser.add_argument(
        "--standalone", action="store_true", help="no peering: only for a single replica"
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        type=_liveness,
        help=f"serve kopf's liveness probe here, e.g. {DEFAULT_LIVENESS}",
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        type=_dns_label,
        default=PEERING_NAME,
        help="kopf peering object shared by the replicas (default: %(default)s)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        metavar="N",
        help="peering priority (default: older replicas first, random among equals)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics on this port at /metrics (default: $HE_METRICS_PORT, "
        "else off)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text (default) or as one JSON object per line",
    )
    parser.set_defaults(func=run_command)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {value!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"not a port: {value!r}")
    return port


def default_priority(started: datetime) -> int:
    """The peering priority of a replica started at ``started``: the earlier, the higher, so a
    running replica keeps acting while a newer one (a rolling update) stands by; random low bits
    break the tie between replicas started in the same second. Below 2**53, exact in JSON."""
    seconds = max(0, min(int(started.timestamp()), (1 << 32) - 1))
    return (((1 << 32) - seconds) << PRIORITY_RANDOM_BITS) | secrets.randbits(
        PRIORITY_RANDOM_BITS
    )


def options_from_args(args: argparse.Namespace) -> RunOptions:
    priority = args.priority
    if priority is None:
        priority = default_priority(get_clock().now())
    return RunOptions(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespaces=tuple(dict.fromkeys(args.namespaces or ())),
        standalone=bool(args.standalone),
        liveness=args.liveness,
        peering=args.peering,
        priority=priority,
        verbose=bool(args.verbose),
        metrics_port=getattr(args, "metrics_port", None),
        log_format=getattr(args, "log_format", "text") or "text",
    )


def prepare(options: RunOptions) -> None:
    """Point the process (client library, kopf's login, child processes) at the cluster and
    register the handlers."""
    if options.kubeconfig:
        if not os.path.isfile(options.kubeconfig):
            raise CliError(f"kubeconfig {options.kubeconfig} does not exist", code=2)
        os.environ["KUBECONFIG"] = os.path.abspath(options.kubeconfig)
    try:
        kube.configure(options.kubeconfig, options.context)
    except kube.ConfigError as exc:
        raise CliError(str(exc), code=2) from None
    if options.metrics_port is not None:
        os.environ[metrics.PORT_ENV] = str(options.metrics_port)
    importlib.import_module(HANDLERS_MODULE)


def run_command(args: argparse.Namespace) -> int:
    import kopf

    options = options_from_args(args)
    prepare(options)
    log_format = kopf.LogFormat.JSON if options.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=options.verbose, log_format=log_format)
    kopf.run(**options.kopf_kwargs())
    return 0
