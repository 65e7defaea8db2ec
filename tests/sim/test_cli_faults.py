"""``hosted-engine lab ...`` fault commands against a running lab (HTTPS, token, BMCs,
plugins), and ``lab up --hosts N`` starting the simulators.

The commands find the lab through ``--kubeconfig`` like kubectl does (issue 4, "Fault injection
and inspection").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hosted_engine.cli.main import main
from hosted_engine.lab.sim.runner import LabRunner


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_fail_recover_and_status_through_the_cli(
    lab_cluster: LabRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    kc = str(lab_cluster.kubeconfig_path)
    code, out, _ = run_cli(capsys, "lab", "fail-node", "node-2", "--kubeconfig", kc)
    assert code == 0 and "node-2 lost power" in out
    lab = lab_cluster.lab
    assert lab.nodes["node-2"].state == "Off"
    assert lab.power["node-2"].is_on is False  # the BMCs see it too

    def ready_of(name: str) -> str:
        code, out, _ = run_cli(capsys, "lab", "status", "-o", "json", "--kubeconfig", kc)
        assert code == 0
        data = json.loads(out)
        assert data["kind"] == "LabStatus"
        return next(n["ready"] for n in data["nodes"] if n["name"] == name)

    deadline = time.monotonic() + 10
    while ready_of("node-2") != "Unknown":
        assert time.monotonic() < deadline, "node-2 never turned Unknown"
        time.sleep(0.05)
    code, out, _ = run_cli(capsys, "lab", "status", "--kubeconfig", kc)
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("node-2"))
    assert "Off" in line and "Unknown" in line and "unreachable" in line

    code, out, _ = run_cli(capsys, "lab", "recover-node", "node-2", "--kubeconfig", kc)
    assert code == 0 and "booting" in out
    deadline = time.monotonic() + 10
    while ready_of("node-2") != "True":
        assert time.monotonic() < deadline, "node-2 never came back"
        time.sleep(0.05)


def test_partition_through_the_cli_and_kubectl_sees_it(
    lab_cluster: LabRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    kc = str(lab_cluster.kubeconfig_path)
    code, out, _ = run_cli(capsys, "lab", "partition-node", "node-1", "--kubeconfig", kc)
    assert code == 0 and "partitioned" in out
    assert lab_cluster.lab.nodes["node-1"].state == "Partitioned"
    kubectl = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    deadline = time.monotonic() + 10
    while True:
        got = subprocess.run(
            [
                kubectl,
                "--kubeconfig",
                kc,
                "get",
                "node",
                "node-1",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if got.stdout.strip() == "Unknown":
            break
        assert time.monotonic() < deadline, got.stdout + got.stderr
        time.sleep(0.1)
    code, _, _ = run_cli(capsys, "lab", "heal-partition", "node-1", "--kubeconfig", kc)
    assert code == 0
    assert lab_cluster.lab.nodes["node-1"].state == "Running"


def test_cli_errors_are_one_line_with_a_nonzero_code(
    lab_cluster: LabRunner, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    kc = str(lab_cluster.kubeconfig_path)
    code, _, err = run_cli(capsys, "lab", "fail-node", "node-99", "--kubeconfig", kc)
    assert code == 1 and 'node "node-99" is not a lab machine' in err
    assert "Traceback" not in err
    code, _, err = run_cli(capsys, "lab", "crash-vm", "no-slash", "--kubeconfig", kc)
    assert code == 1 and "NAMESPACE/NAME" in err
    code, _, err = run_cli(capsys, "lab", "set-migration-bandwidth", "fast", "--kubeconfig", kc)
    assert code == 2 and "not a bandwidth" in err
    code, _, err = run_cli(capsys, "lab", "status", "--kubeconfig", str(tmp_path / "none"))
    assert code == 2 and "no kubeconfig" in err
    # a wrong token is refused like any API request
    bad = tmp_path / "bad-kubeconfig"
    text = lab_cluster.kubeconfig_path.read_text()
    bad.write_text(text.replace(lab_cluster.lab.token, "not-the-token"))
    code, _, err = run_cli(capsys, "lab", "status", "--kubeconfig", str(bad))
    assert code == 1 and "Unauthorized" in err


def test_lab_up_with_hosts_runs_the_simulators(tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    exe = [sys.executable, "-m", "hosted_engine"]
    env = {**os.environ, "KUBECONFIG": str(kc)}
    up = subprocess.run(
        [*exe, "lab", "up", "--hosts", "2", "--fast", "--no-bmc", "--detach"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        status = subprocess.run(
            [*exe, "lab", "status", "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        nodes = json.loads(status.stdout)["nodes"]
        assert [(n["name"], n["ready"]) for n in nodes] == [("node-1", "True"), ("node-2", "True")]
        failed = subprocess.run(
            [*exe, "lab", "fail-node", "node-1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert failed.returncode == 0 and "lost power" in failed.stdout
    finally:
        down = subprocess.run(
            [*exe, "lab", "down"], env=env, capture_output=True, text=True, timeout=60
        )
        assert down.returncode == 0, down.stderr
