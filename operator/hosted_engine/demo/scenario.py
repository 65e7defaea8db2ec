"""The demo's scenario: steps run in order, each with a timeout and a clear failure message.

:data:`STEPS` lists every step the demo knows; :data:`ENABLED_STEPS` the ones it runs. A step
whose capability has not landed yet is left out of :data:`ENABLED_STEPS` (never faked), so that
``make demo`` exits 0 honestly and shows only what works. The demo stops at the first failed
step, stops what it started (unless ``--keep``) and exits 1.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from hosted_engine.adapters.kube import Kube, KubeError, Resource, hostedengine_resource
from hosted_engine.demo.output import Reporter
from hosted_engine.demo.processes import (
    DemoProcessError,
    LabProcess,
    OperatorProcess,
    find_kubectl,
    kubectl,
    repo_root,
)

T = TypeVar("T")

LAB_NS = "lab-system"
BMC_CONFIGMAP = "bmc-endpoints"
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
PEERING_NAME = "hosted-engine-operator"
POLL = 0.1
#: HostedEngine states that say the engine's host is gone (shown when the machine passes them)
ENGINE_LOST_STATES = ("HostLost", "Fencing", "EngineUnexpectedlyDown", "EngineMaybeAway")

NODES = Resource("", "v1", "nodes", namespaced=False)
CONFIGMAPS = Resource("", "v1", "configmaps", namespaced=True)
VMIS = Resource("kubevirt.io", "v1", "virtualmachineinstances", namespaced=True)
CLUSTER_PEERINGS = Resource("kopf.dev", "v1", "clusterkopfpeerings", namespaced=False)
HOSTS = hostedengine_resource("hosts", namespaced=False)
STORAGEDOMAINS = hostedengine_resource("storagedomains", namespaced=False)
HOSTEDENGINES = hostedengine_resource("hostedengines", namespaced=True)


class StepFailed(Exception):
    """A step did not reach its goal; the message says what was expected and what was seen."""


# -- options and timings -------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Timeouts of the steps (seconds) and the operator's environment for one timing profile."""

    name: str
    lab_fast: bool
    lab_start: float
    install: float
    operator_start: float
    hosts: float
    storage: float
    engine: float
    failover: float
    operator_env: Mapping[str, str] = field(default_factory=dict)


#: The lab's short timings (a node dies in about a second) and operator thresholds to match.
FAST = Profile(
    name="fast", lab_fast=True, lab_start=120, install=60, operator_start=60, hosts=90,
    storage=90, engine=180, failover=180,
    operator_env={"HE_HOST_SILENT_AFTER": "1", "HE_HOST_FENCE_TIMEOUT": "20"},
)
#: Real Kubernetes/KubeVirt/BMC durations and the operator's default thresholds: minutes.
REALISTIC = Profile(
    name="realistic", lab_fast=False, lab_start=180, install=120, operator_start=120,
    hosts=300, storage=300, engine=900, failover=900,
)


@dataclass(frozen=True)
class DemoOptions:
    kubeconfig: Path
    hosts: int = 3
    keep: bool = False
    profile: Profile = FAST
    examples: Path = field(default_factory=lambda: repo_root() / "examples" / "lab")
    crds: Path = field(default_factory=lambda: repo_root() / "crds")
    manifests: Path = field(default_factory=lambda: repo_root() / "manifests")


@dataclass
class Context:
    """What the steps share."""

    options: DemoOptions
    out: Reporter
    kubectl: str = ""
    lab: LabProcess | None = None
    operator: OperatorProcess | None = None
    kube: Kube | None = None
    endpoints: dict[str, str] = field(default_factory=dict)
    engine: tuple[str, str] | None = None  # namespace, name of the HostedEngine
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def api(self) -> Kube:
        assert self.kube is not None, "the lab is not up"
        return self.kube


# -- helpers -------------------------------------------------------------------------------


