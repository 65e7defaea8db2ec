"""``hosted-engine rolling start|status|pause|resume|abort``: RollingMaintenance runs.

``start`` creates a RollingMaintenance (validated by its model first); ``pause``/``resume`` set
``spec.paused``; ``abort`` sets ``spec.abort`` (it cannot be undone); ``status`` prints the
progress (hosts done/total, current group and hosts, per-host state and stage results).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from hosted_engine.adapters import kube
from hosted_engine.cli.engine import (
    Session,
    add_connection_args,
    dig,
    session,
    timeout_arg,
    wait_until,
)
from hosted_engine.cli.main import CliError
from hosted_engine.models.rollingmaintenance import RollingMaintenanceSpec

ROLLINGS: Final = kube.hostedengine_resource("rollingmaintenances", namespaced=False)
FINAL_STATES: Final = frozenset({"Succeeded", "Failed", "Aborted"})


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _selector(value: str) -> dict[str, Any]:
    labels: dict[str, str] = {}
    for part in _csv(value):
        if "=" not in part:
            raise argparse.ArgumentTypeError(f"expected key=value[,key=value], got {value!r}")
        key, val = part.split("=", 1)
        labels[key.strip()] = val.strip()
    return {"matchLabels": labels}


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    scope: dict[str, Any]
    if args.hosts:
        scope = {"hosts": _csv(args.hosts)}
    elif args.selector:
        scope = {"selector": args.selector}
    else:
        groups: dict[str, Any] = {}
        if args.group_key:
            groups["labelKey"] = args.group_key
        if args.group_values:
            groups["values"] = _csv(args.group_values)
        scope = {"groups": groups}
    spec: dict[str, Any] = {
        "scope": scope,
        "forced": bool(args.forced),
        "maxUnavailable": args.max_unavailable,
    }
    if args.stage_timeout:
        spec["stageTimeout"] = args.stage_timeout
    if args.poll_interval:
        spec["pollInterval"] = args.poll_interval
    if args.hooks_namespace:
        spec["hooksNamespace"] = args.hooks_namespace
    if args.payload:
        spec["payload"] = list(args.payload)
    try:
        RollingMaintenanceSpec.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise CliError(f"invalid rolling maintenance: {loc}: {first.get('msg')}", code=2) from None
    return spec


def render_status(obj: Mapping[str, Any]) -> str:
    st = obj.get("status") or {}
    spec = obj.get("spec") or {}
    name = dig(obj, "metadata.name")
    state = st.get("state", "Pending")
    if spec.get("paused") and state not in FINAL_STATES:
        state = f"{state} (pause requested)" if state != "Paused" else state
    lines = [
        f"RollingMaintenance {name}: {state}",
        f"  progress: {st.get('hostsDone', 0)}/{st.get('hostsTotal', 0)} hosts",
    ]
    if st.get("currentGroup"):
        lines.append(f"  group:    {st['currentGroup']}")
    if st.get("currentHosts"):
        lines.append(f"  hosts:    {', '.join(st['currentHosts'])}")
    if st.get("stopping"):
        lines.append("  stopping: a host failed; the hosts under way finish, then the run fails")
    if st.get("message"):
        lines.append(f"  message:  {st['message']}")
    for h in st.get("hosts") or []:
        stages = ", ".join(
            f"{s.get('stage')}={s.get('result')}" for s in h.get("stages") or []
        )
        lines.append(
            f"    {h.get('host')}: {h.get('state', '-')}" + (f" [{stages}]" if stages else "")
        )
    return "\n".join(lines) + "\n"


def _get(s: Session, name: str) -> dict[str, Any]:
    obj = s.client.find(ROLLINGS, name)
    if obj is None:
        raise CliError(f"RollingMaintenance {name} not found")
    return obj


def follow(s: Session, name: str, timeout: float) -> int:
    def progress() -> str | None:
        st = _get(s, name).get("status") or {}
        current = ", ".join(st.get("currentHosts") or []) or "-"
        return (
            f"{name}: {st.get('state', 'Pending')} {st.get('hostsDone', 0)}/"
            f"{st.get('hostsTotal', 0)} hosts, now: {current}"
        )

    def probe() -> dict[str, Any] | None:
        st = _get(s, name).get("status") or {}
        return st if st.get("state") in FINAL_STATES else None

    st = wait_until(f"RollingMaintenance {name}", probe, timeout=timeout, progress=progress)
    if st.get("state") != "Succeeded":
        raise CliError(f"RollingMaintenance {name} {st.get('state')}: {st.get('message') or '-'}")
    print(f"RollingMaintenance {name} succeeded")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    spec = build_spec(args)
    body = {
        "apiVersion": "hostedengine.io/v1alpha1",
        "kind": "RollingMaintenance",
        "metadata": {"name": args.run},
        "spec": spec,
    }
    with session(args) as s:
        try:
            s.client.create(ROLLINGS, body)
        except kube.Conflict:
            raise CliError(f"RollingMaintenance {args.run} already exists") from None
        print(f"RollingMaintenance {args.run} created")
        if args.wait:
            return follow(s, args.run, args.timeout)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with session(args) as s:
        if args.run:
            items = [_get(s, args.run)]
        else:
            items = sorted(s.client.list(ROLLINGS), key=lambda o: str(o["metadata"]["name"]))
        if args.json:
            print(
                json.dumps(
                    [{"name": o["metadata"]["name"], **(o.get("status") or {})} for o in items],
                    indent=2,
                )
            )
        elif not items:
            print("No RollingMaintenance runs")
        else:
            print("".join(render_status(o) for o in items), end="")
        if args.wait and args.run:
            return follow(s, args.run, args.timeout)
    return 0


def _patch(args: argparse.Namespace, spec: dict[str, Any], done: str) -> int:
    with session(args) as s:
        obj = _get(s, args.run)
        state = dig(obj, "status.state")
        if state in FINAL_STATES:
            raise CliError(f"RollingMaintenance {args.run} has already ended ({state})")
        try:
            s.client.patch(ROLLINGS, args.run, {"spec": spec})
        except kube.Invalid as exc:
            raise CliError(f"refused: {exc}") from None
    print(f"RollingMaintenance {args.run}: {done}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    return _patch(args, {"paused": True}, "pause requested (the running step finishes first)")


def cmd_resume(args: argparse.Namespace) -> int:
    return _patch(args, {"paused": False}, "resumed")


def cmd_abort(args: argparse.Namespace) -> int:
    return _patch(args, {"abort": True}, "abort requested")


def _sub(sub: Any, name: str, help_: str, description: str, example: str) -> Any:
    p = sub.add_parser(
        name,
        help=help_,
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(p, namespaced=False)
    return p


def _wait_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="follow the run until it ends")
    p.add_argument(
        "--timeout", type=timeout_arg, default=timeout_arg("24h"), metavar="DURATION",
        help="how long --wait waits (default 24h); exit 3 when it runs out",
    )


def register(subparsers: Any) -> None:
    rolling = subparsers.add_parser(
        "rolling",
        help="rolling maintenance of hosts (RollingMaintenance)",
        description="Walk hosts through maintenance group after group, with hook stages.",
        epilog="examples:\n  hosted-engine rolling start nightly --hosts node-1,node-2 --wait\n"
        "  hosted-engine rolling status nightly",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = rolling.add_subparsers(dest="rolling_command", metavar="COMMAND")
    rolling.set_defaults(func=lambda _args: (rolling.print_help(), 2)[1])

    p = _sub(
        sub,
        "start",
        "create and start a run",
        "Create a RollingMaintenance over --hosts, --selector or groups of Hosts (by the "
        "hostedengine.io/group label unless --group-key). Hook stages are set in YAML "
        "(kubectl apply); this command covers runs without hooks or adds none.",
        "hosted-engine rolling start kernel-update --selector rack=a --max-unavailable 2 --wait",
    )
    p.add_argument("run", metavar="NAME")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--hosts", metavar="H1,H2", help="these Hosts, in this order")
    scope.add_argument("--selector", type=_selector, metavar="K=V,...", help="Hosts by labels")
    scope.add_argument("--group-key", metavar="LABEL", help="group Hosts by this label")
    p.add_argument("--group-values", metavar="V1,V2", help="only these groups, in this order")
    p.add_argument("--max-unavailable", type=int, default=1, metavar="N")
    p.add_argument("--forced", action="store_true", help="continue past a failing host")
    p.add_argument("--stage-timeout", metavar="DURATION")
    p.add_argument("--poll-interval", metavar="DURATION")
    p.add_argument("--hooks-namespace", metavar="NS")
    p.add_argument("--payload", action="append", metavar="ARG", help="hook argument (repeat)")
    _wait_args(p)
    p.set_defaults(func=cmd_start)

    p = _sub(
        sub,
        "status",
        "progress of a run (or of all)",
        "Hosts done/total, current group and hosts, each host's state and stage results.",
        "hosted-engine rolling status kernel-update --json",
    )
    p.add_argument("run", metavar="NAME", nargs="?")
    p.add_argument("--json", action="store_true")
    _wait_args(p)
    p.set_defaults(func=cmd_status)

    for name, func, text in (
        ("pause", cmd_pause, "finish the running step, then wait (spec.paused: true)"),
        ("resume", cmd_resume, "continue a paused run (spec.paused: false)"),
        ("abort", cmd_abort, "stop the run; cannot be undone (spec.abort: true)"),
    ):
        p = _sub(sub, name, text, text, f"hosted-engine rolling {name} kernel-update")
        p.add_argument("run", metavar="NAME")
        p.set_defaults(func=func)
