"""The operator at scale: N Hosts and V VMs on the lab, the lab and the operator in separate
processes so that each one's CPU and RSS are measured apart.

    .venv/bin/python bench/operator_scale.py --nodes 1000 --vms 1000 --window 60
    .venv/bin/python bench/operator_scale.py --nodes 1000 --vms 10000 --window 60

Three processes:

- the **lab** (this file with ``--lab-child``): the whole simulated cluster
  (:class:`~hosted_engine.lab.sim.lab.Lab`, HTTPS API server, one kubelet per node, KubeVirt)
  with the real Kubernetes timings (``LabTimings()``: Lease every 10 s, pod start 2 s, guest boot
  20 s), the project's CRDs, one Host per node (the first three deployed for the hosted engine,
  no BMCs), the hosted-engine StorageDomain, V VirtualMachines and, with ``--engine``, the
  HostedEngine. It counts every request that arrives over HTTP (that is: the operator's) by
  verb and resource at the API server, and answers the driver's commands on stdin/stdout
  (JSON lines) with its in-process client, so the driver itself never adds a request to the
  counts;
- the **operator**: ``hosted-engine run --standalone`` against the lab's kubeconfig;
- the **driver** (this file): starts both, samples the operator's CPU (``/proc/PID/stat``) and
  RSS (``VmRSS``), scrapes the operator's own metrics endpoint (``--metrics-port``, a free
  port; HTTP to the operator, not to the lab's API server, so it adds no request to the
  counts), and prints the measurements.

Phases: start the operator -> every Host reports ``status.observedGeneration`` equal to its
generation and a state (converged); a settling window (``--settle``, its own row: what a start
still owes after convergence, such as kopf's annotation patches of changed objects and the
watch backlog); an idle window: operator CPU (% of one core), RSS, API
requests per minute by verb/resource, and the Lease watch lag (``hosted_engine_watch_lag_seconds``:
count, p50 and p99 of the window, estimated from the histogram's buckets like Prometheus'
``histogram_quantile``); then the operator is stopped, the spec of every Host is
changed (``spec.maintenance.timeout``: harmless, but a new generation), the operator is started
again, and the time until every Host reports the new generation is the time to converge after a
restart; then a second settling window and a second idle window.

:class:`LabProcess` and :class:`OperatorProcess` are shared with ``bench/reaction.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
CRDS_DIR = ROOT / "crds"
SD_EXAMPLE = ROOT / "examples" / "lab" / "storagedomain.yaml"
ENGINE_NS = "engine"
VM_NS = "bench"
GROUP, VERSION = "hostedengine.io", "v1alpha1"
#: A second (data) StorageDomain, for spec changes the hosted-engine domain would refuse.
DATA_DOMAIN: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}", "kind": "StorageDomain", "metadata": {"name": "data"},
    "spec": {"type": "fc", "role": "data", "capacity": "50Gi",
             "fc": {"wwids": ["3600a0980383030534f3f4a4f4d4c4502"]}},
}
#: Host states that count as "the operator has reconciled it".
SETTLED = frozenset({"Up", "Maintenance", "PreparingForMaintenance", "NonOperational",
                     "NonResponsive", "Activating"})


# ============================================================================================
# The lab process


def _rss_mib(pid: int | str = "self") -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (not its children)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def vm_body(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": f"vm-{i}", "namespace": VM_NS},
        "spec": {
            "runStrategy": "Always",
            "template": {
                "spec": {
                    "domain": {
                        "cpu": {"cores": 1},
                        "memory": {"guest": "128Mi"},
                        "resources": {"requests": {"cpu": "100m"}},
                        "devices": {"interfaces": [{"name": "default", "masquerade": {}}]},
                    },
                    "networks": [{"name": "default", "pod": {}}],
                }
            },
        },
    }


def engine_body() -> dict[str, Any]:
    """The HostedEngine with default settings except what the lab needs (health on {ip})."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HostedEngine",
        "metadata": {"name": "engine", "namespace": ENGINE_NS,
                     "annotations": {"lab.hostedengine.io/guest-http": "engine"}},
        "spec": {
            "vm": {
                "memory": "16Gi",
                "disk": {"storageDomain": "hosted-engine"},
                "image": {"containerDisk": {"image": "quay.io/ovirt/engine:4.5"}},
                "network": {"fqdn": "engine.lab.example"},
            },
            "health": {"url": "http://{ip}:8080/ovirt-engine/services/health"},
        },
    }