def wait_until(what: str, probe: Callable[[], T | None], timeout: float,
               describe: Callable[[], object] | None = None,
               ctx: Context | None = None) -> T:
    """Poll ``probe`` until it returns something truthy; raise :class:`StepFailed` naming
    ``what`` and the last state seen after ``timeout`` seconds (or when the operator died)."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            value = probe()
        except KubeError as exc:
            value, last_error = None, str(exc)
        if value:
            return value
        if ctx is not None and ctx.operator is not None and ctx.operator.exited() is not None:
            raise StepFailed(f"the operator exited with {ctx.operator.exited()} while waiting "
                             f"for {what}; its log ({ctx.operator.log}) ends with:\n"
                             f"{ctx.operator.tail()}")
        if time.monotonic() > deadline:
            seen: object = describe() if describe is not None else value
            extra = f" (last API error: {last_error})" if last_error else ""
            raise StepFailed(f"timed out after {timeout:g}s waiting for {what}; last seen: "
                             f"{seen!r}{extra}")
        time.sleep(POLL)


def get_path(obj: Mapping[str, Any] | None, path: str) -> Any:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def conditions(obj: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {str(c.get("type")): c for c in get_path(obj, "status.conditions") or []}


def condition_true(obj: Mapping[str, Any] | None, type_: str) -> bool:
    return conditions(obj).get(type_, {}).get("status") == "True"


def node_ready(node: Mapping[str, Any] | None) -> str:
    return str(conditions(node).get("Ready", {}).get("status", "Unknown"))


def taint_keys(node: Mapping[str, Any] | None) -> list[str]:
    return [str(t.get("key")) for t in get_path(node, "spec.taints") or []]


def bmc_spec(endpoints: Mapping[str, str], node: str, kind: str) -> dict[str, Any]:
    """``spec.powerManagement`` of a Host on the lab node ``node`` (``redfish`` or ``ipmi``),
    from the lab's published endpoints (ConfigMap lab-system/bmc-endpoints)."""
    credentials = {"name": f"bmc-{node}", "namespace": LAB_NS}
    if kind == "redfish":
        url = endpoints.get(f"{node}.redfish")
        if not url:
            raise StepFailed(f"the lab publishes no Redfish endpoint for {node}")
        hostport = url.split("://", 1)[1].split("/", 1)[0]
        address, port = hostport.rsplit(":", 1)
        return {"type": "redfish", "address": address, "port": int(port), "systemID": node,
                "credentialsSecretRef": credentials,
                "caBundleSecretRef": {**credentials, "key": "ca.crt"}}
    address_port = endpoints.get(f"{node}.ipmi")
    if not address_port:
        raise StepFailed(f"the lab publishes no IPMI endpoint for {node}")
    address, port = address_port.rsplit(":", 1)
    return {"type": "ipmi", "address": address, "port": int(port),
            "credentialsSecretRef": credentials}


def default_bmc_kind(node: str) -> str:
    """Odd nodes get Redfish, even nodes IPMI, so the demo shows both protocols."""
    digits = "".join(ch for ch in node if ch.isdigit())
    return "ipmi" if digits and int(digits) % 2 == 0 else "redfish"


def since(ctx: Context, t0: float) -> str:
    return f"{time.monotonic() - t0:.1f}s"


# -- the steps -----------------------------------------------------------------------------


def step_lab(ctx: Context) -> None:
    opts = ctx.options
    ctx.kubectl = find_kubectl()
    lab = LabProcess(opts.kubeconfig, opts.hosts, fast=opts.profile.lab_fast)
    ctx.out.info(f"starting: {' '.join(lab.argv()[1:])}  (log {lab.log})")
    ctx.lab = lab
    try:
        lab.start(opts.profile.lab_start)
    except DemoProcessError as exc:
        raise StepFailed(str(exc)) from None
    from kubernetes import config

    ctx.kube = Kube(config.new_client_from_config(config_file=str(opts.kubeconfig)))
    ctx.out.ok(f"lab API server serves HTTPS (pid {lab.pid}, kubeconfig {opts.kubeconfig})")
    nodes = wait_until("the lab's nodes Ready", lambda: _ready_nodes(ctx, opts.hosts),
                       opts.profile.lab_start, ctx=ctx)
    cm = wait_until("the lab's BMC endpoints", lambda: ctx.api.find(CONFIGMAPS, BMC_CONFIGMAP,
                                                                   LAB_NS),
                    opts.profile.lab_start, ctx=ctx)
    ctx.endpoints = {str(k): str(v) for k, v in (cm.get("data") or {}).items()}
    for name in nodes:
        ctx.out.info(f"node {name}: Ready; BMC Redfish {ctx.endpoints.get(name + '.redfish')}, "
                     f"IPMI {ctx.endpoints.get(name + '.ipmi')}")


def _ready_nodes(ctx: Context, count: int) -> list[str] | None:
    nodes = [n for n in ctx.api.list(NODES) if node_ready(n) == "True"]
    names = sorted(str(n["metadata"]["name"]) for n in nodes)
    return names if len(names) >= count else None


