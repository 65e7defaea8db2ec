"""Benchmark: HostedEngine failover with REALISTIC Kubernetes timings and the DEFAULT HostedEngine
settings, per fault, over N runs (issues 6 and 12).

    .venv/bin/python bench/failover.py --scenario power --runs 10
    .venv/bin/python bench/failover.py --scenario partition --runs 10
    .venv/bin/python bench/failover.py --scenario crash --runs 10
    .venv/bin/python bench/failover.py --scenario hang --runs 10

The operator (every handler, in-process, its default environment: BMC power poll 5 s, fence
confirmation timeout 60 s) runs on a 3-host lab with Redfish BMCs, the hosted-engine
StorageDomain of examples/lab and a HostedEngine whose spec sets only what the lab needs (the
health URL on the VMI's address): health interval 5s, timeout 3s, 3 failures, restart grace
60s, silence threshold 22s, fencing required -- the defaults.

Scenarios (each run starts from EngineUp and ends with EngineUp, health good; host faults
strike after a random 0-10 s pause, so that they fall anywhere in the Lease and poll cycles):
  power      the node running the engine loses power (no BMC command: a dead PSU; its BMC
             answers Off). Phases from status.lastFailover (one clock) and the VMI:
             detection = cut -> HostLost (detectedAt); fence = -> the Host's fence confirmed
             (the Host's status.fencing.confirmedAt: powered off, confirmed Off, tainted, pods
             released); reschedule = -> new VMI Running on another node; boot = -> EngineUp.
             Then the node is powered on again and its Host must be Up before the next run.
  partition  the node running the engine is cut from the API server, still running (BMC On):
             only its Lease's silence tells; same phases. The fence powers it off; it is then
             repaired (reconnected, powered on) before the next run.
  crash      the engine's guest crashes (VMI Failed): detection = -> the HostedEngine leaves
             EngineUp; restart = -> a new VMI Running; boot = -> EngineUp.
  hang       the engine's guest hangs (health page times out, VMI Running): detection = ->
             EngineUpBadHealth (3 failed probes); restart = -> a new VMI Running (restart grace
             60 s, then stop); boot = -> EngineUp.

Lab timings: ``LabTimings()`` defaults, i.e. a real cluster's (kubelet Lease every 10 s with
client-go's jitter, node-monitor grace 40 s, monitor period 5 s, pod start 2 s, virt-launcher 5 s,
BMC power change 5 s), except: the guest boot (``--boot``, 2 s) and the engine's start-up
(``--engine-startup``, 3 s), which are the appliance's, not the platform's (a real engine
appliance takes minutes: add it); the node's boot after a repair (``--node-boot``, 10 s; only
between runs, never measured); the simulators' pacing tick (0.1 s instead of 0.5 s). ``--fast``
uses the lab's fast test timings instead (lease 0.1 s, NotReady after 0.5 s).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from harness import HOSTEDENGINES, HOSTS, Cluster, LabCluster, OperatorThread, field, wait_for  # noqa: E402
from hosted_engine.lab.sim.timings import LabTimings  # noqa: E402
from hostedengine_lab import NAME, NS, VMIS, he_body, lab_call, prepare  # noqa: E402

PHASES = {
    "power": ("detection", "fence", "reschedule", "boot", "total"),
    "partition": ("detection", "fence", "reschedule", "boot", "total"),
    "crash": ("detection", "restart", "boot", "total"),
    "hang": ("detection", "restart", "boot", "total"),
}


def default_spec() -> dict[str, Any]:
    return {
        "vm": {
            "memory": "16Gi",
            "disk": {"storageDomain": "hosted-engine"},
            "image": {"containerDisk": {"image": "quay.io/ovirt/engine:4.5"}},
            "network": {"fqdn": "engine.lab.example"},
        },
        # the only non-default: the lab's guests answer on their own address
        "health": {"url": "http://{ip}:8080/ovirt-engine/services/health"},
    }


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * p))]


def ts(value: Any) -> float:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def now() -> float:
    return datetime.now(UTC).timestamp()


def he(cluster: Cluster) -> dict[str, Any]:
    return cluster.get(HOSTEDENGINES, NAME, NS) or {}


def healthy_up(cluster: Cluster) -> bool:
    obj = he(cluster)
    conds = {c.get("type"): c for c in field(obj, "status.conditions") or []}
    return field(obj, "status.state") == "EngineUp" and \
        (conds.get("Available") or {}).get("status") == "True"


def host_loss_run(cluster: Cluster, scenario: str, timeout: float) -> dict[str, float]:
    obj = he(cluster)
    first = field(obj, "status.host")
    before = field(obj, "status.failovers") or 0
    assert first, "engine not up"
    # a fault strikes at any moment of the kubelet's 10 s Lease cycle and of the 5 s BMC poll:
    # without this the runs, all about as long, would hit the same moment every time
    time.sleep(random.uniform(0.0, 10.0))
    cut = now()
    if scenario == "power":
        lab_call(cluster, lambda lab: lab.faults.fail_node(first))
    else:
        lab_call(cluster, lambda lab: lab.faults.partition_node(first))
    running_at: dict[str, float] = {}

    def done() -> bool:
        vmi = cluster.get(VMIS, NAME, NS)
        node = field(vmi, "status.nodeName")
        if field(vmi, "status.phase") == "Running" and node and node != first \
                and "t" not in running_at:
            running_at["t"] = now()
        obj = he(cluster)
        return (healthy_up(cluster) and field(obj, "status.host") != first
                and (field(obj, "status.failovers") or 0) > before)

    wait_for("failover", done, timeout=timeout)
    record = field(he(cluster), "status.lastFailover")
    # the fence ends when the Host confirmed the power off (and released the node's pods), not
    # when the HostedEngine next looked at the Host: status.fencing.confirmedAt
    confirmed = field(cluster.get(HOSTS, first), "status.fencing.confirmedAt")
    fenced = ts(confirmed) if confirmed else ts(record["fencedAt"])
    running = running_at.get("t", ts(record["startedAt"]))
    result = {
        "detection": ts(record["detectedAt"]) - cut,
        "fence": fenced - ts(record["detectedAt"]),
        "reschedule": max(0.0, running - fenced),
        "boot": max(0.0, ts(record["healthyAt"]) - running),
        "total": ts(record["healthyAt"]) - cut,
    }
    lab_call(cluster, lambda lab: lab.faults.recover_node(first))
    wait_for(f"{first} Up again", lambda: field(cluster.get(HOSTS, first), "status.state") == "Up",
             timeout=timeout)
    return result


def guest_fault_run(cluster: Cluster, scenario: str, timeout: float) -> dict[str, float]:
    vmi = cluster.get(VMIS, NAME, NS) or {}
    uid = field(vmi, "metadata.uid")
    start = now()
    if scenario == "crash":
        lab_call(cluster, lambda lab: lab.faults.crash_vm(NS, NAME))
    else:
        lab_call(cluster, lambda lab: lab.faults.hang_guest(NS, NAME))
    marks: dict[str, float] = {}

    def probe() -> bool:
        state = field(he(cluster), "status.state")
        if "detected" not in marks and state != "EngineUp":
            marks["detected"] = now()
        current = cluster.get(VMIS, NAME, NS) or {}
        if "running" not in marks and field(current, "metadata.uid") not in (None, uid) \
                and field(current, "status.phase") == "Running":
            marks["running"] = now()
        return "running" in marks and healthy_up(cluster)

    wait_for(f"{scenario}: engine healthy again", probe, timeout=timeout)
    healthy = now()
    detected = marks.get("detected", marks["running"])
    return {
        "detection": detected - start,
        "restart": marks["running"] - detected,
        "boot": healthy - marks["running"],
        "total": healthy - start,
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=sorted(PHASES), default="power")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--boot", type=float, default=2.0, help="guest boot (VMI Running)")
    parser.add_argument("--engine-startup", type=float, default=3.0,
                        help="engine start-up after boot (health page says DB Down)")
    parser.add_argument("--node-boot", type=float, default=10.0,
                        help="a repaired node's boot (between runs only)")
    parser.add_argument("--fast", action="store_true", help="the lab's fast test timings")
    parser.add_argument("--timeout", type=float, default=400.0)
    args = parser.parse_args()

    extra = {"guest_startup_time": args.engine_startup}
    if args.fast:
        timings = LabTimings.fast(bmc_power_delay=1.0, vm_boot_time=args.boot, extra=extra)
    else:
        timings = LabTimings(tick=0.1, vm_boot_time=args.boot, node_boot_time=args.node_boot,
                             extra=extra)
    print(f"{args.scenario}: {'fast' if args.fast else 'realistic'} timings {timings}",
          flush=True)
    print(f"start {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {load()}", flush=True)
    lab = LabCluster(3, timings=timings, bmc=True).start()
    op = OperatorThread(lab.kubeconfig).start()
    cluster = Cluster(lab, op)
    rows: list[dict[str, float]] = []
    run: Callable[[Cluster, str, float], dict[str, float]] = (
        host_loss_run if args.scenario in ("power", "partition") else guest_fault_run)
    try:
        prepare(cluster)
        cluster.create(HOSTEDENGINES, he_body(default_spec()))
        wait_for("engine up", lambda: healthy_up(cluster), timeout=args.timeout)
        for i in range(args.runs):
            began = time.monotonic()
            row = run(cluster, args.scenario, args.timeout)
            rows.append(row)
            print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in row.items())
                  + f" (run took {time.monotonic() - began:.0f}s)", flush=True)
            # the next run starts from a settled, healthy engine
            wait_for("engine healthy", lambda: healthy_up(cluster), timeout=args.timeout)
    finally:
        op.stop()
        lab.stop()

    print()
    print(f"end {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {load()}")
    print(f"{args.scenario} -> healthy engine, {len(rows)} runs (guest boot {args.boot:g}s, "
          f"engine start-up {args.engine_startup:g}s)")
    print()
    print("| phase | p50 (s) | p90 (s) | max (s) | mean (s) |")
    print("|---|---:|---:|---:|---:|")
    for key in PHASES[args.scenario]:
        values = [r[key] for r in rows]
        print(f"| {key} | {pct(values, 0.5):.2f} | {pct(values, 0.9):.2f} | "
              f"{max(values):.2f} | {statistics.mean(values):.2f} |")


if __name__ == "__main__":
    main()
