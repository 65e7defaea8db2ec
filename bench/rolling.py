"""Rolling maintenance on the lab: our order (maxUnavailable, parallel PreFlight, PostMaintenance
outside the slot) against CloudStack's sequential order, same hosts, VMs, hooks and operator.

The real operator (every handler) runs in-process against a fresh lab for each order: N Hosts in
G groups (spec.group), V VMs per host (real drains by live migration, the Host handler's), and
every stage a real shell script (a hook Job the lab's kubelet runs) that sleeps the stage's
duration. CloudStack's order is the planner's :func:`hosted_engine.logic.rolling.cloudstack_order`
of the same spec (PreFlight one host at a time, then one host at a time, the next host starting
only after the previous one's PostMaintenance); the bench installs it in the operator's spec
mapping for that run, nothing else changes.

Safety is measured, not assumed: the most hosts in maintenance at once (from the run's recorded
maintenance intervals), every VM running at the end, no stage run twice (Jobs created), and the
capacity check the planner makes before every host.

    .venv/bin/python bench/rolling.py --hosts 20 --groups 4 --max-unavailable 2

Durations are CloudStack-like stage times scaled down (``--scale``, default 1/100: PreFlight
30 s -> 0.3 s, PreMaintenance 60 s, Maintenance 300 s, PostMaintenance 60 s); the drain time is
whatever the lab's live migrations take (reported).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from harness import HOSTS, Cluster, LabCluster, OperatorThread, wait_for  # noqa: E402
from hosted_engine.adapters.kube import Resource  # noqa: E402
from hosted_engine.adapters.rolling import ROLLINGMAINTENANCES as RUNS  # noqa: E402
from hosted_engine.handlers import rollingmaintenance_mapping as rm  # noqa: E402
from hosted_engine.lab.sim.timings import LabTimings  # noqa: E402
from hosted_engine.logic import rolling as rl  # noqa: E402
from hosted_engine.logic.drain import DrainVM, TargetHost  # noqa: E402

CONFIGMAPS = Resource("", "v1", "configmaps", namespaced=True)
VMS = Resource("kubevirt.io", "v1", "virtualmachines", namespaced=True)
VMIS = Resource("kubevirt.io", "v1", "virtualmachineinstances", namespaced=True)
JOBS = Resource("batch", "v1", "jobs", namespaced=True)
NS = "hooks"
VM_NS = "vms"
STAGE_SECONDS = {"PreFlight": 30, "PreMaintenance": 60, "Maintenance": 300,
                 "PostMaintenance": 60}
KEYS = {"PreFlight": "preFlight", "PreMaintenance": "preMaintenance",
        "Maintenance": "maintenance", "PostMaintenance": "postMaintenance"}
HOOK = """#!/bin/sh
case "$ROLLING_MAINTENANCE_STAGE" in
  PreFlight) t="$1" ;; PreMaintenance) t="$2" ;; Maintenance) t="$3" ;; *) t="$4" ;;