def step_install(ctx: Context) -> None:
    opts = ctx.options
    files = [*sorted(opts.crds.glob("*.yaml")), opts.manifests / "crds" / "kopf-peering.yaml"]
    _kubectl_apply(ctx, [arg for f in files for arg in ("-f", str(f))])
    result = kubectl(ctx.kubectl, ["wait", "--for=condition=Established", "--timeout",
                                   f"{int(opts.profile.install)}s", "crd", "--all"],
                     opts.kubeconfig, timeout=opts.profile.install + 10)
    if result.returncode != 0:
        raise StepFailed(f"CRDs not established: {result.stderr.strip() or result.stdout}")
    ctx.out.ok(f"{len(result.stdout.splitlines())} CRDs established")
    _kubectl_apply(ctx, ["-f", str(opts.manifests / "peering.yaml")])


def _kubectl_apply(ctx: Context, args: list[str], *, recursive: bool = False) -> None:
    argv = ["apply", *(["-R"] if recursive else []), *args]
    shown = " ".join(a if not a.startswith("/") else _short(a) for a in argv)
    ctx.out.info(f"$ kubectl {shown}")
    result = kubectl(ctx.kubectl, argv, ctx.options.kubeconfig)
    for line in result.stdout.splitlines():
        ctx.out.info(f"  {line}")
    if result.returncode != 0:
        raise StepFailed(f"kubectl apply failed ({result.returncode}): {result.stderr.strip()}")


def _short(path: str) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(Path.cwd()))
    return path


def step_apply(ctx: Context) -> None:
    opts = ctx.options
    if not opts.examples.is_dir():
        raise StepFailed(f"no examples at {opts.examples}")
    _kubectl_apply(ctx, ["-f", str(opts.examples)], recursive=True)
    hes = ctx.api.list(HOSTEDENGINES)
    if hes:
        meta = hes[0]["metadata"]
        ctx.engine = (str(meta["namespace"]), str(meta["name"]))


def step_power_management(ctx: Context) -> None:
    """Point every Host at its node's BMC. The lab picks its BMC ports when it starts, so a
    static file cannot know them: the demo writes them into spec.powerManagement (keeping a
    type the example chose), like an administrator who reads them off the BMC."""
    hosts = {str(h["spec"].get("nodeName") or h["metadata"]["name"]): h
             for h in ctx.api.list(HOSTS)}
    nodes = sorted(str(n["metadata"]["name"]) for n in ctx.api.list(NODES))
    for node in nodes:
        host = hosts.get(node)
        if host is None:
            ctx.out.note(f"examples/lab has no Host for {node}: creating one (deploy)")
            kind = default_bmc_kind(node)
            ctx.api.create(HOSTS, {
                "apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
                "metadata": {"name": node},
                "spec": {"nodeName": node, "hostedEngine": "deploy",
                         "powerManagement": bmc_spec(ctx.endpoints, node, kind)}})
        else:
            current = get_path(host, "spec.powerManagement") or {}
            kind = str(current.get("type") or default_bmc_kind(node))
            ctx.api.patch(HOSTS, str(host["metadata"]["name"]),
                          {"spec": {"powerManagement": bmc_spec(ctx.endpoints, node, kind)}})
        pm = bmc_spec(ctx.endpoints, node, kind)
        ctx.out.info(f"Host {node}: {kind} BMC at {pm['address']}:{pm['port']}")
    for node in sorted(set(hosts) - set(nodes)):
        name = str(hosts[node]["metadata"]["name"])
        ctx.out.note(f"Host {name}: the lab has no node {node} (--hosts {ctx.options.hosts}); "
                     "deleting it (a Host without its machine would count as a dead host)")
        ctx.api.delete(HOSTS, name)
    ctx.out.ok(f"{len(nodes)} Hosts have power management")


def step_operator(ctx: Context) -> None:
    opts = ctx.options
    assert ctx.lab is not None
    operator = OperatorProcess(opts.kubeconfig, ctx.lab.pid, env=opts.profile.operator_env)
    ctx.out.info(f"starting: {' '.join(operator.command()[1:])}  (peering on, log "
                 f"{operator.log})")
    operator.start()
    ctx.operator = operator

    def peered() -> bool:
        peering = ctx.api.find(CLUSTER_PEERINGS, PEERING_NAME)
        return bool(get_path(peering, "status"))

    wait_until("the operator to join its peering object", peered, opts.profile.operator_start,
               ctx=ctx)
    ctx.out.ok(f"operator running (pid {operator.pid}), active in peering {PEERING_NAME}")


