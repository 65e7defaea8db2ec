"""The CLI as a kubectl plugin (real kubectl finds kubectl-hosted_engine on the PATH), and a
cluster that cannot be reached: one line on stderr, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import CliResult

BIN = Path(sys.executable).parent


def test_kubectl_finds_the_plugin() -> None:
    kubectl = BIN / "kubectl"
    assert (BIN / "kubectl-hosted_engine").exists() and kubectl.exists()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    listed = subprocess.run([str(kubectl), "plugin", "list"], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert "kubectl-hosted_engine" in listed.stdout
    res = subprocess.run([str(kubectl), "hosted-engine", "vm-status", "--help"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert "hosted-engine vm-status -n engine --json" in res.stdout


def test_unreachable_cluster_is_one_line(run_cli: Callable[..., CliResult],
                                         tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: not-a-secret}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u, namespace: engine}}]\n"
        "current-context: x\n")
    res = run_cli("check-deployed", "--kubeconfig", str(kubeconfig))
    assert res.code == 1
    assert res.err.startswith("error: cannot reach the API server")
    assert len(res.err.strip().splitlines()) == 1 and "Traceback" not in res.err
    assert "not-a-secret" not in res.err
