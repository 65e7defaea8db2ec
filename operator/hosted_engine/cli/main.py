"""Entry point of ``hosted-engine`` and ``kubectl-hosted_engine``.

Each feature area registers its sub-commands from its own module (see ``COMMAND_MODULES``): a
module exposes ``register(subparsers)`` and sets ``func`` on its parsers. Errors never show a
traceback: a :class:`CliError` prints its message and exits with its code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hosted_engine import __version__

# Modules that add sub-commands. A module that does not exist yet is skipped.
COMMAND_MODULES = (
    "hosted_engine.cli.crds",
    "hosted_engine.cli.run",
    "hosted_engine.cli.lab",
    "hosted_engine.cli.demo",
    "hosted_engine.cli.engine",
    "hosted_engine.cli.host",
    "hosted_engine.cli.backup",
    "hosted_engine.cli.rolling",
)


class CliError(Exception):
    """A failure to report to the user in one line, with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hosted-engine",
        description="Manage a self-hosted engine and its hosts on KubeVirt.",
        epilog="Example: hosted-engine lab up --kubeconfig /tmp/lab.kubeconfig --hosts 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        result = func(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
