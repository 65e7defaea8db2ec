"""Benchmark: node power loss -> a healthy engine on another host, split into detection, fence,
reschedule and boot, over N runs, with the operator's DEFAULT HostedEngine settings.

    .venv/bin/python bench/failover.py --runs 10

The operator (every handler, in-process) runs on a 3-host lab with Redfish BMCs, the
hosted-engine StorageDomain of examples/lab and a HostedEngine whose spec sets only what the
lab needs (the health URL on the VMI's address): health interval 5s, timeout 3s, 3 failures,
silence threshold 10s, fencing required -- the defaults. Each run cuts the power of the node
running the engine (no BMC command: a dead PSU), waits for EngineUp with health good on another
host, then powers the node back on and waits until its Host is Up again.

Phases (times from the operator's status.lastFailover and the VMI, one clock):
  detection  = power cut -> HostLost/fenced seen by the HostedEngine (detectedAt)
  fence      = detectedAt -> the Host's fence confirmed (fencedAt)
  reschedule = fencedAt -> the new engine VMI Running on another node
  boot       = VMI Running -> health page answers DB Up and the machine says EngineUp

Lab timings are the lab's fast ones (a dead node is NotReady after 0.5 s; pods start in 0.05 s)
except what --bmc-delay and --boot set (defaults: BMC power change 1 s, guest boot 2 s + engine
start-up 3 s). Those are not the operator's: real values are longer (a BMC: a few seconds; an
engine appliance boot: minutes), and the Kubernetes node-monitor grace (40 s by default) gates
the Host's fence on a real cluster, see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from harness import HOSTEDENGINES, HOSTS, Cluster, LabCluster, OperatorThread, field, wait_for  # noqa: E402
from hosted_engine.lab.sim.timings import LabTimings  # noqa: E402
from hostedengine_lab import NAME, NS, VMIS, he_body, lab_call, prepare  # noqa: E402


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


def one_run(cluster: Cluster, timeout: float) -> dict[str, float]:
    obj = cluster.get(HOSTEDENGINES, NAME, NS) or {}
    first = field(obj, "status.host")
    before = field(obj, "status.failovers") or 0
    assert first, "engine not up"
    cut = datetime.now(UTC).timestamp()
    lab_call(cluster, lambda lab: lab.faults.fail_node(first))
    running_at: dict[str, float] = {}

    def done() -> bool:
        vmi = cluster.get(VMIS, NAME, NS)
        node = field(vmi, "status.nodeName")
        if field(vmi, "status.phase") == "Running" and node and node != first \
                and "t" not in running_at:
            running_at["t"] = datetime.now(UTC).timestamp()
        he = cluster.get(HOSTEDENGINES, NAME, NS) or {}
        return (field(he, "status.state") == "EngineUp" and field(he, "status.host") != first
                and (field(he, "status.failovers") or 0) > before)

    wait_for("failover", done, timeout=timeout)
    record = field(cluster.get(HOSTEDENGINES, NAME, NS), "status.lastFailover")
    running = running_at.get("t", ts(record["startedAt"]))
    result = {
        "detection": ts(record["detectedAt"]) - cut,
        "fence": ts(record["fencedAt"]) - ts(record["detectedAt"]),
        "reschedule": max(0.0, running - ts(record["fencedAt"])),
        "boot": max(0.0, ts(record["healthyAt"]) - running),
        "total": ts(record["healthyAt"]) - cut,
    }
    lab_call(cluster, lambda lab: lab.faults.recover_node(first))
    wait_for(f"{first} Up again", lambda: field(cluster.get(HOSTS, first), "status.state") == "Up",
             timeout=timeout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--bmc-delay", type=float, default=1.0)
    parser.add_argument("--boot", type=float, default=2.0, help="guest boot (VMI Running)")
    parser.add_argument("--engine-startup", type=float, default=3.0,
                        help="engine start-up after boot (health page says DB Down)")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    os.environ.setdefault("HE_HOST_FENCE_TIMEOUT", "60")
    timings = LabTimings.fast(bmc_power_delay=args.bmc_delay, vm_boot_time=args.boot,
                              extra={"guest_startup_time": args.engine_startup})
    lab = LabCluster(3, timings=timings, bmc=True).start()
    op = OperatorThread(lab.kubeconfig).start()
    cluster = Cluster(lab, op)
    rows: list[dict[str, float]] = []
    try:
        prepare(cluster)
        cluster.create(HOSTEDENGINES, he_body(default_spec()))
        wait_for("engine up", lambda: field(cluster.get(HOSTEDENGINES, NAME, NS),
                                            "status.state") == "EngineUp", timeout=args.timeout)
        for i in range(args.runs):
            row = one_run(cluster, args.timeout)
            rows.append(row)
            print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in row.items()),
                  flush=True)
    finally:
        op.stop()
        lab.stop()

    print()
    print(f"node power loss -> healthy engine elsewhere, {len(rows)} runs "
          f"(BMC delay {args.bmc_delay:g}s, guest boot {args.boot:g}s, engine start-up "
          f"{args.engine_startup:g}s)")
    print()
    print("| phase | p50 (s) | p90 (s) | max (s) | mean (s) |")
    print("|---|---:|---:|---:|---:|")
    for key in ("detection", "fence", "reschedule", "boot", "total"):
        values = [r[key] for r in rows]
        print(f"| {key} | {pct(values, 0.5):.2f} | {pct(values, 0.9):.2f} | "
              f"{max(values):.2f} | {statistics.mean(values):.2f} |")


if __name__ == "__main__":
    main()
