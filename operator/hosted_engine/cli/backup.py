"""``hosted-engine backup now|list|delete-run`` and ``hosted-engine restore``.

``backup delete-run`` annotates a Backup with ``hostedengine.io/delete-run: <run>/<new id>`` and
waits until the operator has handled it: the run is Deleted, or the request was refused (a good
run that is the only good one left, a run in progress, an unknown run).

``backup now`` annotates a Backup with ``hostedengine.io/run-now: <new id>`` (see
:mod:`hosted_engine.models.backup`) and, with ``--wait``, follows the run (step, then the
result with its size and duration). ``restore`` creates a Restore object from a Backup's run and
follows its phase.
"""

from __future__ import annotations

import argparse
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import ValidationError

from hosted_engine.adapters import kube
from hosted_engine.cli.engine import Session, add_connection_args, dig, session, timeout_arg
from hosted_engine.cli.engine import wait_until as _wait_until
from hosted_engine.cli.main import CliError
from hosted_engine.models.backup import DELETE_RUN_ANNOTATION, RUN_NOW_ANNOTATION
from hosted_engine.models.restore import RestoreSpec

BACKUPS: Final = kube.hostedengine_resource("backups", namespaced=True)
RESTORES: Final = kube.hostedengine_resource("restores", namespaced=True)


def human_size(value: Any) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}TiB"


def _duration(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}s"