esac
echo "$ROLLING_MAINTENANCE_HOST $ROLLING_MAINTENANCE_STAGE sleeping $t"
sleep "$t"
"""


def vm(name: str, memory: str) -> dict[str, Any]:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": VM_NS},
            "spec": {"runStrategy": "Always", "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"domain": {"cpu": {"cores": 1}, "memory": {"guest": memory},
                                    "devices": {"interfaces": [
                                        {"name": "default", "masquerade": {}}]}},
                         "networks": [{"name": "default", "pod": {}}], "volumes": []}}}}


def running(cluster: Cluster) -> set[str]:
    return {v["metadata"]["name"] for v in cluster.list(VMIS, VM_NS)
            if (v.get("status") or {}).get("phase") == "Running"}


def prepare(cluster: Cluster, args: argparse.Namespace) -> set[str]:
    nodes = [f"node-{i}" for i in range(1, args.hosts + 1)]
    for i, node in enumerate(nodes):
        group = f"g{i * args.groups // args.hosts + 1}"
        cluster.create(HOSTS, {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
                               "metadata": {"name": node},
                               "spec": {"nodeName": node, "group": group}})
    wait_for("Hosts Up", lambda: all(
        ((cluster.get(HOSTS, n) or {}).get("status") or {}).get("state") == "Up"
        for n in nodes), timeout=120)
    cluster.ensure_namespace(NS)
    cluster.ensure_namespace(VM_NS)
    cluster.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "bench-hooks", "namespace": NS},
                                "data": {"hook.sh": HOOK}})
    names = {f"vm-{i}" for i in range(args.hosts * args.vms_per_host)}
    for name in sorted(names):
        cluster.create(VMS, vm(name, args.vm_memory))
    wait_for("VMs running", lambda: running(cluster) >= names, timeout=180)
    return names


def run_body(args: argparse.Namespace) -> dict[str, Any]:
    payload = [f"{STAGE_SECONDS[s] * args.scale:g}" for s in STAGE_SECONDS]
    hook = {"image": "bench/hooks:1", "script": {"name": "bench-hooks", "key": "hook.sh"}}
    return {"apiVersion": "hostedengine.io/v1alpha1", "kind": "RollingMaintenance",
            "metadata": {"name": "bench"},
            "spec": {"scope": {"groups": {}}, "stages": {KEYS[s]: hook for s in STAGE_SECONDS},
                     "payload": payload, "hooksNamespace": NS, "pollInterval": "1s",
                     "stageTimeout": "10m", "maxUnavailable": args.max_unavailable,
                     "preMaintenanceAhead": args.pre_maintenance_ahead}}


def cloudstack_polls(order: str, args: argparse.Namespace) -> dict[str, float | None]:
    """CloudStack's reaction time for an order: its ping interval (stages) and the 30 s step
    of its wait for maintenance, scaled like the stage times; none for cloudstack-watch."""
    if order != "cloudstack":
        return {"ping_interval_s": None, "maintenance_poll_s": None}
    return {"ping_interval_s": args.cloudstack_ping * args.scale,
            "maintenance_poll_s": args.cloudstack_maintenance_poll * args.scale}


def most_at_once(hosts: list[dict[str, Any]]) -> int:
    points: list[tuple[datetime, int]] = []
    for h in hosts:
        if h.get("maintenanceStartedAt") and h.get("maintenanceFinishedAt"):
            points.append((datetime.fromisoformat(h["maintenanceStartedAt"]), 1))
            points.append((datetime.fromisoformat(h["maintenanceFinishedAt"]), -1))
    level = best = 0
    for _, delta in sorted(points):
        level += delta
        best = max(best, level)
    return best


def activation_seconds(hosts: list[dict[str, Any]]) -> list[float]:
    """Per host: from the end of its maintenance being asked to its PostMaintenance hook
    starting (CloudStack starts it as soon as cancelMaintenance returns; the planner waits
    for the Host to be Up again)."""
    out = []
    for h in hosts:
        stages = {s["stage"]: s for s in h.get("stages") or []}
        end = h.get("maintenanceFinishedAt")
        hook = (stages.get("PostMaintenance") or {}).get("startedAt")
        if end and hook:
            out.append((datetime.fromisoformat(hook) - datetime.fromisoformat(end))
                       .total_seconds())
    return out


def hook_overheads(hosts: list[dict[str, Any]], scale: float) -> list[float]:
    """Per Maintenance hook: from its Job's creation to the run ending the maintenance, minus
    the script's own sleep: the cost of a hook step (Job controller, pod start, process, Job
    complete, watch event, reconcile). (Not PreMaintenance: run ahead, it waits for a slot.)"""
    out = []
    for h in hosts:
        stages = {s["stage"]: s for s in h.get("stages") or []}
        for stage, after in (("Maintenance", "maintenanceFinishedAt"),):
            start = (stages.get(stage) or {}).get("startedAt")
            if start and h.get(after):
                gap = (datetime.fromisoformat(h[after]) - datetime.fromisoformat(start))
                out.append(gap.total_seconds() - STAGE_SECONDS[stage] * scale)
    return out


def drain_seconds(hosts: list[dict[str, Any]]) -> list[float]:
    """Per host: from the maintenance request to its Maintenance hook starting (the drain, as
    the run saw it, including the watch and reconcile latencies)."""
    out = []
    for h in hosts:
        stages = {s["stage"]: s for s in h.get("stages") or []}
        start = h.get("maintenanceStartedAt")
        hook = (stages.get("Maintenance") or {}).get("startedAt")
        if start and hook:
            out.append((datetime.fromisoformat(hook) - datetime.fromisoformat(start))
                       .total_seconds())
    return out


def one_run(order: str, args: argparse.Namespace) -> dict[str, Any]:
    # fast lab timings, but a node is declared NotReady only after 10 s of silence (real
    # Kubernetes: 40 s): on a machine shared with other jobs a CPU-starved lab otherwise
    # loses node leases and evicts hook pods, which is not what this bench measures
    timings = LabTimings.fast(migration_bandwidth=args.migration_bandwidth * 1024**3,
                              node_monitor_grace_period=10.0, default_toleration_seconds=30.0)
    original: Callable[..., rl.RollingSpec] = rm.rolling_spec
    if order.startswith("cloudstack"):
        polls = cloudstack_polls(order, args)
        rm.rolling_spec = lambda spec: rl.cloudstack_order(original(spec), **polls)
    lab = LabCluster(args.hosts, timings=timings).start()
    operator = OperatorThread(lab.kubeconfig).start()
    try:
        cluster = Cluster(lab, operator)
        vms = prepare(cluster, args)
        t0 = time.monotonic()
        cluster.create(RUNS, run_body(args))
        with contextlib.suppress(AssertionError):  # a run still going is reported as it is
            cluster.wait_field(RUNS, "bench", "status.state",
                               predicate=lambda s: s in ("Succeeded", "Failed", "Aborted"),
                               timeout=args.timeout)
        wall = time.monotonic() - t0
        obj = cluster.get(RUNS, "bench") or {}
        status = obj.get("status") or {}
        started = datetime.fromisoformat(status["startedAt"])
        finished = (datetime.fromisoformat(status["finishedAt"]) if status.get("finishedAt")
                    else datetime.now(UTC))
        drains = drain_seconds(status.get("hosts") or [])
        activations = activation_seconds(status.get("hosts") or [])
        overheads = hook_overheads(status.get("hosts") or [], args.scale)
        return {
            "order": order,
            "state": status.get("state"),
            "run_s": (finished - started).total_seconds(),
            "wall_s": wall,
            "most_down": most_at_once(status.get("hosts") or []),
            "hosts_done": sum(1 for h in status.get("hosts") or [] if h["state"] == "Succeeded"),
            "progress": status.get("progress"),
            "message": status.get("message"),
            "failed": [(h["host"], h.get("message")) for h in status.get("hosts") or []
                       if h["state"] == "Failed"],
            "vms_running": len(running(cluster) & vms),
            "vmi_phases": dict(Counter(str((v.get("status") or {}).get("phase"))
                                       for v in cluster.list(VMIS, VM_NS))),
            "vms": len(vms),
            "jobs": len(cluster.list(JOBS, NS)),
            "drain_mean_s": sum(drains) / len(drains) if drains else 0.0,
            "drain_max_s": max(drains, default=0.0),
            "activation_sum_s": sum(activations),
            "activation_mean_s": sum(activations) / len(activations) if activations else 0.0,
            "hook_overhead_mean_s": sum(overheads) / len(overheads) if overheads else 0.0,
            "capacity": (status.get("capacityCheck") or {}).get("ok"),
        }
    finally:
        rm.rolling_spec = original
        operator.stop()
        lab.stop()


def simulated(args: argparse.Namespace, drain_s: float) -> dict[str, float]:
    """The planner's own estimate (simulate) of each order with the same durations and the
    lab's drain time."""
    hooks = {stage: ("/hook",) for stage in rl.Stage}
    spec = rl.RollingSpec(scope=rl.Scope(group_label_key="g"), hooks=hooks,
                          max_unavailable=args.max_unavailable,
                          pre_maintenance_ahead=args.pre_maintenance_ahead)
    gib = 1 << 30
    views = [rl.HostView(
        name=f"node-{i + 1}", group=f"g{i * args.groups // args.hosts + 1}",
        labels={"g": f"g{i * args.groups // args.hosts + 1}"},
        capacity=TargetHost(f"node-{i + 1}", 64 * gib, 16000, 8 * gib, 2000),
        vms=tuple(DrainVM(f"vm{i}-{j}", "vms", 4 * gib, 100) for j in range(args.vms_per_host)),
    ) for i in range(args.hosts)]
    durations = rl.SimDurations(
        hook_s={rl.Stage(s): STAGE_SECONDS[s] * args.scale for s in STAGE_SECONDS},
        drain_s=lambda _h: drain_s, activate_s=0.05)
    return {order: rl.simulate(spec if order == "ours" else rl.cloudstack_order(
                spec, **cloudstack_polls(order, args)), views, durations).total_s
            for order in ("ours", "cloudstack", "cloudstack-watch")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--max-unavailable", type=int, default=2)
    parser.add_argument("--vms-per-host", type=int, default=1)
    parser.add_argument("--vm-memory", default="4Gi")
    parser.add_argument("--scale", type=float, default=0.01,
                        help="lab seconds per CloudStack-like stage second")
    parser.add_argument("--migration-bandwidth", type=float, default=8.0, help="GiB/s")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--orders", default="ours,cloudstack",
                        help="comma-separated: ours (maxUnavailable, parallel PreFlight), "
                        "cloudstack (its sequential order and its polling), cloudstack-watch "
                        "(its order with the operator's watch-driven reactions)")
    parser.add_argument("--pre-maintenance-ahead", action=argparse.BooleanOptionalAction,
                        default=True, help="ours: spec.preMaintenanceAhead")
    parser.add_argument("--cloudstack-ping", type=float, default=rl.CLOUDSTACK_PING_INTERVAL_S,
                        help="CloudStack's kvm.rolling.maintenance.ping.interval, s (scaled)")
    parser.add_argument("--cloudstack-maintenance-poll", type=float,
                        default=rl.CLOUDSTACK_MAINTENANCE_POLL_S,
                        help="step of CloudStack's waitForHostInMaintenance, s (scaled)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HE_HOST_MIGRATION_RETRY_AFTER", "0.2")
    rows = []
    for order in args.orders.split(","):
        rows.append(one_run(order, args))
        print(f"# {rows[-1]}", flush=True)
    drain = sum(r["drain_mean_s"] for r in rows) / len(rows)
    sims = simulated(args, drain)
    print(f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, load average {os.getloadavg()}")
    print(f"- ours: preMaintenanceAhead {args.pre_maintenance_ahead}; cloudstack: ping "
          f"{args.cloudstack_ping:g}s and maintenance check {args.cloudstack_maintenance_poll:g}s "
          f"x{args.scale:g}")
    print(f"- {args.hosts} hosts in {args.groups} groups, {args.vms_per_host} VMs of "
          f"{args.vm_memory} per host, stage times x{args.scale:g} "
          f"({', '.join(f'{s} {STAGE_SECONDS[s] * args.scale:g}s' for s in STAGE_SECONDS)})")
    print()
    labels = {"ours": f"ours, maxUnavailable {args.max_unavailable}",
              "cloudstack": "CloudStack's order and polling",
              "cloudstack-watch": "CloudStack's order, watch-driven"}
    print("| order | result | run s | most hosts down at once | hosts done | VMs running "
          "| hook Jobs | request -> Maintenance hook mean/max s | end -> Up -> PostMaintenance "
          "mean s | hook step overhead mean s | capacity check |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {labels[r['order']]} | {r['state']} | {r['run_s']:.1f} | {r['most_down']} | "
              f"{r['hosts_done']}/{args.hosts} | {r['vms_running']}/{r['vms']} | {r['jobs']} | "
              f"{r['drain_mean_s']:.2f}/{r['drain_max_s']:.2f} | {r['activation_mean_s']:.2f} | "
              f"{r['hook_overhead_mean_s']:.2f} | {r['capacity']} |")
    by_order = {r["order"]: r for r in rows}
    print()
    if "ours" in by_order:
        for other in ("cloudstack", "cloudstack-watch"):
            if other in by_order:
                print(f"speed-up on the lab against {labels[other]}: "
                      f"{by_order[other]['run_s'] / by_order['ours']['run_s']:.2f}x")
    print(f"the planner's simulation with the same durations and a {drain:.2f}s drain: "
          + ", ".join(f"{labels[o]} {t:.1f}s" for o, t in sims.items())
          + f"; {sims['cloudstack'] / sims['ours']:.2f}x and "
          f"{sims['cloudstack-watch'] / sims['ours']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
