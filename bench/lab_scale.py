"""The lab's simulators at scale: N nodes with real Kubernetes timings, then pods or VMs.

Measures, for the whole lab process (API server + kubelets + controllers in one event loop):
start-up until every node is Ready, steady-state CPU (% of one core), RSS, simulator API
requests per second (by verb) and watch events per second, the duration of one simulation pass,
then the time to schedule and start P pods (or V KubeVirt VMs) and the steady state with them,
and optionally a node failure with the real 40 s grace.

    .venv/bin/python bench/lab_scale.py --nodes 1000 --pods 10000 --window 30
    .venv/bin/python bench/lab_scale.py --nodes 1000 --vms 10000 --window 30

The machine is usually shared: besides wall-clock times, every phase reports the CPU seconds the
lab process used (``cpu_s``) and, in steady state, the CPU per simulation pass (``pass_cpu_ms``:
sustainable while below the tick, 500 ms) and the share spent in the garbage collector.
``--default-gc`` keeps CPython's default collector thresholds (the lab otherwise calls
:func:`hosted_engine.lab.kubevirt.scale.tune_gc`, as :func:`~.scale.start_scale_lab` does).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import platform
import resource
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from hosted_engine.lab.sim.api import NAMESPACES, NODES, PODS, Obj
from hosted_engine.lab.sim.lab import Lab
from hosted_engine.lab.sim.timings import LabTimings


def rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


GC_SECONDS = [0.0, 0.0]  # total CPU seconds in collections, start of the current one


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        GC_SECONDS[1] = time.process_time()
    else:
        GC_SECONDS[0] += time.process_time() - GC_SECONDS[1]


def watch_events(lab: Lab) -> int:
    return sum(i.changed for i in lab._informers.values())


async def steady(lab: Lab, window: float, label: str) -> dict[str, Any]:
    cpu0, wall0, gc0 = cpu_seconds(), time.monotonic(), GC_SECONDS[0]
    req0 = Counter(lab.api.requests)
    ev0, passes0 = watch_events(lab), lab.passes
    await asyncio.sleep(window)
    wall = time.monotonic() - wall0
    cpu = cpu_seconds() - cpu0
    gc_s = GC_SECONDS[0] - gc0
    req = Counter(lab.api.requests)
    req.subtract(req0)
    passes = lab.passes - passes0
    row = {
        "phase": label,
        "window_s": round(wall, 1),
        "cpu_pct": round(100 * cpu / wall, 1),
        "rss_mib": round(rss_mib(), 1),
        "api_req_per_s": round(sum(req.values()) / wall, 1),
        "by_verb": {k: round(v / wall, 1) for k, v in sorted(req.items()) if v},
        "watch_events_per_s": round((watch_events(lab) - ev0) / wall, 1),
        "passes_per_s": round(passes / wall, 2),
        "pass_ms": round(1000 * wall / passes, 1) if passes else None,
        "pass_cpu_ms": round(1000 * cpu / passes, 1) if passes else None,
        "gc_pct_of_cpu": round(100 * gc_s / cpu, 1) if cpu else None,
        "load_avg": os.getloadavg()[0],
    }
    print(row, flush=True)
    return row


def pod_body(i: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"load-{i}", "namespace": "bench"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                }
            ]
        },
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    timings = LabTimings()
    t0 = time.monotonic()
    lab = Lab(
        hosts=args.nodes, timings=timings, bmc=args.bmc, tls_enabled=False, plugins=args.vms > 0
    )
    await lab.start()
    try:
        startup = time.monotonic() - t0
        print(
            {
                "phase": "startup",
                "nodes": args.nodes,
                "seconds": round(startup, 1),
                "rss_mib": round(rss_mib(), 1),
            },
            flush=True,
        )
        rows.append(
            {"phase": "startup", "seconds": round(startup, 1), "rss_mib": round(rss_mib(), 1)}
        )
        rows.append(await steady(lab, args.window, f"idle, {args.nodes} nodes"))
        await lab.api.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}
        )
        if args.pods or args.vms:
            count = args.vms or args.pods
            what = "VMs" if args.vms else "pods"
            t1, cpu1 = time.monotonic(), cpu_seconds()
            if args.vms:
                from hosted_engine.lab.kubevirt import scale

                def created_row(n: int, seconds: float) -> None:
                    print({"created": n, "s": round(seconds, 1), "rss_mib": round(rss_mib(), 1)},
                          flush=True)

                await scale.create_vms(lab, count, "bench", progress=created_row)

                def running() -> int:
                    return scale.vms_running(lab, "bench")
            else:
                for i in range(count):
                    await lab.api.create(PODS, pod_body(i), "bench")

                def running() -> int:
                    return sum(
                        1
                        for p in lab.informer(PODS).items()
                        if p["metadata"].get("namespace") == "bench"
                        and (p.get("status") or {}).get("phase") == "Running"
                    )

            def phases() -> dict[str, Any]:
                if not args.vms:
                    return {}
                from hosted_engine.lab.kubevirt.resources import VMIS

                counts = Counter(str((v.get("status") or {}).get("phase") or "-")
                                 for v in lab.informer(VMIS).items())
                return {"vmi_phases": dict(counts), "passes": lab.passes}

            created = time.monotonic() - t1
            deadline = time.monotonic() + args.timeout
            last = time.monotonic()
            while running() < count and time.monotonic() < deadline:
                await asyncio.sleep(2)
                if time.monotonic() - last >= 30:
                    last = time.monotonic()
                    print(
                        {
                            "running": running(),
                            "s": round(last - t1, 1),
                            "cpu_s": round(cpu_seconds() - cpu1, 1),
                            "rss_mib": round(rss_mib(), 1),
                            "load_avg": os.getloadavg()[0],
                            **phases(),
                        },
                        flush=True,
                    )
            done = running()
            elapsed = time.monotonic() - t1
            row = {
                "phase": f"start {count} {what}",
                "created_s": round(created, 1),
                "all_running_s": round(elapsed, 1),
                "cpu_s": round(cpu_seconds() - cpu1, 1),
                "running": done,
                "rss_mib": round(rss_mib(), 1),
            }
            print(row, flush=True)
            rows.append(row)
            rows.append(await steady(lab, args.window, f"{args.nodes} nodes + {done} {what}"))
        if args.fail_node:
            t2 = time.monotonic()
            await lab.faults.fail_node("node-1")

            def unknown() -> bool:
                node = lab.informer(NODES).get("node-1") or {}
                return any(
                    c.get("type") == "Ready" and c.get("status") == "Unknown"
                    for c in (node.get("status") or {}).get("conditions") or []
                )

            while not unknown():
                await asyncio.sleep(0.5)
            row = {
                "phase": "node-1 power loss -> Ready=Unknown",
                "seconds": round(time.monotonic() - t2, 1),
                "grace_s": timings.node_monitor_grace_period,
            }
            print(row, flush=True)
            rows.append(row)
    finally:
        await lab.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=0, help="plain pods to start")
    parser.add_argument("--vms", type=int, default=0, help="KubeVirt VMs to start")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per measurement")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--bmc", action="store_true", help="also run a BMC per node")
    parser.add_argument(
        "--fail-node",
        action="store_true",
        help="cut node-1's power and time Ready=Unknown (real 40 s grace)",
    )
    parser.add_argument("--default-gc", action="store_true",
                        help="keep CPython's default garbage collector thresholds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    gc.callbacks.append(_gc_callback)
    if not args.default_gc:
        from hosted_engine.lab.kubevirt.scale import tune_gc

        tune_gc()
    print(
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        flush=True,
    )
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
