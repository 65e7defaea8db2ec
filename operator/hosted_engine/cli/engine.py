"""``hosted-engine vm-status | set-maintenance | vm-start | ...``: oVirt's ``hosted-engine``
commands, on the HostedEngine and Host objects.

The CLI drives the operator only through the API: it reads ``status`` and patches the user's
``spec`` (``running``, ``stopMode``, ``maintenance``, ``resetSeq``, ``notifications``) or a Host's
``spec`` and annotations, exactly as ``kubectl patch`` would. It never writes ``status``.

This module also holds what the other CLI modules share (connection options, the client, the
object lookup, waits with progress).
"""

from __future__ import annotations

import argparse
import json
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TextIO, TypeVar

from pydantic import ValidationError

from hosted_engine.adapters import kube
from hosted_engine.cli.main import CliError
from hosted_engine.models.base import parse_duration
from hosted_engine.models.hostedengine import Notifications

T = TypeVar("T")

HOSTEDENGINES: Final = kube.hostedengine_resource("hostedengines", namespaced=True)
HOSTS: Final = kube.hostedengine_resource("hosts", namespaced=False)

#: Exit code of a wait that ran out of time.
EXIT_TIMEOUT: Final = 3
#: Width of the labels in ``vm-status`` (oVirt prints ``{key:35}: value``).
LABEL_WIDTH: Final = 35
NOT_RUNNING_HERE: Final = {
    "vm": "down",
    "health": "bad",
    "detail": "unknown",
    "reason": "vm not running on this host",
}

# --------------------------------------------------------------------------------------------
# Shared by every CLI module


def add_connection_args(parser: argparse.ArgumentParser, *, namespaced: bool = True) -> None:
    """--kubeconfig, --context and (for namespaced kinds) -n/--namespace."""
    parser.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig of the cluster")
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context to use")
    if namespaced:
        parser.add_argument(
            "--namespace",
            "-n",
            metavar="NS",
            help="namespace (default: the context's namespace, else 'default')",
        )


def add_engine_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name",
        metavar="NAME",
        help="the HostedEngine (default: the only one in the namespace)",
    )


@dataclass
class Session:
    """A connected client and the namespace the command works in."""

    client: kube.Kube
    namespace: str

    def close(self) -> None:
        self.client.close()


def _context_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    try:
        import kubernetes.config

        contexts, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception:
        return None
    chosen = active
    if context:
        chosen = next((c for c in contexts if c.get("name") == context), active)
    ns = ((chosen or {}).get("context") or {}).get("namespace")
    return str(ns) if ns else None


@contextmanager
def session(args: argparse.Namespace) -> Iterator[Session]:
    """Connect as the arguments say; every API error inside becomes a one-line CliError."""
    kubeconfig = getattr(args, "kubeconfig", None)
    context = getattr(args, "context", None)
    try:
        kube.configure(kubeconfig, context)
    except kube.KubeError as exc:
        raise CliError(f"cannot load the cluster configuration: {exc}", code=2) from None
    except Exception as exc:
        raise CliError(f"cannot load the cluster configuration: {exc}", code=2) from None
    namespace = getattr(args, "namespace", None) or _context_namespace(kubeconfig, context)
    s = Session(kube.Kube(), namespace or "default")
    try:
        yield s
    except kube.Forbidden as exc:
        raise CliError(f"not allowed: {exc}") from None
    except kube.NotFound as exc:
        raise CliError(f"not found: {exc}") from None
    except kube.KubeError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot reach the API server: {exc}") from None
    except Exception as exc:
        # urllib3 wraps connection failures in its own exception types.
        if type(exc).__module__.startswith("urllib3"):
            raise CliError(f"cannot reach the API server: {exc}") from None
        raise
    finally:
        s.close()