def step_hosts(ctx: Context) -> None:
    timeout = ctx.options.profile.hosts
    nodes = {str(n["metadata"]["name"]) for n in ctx.api.list(NODES)}
    names = sorted(str(h["metadata"]["name"]) for h in ctx.api.list(HOSTS)
                   if str(get_path(h, "spec.nodeName")) in nodes)
    if not names:
        raise StepFailed("no Host objects for the lab's nodes")
    shown: set[str] = set()

    def all_up() -> bool:
        for host in ctx.api.list(HOSTS):
            name = str(host["metadata"]["name"])
            if name in shown or name not in names:
                continue
            power = get_path(host, "status.powerManagement.powerState")
            if (get_path(host, "status.state") == "Up" and power == "On"
                    and condition_true(host, "PowerManagementReady")):
                shown.add(name)
                pm = get_path(host, "spec.powerManagement") or {}
                score = get_path(host, "status.hostedEngine.score")
                deployed = get_path(host, "status.hostedEngine.deployed")
                ctx.out.ok(f"Host {name}: Up, power {power} (read from its {pm.get('type')} "
                           f"BMC), hosted engine {'deployed' if deployed else 'not deployed'}"
                           f"{f', score {score}' if score is not None else ''}")
        return shown >= set(names)

    def describe() -> object:
        return {str(h["metadata"]["name"]): {
            "state": get_path(h, "status.state"),
            "power": get_path(h, "status.powerManagement.powerState"),
            "PowerManagementReady": conditions(h).get("PowerManagementReady", {}).get("reason")}
            for h in ctx.api.list(HOSTS)
            if h["metadata"]["name"] in names and h["metadata"]["name"] not in shown}

    wait_until("every Host Up with its BMC answering", all_up, timeout, describe, ctx=ctx)


def step_storage(ctx: Context) -> None:
    timeout = ctx.options.profile.storage
    shown: set[str] = set()
    names = sorted(str(d["metadata"]["name"]) for d in ctx.api.list(STORAGEDOMAINS))
    if not names:
        raise StepFailed("no StorageDomain objects")

    def all_active() -> bool:
        for sd in ctx.api.list(STORAGEDOMAINS):
            name = str(sd["metadata"]["name"])
            if name not in shown and get_path(sd, "status.state") == "Active":
                shown.add(name)
                spec = sd.get("spec") or {}
                ctx.out.ok(f"StorageDomain {name}: Active ({spec.get('type')}, role "
                           f"{spec.get('role')}, {spec.get('capacity')})")
        return shown >= set(names)

    def describe() -> object:
        return {str(d["metadata"]["name"]): {
            "state": get_path(d, "status.state"),
            "conditions": {t: c.get("reason") for t, c in conditions(d).items()}}
            for d in ctx.api.list(STORAGEDOMAINS)}

    wait_until("every StorageDomain Active", all_active, timeout, describe, ctx=ctx)


def _engine(ctx: Context) -> dict[str, Any] | None:
    if ctx.engine is None:
        raise StepFailed("examples/lab has no HostedEngine")
    namespace, name = ctx.engine
    return ctx.api.find(HOSTEDENGINES, name, namespace)


def _engine_summary(he: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"state": get_path(he, "status.state"), "host": get_path(he, "status.host"),
            "engine": get_path(he, "status.engine"),
            "reason": get_path(he, "status.ha.reason")}


def engine_up(he: Mapping[str, Any] | None, *, avoid: str | None = None) -> bool:
    return (get_path(he, "status.state") == "EngineUp"
            and condition_true(he, "Available")
            and get_path(he, "status.engine.health") == "good"
            and (avoid is None or get_path(he, "status.host") != avoid))


def score_table(he: Mapping[str, Any] | None) -> list[str]:
    rows = ["HOST       SCORE  STATE                 ENGINE  PENALTIES"]
    for entry in get_path(he, "status.hosts") or []:
        rows.append(f"{entry.get('host')!s:<10} {entry.get('score', 0):>5}  "
                    f"{entry.get('state') or '-'!s:<21} "
                    f"{'yes' if entry.get('engineRunning') else '-':<7} "
                    f"{', '.join(entry.get('penalties') or []) or '-'}")
    return rows


