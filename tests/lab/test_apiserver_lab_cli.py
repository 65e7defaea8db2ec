"""``hosted-engine lab up|down`` and ``--state-dir`` persistence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from hosted_engine.lab.apiserver import LabApiServer
from hosted_engine.lab.testing import LabThread
from kubernetes import client, config

CLI = [sys.executable, "-m", "hosted_engine"]


def _api(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))


def test_state_dir_survives_restart(tmp_path: Path) -> None:
    """With a state dir, objects (including CRDs and custom objects) survive a restart and
    resourceVersions keep increasing."""
    state = tmp_path / "state"
    with LabThread(state_dir=state) as lab:
        v1 = client.CoreV1Api(lab.api_client())
        cm = v1.create_namespaced_config_map("default", {"metadata": {"name": "keep"},
                                                         "data": {"a": "1"}})
        rv = int(cm.metadata.resource_version)
    with LabThread(state_dir=state) as lab:
        v1 = client.CoreV1Api(lab.api_client())
        again = v1.read_namespaced_config_map("keep", "default")
        assert again.data == {"a": "1"} and again.metadata.uid == cm.metadata.uid
        new = v1.create_namespaced_config_map("default", {"metadata": {"name": "next"}})
        assert int(new.metadata.resource_version) > rv


async def test_state_dir_restores_crds(tmp_path: Path) -> None:
    """Custom resources come back served after a restart."""
    from lab_api import WIDGET_CRD

    server = LabApiServer(tls_enabled=False, state_dir=tmp_path)
    await server.start()
    await server.client.create("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                               WIDGET_CRD)
    await server.client.create("example.io", "v1", "widgets", {
        "metadata": {"name": "w"}, "spec": {"color": "red"}}, "default")
    await server.stop()
    again = LabApiServer(tls_enabled=False, state_dir=tmp_path)
    await again.start()
    try:
        obj = await again.client.get("example.io", "v1", "widgets", "w", "default")
        assert obj["spec"]["replicas"] == 1
    finally:
        await again.stop()


def test_lab_up_foreground_prints_ready_and_stops_on_sigterm(tmp_path: Path) -> None:
    """In the foreground `lab up` prints one line containing `ready` once it serves, writes a
    kubeconfig with a CA and a token, and stops cleanly on SIGTERM."""
    kc = tmp_path / "kc"
    proc = subprocess.Popen([*CLI, "lab", "up", "--kubeconfig", str(kc), "--hosts", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "ready" in line and "https://127.0.0.1:" in line
        doc = yaml.safe_load(kc.read_text())
        assert doc["users"][0]["user"]["token"]
        assert doc["clusters"][0]["cluster"]["certificate-authority-data"]
        names = [n.metadata.name for n in _api(kc).list_namespace().items]
        assert "default" in names
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in out


def test_lab_up_detach_and_down(tmp_path: Path) -> None:
    """`lab up --detach` returns once ready; `lab down` stops it; --insecure-http serves
    plain HTTP; --state-dir keeps objects across up/down."""
    kc, state = tmp_path / "kc", tmp_path / "state"
    up = [*CLI, "lab", "up", "--kubeconfig", str(kc), "--detach", "--insecure-http",
          "--state-dir", str(state)]
    out = subprocess.run(up, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0 and "ready" in out.stdout, out.stderr
    assert "http://127.0.0.1:" in out.stdout
    try:
        _api(kc).create_namespaced_config_map("default", {"metadata": {"name": "kept"}})
    finally:
        down = subprocess.run([*CLI, "lab", "down", "--kubeconfig", str(kc)],
                              capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert not (tmp_path / "kc.pid").exists()
    out = subprocess.run(up, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    try:
        assert _api(kc).read_namespaced_config_map("kept", "default").metadata.name == "kept"
    finally:
        subprocess.run([*CLI, "lab", "down", "--kubeconfig", str(kc)], timeout=60)


def test_lab_down_without_lab_fails_cleanly(tmp_path: Path) -> None:
    """`lab down` without a running lab reports an error without a traceback."""
    proc = subprocess.run([*CLI, "lab", "down", "--kubeconfig", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": ""})
    assert proc.returncode == 1 and proc.stderr.startswith("error: no lab is running")