def engine_object(s: Session, name: str | None) -> dict[str, Any]:
    """The named HostedEngine, or the only one in the namespace."""
    if name:
        obj = s.client.find(HOSTEDENGINES, name, s.namespace)
        if obj is None:
            raise CliError(f"HostedEngine {s.namespace}/{name} not found")
        return obj
    items = s.client.list(HOSTEDENGINES, s.namespace)
    if not items:
        raise CliError(
            f"no HostedEngine in namespace {s.namespace} (deploy one first, or pass -n NS)"
        )
    if len(items) > 1:
        names = ", ".join(sorted(i["metadata"]["name"] for i in items))
        raise CliError(f"several HostedEngines in {s.namespace} ({names}): pass --name")
    return items[0]


def host_object(s: Session, name: str) -> dict[str, Any]:
    obj = s.client.find(HOSTS, name)
    if obj is None:
        raise CliError(f"Host {name} not found")
    return obj


def dig(obj: Mapping[str, Any] | None, path: str, default: Any = None) -> Any:
    """``obj['a']['b']`` for ``"a.b"``; ``default`` when any step is missing."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return default
        cur = cur[part]
    return cur


def timeout_arg(value: str) -> float:
    """A Kubernetes-style duration ("90s", "5m") or plain seconds."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parse_duration(value).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def wait_until(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.5,
    progress: Callable[[], str | None] | None = None,
    out: TextIO | None = None,
) -> T:
    """Poll ``probe`` until it returns something; print ``progress`` lines when they change.
    Raises CliError (exit 3) after ``timeout`` seconds."""
    stream = out or sys.stdout
    deadline = time.monotonic() + timeout
    last_line: str | None = None
    while True:
        if progress is not None:
            line = progress()
            if line and line != last_line:
                print(line, file=stream, flush=True)
                last_line = line
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise CliError(f"timed out after {timeout:g}s waiting for {what}", code=EXIT_TIMEOUT)
        time.sleep(interval)


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# vm-status


def _bool(value: Any) -> str:
    return "True" if value else "False"


def engine_status_of_host(status: Mapping[str, Any], row: Mapping[str, Any]) -> Any:
    """The engine-status a host reports, as oVirt's: the engine's own on the host running it,
    "vm not running on this host" elsewhere, "unknown stale-data" without live data."""
    if not row.get("upToDate"):
        return "unknown stale-data"
    if row.get("engineRunning") or (status.get("host") and status.get("host") == row.get("host")):
        engine = status.get("engine") or {}
        return {
            "vm": engine.get("vm", "unknown"),
            "health": engine.get("health", "unknown"),
            "detail": engine.get("detail") or status.get("state") or "unknown",
            "reason": engine.get("reason"),
        }
    return dict(NOT_RUNNING_HERE)


def _host_key(row: Mapping[str, Any]) -> str:
    host_id = row.get("hostId")
    return str(host_id) if host_id is not None else str(row.get("host"))