def step_engine(ctx: Context) -> None:
    timeout = ctx.options.profile.engine
    t0 = time.monotonic()
    states: list[str] = []

    def up() -> dict[str, Any] | None:
        he = _engine(ctx)
        state = get_path(he, "status.state")
        if state and (not states or states[-1] != state):
            states.append(str(state))
            on = get_path(he, "status.host")
            ctx.out.info(f"HostedEngine state {state}{' on ' + str(on) if on else ''}"
                         f" (+{since(ctx, t0)})")
        return he if engine_up(he) else None

    he = wait_until("the HostedEngine EngineUp, Available and healthy", up, timeout,
                    lambda: _engine_summary(_engine(ctx)), ctx=ctx)
    host = str(get_path(he, "status.host"))
    vmi_node = get_path(he, "status.vm.nodeName")
    ctx.out.ok(f"engine Up on {host} (VMI on node {vmi_node}), health "
               f"{get_path(he, 'status.engine.health')}, {since(ctx, t0)} after the operator "
               "saw it")
    for row in score_table(he):
        ctx.out.info(row)
    scores = {str(e.get("host")): int(e.get("score") or 0)
              for e in get_path(he, "status.hosts") or []}
    if scores and host in scores and scores[host] < max(scores.values()):
        best = max(scores, key=lambda h: scores[h])
        raise StepFailed(f"the engine runs on {host} (score {scores[host]}) but {best} scores "
                         f"{scores[best]}")
    if scores:
        ctx.out.ok(f"{host} has the best score ({scores.get(host)})")


def step_failover(ctx: Context) -> None:
    from hosted_engine.cli.lab_sim import _call

    timeout = ctx.options.profile.failover
    he = _engine(ctx)
    if not engine_up(he):
        raise StepFailed(f"the engine is not Up before the failure: {_engine_summary(he)}")
    host_name = str(get_path(he, "status.host"))
    host = ctx.api.get(HOSTS, host_name)
    node = str(get_path(host, "spec.nodeName") or host_name)
    ctx.out.info(f"the engine runs on Host {host_name} (node {node}); cutting that node's power "
                 "through the lab's fault API (a dead PSU: no BMC command)")
    fence_before = get_path(host, "status.fencing.startedAt")
    t0 = time.monotonic()
    result = _call(str(ctx.options.kubeconfig), "POST", "/faults",
                   {"action": "fail-node", "target": node})
    ctx.out.ok(f"lab: {result.get('result') if isinstance(result, dict) else result}")
    seen: dict[str, float] = {}
    last: dict[str, str] = {}

    def mark(key: str, text: str) -> None:
        if key not in seen:
            seen[key] = time.monotonic() - t0
            ctx.out.ok(f"+{seen[key]:.1f}s  {text}")

    def change(key: str, value: object, text: str) -> None:
        if value is not None and last.get(key) != str(value):
            last[key] = str(value)
            ctx.out.info(f"+{time.monotonic() - t0:.1f}s  {text}")

    def observe() -> bool:
        n = ctx.api.find(NODES, node)
        h = ctx.api.find(HOSTS, host_name)
        e = _engine(ctx)
        ready = node_ready(n)
        change("ready", ready, f"Node {node} Ready={ready}")
        if ready != "True":
            mark("node", f"Kubernetes sees node {node} silent (Ready={ready})")
        hstate = get_path(h, "status.state")
        change("host", hstate, f"Host {host_name} state {hstate}")
        phase = get_path(h, "status.fencing.phase")
        if hstate in ("NonResponsive", "Fenced"):
            mark("detected", f"operator detected it: Host {host_name} {hstate}")
        estate = get_path(e, "status.state")
        on = get_path(e, "status.host")
        change("engine", estate, f"HostedEngine state {estate}{' on ' + str(on) if on else ''}")
        if estate in ENGINE_LOST_STATES:
            mark("engine-lost", f"operator: the engine's host is lost (HostedEngine {estate})")
            mark("detected", f"operator detected it: HostedEngine {estate}")
        fence_msg = get_path(h, "status.fencing.message")
        change("fence", phase, f"Host {host_name} fencing phase {phase}"
               f"{f' ({fence_msg})' if fence_msg else ''}")
        power = get_path(h, "status.powerManagement.powerState")
        change("power", power, f"Host {host_name} power state {power} (from its BMC)")
        new_fence = get_path(h, "status.fencing.startedAt") not in (None, fence_before)
        if new_fence and phase in ("Confirmed", "Released"):
            pm = get_path(h, "spec.powerManagement.type")
            mark("fenced", f"fenced through the {pm} BMC: power off confirmed")
        if OUT_OF_SERVICE in taint_keys(n):
            mark("taint", f"Node {node} has the {OUT_OF_SERVICE} taint (its pods are freed)")
        vmi = ctx.api.find(VMIS, *(reversed(ctx.engine or ("", ""))))
        vnode = get_path(vmi, "status.nodeName")
        vphase = (get_path(vmi, "status.phase") or "created") if vmi else "gone"
        change("vmi", (vnode, vphase), f"engine VMI {vphase}{' on ' + str(vnode) if vnode else ''}")
        if vmi and vnode and vnode != node and get_path(vmi, "status.phase") == "Running":
            mark("running", f"engine VMI Running on {vnode}")
        if engine_up(e, avoid=host_name):
            mark("healthy", f"engine Up and healthy on {get_path(e, 'status.host')}")
        return {"detected", "fenced", "taint", "healthy"} <= set(seen)

    def describe() -> object:
        missing = [k for k in ("detected", "fenced", "taint", "healthy") if k not in seen]
        return {"missing": missing, "engine": _engine_summary(_engine(ctx)),
                "host": get_path(ctx.api.find(HOSTS, host_name), "status.fencing")}

    wait_until("detection, fencing, the out-of-service taint and the engine healthy elsewhere",
               observe, timeout, describe, ctx=ctx)
    ctx.timings.update(seen)
    he = _engine(ctx)
    ctx.out.ok(f"failover done: the engine moved from {host_name} to "
               f"{get_path(he, 'status.host')} in {seen['healthy']:.1f}s")
    ctx.out.info("measured from the power loss:")
    labels = {"node": "node silent (Kubernetes)", "detected": "detected by the operator",
              "engine-lost": "engine marked lost", "fenced": "fenced (BMC power off)",
              "taint": "out-of-service taint", "running": "engine VMI Running elsewhere",
              "healthy": "engine healthy elsewhere"}
    for key, label in labels.items():
        if key in seen:
            ctx.out.info(f"  {label:<30} {seen[key]:6.1f}s")
    record = get_path(he, "status.lastFailover") or {}
    if record:
        ctx.out.info("the operator's own record (status.lastFailover): "
                     + failover_record_text(record))
    he_cmd = _command_name(str(Path(sys.executable).parent / "hosted-engine"))
    ctx.out.note(f"node {node} stays off; bring it back with `{he_cmd} lab recover-node "
                 f"{node} --kubeconfig {ctx.options.kubeconfig}`")


