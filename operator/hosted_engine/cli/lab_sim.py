"""``hosted-engine lab`` fault commands and the simulators behind ``lab up``.

- ``lab up --hosts N`` starts the whole simulated cluster (:class:`hosted_engine.lab.sim.Lab`):
  N nodes with kubelets, the node lifecycle controller, scheduler, Job and PV controllers, BMCs
  (Redfish and IPMI, unless ``--no-bmc``) and the plugins (KubeVirt). ``--fast`` uses the short
  test timings instead of the real defaults.
- ``lab fail-node|recover-node|partition-node|heal-partition NODE``,
  ``lab crash-vm|hang-guest|heal-guest NAMESPACE/NAME``, ``lab set-migration-bandwidth RATE``
  and ``lab status`` act on a running lab through its control endpoint
  (``/apis/lab.hostedengine.io/v1``), found with ``--kubeconfig`` (default ``$KUBECONFIG``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from hosted_engine.cli.lab import StopFn, default_kubeconfig, register_lab_command, register_up_hook
from hosted_engine.cli.main import CliError

CONTROL_PATH = "/apis/lab.hostedengine.io/v1"


class SimulatorsUpHook:
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--no-bmc", action="store_true", help="no Redfish/IPMI BMCs for the nodes"
        )
        parser.add_argument(
            "--fast", action="store_true", help="short simulated durations (tests, quick demos)"
        )

    async def start(self, server: Any, args: argparse.Namespace) -> StopFn | None:
        from hosted_engine.lab.sim.lab import Lab
        from hosted_engine.lab.sim.timings import LabTimings

        timings = LabTimings.fast() if getattr(args, "fast", False) else LabTimings()
        workdir = None
        if getattr(args, "state_dir", None):
            workdir = Path(args.state_dir) / "sim"
            workdir.mkdir(parents=True, exist_ok=True)
        lab = Lab(
            int(getattr(args, "hosts", 0) or 0),
            timings=timings,
            bmc=not getattr(args, "no_bmc", False),
            server=server,
            workdir=workdir,
        )
        await lab.start()
        for name, ep in lab.bmc_endpoints().items():
            print(
                f"node {name}: Redfish {ep.redfish_url}{ep.redfish_system_path}, "
                f"IPMI {ep.address}:{ep.ipmi_port}",
                flush=True,
            )
        stop: StopFn = lab.stop
        return stop


register_up_hook(SimulatorsUpHook())


# -- talking to a running lab ------------------------------------------------------------------


def _call(kubeconfig: str | None, method: str, path: str, body: Any = None) -> Any:
    if not kubeconfig:
        raise CliError("--kubeconfig is required (or set KUBECONFIG)", 2)
    if not Path(kubeconfig).expanduser().exists():
        raise CliError(f"no kubeconfig at {kubeconfig}", 2)
    import ssl
    import urllib.error
    import urllib.request

    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(Path(kubeconfig).expanduser()), client_configuration=configuration
    )
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    keys = configuration.api_key or {}
    token = keys.get("BearerToken") or keys.get("authorization")
    if token:
        headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
    context = None
    if configuration.host.startswith("https"):
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        configuration.host + CONTROL_PATH + path, data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        message = exc.reason
        with contextlib.suppress(TypeError, ValueError):
            message = json.loads(exc.read() or b"{}").get("message") or message
        raise CliError(f"the lab refused: {message}") from None
    except (OSError, ValueError) as exc:  # connection refused, TLS, timeouts
        raise CliError(f"no lab answers at {configuration.host}: {exc}") from None


def _fault(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"action": args.action, "target": args.target}
    if args.action == "set-migration-bandwidth":
        body["value"] = _rate(args.target)
    result = _call(args.kubeconfig, "POST", "/faults", body)
    print(result.get("result") if isinstance(result, dict) else result)
    return 0


def _rate(text: str) -> float:
    """``100Mi``, ``1Gi`` or a plain number: bytes per second."""
    from hosted_engine.lab.sim.quantity import parse_quantity

    try:
        value = float(parse_quantity(text.removesuffix("/s")))
    except ValueError as exc:
        raise CliError(f"not a bandwidth: {text!r} (use e.g. 500Mi or 1Gi)", 2) from exc
    if value <= 0:
        raise CliError("the bandwidth must be positive", 2)
    return value


def _status(args: argparse.Namespace) -> int:
    data = _call(args.kubeconfig, "GET", "/status")
    if args.output == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    print(render_status(data))
    return 0


def render_status(data: dict[str, Any]) -> str:
    lines = ["NODE            POWER  MACHINE      READY    PODS  TERMINATING  TAINTS"]
    for n in data.get("nodes") or []:
        taints = ",".join(n.get("taints") or []) or "-"
        if n.get("unschedulable"):
            taints = "SchedulingDisabled " + taints
        lines.append(
            f"{n['name']:<15} {n['power']:<6} {n['machine']:<12} {n['ready']:<8} "
            f"{n['pods']:<5} {n['terminatingPods']:<12} {taints}"
        )
    vms = data.get("vms") or []
    lines.append("")
    lines.append(f"VMS ({len(vms)})")
    for vm in vms:
        lines.append("  " + "  ".join(f"{k}={v}" for k, v in vm.items()))
    migrations = data.get("migrations") or []
    lines.append(f"MIGRATIONS ({len(migrations)})")
    for mig in migrations:
        lines.append("  " + "  ".join(f"{k}={v}" for k, v in mig.items()))
    return "\n".join(lines)


def _register(lab_sub: Any) -> None:
    commands = [
        ("fail-node", "NODE", "cut a node's power at once (heartbeats stop, its guests die)"),
        ("recover-node", "NODE", "repair a node: power on; it boots and rejoins"),
        ("partition-node", "NODE", "cut a running node from the API server (guests keep running)"),
        ("heal-partition", "NODE", "reconnect a partitioned node"),
        ("crash-vm", "NAMESPACE/NAME", "kill a VM's guest (qemu dies)"),
        ("hang-guest", "NAMESPACE/NAME", "the guest stops answering (health page times out)"),
        ("heal-guest", "NAMESPACE/NAME", "the guest answers again"),
        ("set-migration-bandwidth", "RATE", "live-migration bandwidth per second, e.g. 500Mi"),
    ]
    for action, metavar, help_text in commands:
        parser = lab_sub.add_parser(
            action,
            help=help_text,
            epilog=f"Example: hosted-engine lab {action} "
            f"{'node-2' if metavar == 'NODE' else 'default/engine' if '/' in metavar else '1Gi'}"
            " --kubeconfig /tmp/lab.kubeconfig",
        )
        parser.add_argument("target", metavar=metavar)
        parser.add_argument(
            "--kubeconfig",
            default=default_kubeconfig(),
            help="the lab's kubeconfig (default: $KUBECONFIG)",
        )
        parser.set_defaults(func=_fault, action=action)
    status = lab_sub.add_parser("status", help="nodes, power, VMs and migrations of the lab")
    status.add_argument(
        "--kubeconfig",
        default=default_kubeconfig(),
        help="the lab's kubeconfig (default: $KUBECONFIG)",
    )
    status.add_argument("-o", "--output", choices=("text", "json"), default="text")
    status.set_defaults(func=_status)


register_lab_command(_register)
