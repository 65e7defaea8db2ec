"""`hosted-engine demo` end to end: the real command (lab, kubectl, operator processes) with the
fast timings. It must exit 0, print the key line of every enabled step, use no colours when its
output is not a terminal, and leave no process or port behind; with --keep, `lab down` stops
the lab and the operator; a failing step says which and why, exits 1 and stops everything.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hosted_engine.demo.output import Reporter
from hosted_engine.demo.processes import alive, operator_pid_file
from hosted_engine.demo.scenario import (
    ENABLED_STEPS,
    FAST,
    DemoOptions,
    enabled_steps,
    run_demo,
)

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]

#: The line each step prints when it succeeds (asserted for the enabled steps only).
KEY_LINES = {
    "lab": [r"OK   lab API server serves HTTPS", r"node node-1: Ready; BMC Redfish https://"],
    "install": [r"CRDs established"],
    "apply": [r"\$ kubectl apply -R -f .*examples/lab", r"hostedengine.hostedengine.io/engine "],
    "power-management": [r"Host node-1: (redfish|ipmi) BMC at 127.0.0.1:\d+",
                         r"Host node-2: (redfish|ipmi) BMC at 127.0.0.1:\d+"],
    "operator": [r"OK   operator running \(pid \d+\), active in peering"],
    "hosts": [r"OK   Host node-1: Up, power On \(read from its (redfish|ipmi) BMC\)",
              r"OK   Host node-2: Up, power On \(read from its (redfish|ipmi) BMC\)"],
    "storage": [r"OK   StorageDomain hosted-engine: Active"],
    "engine": [r"OK   engine Up on node-\d", r"has the best score"],
    "failover": [r"lab: node-\d lost power", r"operator detected it: Host node-\d",
                 r"fenced through the (redfish|ipmi) BMC: power off confirmed",
                 r"node.kubernetes.io/out-of-service taint",
                 r"engine Up and healthy on node-\d",
                 r"failover done: the engine moved from node-\d to node-\d in [\d.]+s"],
}


def pids_in(text: str) -> list[int]:
    return [int(p) for p in re.findall(r"\(pid (\d+)", text)]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def server_port(kubeconfig: Path) -> int:
    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    return int(server.rsplit(":", 1)[1])


def wait_dead(pids: list[int], timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        living = [p for p in pids if alive(p)]
        if not living or time.monotonic() > deadline:
            return living
        time.sleep(0.1)


def test_demo_command_passes_every_enabled_step_and_cleans_up(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "demo.kubeconfig"
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "KUBECONFIG")}
    result = subprocess.run(
        [sys.executable, "-m", "hosted_engine", "demo", "--kubeconfig", str(kubeconfig)],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT, check=False)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"demo passed: {len(ENABLED_STEPS)} of {len(ENABLED_STEPS)} steps" in out
    for step in ENABLED_STEPS:
        for pattern in KEY_LINES[step]:
            assert re.search(pattern, out), f"step {step}: no line matching {pattern!r}\n{out}"
    assert "\033[" not in out, "no colours when stdout is not a terminal"
    # every line of the scenario is timestamped: HH:MM:SS.mmm and seconds since the start
    assert all(re.match(r"\d\d:\d\d:\d\d\.\d{3} +\d+\.\ds  ", line)
               for line in out.splitlines() if line.strip())
    # nothing left: processes, pid files, the API server's port
    assert not wait_dead(pids_in(out)), "a demo process is still running"
    assert not (kubeconfig.with_name(kubeconfig.name + ".pid")).exists()
    assert not operator_pid_file(kubeconfig).exists()
    assert not port_open(server_port(kubeconfig))


def test_keep_leaves_lab_and_operator_running_until_lab_down(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "keep.kubeconfig"
    buffer = io.StringIO()
    steps = enabled_steps(("lab", "install", "apply", "power-management", "operator"))
    code = run_demo(DemoOptions(kubeconfig=kubeconfig, hosts=2, keep=True, profile=FAST),
                    Reporter(buffer), steps)
    out = buffer.getvalue()
    lab_pid = int(re.search(r"lab +pid (\d+)", out).group(1))  # type: ignore[union-attr]
    watchdog_pid = int(re.search(r"operator +pid (\d+)", out).group(1))  # type: ignore[union-attr]
    try:
        assert code == 0, out
        assert f"export KUBECONFIG={kubeconfig}" in out
        assert f"hosted-engine lab down --kubeconfig {kubeconfig}" in out
        assert alive(lab_pid) and alive(watchdog_pid)
        # the printed instructions work: kubectl sees the Hosts the demo set up
        kubectl = Path(sys.executable).parent / "kubectl"
        got = subprocess.run([str(kubectl), "get", "hosts", "-o", "name"], capture_output=True,
                             text=True, timeout=60, env={**os.environ,
                                                         "KUBECONFIG": str(kubeconfig)},
                             check=False)
        assert got.returncode == 0, got.stderr
        assert {"host.hostedengine.io/node-1", "host.hostedengine.io/node-2"} <= set(
            got.stdout.split())
        operator_children = _children(watchdog_pid)
        assert operator_children, "the watchdog runs the operator as its child"
        down = subprocess.run([sys.executable, "-m", "hosted_engine", "lab", "down",
                               "--kubeconfig", str(kubeconfig)], capture_output=True,
                              text=True, timeout=120, check=False)
        assert down.returncode == 0, down.stderr
        assert not wait_dead([lab_pid, watchdog_pid, *operator_children]), \
            "lab down stops the lab, and with it the operator"
        assert not operator_pid_file(kubeconfig).exists()
    finally:
        for pid in (watchdog_pid, lab_pid):
            if alive(pid):
                os.kill(pid, 15)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def test_a_failing_step_says_why_exits_1_and_stops_everything(tmp_path: Path) -> None:
    empty = tmp_path / "no-examples"
    empty.mkdir()
    kubeconfig = tmp_path / "fail.kubeconfig"
    buffer = io.StringIO()
    steps = enabled_steps(("lab", "install", "apply", "operator"))
    code = run_demo(DemoOptions(kubeconfig=kubeconfig, hosts=2, profile=FAST, examples=empty),
                    Reporter(buffer), steps)
    out = buffer.getvalue()
    assert code == 1, out
    assert re.search(r"FAIL step apply: kubectl apply failed \(\d+\): .+", out), out
    assert "FAIL demo failed at step apply" in out
    assert "step operator" not in out, "the demo stops at the first failed step"
    assert "lab stopped" in out
    assert not wait_dead(pids_in(out))
    assert not port_open(server_port(kubeconfig))


def test_sigterm_stops_the_demo_and_everything_it_started(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "term.kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hosted_engine", "demo", "--hosts", "2", "--kubeconfig",
         str(kubeconfig)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "OK   operator running" in line:
                break
        assert any("OK   operator running" in line for line in lines), "".join(lines)
        proc.send_signal(15)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    out = "".join(lines) + rest
    assert proc.returncode == 1, out
    assert "FAIL interrupted" in out and "operator stopped" in out and "lab stopped" in out
    assert not wait_dead(pids_in(out))
    assert not port_open(server_port(kubeconfig))