def get_path(obj: Any, path: str) -> Any:
    node = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


class LabChild:
    """Runs in the lab process: the lab, the request counter and the commands."""

    def __init__(self, args: argparse.Namespace) -> None:
        from hosted_engine.lab.sim.lab import Lab
        from hosted_engine.lab.sim.runner import LabRunner
        from hosted_engine.lab.sim.timings import LabTimings

        timings = LabTimings.fast() if args.fast else LabTimings()
        self.lab = Lab(args.nodes, timings=timings, bmc=False, tls_enabled=True, plugins=True)
        self.runner = LabRunner(self.lab, Path(args.kubeconfig))
        self.requests: Counter[str] = Counter()
        self.nodes = args.nodes

    def start(self) -> None:
        self.runner.start(timeout=600)
        faults = self.lab.server.core.faults
        inner = faults.apply
        counts = self.requests

        async def counting(verb: str, group: str, resource_: str, subresource: str,
                           namespace: str, name: str, local: bool, *rest: Any,
                           **kwargs: Any) -> Any:
            if not local:
                key = f"{verb} {resource_}" + (f"/{subresource}" if subresource else "")
                counts[key] += 1
            return await inner(verb, group, resource_, subresource, namespace, name, local,
                               *rest, **kwargs)

        faults.apply = counting  # type: ignore[method-assign]

    def call(self, fn: Callable[[], Awaitable[Any]], timeout: float = 3600) -> Any:
        return self.runner.call(fn, timeout)

    # -- commands (each runs in the lab's loop) ------------------------------------------------

    async def setup(self, vms: int, engine: bool, engine_hosts: int = 3,
                    data_domain: bool = False) -> dict[str, Any]:
        from hosted_engine.lab.kubevirt.resources import VMS
        from hosted_engine.lab.sim.api import NAMESPACES

        client = self.lab.client
        t0 = time.monotonic()
        for path in sorted(CRDS_DIR.glob("*.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                if crd:
                    await client.create("apiextensions.k8s.io", "v1",
                                        "customresourcedefinitions", crd)
        for ns in (ENGINE_NS, VM_NS):
            await self.lab.api.create(
                NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for doc in yaml.safe_load_all(SD_EXAMPLE.read_text()):
            if doc:
                await client.create(GROUP, VERSION, "storagedomains", doc)
        for i in range(1, self.nodes + 1):
            node = f"node-{i}"
            await client.create(GROUP, VERSION, "hosts", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "Host", "metadata": {"name": node},
                "spec": {"nodeName": node,
                         "hostedEngine": "deploy" if i <= engine_hosts else "undeploy"}})
        hosts_s = time.monotonic() - t0
        for i in range(vms):
            await client.create(VMS.group, VMS.version, VMS.plural, vm_body(i), VM_NS)
        if engine:
            await client.create(GROUP, VERSION, "hostedengines", engine_body(), ENGINE_NS)
        if data_domain:
            await client.create(GROUP, VERSION, "storagedomains", DATA_DOMAIN)
        return {"hosts_created_s": round(hosts_s, 1),
                "created_s": round(time.monotonic() - t0, 1)}

    async def status(self) -> dict[str, Any]:
        from hosted_engine.lab.kubevirt.resources import VMIS

        client = self.lab.client
        hosts = (await client.list(GROUP, VERSION, "hosts")).get("items") or []
        converged = sum(
            1 for h in hosts
            if get_path(h, "status.observedGeneration") == h["metadata"].get("generation")
            and get_path(h, "status.state") in SETTLED)
        states = Counter(str(get_path(h, "status.state")) for h in hosts)
        running = sum(1 for v in self.lab.informer(VMIS).items()
                      if get_path(v, "status.phase") == "Running")
        sds = (await client.list(GROUP, VERSION, "storagedomains")).get("items") or []
        hes = (await client.list(GROUP, VERSION, "hostedengines")).get("items") or []
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "hosts": len(hosts), "hosts_converged": converged, "host_states": dict(states),
            "vmis_running": running,
            "storagedomains": {get_path(s, "metadata.name"): get_path(s, "status.state")
                               for s in sds},
            "engines": {get_path(e, "metadata.name"): get_path(e, "status.state")
                        for e in hes},
            "requests": dict(self.requests),
            "lab_cpu_s": usage.ru_utime + usage.ru_stime,
            "lab_rss_mib": round(_rss_mib(), 1),
            "t": time.time(),
        }

    async def host_fields(self) -> dict[str, dict[str, str]]:
        """Every Host's status, field by field (conditions by type), as JSON strings: two of
        them tell which fields the operator rewrote in between."""
        hosts = (await self.lab.client.list(GROUP, VERSION, "hosts")).get("items") or []
        out: dict[str, dict[str, str]] = {}
        for h in hosts:
            status = dict(h.get("status") or {})
            fields = {f"conditions.{c.get('type')}": json.dumps(c, sort_keys=True)
                      for c in status.pop("conditions", None) or []}
            fields.update({k: json.dumps(v, sort_keys=True) for k, v in status.items()})
            out[str(h["metadata"]["name"])] = fields
        return out

    async def bump_hosts(self) -> dict[str, Any]:
        """A new generation for every Host (spec.maintenance.timeout 30m <-> 31m)."""
        client = self.lab.client
        hosts = (await client.list(GROUP, VERSION, "hosts")).get("items") or []
        for h in hosts:
            current = get_path(h, "spec.maintenance.timeout") or "30m"
            new = "31m" if current == "30m" else "30m"
            await client.patch(GROUP, VERSION, "hosts", h["metadata"]["name"],
                               {"spec": {"maintenance": {"timeout": new}}})
        return {"bumped": len(hosts)}

    async def react(self, plural: str, name: str, namespace: str | None, patch: dict[str, Any],
                    path: str, expected: Any, timeout: float) -> dict[str, Any]:
        """Merge-patch an object's spec; the seconds until its status shows the new generation
        (``status.observedGeneration``) and ``path`` equals ``expected`` (or one of them, a
        list). Seen through an informer of the lab (a watch, in-process): no polling requests.
        """
        from hosted_engine.lab.sim.api import Res

        res = Res(GROUP, VERSION, plural, plural, namespaced=namespace is not None)
        informer = self.lab.informer(res)
        if not informer.synced.is_set():
            await informer.synced.wait()
        t0 = time.monotonic()
        updated = await self.lab.client.patch(GROUP, VERSION, plural, name, patch,
                                              namespace=namespace)
        generation = updated["metadata"]["generation"]
        deadline = t0 + timeout
        observed_at = None
        while time.monotonic() < deadline:
            obj = informer.get(name, namespace or "")
            gen_ok = (get_path(obj, "status.observedGeneration") or 0) >= generation
            if gen_ok and observed_at is None:
                observed_at = time.monotonic()
            value = get_path(obj, path)
            if gen_ok and (value in expected if isinstance(expected, list) else
                           value == expected):
                now = time.monotonic()
                return {"ok": True, "generation_s": round(observed_at - t0, 4),
                        "reflected_s": round(now - t0, 4)}
            await asyncio.sleep(0.005)
        obj = informer.get(name, namespace or "")
        return {"ok": False, "generation": generation,
                "observed": get_path(obj, "status.observedGeneration"),
                "value": get_path(obj, path)}

    def serve(self, inp: IO[str], out: IO[str]) -> None:
        out.write(json.dumps({"ready": True, "kubeconfig": str(self.runner.kubeconfig_path)})
                  + "\n")
        out.flush()
        for line in inp:
            if not line.strip():
                continue
            msg = json.loads(line)
            cmd = msg.pop("cmd")
            if cmd == "quit":
                break
            try:
                result = self.call(lambda cmd=cmd, msg=msg: getattr(self, cmd)(**msg))
            except Exception as exc:  # reported to the driver
                result = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(result, default=str) + "\n")
            out.flush()

    def stop(self) -> None:
        self.runner.stop()


