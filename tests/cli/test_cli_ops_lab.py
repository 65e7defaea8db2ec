"""host, backup, restore and rolling commands against the lab with the real operator: power
actions through the BMC, local maintenance with the drain's progress (the engine migrates
away), a Backup run on demand and its listing, rolling maintenance start/status/pause/resume/
abort."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult
from harness import HOSTEDENGINES, HOSTS, Cluster, field, wait_for
from hosted_engine.adapters import metrics
from hosted_engine.adapters.kube import hostedengine_resource
from hostedengine_lab import NS, PVCS, he_body, prepare, wait_up

pytestmark = pytest.mark.lab

Run = Callable[..., CliResult]
BACKUPS = hostedengine_resource("backups", namespaced=True)
ROLLINGS = hostedengine_resource("rollingmaintenances", namespaced=False)
DISK_BYTES = 1024 * 1024 + 7


def test_host_power_maintenance_and_backup(he_cluster: Cluster, run_cli: Run,
                                           tmp_path: Path) -> None:
    kc = ("--kubeconfig", str(he_cluster.kubeconfig))
    prepare(he_cluster)
    he_cluster.create(HOSTEDENGINES, he_body())
    engine_host = wait_up(he_cluster, timeout=60)["status"]["host"]
    other = next(h for h in ("node-1", "node-2", "node-3") if h != engine_host)

    # power: status and on through the BMC, recorded on the Host
    res = run_cli("host", "power", "status", other, *kc, "--timeout", "30s")
    assert res.code == 0, res.err
    assert re.search(r"power status succeeded; power state On", res.out)
    res = run_cli("host", "power", "on", other, *kc, "--timeout", "30s")
    assert res.code == 0, res.err
    last = field(he_cluster.get(HOSTS, other), "status.powerManagement.lastAction")
    assert last["action"] == "on" and last["result"] == "Succeeded"
    assert last["id"].startswith("cli-")
    res = run_cli("host", "power", "on", "no-such-host", *kc)
    assert res.code == 1 and res.err.strip() == "error: Host no-such-host not found"

    # local maintenance of the engine's host: the engine migrates, progress is shown
    res = run_cli("host", "maintenance", engine_host, "--mode", "local", "--wait",
                  "--timeout", "90s", *kc)
    assert res.code == 0, res.err
    assert re.search(rf"Host {engine_host}: \w+, migrations 1/1", res.out), res.out
    assert res.out.strip().endswith(f"Host {engine_host} is Maintenance")
    # the Host handler's metrics: the engine's migration and the time to reach Maintenance
    wait_for("the drain in the metrics", lambda: metrics.REGISTRY.get_sample_value(
        "hosted_engine_maintenance_duration_seconds_count", {"host": engine_host}))
    assert (metrics.REGISTRY.get_sample_value(
        "hosted_engine_migrations_total", {"host": engine_host, "result": "succeeded"}) or 0) >= 1
    wait_for("the engine off the host in maintenance", lambda: field(
        he_cluster.get(HOSTEDENGINES, "engine", NS), "status.host") not in (None, engine_host))
    res = run_cli("set-maintenance", "--mode=none", "--host", engine_host, "--wait",
                  "--timeout", "60s", *kc)
    assert res.code == 0, res.err
    assert field(he_cluster.get(HOSTS, engine_host), "status.state") == "Up"
    wait_up(he_cluster, timeout=60)

    # backup now on a Backup whose schedule is far away; a small disk
    he_cluster.patch_status(PVCS, "engine-disk", {"capacity": {"storage": str(DISK_BYTES)}}, NS)
    he_cluster.create(BACKUPS, {
        "apiVersion": "hostedengine.io/v1alpha1", "kind": "Backup",
        "metadata": {"name": "nightly", "namespace": NS},
        "spec": {"source": {"hostedEngine": "engine"}, "schedule": "0 3 1 1 *",
                 "target": {"filesystem": {"path": str(tmp_path)}}}})
    wait_for("the Backup scheduled", lambda: field(
        he_cluster.get(BACKUPS, "nightly", NS), "status.nextRunTime"))
    res = run_cli("backup", "now", "nightly", "-n", NS, "--wait", "--timeout", "90s", *kc)
    assert res.code == 0, res.err
    match = re.search(r"run (\S+) succeeded in [0-9.]+s, ([0-9.]+)(KiB|MiB|B)", res.out)
    assert match, res.out
    run_id = match.group(1)
    assert (tmp_path / NS / "engine" / run_id).is_dir()

    # the Backup handler's metrics saw the run (recorded right after its status write)
    labels = {"namespace": NS, "name": "nightly"}
    wait_for("the run in the metrics", lambda: metrics.REGISTRY.get_sample_value(
        "hosted_engine_backup_runs_total", {**labels, "result": "Succeeded"}) == 1)
    size = metrics.REGISTRY.get_sample_value("hosted_engine_backup_size_bytes", labels)
    assert size is not None and size > 0

    res = run_cli("backup", "list", "-n", NS, "--json", *kc)
    rows = json.loads(res.out)
    assert [(r["backup"], r["run"], r["phase"], r["trigger"]) for r in rows] == [
        ("nightly", run_id, "Succeeded", "Manual")]
    assert rows[0]["sizeBytes"] > 0
    res = run_cli("backup", "list", "-n", NS, *kc)
    assert res.out.splitlines()[0].split()[:3] == ["BACKUP", "PHASE", "RUN"]
    assert run_id in res.out

    # restore: verified, then refused (a HostedEngine of that name exists and is not its own)
    res = run_cli("restore", "--backup", "nightly", "--engine-name", "engine", "--name", "r1",
                  "-n", NS, "--wait", "--timeout", "60s", *kc)
    assert res.code == 1, (res.out, res.err)
    assert "Restore engine/r1 created" in res.out and "objects verified" in res.out
    assert res.err.startswith("error: Restore r1 failed: ") and "already exists" in res.err
    res = run_cli("restore", "--backup", "nightly", "--engine-name", "Bad_Name", "-n", NS, *kc)
    assert res.code == 2 and "invalid restore: hostedEngineName" in res.err

    res = run_cli("backup", "now", "missing", "-n", NS, *kc)
    assert res.code == 1 and "Backup engine/missing not found" in res.err


def test_rolling_start_status_pause_resume_abort(he_cluster: Cluster, run_cli: Run) -> None:
    kc = ("--kubeconfig", str(he_cluster.kubeconfig))
    prepare(he_cluster, power=False)

    res = run_cli("rolling", "start", "one", "--hosts", "node-3", "--poll-interval", "1s",
                  "--wait", "--timeout", "90s", *kc)
    assert res.code == 0, res.err
    assert "one: " in res.out and res.out.strip().endswith("RollingMaintenance one succeeded")
    res = run_cli("rolling", "status", "one", "--json", *kc)
    (data,) = json.loads(res.out)
    assert data["state"] == "Succeeded" and data["hostsDone"] == data["hostsTotal"] == 1
    res = run_cli("rolling", "status", "one", *kc)
    assert "RollingMaintenance one: Succeeded" in res.out and "1/1 hosts" in res.out
    res = run_cli("rolling", "pause", "one", *kc)
    assert res.code == 1 and "already ended (Succeeded)" in res.err

    res = run_cli("rolling", "start", "two", "--hosts", "node-1,node-2", "--poll-interval", "1s",
                  *kc)
    assert res.code == 0, res.err
    assert run_cli("rolling", "pause", "two", *kc).code == 0
    assert field(he_cluster.get(ROLLINGS, "two"), "spec.paused") is True
    assert run_cli("rolling", "resume", "two", *kc).code == 0
    assert field(he_cluster.get(ROLLINGS, "two"), "spec.paused") is False
    res = run_cli("rolling", "abort", "two", *kc)
    assert res.code == 0, res.err
    st: Any = wait_for("run two ends", lambda: (
        s if (s := field(he_cluster.get(ROLLINGS, "two"), "status.state")) in (
            "Aborted", "Succeeded") else None), timeout=60)
    assert st == "Aborted"

    res = run_cli("rolling", "start", "bad", "--hosts", "node-1", "--stage-timeout", "1s",
                  "--poll-interval", "5s", *kc)
    assert res.code == 2 and "stageTimeout" in res.err and "Traceback" not in res.err
    res = run_cli("rolling", "start", "one", "--hosts", "node-1", *kc)
    assert res.code == 1 and "already exists" in res.err