def failover_record_text(record: Mapping[str, Any]) -> str:
    """``node-1 -> node-2; detected +2.0s, fenced +2.0s, ...`` (times after ``lostAt``)."""
    text = f"{record.get('fromHost', '?')} -> {record.get('toHost', '?')}"
    try:
        lost = datetime.fromisoformat(str(record["lostAt"]))
    except (KeyError, ValueError):
        rest = ", ".join(f"{k}={v}" for k, v in record.items() if k not in ("fromHost", "toHost"))
        return f"{text}; {rest}" if rest else text
    parts = []
    for key in ("detectedAt", "fencedAt", "startedAt", "healthyAt"):
        with contextlib.suppress(KeyError, ValueError):
            delta = (datetime.fromisoformat(str(record[key])) - lost).total_seconds()
            parts.append(f"{key.removesuffix('At')} +{delta:.1f}s")
    return f"{text}; after the loss: {', '.join(parts)}" if parts else text


# -- the step list -------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    run: Callable[[Context], None]


STEPS: tuple[Step, ...] = (
    Step("lab", "start the lab (HTTPS API server, nodes, KubeVirt, Redfish + IPMI BMCs)",
         step_lab),
    Step("install", "install the CRDs and the operator's peering object (kubectl apply)",
         step_install),
    Step("apply", "apply examples/lab (kubectl apply -R -f examples/lab)", step_apply),
    Step("power-management", "point each Host at its node's BMC", step_power_management),
    Step("operator", "start the operator (hosted-engine run, peering on)", step_operator),
    Step("hosts", "Hosts Up, power state read from their BMCs", step_hosts),
    Step("storage", "StorageDomains Active", step_storage),
    Step("engine", "HostedEngine Up on the best-scored host", step_engine),
    Step("failover", "power loss of the engine's node: detection, fencing, failover",
         step_failover),
)

