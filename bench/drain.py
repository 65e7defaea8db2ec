"""Drain of one host by live migration on the lab, against the ideal pipelined schedule.

The real operator (every handler) runs in-process against a fresh 3-node lab: V VMs of mixed
sizes run on node-1, the KubeVirt CR sets the migration limits, and node-1's Host is put into
local maintenance. The drain time is the Host's own record (``status.drain.startedAt`` to
``finishedAt``). Each migration's duration is measured from outside (a sampler lists the
migrations every few milliseconds: first seen -> Succeeded); the ideal is those same durations
scheduled with zero reaction latency on the slots the limits allow, largest first
(:func:`hosted_engine.logic.drain.ideal_makespan`), and the lower bound is
``max(longest, sum / slots)``.

    .venv/bin/python bench/drain.py --vms 50 --per-node 2 --per-cluster 5

Goal (issue 7): drain <= 1.05 x ideal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from harness import HOSTS, Cluster, LabCluster, OperatorThread, wait_for  # noqa: E402
from hosted_engine.adapters.kube import Resource  # noqa: E402
from hosted_engine.lab.sim.timings import LabTimings  # noqa: E402
from hosted_engine.logic.drain import (  # noqa: E402
    MigrationLimits,
    ideal_makespan,
    makespan_lower_bound,
)

NODES = Resource("", "v1", "nodes", namespaced=False)
VMS = Resource("kubevirt.io", "v1", "virtualmachines", namespaced=True)
VMIS = Resource("kubevirt.io", "v1", "virtualmachineinstances", namespaced=True)
VMIMS = Resource("kubevirt.io", "v1", "virtualmachineinstancemigrations", namespaced=True)
KUBEVIRTS = Resource("kubevirt.io", "v1", "kubevirts", namespaced=True)
NS = "vms"
#: guest memory of the VMs in turn (50 of them fit one 64 GiB lab node with KubeVirt's overhead)
SIZES_MI = (512, 768, 1024, 1280)


def vm(name: str, memory_mi: int) -> dict[str, Any]:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"runStrategy": "Always", "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"domain": {"cpu": {"cores": 1}, "memory": {"guest": f"{memory_mi}Mi"},
                                    "devices": {"interfaces": [
                                        {"name": "default", "masquerade": {}}]}},
                         "networks": [{"name": "default", "pod": {}}], "volumes": []}}}}


def running_on(cluster: Cluster) -> dict[str, str]:
    return {v["metadata"]["name"]: str((v.get("status") or {}).get("nodeName") or "")
            for v in cluster.list(VMIS, NS) if (v.get("status") or {}).get("phase") == "Running"}


class Sampler:
    """First-seen and Succeeded times of the drain's migrations (monotonic seconds)."""

    def __init__(self, cluster: Cluster, interval: float) -> None:
        self.cluster = cluster
        self.interval = interval
        self.seen: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.max_in_flight = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            in_flight = 0
            for m in self.cluster.list(VMIMS, NS):
                name = m["metadata"]["name"]
                phase = (m.get("status") or {}).get("phase")
                self.seen.setdefault(name, now)
                if phase == "Succeeded":
                    self.done.setdefault(name, now)
                elif phase != "Failed":
                    in_flight += 1
            self.max_in_flight = max(self.max_in_flight, in_flight)
            time.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def durations(self) -> list[float]:
        return [self.done[n] - self.seen[n] for n in self.done]


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    timings = LabTimings.fast(tick=args.tick,
                              migration_bandwidth=args.bandwidth * 1024**3,
                              extra={"kubevirt_api_seconds": 1.0})
    lab = LabCluster(3, timings=timings).start()
    operator = OperatorThread(lab.kubeconfig).start()
    try:
        cluster = Cluster(lab, operator)
        cluster.patch(KUBEVIRTS, "kubevirt", {"spec": {"configuration": {"migrations": {
            "parallelOutboundMigrationsPerNode": args.per_node,
            "parallelMigrationsPerCluster": args.per_cluster}}}}, "kubevirt")
        cluster.ensure_namespace(NS)
        for other in ("node-2", "node-3"):
            cluster.patch(NODES, other, {"spec": {"unschedulable": True}})
        names = [f"vm-{i:03d}" for i in range(args.vms)]
        for i, name in enumerate(names):
            cluster.create(VMS, vm(name, SIZES_MI[i % len(SIZES_MI)]))
        wait_for("VMs running on node-1", lambda: sum(
            1 for where in running_on(cluster).values() if where == "node-1") == args.vms,
            timeout=120)
        for other in ("node-2", "node-3"):
            cluster.patch(NODES, other, {"spec": {"unschedulable": None}})
        for node in ("node-1", "node-2", "node-3"):
            cluster.create(HOSTS, {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
                                   "metadata": {"name": node}, "spec": {"nodeName": node}})
        cluster.wait_field(HOSTS, "node-1", "status.state", "Up")
        with Sampler(cluster, args.sample) as sampler:
            cluster.patch(HOSTS, "node-1", {"spec": {"maintenance": {"mode": "local"}}})
            cluster.wait_field(HOSTS, "node-1", "status.state", "Maintenance",
                               timeout=args.timeout)
            wait_for("every migration seen Succeeded",
                     lambda: len(sampler.done) >= args.vms, timeout=30)
        status = (cluster.get(HOSTS, "node-1") or {})["status"]["drain"]
        drain_s = (datetime.fromisoformat(status["finishedAt"])
                   - datetime.fromisoformat(status["startedAt"])).total_seconds()
        durations = sampler.durations()
        limits = MigrationLimits(per_cluster=args.per_cluster, per_node_outbound=args.per_node)
        ideal = ideal_makespan(durations, limits)
        bound = makespan_lower_bound(durations, limits.slots)
        return {
            "vms": args.vms,
            "limits": {"perNode": args.per_node, "perCluster": args.per_cluster},
            "drain_s": round(drain_s, 3),
            "ideal_s": round(ideal, 3),
            "lower_bound_s": round(bound, 3),
            "ratio_to_ideal": round(drain_s / ideal, 3) if ideal else None,
            "migration_mean_s": round(sum(durations) / len(durations), 3),
            "migration_max_s": round(max(durations), 3),
            "most_in_flight": sampler.max_in_flight,
            "moved": len(status.get("moved") or []),
            "off_node_1": sum(1 for w in running_on(cluster).values() if w != "node-1"),
        }
    finally:
        operator.stop()
        lab.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--per-node", type=int, default=2, help="parallelOutboundMigrationsPerNode")
    parser.add_argument("--per-cluster", type=int, default=5, help="parallelMigrationsPerCluster")
    parser.add_argument("--bandwidth", type=float, default=0.5,
                        help="migration bandwidth, GiB/s (the lab's link)")
    parser.add_argument("--tick", type=float, default=0.05, help="the lab's pass interval (s)")
    parser.add_argument("--sample", type=float, default=0.01, help="sampler interval (s)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    results = [one_run(args) for _ in range(args.runs)]
    print(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} CPUs, "
                                 f"Python {platform.python_version()}",
                      "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