def lab_child_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from hosted_engine.lab.kubevirt.scale import tune_gc

    tune_gc()  # the lab process only (as the lab's own 10,000-VM benchmark): not the operator
    child = LabChild(args)
    child.start()
    try:
        child.serve(sys.stdin, sys.stdout)
    finally:
        child.stop()
    return 0


# ============================================================================================
# The driver's side


class LabProcess:
    """The lab in a child process; ``cmd(name, **kwargs)`` runs one of :class:`LabChild`'s
    commands and returns its JSON answer."""

    def __init__(self, nodes: int, *, fast: bool = False, workdir: Path) -> None:
        self.kubeconfig = workdir / "kubeconfig"
        argv = [sys.executable, str(Path(__file__).resolve()), "--lab-child",
                "--nodes", str(nodes), "--kubeconfig", str(self.kubeconfig)]
        if fast:
            argv.append("--fast")
        self.log = open(workdir / "lab.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, cwd=ROOT)
        self._lock = threading.Lock()
        first = self._read()
        if not first.get("ready"):
            raise RuntimeError(f"the lab did not start: {first}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the lab process ended (exit {self.proc.poll()}); see its log")
        result: dict[str, Any] = json.loads(line)
        return result

    def cmd(self, command: str, /, **kwargs: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(json.dumps({"cmd": command, **kwargs}) + "\n")
            self.proc.stdin.flush()
            result = self._read()
        if "error" in result:
            raise RuntimeError(f"lab command {command} failed: {result['error']}")
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(120)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The operator's histogram of the Lease watch lag (adapters/metrics.py).
WATCH_LAG = "hosted_engine_watch_lag_seconds"

#: Cumulative bucket counts of a histogram: upper bound (``le``, ``inf`` last) -> count.
Buckets = dict[float, float]


def parse_histogram(text: str, name: str, labels: Mapping[str, str]) -> Buckets:
    """The ``_bucket`` samples of histogram ``name`` with ``labels`` in a Prometheus text page
    (empty when the series does not exist yet: no observation so far)."""
    out: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name != f"{name}_bucket":
                continue
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            out[float(sample.labels["le"])] = float(sample.value)
    return out


def bucket_delta(before: Buckets, after: Buckets) -> Buckets:
    """The window's observations: ``after - before`` per bucket (``before`` may be empty)."""
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile estimated from cumulative buckets as Prometheus'
    ``histogram_quantile`` does: linear interpolation inside the bucket the rank falls in (the
    first bucket from 0); a rank in the ``+Inf`` bucket gives the largest finite bound. None
    without observations."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile out of [0, 1]: {q}")
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank and count > below:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def lag_summary(before: Buckets | None, after: Buckets | None) -> dict[str, Any] | None:
    """Count, p50 and p99 (seconds) of the lag observed between two scrapes (None when a
    scrape failed)."""
    if before is None or after is None:
        return None
    window = bucket_delta(before, after)
    p50, p99 = histogram_quantile(0.5, window), histogram_quantile(0.99, window)
    return {"count": int(window.get(float("inf"), 0.0)),
            "p50_s": None if p50 is None else round(p50, 3),
            "p99_s": None if p99 is None else round(p99, 3)}


class OperatorProcess:
    """``hosted-engine run --standalone`` against the lab, in its own process, serving its
    metrics on a free port of 127.0.0.1 (:meth:`watch_lag`)."""

    def __init__(self, kubeconfig: Path, log_path: Path, env: dict[str, str] | None = None
                 ) -> None:
        self.started_at = time.monotonic()
        self.metrics_port = free_port()
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hosted_engine", "run", "--kubeconfig", str(kubeconfig),
             "--standalone", "--metrics-port", str(self.metrics_port),
             *(["--verbose"] if os.environ.get("OPSCALE_VERBOSE") else [])],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
            env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def rss_mib(self) -> float:
        return _rss_mib(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def watch_lag(self, kind: str = "Lease", timeout: float = 10.0) -> Buckets | None:
        """The cumulative buckets of the operator's watch-lag histogram for ``kind``, scraped
        from its metrics endpoint (None when it does not answer)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        return parse_histogram(text, WATCH_LAG, {"kind": kind})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_until(what: str, probe: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def idle_window(lab: LabProcess, op: OperatorProcess, window: float, label: str
                ) -> dict[str, Any]:
    """Operator CPU and RSS, its API requests per minute by verb/resource, and its Lease
    watch lag (count, p50, p99 of the events handled in the window), over ``window``."""
    lag0 = op.watch_lag()
    f0 = lab.cmd("host_fields")
    s0, c0, w0 = lab.cmd("status"), op.cpu_seconds(), time.monotonic()
    rss: list[float] = []
    while time.monotonic() - w0 < window:
        time.sleep(min(5.0, window))
        rss.append(op.rss_mib())
    s1, c1, wall = lab.cmd("status"), op.cpu_seconds(), time.monotonic() - w0
    lag1 = op.watch_lag()
    f1 = lab.cmd("host_fields")
    rewritten = Counter(field for name, fields in f1.items() for field, value in fields.items()
                        if f0.get(name, {}).get(field) != value)
    delta = Counter(s1["requests"])
    delta.subtract(s0["requests"])
    per_min = {k: round(v * 60 / wall, 1) for k, v in sorted(delta.items()) if v}
    row = {
        "phase": label, "window_s": round(wall, 1),
        "operator_cpu_pct": round(100 * (c1 - c0) / wall, 2),
        "operator_rss_mib": round(max(rss) if rss else op.rss_mib(), 1),
        "requests_per_min": round(sum(delta.values()) * 60 / wall, 1),
        "by_verb_resource_per_min": per_min,
        "lease_watch_lag": lag_summary(lag0, lag1),
        "host_status_fields_changed": dict(rewritten.most_common()),
        "lab_cpu_pct": round(100 * (s1["lab_cpu_s"] - s0["lab_cpu_s"]) / wall, 1),
        "lab_rss_mib": s1["lab_rss_mib"],
        "load_average": load_average(),
    }
    print(json.dumps(row), flush=True)
    return row


def wait_converged(lab: LabProcess, op: OperatorProcess, hosts: int, timeout: float,
                   since: float) -> dict[str, Any]:
    last_print = time.monotonic()

    def probe() -> dict[str, Any] | None:
        nonlocal last_print
        if not op.alive():
            raise RuntimeError("the operator exited; see its log")
        status = lab.cmd("status")
        if time.monotonic() - last_print > 30:
            last_print = time.monotonic()
            print(json.dumps({"converging": status["hosts_converged"], "of": hosts,
                              "s": round(time.monotonic() - since, 1),
                              "states": status["host_states"],
                              "operator_rss_mib": round(op.rss_mib(), 1)}), flush=True)
        return status if status["hosts_converged"] >= hosts else None

    status = wait_until("every Host reconciled", probe, timeout, every=0.5)
    return {"seconds": round(time.monotonic() - since, 1), "status": status}


def run_scale(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="opscale-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        lab = LabProcess(args.nodes, fast=args.fast, workdir=work)
        op: OperatorProcess | None = None
        try:
            print(json.dumps({"phase": "lab started", "s": round(time.monotonic() - t0, 1)}),
                  flush=True)
            created = lab.cmd("setup", vms=args.vms, engine=args.engine)
            print(json.dumps({"phase": "objects created", **created}), flush=True)
            t1 = time.monotonic()

            def vms_running() -> dict[str, Any] | None:
                s = lab.cmd("status")
                if time.monotonic() - t1 > 0 and int(time.monotonic() - t1) % 30 == 0:
                    print(json.dumps({"vmis_running": s["vmis_running"],
                                      "s": round(time.monotonic() - t1)}), flush=True)
                return s if s["vmis_running"] >= args.vms else None

            try:
                s = wait_until("VMIs Running", vms_running, args.vm_timeout)
                vm_row = {"phase": f"{args.vms} VMIs Running (operator not started)",
                          "seconds": round(time.monotonic() - t1, 1),
                          "lab_rss_mib": s["lab_rss_mib"]}
            except TimeoutError:
                s = lab.cmd("status")
                vm_row = {"phase": f"VMIs Running after {args.vm_timeout:g}s (of {args.vms})",
                          "running": s["vmis_running"], "lab_rss_mib": s["lab_rss_mib"]}
            print(json.dumps(vm_row), flush=True)
            rows.append(vm_row)

            env = {"HE_HOST_RESYNC": str(args.resync)} if args.resync else {}
            t2 = time.monotonic()
            op = OperatorProcess(lab.kubeconfig, work / "operator.log", env)
            conv = wait_converged(lab, op, args.nodes, args.timeout, t2)
            row = {"phase": "first start -> every Host reconciled", "seconds": conv["seconds"],
                   "operator_rss_mib": round(op.rss_mib(), 1),
                   "operator_cpu_s": round(op.cpu_seconds(), 1),
                   "storagedomains": conv["status"]["storagedomains"],
                   "engines": conv["status"]["engines"]}
            print(json.dumps(row), flush=True)
            rows.append(row)
            if args.engine:
                try:
                    wait_until("engine up", lambda: lab.cmd("status")["engines"].get("engine")
                               == "EngineUp", args.engine_timeout)
                    up = {"phase": "operator start -> EngineUp",
                          "seconds": round(time.monotonic() - t2, 1)}
                    print(json.dumps(up), flush=True)
                    rows.append(up)
                except TimeoutError:
                    print(json.dumps({"engine": lab.cmd("status")["engines"]}), flush=True)
            if args.settle > 0:
                rows.append(idle_window(lab, op, args.settle, "settling after first start"))
            rows.append(idle_window(lab, op, args.window, "idle after first start"))

            op.stop()
            bumped = lab.cmd("bump_hosts")
            t3 = time.monotonic()
            op = OperatorProcess(lab.kubeconfig, work / "operator.log", env)
            conv = wait_converged(lab, op, args.nodes, args.timeout, t3)
            row = {"phase": f"restart -> {bumped['bumped']} changed Hosts reconciled",
                   "seconds": conv["seconds"], "operator_rss_mib": round(op.rss_mib(), 1),
                   "operator_cpu_s": round(op.cpu_seconds(), 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
            if args.settle > 0:
                rows.append(idle_window(lab, op, args.settle, "settling after restart"))
            rows.append(idle_window(lab, op, args.window, "idle after restart"))
            if args.keep_logs:
                for name in ("operator.log", "lab.log"):
                    target = Path(args.keep_logs) / name
                    target.write_bytes((work / name).read_bytes())
        finally:
            if op is not None:
                op.stop()
            lab.stop()
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000, help="nodes, one Host each")
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--window", type=float, default=60.0, help="idle window (seconds)")
    parser.add_argument("--timeout", type=float, default=900.0, help="convergence timeout")
    parser.add_argument(
        "--settle", type=float, default=30.0,
        help="seconds measured apart between convergence and the idle window: the one-off "
             "catch-up of a start (kopf's annotation patches of changed objects, the watch "
             "backlog) is reported in its own row instead of being counted as idle cost")
    parser.add_argument("--vm-timeout", type=float, default=900.0)
    parser.add_argument("--engine", action=argparse.BooleanOptionalAction, default=True,
                        help="also run a HostedEngine (default: yes)")
    parser.add_argument("--engine-timeout", type=float, default=180.0)
    parser.add_argument("--resync", type=float, default=0.0,
                        help="HE_HOST_RESYNC for the operator (default: its own, 300 s)")
    parser.add_argument("--fast", action="store_true", help="the lab's fast timings (tests)")
    parser.add_argument("--keep-logs", default="", help="copy the logs to this directory")
    parser.add_argument("--lab-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", default="", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.lab_child:
        return lab_child_main(args)
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
          f"{load_average()}", flush=True)
    print(f"command: {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}", flush=True)
    run_scale(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