def run_rows(backup: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Backup's runs, the current one first, as printable rows."""
    name = dig(backup, "metadata.name")
    status = backup.get("status") or {}
    runs: list[Mapping[str, Any]] = []
    current = status.get("currentRun")
    if current:
        runs.append(current)
    runs.extend(r for r in status.get("runs") or [] if not current or r.get("id") != current["id"])
    return [
        {
            "backup": name,
            "run": r.get("id"),
            "phase": r.get("phase"),
            "trigger": r.get("trigger"),
            "step": r.get("step"),
            "startedAt": r.get("startedAt"),
            "durationSeconds": r.get("durationSeconds"),
            "sizeBytes": r.get("sizeBytes"),
            "location": r.get("location"),
            "message": r.get("message"),
        }
        for r in runs
    ]


def render_runs(backups: Sequence[Mapping[str, Any]]) -> str:
    header = ("BACKUP", "PHASE", "RUN", "RUN PHASE", "TRIGGER", "STARTED", "DURATION", "SIZE")
    rows: list[tuple[str, ...]] = [header]
    for b in backups:
        phase = str(dig(b, "status.phase", "Pending"))
        runs = run_rows(b)
        if not runs:
            rows.append((str(b["metadata"]["name"]), phase, "-", "-", "-", "-", "-", "-"))
        for r in runs:
            rows.append(
                (
                    str(r["backup"]),
                    phase,
                    str(r["run"]),
                    str(r["phase"]),
                    str(r["trigger"] or "-"),
                    str(r["startedAt"] or "-"),
                    _duration(r["durationSeconds"]),
                    human_size(r["sizeBytes"]),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ) + "\n"


def cmd_backup_list(args: argparse.Namespace) -> int:
    with session(args) as s:
        if args.backup:
            obj = s.client.find(BACKUPS, args.backup, s.namespace)
            if obj is None:
                raise CliError(f"Backup {s.namespace}/{args.backup} not found")
            items = [obj]
        else:
            items = sorted(
                s.client.list(BACKUPS, s.namespace), key=lambda b: str(b["metadata"]["name"])
            )
    if args.json:
        print(json.dumps([row for b in items for row in run_rows(b)], indent=2))
        return 0
    if not items:
        print(f"No Backups in namespace {s.namespace}")
        return 0
    print(render_runs(items), end="")
    return 0


def _run_progress(s: Session, name: str, request_id: str) -> tuple[str | None, str | None]:
    """(run id of our request, progress line)."""
    obj = s.client.get(BACKUPS, name, s.namespace)
    status = obj.get("status") or {}
    # the wire name follows the models' alias generator ("ID"); accept both spellings
    if request_id not in (status.get("lastRunNowID"), status.get("lastRunNowId")):
        return None, f"Backup {name}: waiting for the operator to start the run"
    current = status.get("currentRun") or {}
    if current.get("trigger") == "Manual":
        return str(current.get("id")), f"Backup {name}: run {current.get('id')}: " + str(
            current.get("step") or current.get("phase")
        )
    manual = [r for r in status.get("runs") or [] if r.get("trigger") == "Manual"]
    if manual:
        return str(manual[0].get("id")), None
    return None, None


def cmd_backup_now(args: argparse.Namespace) -> int:
    with session(args) as s:
        obj = s.client.find(BACKUPS, args.backup, s.namespace)
        if obj is None:
            raise CliError(f"Backup {s.namespace}/{args.backup} not found")
        request_id = f"cli-{secrets.token_hex(4)}"
        s.client.patch(
            BACKUPS,
            args.backup,
            {"metadata": {"annotations": {RUN_NOW_ANNOTATION: request_id}}},
            s.namespace,
        )
        print(f"Backup {s.namespace}/{args.backup}: run requested (run-now {request_id})")
        if not args.wait:
            return 0
        seen: dict[str, str] = {}

        def progress() -> str | None:
            run_id, line = _run_progress(s, args.backup, request_id)
            if run_id:
                seen["run"] = run_id
            return line

        def probe() -> dict[str, Any] | None:
            run_id = seen.get("run")
            if not run_id:
                return None
            cur = s.client.get(BACKUPS, args.backup, s.namespace)
            for r in dig(cur, "status.runs") or []:
                if r.get("id") == run_id and r.get("phase") != "Running":
                    return dict(r)
            return None

        run = _wait_until(
            f"the run of Backup {args.backup}", probe, timeout=args.timeout, progress=progress
        )
    if run.get("phase") != "Succeeded":
        raise CliError(
            f"Backup {args.backup}: run {run.get('id')} {run.get('phase')}: "
            f"{run.get('message') or 'see the events'}"
        )
    print(
        f"Backup {args.backup}: run {run.get('id')} succeeded in "
        f"{_duration(run.get('durationSeconds'))}, {human_size(run.get('sizeBytes'))}, "
        f"at {run.get('location') or '-'}"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    source: dict[str, Any] = {"backup": {"name": args.backup}}
    if args.run:
        source["backup"]["run"] = args.run
    spec: dict[str, Any] = {
        "source": source,
        "hostedEngineName": args.engine_name,
        "cleanMissingHosts": bool(args.clean_missing_hosts),
    }
    if args.storage_domain:
        spec["storageDomain"] = args.storage_domain
    try:
        RestoreSpec.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise CliError(f"invalid restore: {loc}: {first.get('msg')}", code=2) from None
    with session(args) as s:
        name = args.restore_name or f"{args.engine_name}-restore-{secrets.token_hex(3)}"
        body = {
            "apiVersion": "hostedengine.io/v1alpha1",
            "kind": "Restore",
            "metadata": {"name": name, "namespace": s.namespace},
            "spec": spec,
        }
        try:
            s.client.create(RESTORES, body)
        except kube.Conflict:
            raise CliError(f"Restore {s.namespace}/{name} already exists") from None
        print(f"Restore {s.namespace}/{name} created")
        if not args.wait:
            return 0

        def current() -> dict[str, Any]:
            return s.client.get(RESTORES, name, s.namespace)

        def progress() -> str | None:
            st = current().get("status") or {}
            return (
                f"Restore {name}: {st.get('phase', 'Pending')}, "
                f"{st.get('objectsVerified', 0)} objects verified"
            )

        def probe() -> dict[str, Any] | None:
            st = current().get("status") or {}
            return st if st.get("phase") in ("Succeeded", "Failed") else None

        st = _wait_until(f"Restore {name}", probe, timeout=args.timeout, progress=progress)
    if st.get("phase") != "Succeeded":
        raise CliError(f"Restore {name} failed: {st.get('message') or 'see the events'}")
    print(f"Restore {name} succeeded: HostedEngine {st.get('hostedEngine') or args.engine_name}")
    return 0


def cmd_backup_delete_run(args: argparse.Namespace) -> int:
    with session(args) as s:
        obj = s.client.find(BACKUPS, args.backup, s.namespace)
        if obj is None:
            raise CliError(f"Backup {s.namespace}/{args.backup} not found")
        request = f"{args.run}/cli-{secrets.token_hex(4)}"
        s.client.patch(BACKUPS, args.backup,
                       {"metadata": {"annotations": {DELETE_RUN_ANNOTATION: request}}},
                       s.namespace)

        def probe() -> dict[str, Any] | None:
            cur = s.client.get(BACKUPS, args.backup, s.namespace)
            if dig(cur, "status.lastDeleteRun") != request:
                return None
            return next((dict(r) for r in dig(cur, "status.runs") or []
                         if r.get("id") == args.run), {})

        run = _wait_until(f"the deletion of run {args.run}", probe, timeout=args.timeout)
    if run.get("phase") != "Deleted":
        raise CliError(
            f"Backup {args.backup}: run {args.run} was not deleted "
            f"({run.get('phase') or 'no such run'}); the DeleteRunRefused Event says why")
    print(f"Backup {args.backup}: run {args.run} deleted")
    return 0


def register(subparsers: Any) -> None:
    backup = subparsers.add_parser(
        "backup",
        help="run a Backup now, list the runs",
        description="Backups of the engine (Backup objects).",
        epilog="examples:\n  hosted-engine backup now nightly -n engine --wait\n"
        "  hosted-engine backup list -n engine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = backup.add_subparsers(dest="backup_command", metavar="COMMAND")
    backup.set_defaults(func=lambda _args: (backup.print_help(), 2)[1])

    p = sub.add_parser(
        "now",
        help="run a Backup at once",
        description="Annotate the Backup with hostedengine.io/run-now (a new id) so the "
        "operator runs it at once; --wait follows the run and exits non-zero if it fails.",
        epilog="example:\n  hosted-engine backup now nightly -n engine --wait --timeout 1h",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(p)
    p.add_argument("backup", metavar="BACKUP")
    p.add_argument("--wait", action="store_true", help="wait for the run, showing its step")
    p.add_argument(
        "--timeout", type=timeout_arg, default=timeout_arg("2h"), metavar="DURATION",
        help="how long --wait waits (default 2h); exit 3 when it runs out",
    )
    p.set_defaults(func=cmd_backup_now)

    p = sub.add_parser(
        "list",
        help="the runs of the Backups",
        description="One line per run (current first): phase, trigger, start, duration, size.",
        epilog="example:\n  hosted-engine backup list nightly -n engine --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(p)
    p.add_argument("backup", metavar="BACKUP", nargs="?", help="only this Backup")
    p.add_argument("--json", action="store_true", help="JSON rows")
    p.set_defaults(func=cmd_backup_list)

    p = sub.add_parser(
        "delete-run",
        help="delete one run of a Backup",
        description="Delete one run's objects on the target: a failed or partial run always, "
        "a good one unless it is the only good run left. Exits non-zero when refused.",
        epilog="example:\n  hosted-engine backup delete-run nightly 20261122-010000 -n engine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(p)
    p.add_argument("backup", metavar="BACKUP")
    p.add_argument("run", metavar="RUN", help="the run id (hosted-engine backup list)")
    p.add_argument(
        "--timeout", type=timeout_arg, default=timeout_arg("2m"), metavar="DURATION",
        help="how long to wait for the operator (default 2m); exit 3 when it runs out",
    )
    p.set_defaults(func=cmd_backup_delete_run)

    p = subparsers.add_parser(
        "restore",
        help="restore a HostedEngine from a Backup run",
        description="Create a Restore of a Backup's run (default: its last successful run) "
        "into a new HostedEngine; --wait follows the verification and the restore.",
        epilog="example:\n  hosted-engine restore --backup nightly --engine-name engine "
        "-n engine --wait",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(p)
    p.add_argument("--backup", required=True, metavar="BACKUP", help="the Backup")
    p.add_argument("--run", metavar="ID", help="the run (default: the last successful)")
    p.add_argument("--engine-name", required=True, metavar="NAME", help="HostedEngine to create")
    p.add_argument("--name", dest="restore_name", metavar="NAME", help="the Restore's name")
    p.add_argument("--storage-domain", metavar="SD", help="StorageDomain for the disk")
    p.add_argument("--clean-missing-hosts", action="store_true", help="drop absent hosts")
    p.add_argument("--wait", action="store_true", help="wait, showing the phase")
    p.add_argument(
        "--timeout", type=timeout_arg, default=timeout_arg("2h"), metavar="DURATION",
        help="how long --wait waits (default 2h); exit 3 when it runs out",
    )
    p.set_defaults(func=cmd_restore)
