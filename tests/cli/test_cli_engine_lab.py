"""The engine commands against the lab with the real operator: vm-status --json parsed,
set-maintenance, the stop refusal outside global maintenance, vm-shutdown/vm-start, the shared
config keys, check-deployed and check-liveliness, one-line errors."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from conftest import CliResult
from harness import HOSTEDENGINES, Cluster, field, wait_for
from hosted_engine.adapters import metrics
from hostedengine_lab import NS, he_body, prepare, wait_up
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.lab

Run = Callable[..., CliResult]


def test_engine_commands_on_the_lab(he_cluster: Cluster, run_cli: Run) -> None:
    kc = str(he_cluster.kubeconfig)
    conn = ("--kubeconfig", kc, "-n", NS)

    # nothing deployed yet
    res = run_cli("check-deployed", *conn)
    assert (res.code, res.out.strip()) == (1, "The hosted engine has not been deployed")

    prepare(he_cluster)
    he_cluster.create(HOSTEDENGINES, he_body())
    obj = wait_up(he_cluster)
    host = obj["status"]["host"]

    res = run_cli("check-deployed", *conn)
    assert (res.code, res.out.strip()) == (0, "The hosted engine has been deployed")

    # the operator's metrics, scraped over HTTP, agree with the status (the metrics are
    # recorded just after the status write: wait for them)
    ident = (("name", "engine"), ("namespace", NS))
    server = metrics.serve(0, "127.0.0.1")

    def scrape() -> dict[Any, float]:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    try:
        samples = wait_for("engine_up in the metrics", lambda: (
            m if (m := scrape()).get(("hosted_engine_engine_up", ident)) == 1 else None))
    finally:
        metrics.stop_serving()
    assert samples[("hosted_engine_engine_state", (*ident, ("state", "EngineUp")))] == 1
    assert samples[("hosted_engine_host_score", (("host", host), *ident))] == 3400

    res = run_cli("vm-status", *conn, "--json")
    assert res.code == 0, res.err
    data: dict[str, Any] = json.loads(res.out)
    assert data["global_maintenance"] is False
    assert data["engine"]["state"] == "EngineUp" and data["engine"]["host"] == host
    per_host = {v["hostname"]: v for k, v in data.items() if k not in ("engine",
                                                                       "global_maintenance")}
    assert set(per_host) == {"node-1", "node-2", "node-3"}
    assert per_host[host]["engine-status"]["vm"] == "up"
    assert per_host[host]["engine-status"]["health"] == "good"
    others = [h for h in per_host if h != host]
    assert all(per_host[h]["engine-status"]["reason"] == "vm not running on this host"
               for h in others)
    assert all(v["live-data"] is True and v["score"] > 0 for v in per_host.values())

    res = run_cli("vm-status", *conn)
    assert res.code == 0
    assert f"--== Host {host} (id: " in res.out and "GLOBAL MAINTENANCE" not in res.out

    res = run_cli("check-liveliness", *conn)
    assert (res.code, res.out.strip()) == (0, "Hosted Engine is up!")

    res = run_cli("vm-status", *conn, "--watch", "--count", "2", "--interval", "0.1")
    assert res.code == 0 and res.out.count("--== HostedEngine engine/engine ==--") == 2

    # a stop outside global maintenance is refused by the CLI, spec untouched
    res = run_cli("vm-shutdown", *conn)
    assert res.code == 1 and "not in global maintenance" in res.err
    assert "Traceback" not in res.err
    assert field(he_cluster.get(HOSTEDENGINES, "engine", NS), "spec.running") is True

    # global maintenance, then a graceful shutdown and a start
    res = run_cli("set-maintenance", *conn, "--mode=global", "--until", "2h", "--wait",
                  "--timeout", "30s")
    assert res.code == 0, res.err
    cur = he_cluster.get(HOSTEDENGINES, "engine", NS)
    assert field(cur, "spec.maintenance.mode") == "global"
    assert field(cur, "spec.maintenance.until")
    res = run_cli("vm-status", *conn)
    assert "!! Cluster is in GLOBAL MAINTENANCE mode until " in res.out

    res = run_cli("vm-shutdown", *conn, "--wait", "--timeout", "60s")
    assert res.code == 0, res.err
    assert "Hosted Engine is down" in res.out
    cur = he_cluster.get(HOSTEDENGINES, "engine", NS)
    assert field(cur, "spec.running") is False and field(cur, "spec.stopMode") == "Graceful"
    res = run_cli("check-liveliness", *conn)
    assert res.code == 1 and res.out.startswith("Hosted Engine is not up!")

    res = run_cli("vm-start", *conn, "--wait", "--timeout", "60s")
    assert res.code == 0, res.err
    assert field(he_cluster.get(HOSTEDENGINES, "engine", NS), "spec.running") is True

    res = run_cli("set-maintenance", *conn, "--mode=none", "--wait", "--timeout", "30s")
    assert res.code == 0, res.err
    assert field(he_cluster.get(HOSTEDENGINES, "engine", NS), "spec.maintenance.mode") == "none"

    # shared config: the notification keys
    res = run_cli("get-shared-config", "smtp-server", *conn)
    assert res.out.strip() == "smtp-server : localhost, type : broker"
    res = run_cli("set-shared-config", "destination-emails", "a@example.com, b@example.com",
                  *conn)
    assert res.code == 0, res.err
    res = run_cli("set-shared-config", "email.smtp-port", "2525", *conn)
    assert res.code == 0, res.err
    notif = field(he_cluster.get(HOSTEDENGINES, "engine", NS), "spec.notifications")
    assert notif["destinationEmails"] == ["a@example.com", "b@example.com"]
    assert notif["smtpPort"] == 2525
    res = run_cli("get-shared-config", "notify.state_transition", *conn)
    assert res.out.strip() == (
        "notify.state_transition : maintenance|start|stop|up|down, type : broker")
    res = run_cli("set-shared-config", "smtp-port", "99999", *conn)
    assert res.code == 2 and "invalid value for smtp-port" in res.err
    res = run_cli("set-shared-config", "state_transition", "([", *conn)
    assert res.code == 2 and "Traceback" not in res.err
    res = run_cli("get-shared-config", "nope", *conn)
    assert res.code == 2 and "unknown key" in res.err

    # clean-metadata refuses the engine's host
    res = run_cli("clean-metadata", "--host", host, *conn)
    assert res.code == 1 and "runs the engine" in res.err


def test_errors_are_one_line(run_cli: Run, tmp_path: Any) -> None:
    res = run_cli("vm-status", "--kubeconfig", str(tmp_path / "missing"))
    assert res.code == 2 and res.err.startswith("error: cannot load the cluster configuration")
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1
    res = run_cli("set-maintenance", "--mode=local", "--kubeconfig", str(tmp_path / "x"))
    assert res.code == 2 and "--mode=local needs --host" in res.err
