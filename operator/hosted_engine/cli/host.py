"""``hosted-engine host power ACTION H`` and ``hosted-engine host maintenance H --mode ...``.

Power actions go through the Host's annotations (``hostedengine.io/power-action`` plus a fresh
``hostedengine.io/power-action-id``, see :mod:`hosted_engine.models.host`); the CLI waits for
``status.powerManagement.lastAction`` with that id. Maintenance patches ``spec.maintenance``
and, with ``--wait``, follows the drain (migrations done/total).
"""

from __future__ import annotations

import argparse
import secrets
from typing import Any, Final

from hosted_engine.cli.engine import (
    HOSTS,
    Session,
    add_connection_args,
    dig,
    host_object,
    session,
    set_host_maintenance,
    timeout_arg,
    wait_until,
)
from hosted_engine.cli.main import CliError
from hosted_engine.models.host import (
    POWER_ACTION_ANNOTATION,
    POWER_ACTION_ID_ANNOTATION,
    PowerAction,
    PowerActionResult,
)

FINAL_RESULTS: Final = frozenset(r.value for r in PowerActionResult) - {
    PowerActionResult.IN_PROGRESS.value
}


def request_power_action(s: Session, host: str, action: str) -> str:
    """Annotate the Host with the action and a new id; returns the id."""
    obj = host_object(s, host)
    if not dig(obj, "spec.powerManagement"):
        raise CliError(f"Host {host} has no power management (spec.powerManagement)")
    request_id = f"cli-{secrets.token_hex(4)}"
    s.client.patch(
        HOSTS,
        host,
        {
            "metadata": {
                "annotations": {
                    POWER_ACTION_ANNOTATION: action,
                    POWER_ACTION_ID_ANNOTATION: request_id,
                }
            }
        },
    )
    return request_id


def cmd_power(args: argparse.Namespace) -> int:
    with session(args) as s:
        request_id = request_power_action(s, args.host, args.action)
        print(f"Host {args.host}: power {args.action} requested (id {request_id})")
        if args.no_wait:
            return 0

        def probe() -> dict[str, Any] | None:
            obj = s.client.get(HOSTS, args.host)
            last = dig(obj, "status.powerManagement.lastAction") or {}
            if last.get("id") == request_id and last.get("result") in FINAL_RESULTS:
                return obj
            return None

        def progress() -> str | None:
            last = dig(s.client.get(HOSTS, args.host), "status.powerManagement.lastAction") or {}
            if last.get("id") == request_id:
                return f"Host {args.host}: {args.action} {last.get('result', 'InProgress')}"
            return None

        obj = wait_until(
            f"power {args.action} on {args.host}", probe, timeout=args.timeout, progress=progress
        )
    last = dig(obj, "status.powerManagement.lastAction") or {}
    power_state = dig(obj, "status.powerManagement.powerState", "Unknown")
    if last.get("result") != PowerActionResult.SUCCEEDED.value:
        raise CliError(
            f"Host {args.host}: power {args.action} {last.get('result')}: "
            f"{last.get('message') or 'no detail'}"
        )
    print(f"Host {args.host}: power {args.action} succeeded; power state {power_state}")
    return 0


def cmd_maintenance(args: argparse.Namespace) -> int:
    with session(args) as s:
        return set_host_maintenance(
            s, args.host, args.mode, reason=args.reason, wait=args.wait, timeout=args.timeout
        )


def register(subparsers: Any) -> None:
    host = subparsers.add_parser(
        "host",
        help="power management and maintenance of a Host",
        description="Power actions through the Host's BMC, and local maintenance (drain).",
        epilog="examples:\n  hosted-engine host power status node-1\n"
        "  hosted-engine host maintenance node-2 --mode local --wait",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = host.add_subparsers(dest="host_command", metavar="COMMAND")
    host.set_defaults(func=lambda _args: (host.print_help(), 2)[1])

    p = sub.add_parser(
        "power",
        help="status|on|off|soft|reset|cycle through the BMC",
        description="Ask the operator for a power action on the Host's BMC (Redfish or IPMI) "
        "through the hostedengine.io/power-action annotation, and wait for its result. "
        "'status' reads the power state.",
        epilog="example:\n  hosted-engine host power cycle node-3 --timeout 2m",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(p, namespaced=False)
    p.add_argument("action", choices=[a.value for a in PowerAction])
    p.add_argument("host", metavar="H")
    p.add_argument("--no-wait", action="store_true", help="only request it")
    p.add_argument(
        "--timeout",
        type=timeout_arg,
        default=120.0,
        metavar="DURATION",
        help="how long to wait for the result (default 2m); exit 3 when it runs out",
    )
    p.set_defaults(func=cmd_power)

    p = sub.add_parser(
        "maintenance",
        help="local maintenance: drain and cordon, or activate",
        description="Set spec.maintenance.mode of the Host: local cordons the Node and "
        "live-migrates every VM away; none activates it. --wait shows the migrations "
        "done/total and exits non-zero when the drain fails or times out.",
        epilog="example:\n  hosted-engine host maintenance node-2 --mode local --wait",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(p, namespaced=False)
    p.add_argument("host", metavar="H")
    p.add_argument("--mode", required=True, choices=("local", "none"))
    p.add_argument("--reason", metavar="TEXT", help="why (shown in Events)")
    p.add_argument("--wait", action="store_true", help="wait, showing the drain's progress")
    p.add_argument(
        "--timeout",
        type=timeout_arg,
        default=timeout_arg("30m"),
        metavar="DURATION",
        help="how long --wait waits (default 30m); exit 3 when it runs out",
    )
    p.set_defaults(func=cmd_maintenance)
