"""Reaction: a spec change -> the status reflects it, p50/p99, with the operator on a loaded lab.

    .venv/bin/python bench/reaction.py --nodes 200 --vms 2000 --samples 50

The lab (200 nodes with the real Kubernetes timings, 2,000 running VMs, one Host per node, the
hosted-engine StorageDomain, a data StorageDomain and a HostedEngine) runs in one process, the
operator (``hosted-engine run --standalone``) in another; see ``bench/operator_scale.py``.
Each sample merge-patches one object's spec through the lab's in-process client and waits,
through an in-process watch of the lab (no polling request), for

- ``generation``: ``status.observedGeneration`` >= the patched generation;
- ``reflected``: the same, and the status field that shows the change:

- Host maintenance request: ``spec.maintenance.mode: local`` on a Host running VMs, reflected
  when ``status.state`` is PreparingForMaintenance or Maintenance;
- Host activation: ``spec.maintenance.mode: none`` right after: ``status.state`` Up;
- HostedEngine global maintenance: ``spec.maintenance.mode: global``:
  ``status.maintenance.mode`` global; and back to none: ``status.maintenance.mode`` none;
- StorageDomain maintenance: ``spec.maintenance: true`` on the data domain: ``status.state``
  Maintenance; and back (false): ``status.state`` Active.

Kinds are interleaved; every sample of a Host uses the next Host (never an engine host), so
no sample waits for a previous drain.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from operator_scale import (
    ENGINE_NS,
    LabProcess,
    OperatorProcess,
    load_average,
    wait_converged,
    wait_until,
)

#: (label, plural, name, namespace, patch, status path, expected value(s))
Change = tuple[str, str, str, str | None, dict[str, Any], str, Any]


def host_changes(name: str) -> list[Change]:
    return [
        ("Host maintenance request", "hosts", name, None,
         {"spec": {"maintenance": {"mode": "local"}}}, "status.state",
         ["PreparingForMaintenance", "Maintenance"]),
        ("Host activation", "hosts", name, None,
         {"spec": {"maintenance": {"mode": "none"}}}, "status.state", ["Up"]),
    ]


ENGINE_CHANGES: list[Change] = [
    ("HostedEngine global maintenance", "hostedengines", "engine", ENGINE_NS,
     {"spec": {"maintenance": {"mode": "global"}}}, "status.maintenance.mode", "global"),
    ("HostedEngine maintenance off", "hostedengines", "engine", ENGINE_NS,
     {"spec": {"maintenance": {"mode": "none"}}}, "status.maintenance.mode", "none"),
]
DOMAIN_CHANGES: list[Change] = [
    ("StorageDomain maintenance", "storagedomains", "data", None,
     {"spec": {"maintenance": True}}, "status.state", "Maintenance"),
    ("StorageDomain activation", "storagedomains", "data", None,
     {"spec": {"maintenance": False}}, "status.state", "Active"),
]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * p))]


def summarize(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["| change | samples | failed | generation p50 / p99 ms | reflected p50 / p99 / "
             "max ms | reflected mean ms |",
             "|---|---:|---:|---|---|---:|"]
    for label, rows in results.items():
        ok = [r for r in rows if r.get("ok")]
        gen = [1000 * r["generation_s"] for r in ok]
        ref = [1000 * r["reflected_s"] for r in ok]
        if not ok:
            lines.append(f"| {label} | {len(rows)} | {len(rows)} | - | - | - |")
            continue
        lines.append(
            f"| {label} | {len(rows)} | {len(rows) - len(ok)} | {pct(gen, 0.5):.0f} / "
            f"{pct(gen, 0.99):.0f} | {pct(ref, 0.5):.0f} / {pct(ref, 0.99):.0f} / "
            f"{max(ref):.0f} | {statistics.mean(ref):.0f} |")
    return lines


def run(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="reaction-") as tmp:
        work = Path(tmp)
        lab = LabProcess(args.nodes, fast=args.fast, workdir=work)
        op: OperatorProcess | None = None
        try:
            lab.cmd("setup", vms=args.vms, engine=args.engine, data_domain=True)
            t0 = time.monotonic()
            try:
                wait_until("VMIs Running",
                           lambda: lab.cmd("status")["vmis_running"] >= args.vms,
                           args.vm_timeout)
            except TimeoutError:
                print(json.dumps({"warning": "not every VMI Running",
                                  "running": lab.cmd("status")["vmis_running"]}), flush=True)
            print(json.dumps({"phase": "VMIs Running", "s": round(time.monotonic() - t0, 1)}),
                  flush=True)
            op = OperatorProcess(lab.kubeconfig, work / "operator.log")
            conv = wait_converged(lab, op, args.nodes, args.timeout, time.monotonic())
            print(json.dumps({"phase": "operator converged", "s": conv["seconds"]}), flush=True)
            wait_until("data StorageDomain Active",
                       lambda: lab.cmd("status")["storagedomains"].get("data") == "Active",
                       args.timeout)
            changes: list[list[Change]] = [DOMAIN_CHANGES]
            if args.engine:
                try:
                    wait_until("engine up", lambda: lab.cmd("status")["engines"].get("engine")
                               == "EngineUp", args.engine_timeout)
                except TimeoutError:  # its spec changes are still reflected in status
                    print(json.dumps({"warning": "engine not up, sampled anyway",
                                      "engines": lab.cmd("status")["engines"]}), flush=True)
                changes.append(ENGINE_CHANGES)
            print(json.dumps({"phase": "ready", "load_average": load_average()}), flush=True)
            candidates = [f"node-{i}" for i in range(4, args.nodes + 1)] or ["node-1"]
            for i in range(args.samples):
                groups = [host_changes(candidates[i % len(candidates)]), *changes]
                for group in groups:
                    for label, plural, name, ns, patch, path, expected in group:
                        row = lab.cmd("react", plural=plural, name=name, namespace=ns,
                                      patch=patch, path=path, expected=expected,
                                      timeout=args.sample_timeout)
                        results.setdefault(label, []).append(row)
                        print(json.dumps({"change": label, "sample": i, **row}), flush=True)
                if (i + 1) % 10 == 0:
                    print(json.dumps({"samples": i + 1, "load_average": load_average(),
                                      "operator_rss_mib": round(op.rss_mib(), 1)}), flush=True)
            if args.keep_logs:
                Path(args.keep_logs, "reaction-operator.log").write_bytes(
                    (work / "operator.log").read_bytes())
        finally:
            if op is not None:
                op.stop()
            lab.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--vms", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=50, help="samples of each change")
    parser.add_argument("--engine", action=argparse.BooleanOptionalAction, default=True,
                        help="run a HostedEngine and sample its changes (default: yes)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--vm-timeout", type=float, default=900.0)
    parser.add_argument("--engine-timeout", type=float, default=600.0)
    parser.add_argument("--sample-timeout", type=float, default=60.0)
    parser.add_argument("--fast", action="store_true", help="the lab's fast timings (tests)")
    parser.add_argument("--keep-logs", default="")
    parser.add_argument("--json", action="store_true", help="print the raw samples as JSON")
    args = parser.parse_args(argv)
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
          f"{load_average()}", flush=True)
    results = run(args)
    print()
    print(f"spec change -> status, {args.nodes} Hosts, {args.vms} VMs, "
          f"{args.samples} samples each; load average {load_average()}")
    print()
    for line in summarize(results):
        print(line)
    if args.json:
        print(json.dumps(results))
    failed = sum(1 for rows in results.values() for r in rows if not r.get("ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