#: The steps the demo runs. A step whose capability has not landed is left out, never faked.
ENABLED_STEPS: tuple[str, ...] = (
    "lab", "install", "apply", "power-management", "operator", "hosts", "storage", "engine",
    "failover",
)


def enabled_steps(names: tuple[str, ...] = ENABLED_STEPS) -> list[Step]:
    unknown = set(names) - {s.name for s in STEPS}
    if unknown:
        raise ValueError(f"unknown demo steps: {sorted(unknown)}")
    return [s for s in STEPS if s.name in names]


# -- the run -------------------------------------------------------------------------------


def run_demo(options: DemoOptions, out: Reporter | None = None,
             steps: list[Step] | None = None) -> int:
    """Run the scenario; 0 when every step passed. Stops what it started unless ``keep``."""
    out = out or Reporter()
    ctx = Context(options, out)
    todo = steps if steps is not None else enabled_steps()
    skipped = [s.name for s in STEPS if s not in todo]
    out.line(f"hosted-engine demo: {options.hosts} hosts, {options.profile.name} timings, "
             f"{len(todo)} steps" + (f" (not run yet: {', '.join(skipped)})" if skipped else ""))
    failed: str | None = None
    try:
        for number, step in enumerate(todo, start=1):
            out.step(number, len(todo), step.title)
            started = time.monotonic()
            try:
                step.run(ctx)
            except StepFailed as exc:
                failed = step.name
                out.fail(f"step {step.name}: {exc}")
                break
            except Exception as exc:  # a bug or an unexpected API answer: still a clear line
                failed = step.name
                out.fail(f"step {step.name}: {type(exc).__name__}: {exc}")
                break
            out.line(f"step {step.name} done in {time.monotonic() - started:.1f}s")
    except KeyboardInterrupt:
        failed = "interrupted"
        out.fail("interrupted")
    finally:
        keep = options.keep and failed is None
        if keep:
            _print_keep(ctx)
        else:
            _stop_all(ctx)
    out.plain()
    if failed is None:
        out.ok(f"demo passed: {len(todo)} of {len(todo)} steps")
        return 0
    out.fail(f"demo failed at step {failed}")
    for proc, what in ((ctx.lab, "lab"), (ctx.operator, "operator")):
        if proc is not None:
            out.info(f"{what} log: {proc.log}")
    return 1


def _stop_all(ctx: Context) -> None:
    if ctx.kube is not None:
        with contextlib.suppress(Exception):
            ctx.kube.close()
    if ctx.operator is not None:
        code = ctx.operator.stop()
        ctx.out.info(f"operator stopped (exit {code})")
    if ctx.lab is not None:
        code = ctx.lab.stop()
        ctx.out.info(f"lab stopped (exit {code})")


def _print_keep(ctx: Context) -> None:
    if ctx.kube is not None:
        with contextlib.suppress(Exception):
            ctx.kube.close()
    k = ctx.options.kubeconfig
    out = ctx.out
    out.plain()
    out.plain("The lab and the operator keep running:")
    if ctx.lab is not None:
        out.plain(f"  lab       pid {ctx.lab.pid}, log {ctx.lab.log}")
    if ctx.operator is not None:
        out.plain(f"  operator  pid {ctx.operator.pid}, log {ctx.operator.log}")
    kc = _command_name(ctx.kubectl or "kubectl")
    he = _command_name(str(Path(sys.executable).parent / "hosted-engine"))
    out.plain("Point kubectl at them:")
    out.plain(f"  export KUBECONFIG={k}")
    out.plain(f"  {kc} get nodes")
    out.plain(f"  {kc} get hostedengines,hosts,storagedomains -A")
    out.plain(f"  {kc} get vmi -A -o wide")
    out.plain(f"  {he} lab status")
    out.plain(f"  {he} lab fail-node node-2")
    out.plain("Stop everything (the operator stops with the lab):")
    out.plain(f"  {he} lab down --kubeconfig {k}")


def _command_name(path: str) -> str:
    """A command as the user can type it: its bare name when PATH finds the same file, else
    its path (relative to the current directory when below it)."""
    name = Path(path).name
    found = shutil.which(name)
    if found and Path(found).resolve() == Path(path).resolve():
        return name
    if not Path(path).exists():
        return name
    return _short(path)