def _stopped(status: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    # oVirt's "stopped" is the agent being stopped; here: the host takes no part (not ready).
    return not row.get("ready", False)


def status_json(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``--vm-status --json``: oVirt's keys per host id, ``global_maintenance``, plus an
    ``engine`` block with the HostedEngine's own view."""
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    out: dict[str, Any] = {}
    for row in status.get("hosts") or []:
        engine_status = engine_status_of_host(status, row)
        out[_host_key(row)] = {
            "host-id": row.get("hostId"),
            "hostname": row.get("host"),
            "node-name": row.get("nodeName"),
            "host-ts": row.get("lastSeen"),
            "score": row.get("score", 0),
            "engine-status": engine_status,
            "maintenance": bool(row.get("localMaintenance", False)),
            "stopped": _stopped(status, row),
            "live-data": bool(row.get("upToDate", False)),
            "state": row.get("state"),
            "penalties": list(row.get("penalties") or []),
            "failed-starts": row.get("failedStarts", 0),
            "has-room": row.get("hasRoom"),
        }
    maintenance = status.get("maintenance") or {}
    out["global_maintenance"] = maintenance.get("mode") == "global"
    out["engine"] = {
        "name": dig(obj, "metadata.name"),
        "namespace": dig(obj, "metadata.namespace"),
        "state": status.get("state", "Pending"),
        "host": status.get("host"),
        "engine-status": status.get("engine") or {},
        "fqdn": dig(spec, "vm.network.fqdn"),
        "version": dig(status, "vm.version"),
        "running": bool(spec.get("running", True)),
        "maintenance": {
            "mode": maintenance.get("mode", "none"),
            "since": maintenance.get("since"),
            "until": maintenance.get("until"),
        },
        "spares": status.get("spares") or {},
        "failovers": status.get("failovers", 0),
        "reason": dig(status, "ha.reason"),
        "conditions": {
            c.get("type"): c.get("status") for c in status.get("conditions") or [] if c.get("type")
        },
    }
    return out


def _line(label: str, value: Any) -> str:
    return f"{label:{LABEL_WIDTH}}: {value}"


def render_vm_status(obj: Mapping[str, Any]) -> str:
    """``--vm-status`` as text, in oVirt's layout (one block per host, the global banner)."""
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    engine = status.get("engine") or {}
    lines: list[str] = []
    name = f"{dig(obj, 'metadata.namespace')}/{dig(obj, 'metadata.name')}"
    lines.append(f"--== HostedEngine {name} ==--")
    lines.append("")
    lines.append(_line("Engine state", status.get("state", "Pending")))
    lines.append(_line("Engine host", status.get("host") or "-"))
    lines.append(
        _line(
            "Engine status",
            json.dumps(
                {
                    "vm": engine.get("vm", "unknown"),
                    "health": engine.get("health", "unknown"),
                    "detail": engine.get("detail"),
                    "reason": engine.get("reason"),
                }
            ),
        )
    )
    lines.append(_line("FQDN", dig(spec, "vm.network.fqdn", "-")))
    if dig(status, "vm.version"):
        lines.append(_line("Version", dig(status, "vm.version")))
    spares = status.get("spares") or {}
    if spares.get("required"):
        lines.append(
            _line(
                "Spares (available/required)",
                f"{spares.get('available', 0)}/{spares['required']}",
            )
        )
    reason = dig(status, "ha.reason")
    if reason:
        lines.append(_line("Reason", reason))
    for row in status.get("hosts") or []:
        host_id = row.get("hostId")
        lines.append("")
        lines.append("")
        ident = f"(id: {host_id})" if host_id is not None else "(id: -)"
        lines.append(f"--== Host {row.get('host')} {ident} status ==--")
        lines.append("")
        lines.append(_line("Host ID", host_id if host_id is not None else "-"))
        lines.append(_line("Host timestamp", row.get("lastSeen") or "-"))
        lines.append(_line("Score", row.get("score", 0)))
        es = engine_status_of_host(status, row)
        lines.append(_line("Engine status", es if isinstance(es, str) else json.dumps(es)))
        lines.append(_line("Hostname", row.get("host")))
        lines.append(_line("Local maintenance", _bool(row.get("localMaintenance"))))
        lines.append(_line("stopped", _bool(_stopped(status, row))))
        lines.append(_line("Status up-to-date", _bool(row.get("upToDate"))))
        lines.append("Extra metadata (valid at timestamp):")
        extra = [
            f"host-id={host_id if host_id is not None else '-'}",
            f"score={row.get('score', 0)}",
            f"node={row.get('nodeName') or '-'}",
            f"maintenance={_bool(row.get('localMaintenance'))}",
            f"state={row.get('state') or '-'}",
            f"failed-starts={row.get('failedStarts', 0)}",
        ]
        if row.get("hasRoom") is not None:
            extra.append(f"has-room={_bool(row.get('hasRoom'))}")
        if row.get("penalties"):
            extra.append(f"penalties={'; '.join(row['penalties'])}")
        lines.extend(f"\t{e}" for e in extra)
    if not status.get("hosts"):
        lines.append("")
        lines.append("No hosts in the engine's host table yet.")
    maintenance = status.get("maintenance") or {}
    if maintenance.get("mode") == "global":
        lines.append("")
        lines.append("")
        until = f" until {maintenance['until']}" if maintenance.get("until") else ""
        lines.append(f"!! Cluster is in GLOBAL MAINTENANCE mode{until} !!")
    return "\n".join(lines) + "\n"


def cmd_vm_status(args: argparse.Namespace) -> int:
    with session(args) as s:
        count = 0
        while True:
            obj = engine_object(s, args.name)
            if args.json:
                text = json.dumps(status_json(obj), indent=2, sort_keys=False) + "\n"
            else:
                text = render_vm_status(obj)
            if args.watch and not args.json and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            sys.stdout.write(text)
            sys.stdout.flush()
            count += 1
            if not args.watch or (args.count and count >= args.count):
                return 0
            time.sleep(args.interval)


# --------------------------------------------------------------------------------------------
# set-maintenance


def until_arg(value: str) -> datetime:
    """An RFC 3339 time, or a duration from now ("2h", "90m")."""
    try:
        return utc_now() + timedelta(seconds=parse_duration(value).total_seconds())
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a time (2026-01-31T18:00:00Z) or a duration (2h), got {value!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def set_host_maintenance(
    s: Session,
    host: str,
    mode: str,
    *,
    reason: str | None,
    wait: bool,
    timeout: float,
) -> int:
    """Local maintenance of a Host (spec.maintenance.mode), optionally waiting with the drain's
    progress (migrations done/total)."""
    obj = host_object(s, host)
    patch: dict[str, Any] = {"mode": mode}
    if reason is not None:
        patch["reason"] = reason
    s.client.patch(HOSTS, host, {"spec": {"maintenance": patch}})
    print(f"Host {host}: maintenance mode {mode} requested")
    del obj
    if not wait:
        return 0
    wanted = "Maintenance" if mode == "local" else "Up"

    def progress() -> str | None:
        h = s.client.get(HOSTS, host)
        return drain_progress(h)

    def probe() -> dict[str, Any] | None:
        h = s.client.get(HOSTS, host)
        st = h.get("status") or {}
        drain = st.get("drain") or {}
        if mode == "local":
            if drain.get("timedOut"):
                raise CliError(
                    f"Host {host}: the drain timed out ({drain.get('message') or 'see events'})"
                )
            if drain.get("failed"):
                failed = ", ".join(f"{v['namespace']}/{v['name']}" for v in drain["failed"])
                raise CliError(f"Host {host}: migrations failed: {failed}")
        return h if st.get("state") == wanted else None

    wait_until(f"Host {host} to be {wanted}", probe, timeout=timeout, progress=progress)
    print(f"Host {host} is {wanted}")
    return 0


def drain_progress(host: Mapping[str, Any]) -> str | None:
    st = host.get("status") or {}
    drain = st.get("drain") or {}
    state = st.get("state") or "Pending"
    name = dig(host, "metadata.name")
    if not drain:
        return f"Host {name}: {state}"
    total = int(drain.get("total") or 0)
    done = len(drain.get("moved") or []) + len(drain.get("shutDown") or [])
    line = f"Host {name}: {state}, migrations {done}/{total}"
    if drain.get("inFlight"):
        line += f", {len(drain['inFlight'])} in flight"
    if drain.get("blocked"):
        blocked = ", ".join(f"{v['namespace']}/{v['name']}" for v in drain["blocked"])
        line += f", blocked: {blocked}"
    return line


def cmd_set_maintenance(args: argparse.Namespace) -> int:
    mode = args.mode
    if mode == "local" and not args.host:
        raise CliError("--mode=local needs --host H (the Host to put into maintenance)", code=2)
    if mode == "global" and args.host:
        raise CliError("--mode=global applies to the whole engine: drop --host", code=2)
    if args.until is not None and mode != "global":
        raise CliError("--until only applies to --mode=global", code=2)
    with session(args) as s:
        if args.host:
            return set_host_maintenance(
                s, args.host, mode, reason=args.reason, wait=args.wait, timeout=args.timeout
            )
        obj = engine_object(s, args.name)
        name = obj["metadata"]["name"]
        spec: dict[str, Any] = {"mode": mode}
        if mode == "global":
            spec["until"] = iso(args.until) if args.until is not None else None
            if args.reason is not None:
                spec["reason"] = args.reason
        else:
            spec["until"] = None
        s.client.patch(HOSTEDENGINES, name, {"spec": {"maintenance": spec}}, s.namespace)
        print(f"HostedEngine {s.namespace}/{name}: global maintenance {mode} requested")
        if args.wait:

            def probe() -> str | None:
                cur = s.client.get(HOSTEDENGINES, name, s.namespace)
                return "ok" if dig(cur, "status.maintenance.mode", "none") == mode else None

            wait_until(f"maintenance mode {mode}", probe, timeout=args.timeout)
            print(f"HostedEngine {s.namespace}/{name}: maintenance mode is {mode}")
        return 0


# --------------------------------------------------------------------------------------------
# vm-start / vm-shutdown / vm-poweroff


def cmd_vm_start(args: argparse.Namespace) -> int:
    with session(args) as s:
        obj = engine_object(s, args.name)
        name = obj["metadata"]["name"]
        spec: dict[str, Any] = {"running": True}
        state = dig(obj, "status.state")
        if state == "Degraded":
            spec["resetSeq"] = int(dig(obj, "spec.resetSeq", 0) or 0) + 1
            print(f"HostedEngine {name} is Degraded: resetSeq raised to {spec['resetSeq']}")
        s.client.patch(HOSTEDENGINES, name, {"spec": spec}, s.namespace)
        print(f"HostedEngine {s.namespace}/{name}: start requested")
        if args.wait:
            wait_engine(s, name, want_up=True, timeout=args.timeout)
        return 0


def _in_global_maintenance(obj: Mapping[str, Any]) -> bool:
    return bool(
        dig(obj, "spec.maintenance.mode") == "global"
        or dig(obj, "status.maintenance.mode") == "global"
    )


def _stop(args: argparse.Namespace, stop_mode: str) -> int:
    with session(args) as s:
        obj = engine_object(s, args.name)
        name = obj["metadata"]["name"]
        if not _in_global_maintenance(obj):
            raise CliError(
                f"HostedEngine {s.namespace}/{name} is not in global maintenance: the operator "
                "would refuse to stop it. Run: hosted-engine set-maintenance --mode=global"
            )
        s.client.patch(
            HOSTEDENGINES, name, {"spec": {"running": False, "stopMode": stop_mode}}, s.namespace
        )
        verb = "shutdown" if stop_mode == "Graceful" else "power-off"
        print(f"HostedEngine {s.namespace}/{name}: {verb} requested")
        if args.wait:
            wait_engine(s, name, want_up=False, timeout=args.timeout)
        return 0


def wait_engine(s: Session, name: str, *, want_up: bool, timeout: float) -> None:
    def current() -> dict[str, Any]:
        return s.client.get(HOSTEDENGINES, name, s.namespace)

    def progress() -> str | None:
        st = current().get("status") or {}
        eng = st.get("engine") or {}
        return (
            f"state {st.get('state', 'Pending')}, vm {eng.get('vm', 'unknown')}, "
            f"health {eng.get('health', 'unknown')}, host {st.get('host') or '-'}"
        )

    def probe() -> str | None:
        st = current().get("status") or {}
        eng = st.get("engine") or {}
        if want_up:
            if st.get("state") == "Degraded":
                raise CliError(f"the engine is Degraded: {dig(st, 'ha.reason') or 'see events'}")
            return "up" if eng.get("vm") == "up" and eng.get("health") == "good" else None
        return "down" if eng.get("vm") in ("down", "down_unexpected", "down_missing") else None

    wait_until(
        "the engine to be " + ("up and healthy" if want_up else "down"),
        probe,
        timeout=timeout,
        progress=progress,
    )
    print("Hosted Engine is up!" if want_up else "Hosted Engine is down")


def cmd_vm_shutdown(args: argparse.Namespace) -> int:
    return _stop(args, "Graceful")


def cmd_vm_poweroff(args: argparse.Namespace) -> int:
    return _stop(args, "PowerOff")


# --------------------------------------------------------------------------------------------
# check-deployed / check-liveliness


def cmd_check_deployed(args: argparse.Namespace) -> int:
    with session(args) as s:
        try:
            engine_object(s, args.name)
        except CliError:
            print("The hosted engine has not been deployed")
            return 1
    print("The hosted engine has been deployed")
    return 0


def probe_liveliness(url: str, expect: str, *, insecure: bool, timeout: float) -> tuple[bool, str]:
    """GET the liveliness page: healthy when the body contains ``expect``."""
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            body = resp.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{reason}"
    if expect in body:
        return True, expect
    return False, f"the page does not contain {expect!r}"


def cmd_check_liveliness(args: argparse.Namespace) -> int:
    with session(args) as s:
        obj = engine_object(s, args.name)
    if args.direct:
        spec = obj.get("spec") or {}
        health = spec.get("health") or {}
        url = str(health.get("url") or "http://{fqdn}/ovirt-engine/services/health")
        url = url.replace("{fqdn}", str(dig(spec, "vm.network.fqdn", "")))
        if "{ip}" in url:
            raise CliError(
                "the health URL uses {ip}: only the operator can probe it; drop --direct"
            )
        ok, detail = probe_liveliness(
            url,
            str(health.get("expect") or "DB Up"),
            insecure=bool(health.get("insecureSkipTLSVerify", False)),
            timeout=args.timeout,
        )
        if not ok:
            print(f"Hosted Engine is not up! ({url}: {detail})")
            return 1
        print("Hosted Engine is up!")
        return 0
    engine = dig(obj, "status.engine") or {}
    if engine.get("vm") == "up" and engine.get("health") == "good":
        print("Hosted Engine is up!")
        return 0
    why = engine.get("reason") or engine.get("detail") or dig(obj, "status.state") or "unknown"
    print(f"Hosted Engine is not up! ({why})")
    return 1


# --------------------------------------------------------------------------------------------
# get-shared-config / set-shared-config


@dataclass(frozen=True)
class ConfigKey:
    field: str  # camelCase field of spec.notifications
    kind: str  # "str" | "int" | "list"


SHARED_CONFIG_KEYS: Final[dict[str, ConfigKey]] = {
    "smtp-server": ConfigKey("smtpServer", "str"),
    "smtp-port": ConfigKey("smtpPort", "int"),
    "source-email": ConfigKey("sourceEmail", "str"),
    "destination-emails": ConfigKey("destinationEmails", "list"),
    "state_transition": ConfigKey("stateTransition", "str"),
}
_SECTIONS: Final = ("email.", "notify.")


def config_key(raw: str) -> ConfigKey:
    key = raw
    for section in _SECTIONS:
        if key.startswith(section):
            key = key[len(section) :]
    if key == "state-transition":
        key = "state_transition"
    if key not in SHARED_CONFIG_KEYS:
        known = ", ".join(SHARED_CONFIG_KEYS)
        raise CliError(f"unknown key {raw!r}; known keys: {known}", code=2)
    return SHARED_CONFIG_KEYS[key]


def _format_value(key: ConfigKey, value: Any) -> str:
    if key.kind == "list":
        return ",".join(str(v) for v in value)
    return str(value)


def _parse_value(key: ConfigKey, raw: str) -> Any:
    if key.kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise CliError(f"{raw!r} is not a number", code=2) from None
    if key.kind == "list":
        return [part for part in re.split(r" *, *", raw.strip()) if part]
    return raw


def cmd_get_shared_config(args: argparse.Namespace) -> int:
    key = config_key(args.key)
    with session(args) as s:
        obj = engine_object(s, args.name)
    current = dig(obj, "spec.notifications") or {}
    model = Notifications.model_validate(current)
    value = model.model_dump(by_alias=True)[key.field]
    print(f"{args.key} : {_format_value(key, value)}, type : broker")
    return 0


def cmd_set_shared_config(args: argparse.Namespace) -> int:
    key = config_key(args.key)
    value = _parse_value(key, args.value)
    with session(args) as s:
        obj = engine_object(s, args.name)
        name = obj["metadata"]["name"]
        merged = {**(dig(obj, "spec.notifications") or {}), key.field: value}
        try:
            Notifications.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise CliError(f"invalid value for {args.key}: {first.get('msg')}", code=2) from None
        s.client.patch(
            HOSTEDENGINES, name, {"spec": {"notifications": {key.field: value}}}, s.namespace
        )
    print(f"{args.key} set to {_format_value(key, value)} on HostedEngine {s.namespace}/{name}")
    return 0


# --------------------------------------------------------------------------------------------
# clean-metadata


def cmd_clean_metadata(args: argparse.Namespace) -> int:
    with session(args) as s:
        obj = engine_object(s, args.name)
        rows = {r.get("host"): r for r in dig(obj, "status.hosts") or []}
        row = rows.get(args.host)
        if dig(obj, "status.host") == args.host or (row and row.get("engineRunning")):
            raise CliError(f"{args.host} runs the engine: move it first (set-maintenance)")
        host = s.client.find(HOSTS, args.host)
        if host is None:
            if row is None:
                print(f"{args.host} is not in the engine's host table: nothing to clean")
                return 0
            print(f"Host {args.host} no longer exists: the operator drops its row on its next step")
            return 0
        if row is not None and row.get("upToDate") and not args.force_cleanup:
            raise CliError(
                f"{args.host} is live (status up-to-date): put it into local maintenance first, "
                "or pass --force-cleanup"
            )
        s.client.patch(HOSTS, args.host, {"spec": {"hostedEngine": "undeploy"}})
    print(f"Host {args.host}: hosted-engine undeployed; it leaves the engine's host table")
    return 0


# --------------------------------------------------------------------------------------------
# Registration


def _parser(
    subparsers: Any, name: str, help_: str, description: str, example: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_,
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(parser)
    add_engine_arg(parser)
    return parser


def _wait_args(parser: argparse.ArgumentParser, default: str = "10m") -> None:
    parser.add_argument("--wait", action="store_true", help="wait until done, showing progress")
    parser.add_argument(
        "--timeout",
        type=timeout_arg,
        default=timeout_arg(default),
        metavar="DURATION",
        help=f"how long --wait waits (default {default}); exit 3 when it runs out",
    )


def register(subparsers: Any) -> None:
    p = _parser(
        subparsers,
        "vm-status",
        "the engine's status and one block per host (as hosted-engine --vm-status)",
        "Show the HostedEngine's status in oVirt's --vm-status layout: the engine, then one "
        "block per host (status up-to-date, hostname, host id, engine status, score, stopped, "
        "local maintenance, timestamp) and the global maintenance banner.",
        "hosted-engine vm-status -n engine --json",
    )
    p.add_argument("--json", action="store_true", help="JSON (oVirt's keys per host id)")
    p.add_argument("--watch", "-w", action="store_true", help="refresh until interrupted")
    p.add_argument(
        "--interval", type=timeout_arg, default=2.0, metavar="DURATION", help="--watch period"
    )
    p.add_argument("--count", type=int, default=0, metavar="N", help="--watch: stop after N")
    p.set_defaults(func=cmd_vm_status)

    p = _parser(
        subparsers,
        "set-maintenance",
        "global, local or no maintenance",
        "global: the operator keeps its hands off the engine (spec.maintenance.mode of the "
        "HostedEngine). local: the Host --host is drained and cordoned (its spec.maintenance). "
        "none: leave global maintenance, or with --host, activate the Host.",
        "hosted-engine set-maintenance --mode=global --until 2h -n engine",
    )
    p.add_argument("--mode", required=True, choices=("global", "local", "none"))
    p.add_argument("--host", metavar="H", help="the Host (local maintenance)")
    p.add_argument(
        "--until", type=until_arg, metavar="T", help="global: end by itself at T (time or 2h)"
    )
    p.add_argument("--reason", metavar="TEXT", help="why (shown in status and Events)")
    _wait_args(p, "30m")
    p.set_defaults(func=cmd_set_maintenance)

    p = _parser(
        subparsers,
        "vm-start",
        "start the engine VM (spec.running: true)",
        "Ask the operator to run the engine (spec.running: true). Out of Degraded, spec.resetSeq "
        "is raised so the operator tries again.",
        "hosted-engine vm-start -n engine --wait",
    )
    _wait_args(p)
    p.set_defaults(func=cmd_vm_start)

    p = _parser(
        subparsers,
        "vm-shutdown",
        "shut the engine VM down gracefully (global maintenance only)",
        "spec.running: false with stopMode Graceful. Refused outside global maintenance, as the "
        "operator would restart the engine.",
        "hosted-engine vm-shutdown -n engine --wait",
    )
    _wait_args(p)
    p.set_defaults(func=cmd_vm_shutdown)

    p = _parser(
        subparsers,
        "vm-poweroff",
        "power the engine VM off (global maintenance only)",
        "spec.running: false with stopMode PowerOff. Refused outside global maintenance.",
        "hosted-engine vm-poweroff -n engine",
    )
    _wait_args(p)
    p.set_defaults(func=cmd_vm_poweroff)

    p = _parser(
        subparsers,
        "check-deployed",
        "exit 0 when a HostedEngine exists",
        "Exit 0 and say so when the namespace has a HostedEngine, 1 otherwise.",
        "hosted-engine check-deployed -n engine",
    )
    p.set_defaults(func=cmd_check_deployed)

    p = _parser(
        subparsers,
        "check-liveliness",
        "exit 0 when the engine is up and healthy",
        "By default, the operator's last probe of the liveliness page (status.engine). With "
        "--direct, GET the page from here (TLS verified unless the spec says otherwise).",
        "hosted-engine check-liveliness -n engine",
    )
    p.add_argument("--direct", action="store_true", help="probe the page from this machine")
    p.add_argument(
        "--timeout", type=timeout_arg, default=10.0, metavar="DURATION", help="--direct timeout"
    )
    p.set_defaults(func=cmd_check_liveliness)

    keys = ", ".join(SHARED_CONFIG_KEYS)
    p = _parser(
        subparsers,
        "get-shared-config",
        "read a notification key",
        f"Read a notification key of spec.notifications. Keys: {keys} (also email.KEY, "
        "notify.KEY).",
        "hosted-engine get-shared-config smtp-server -n engine",
    )
    p.add_argument("key", metavar="KEY")
    p.add_argument("--type", default="broker", choices=("broker",), help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_get_shared_config)

    p = _parser(
        subparsers,
        "set-shared-config",
        "set a notification key",
        f"Set a notification key of spec.notifications (validated first). Keys: {keys}; "
        "destination-emails is comma-separated.",
        "hosted-engine set-shared-config destination-emails ops@example.com,oncall@example.com",
    )
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p.add_argument("--type", default="broker", choices=("broker",), help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_set_shared_config)

    p = _parser(
        subparsers,
        "clean-metadata",
        "drop a host from the engine's host table",
        "Undeploy the hosted engine from the Host (spec.hostedEngine: undeploy) so it leaves the "
        "engine's host table. Refused for the host running the engine, and for a live host "
        "unless --force-cleanup.",
        "hosted-engine clean-metadata --host node-3 -n engine",
    )
    p.add_argument("--host", required=True, metavar="H")
    p.add_argument("--force-cleanup", action="store_true", help="even when the host is live")
    p.set_defaults(func=cmd_clean_metadata)
