"""Install on the lab API server (plain manifests, and the chart with real Helm), run
``hosted-engine run`` the way the Deployment does (peering on), and watch it act; then two
replicas: one acts, one stands by and takes over when the first one stops."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import helm_python as helm
import pytest
from packaging_checks import CHART_DIR, MANIFESTS_DIR, ROOT

pytestmark = pytest.mark.lab

BIN = Path(sys.executable).parent
DEADLINE = 60.0  # seconds to wait for something that normally takes well under one


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True, text=True, input=stdin, timeout=120, check=False,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def wait_for(what: str, probe: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Replica:
    """One ``hosted-engine run`` process, as a pod of the Deployment would run it."""

    def __init__(self, kubeconfig: Path, log: Path, pod: str, *extra: str) -> None:
        self.pod = pod
        self.log_path = log
        self.port = free_port()
        self._log: IO[str] = log.open("w")
        self.proc = subprocess.Popen(
            [str(BIN / "hosted-engine"), "run", "--kubeconfig", str(kubeconfig),
             "--all-namespaces", f"--liveness=http://127.0.0.1:{self.port}/healthz", *extra],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "POD_ID": pod},
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        assert self.proc.poll() is None, f"{self.pod} exited:\n{self.log()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def installed(lab: Any) -> Path:
    """The three install steps of manifests/, against the lab."""
    kubeconfig: Path = lab.kubeconfig_path
    kubectl(kubeconfig, "apply", "-f", str(ROOT / "crds"))
    kubectl(kubeconfig, "apply", "-k", str(MANIFESTS_DIR / "crds"))
    kubectl(kubeconfig, "apply", "-k", str(MANIFESTS_DIR))
    return kubeconfig


@pytest.fixture
def replicas(installed: Path, tmp_path: Path) -> Iterator[Callable[..., Replica]]:
    started: list[Replica] = []

    def start(pod: str, *extra: str) -> Replica:
        replica = Replica(installed, tmp_path / f"{pod}.log", pod, *extra)
        started.append(replica)
        wait_for(f"{pod} liveness", replica.alive)
        return replica

    yield start
    for replica in started:
        replica.stop()


def create_host(kubeconfig: Path, name: str) -> None:
    host = {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
            "metadata": {"name": name}, "spec": {"nodeName": name}}
    kubectl(kubeconfig, "apply", "-f", "-", stdin=json.dumps(host))


def ready_reason(kubeconfig: Path, name: str) -> str | None:
    host = json.loads(kubectl(kubeconfig, "get", "host", name, "-o", "json"))
    for cond in (host.get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return str(cond["reason"])
    return None


def peers(kubeconfig: Path) -> dict[str, Any]:
    peering = json.loads(
        kubectl(kubeconfig, "get", "clusterkopfpeering", "hosted-engine-operator", "-o", "json")
    )
    return dict(peering.get("status") or {})


def test_installed_operator_reports_on_a_host_and_leaves_the_peering_on_exit(
    installed: Path, replicas: Callable[..., Replica]
) -> None:
    replica = replicas("operator-a")
    wait_for("a keep-alive in the peering object", lambda: "operator-a" in peers(installed))
    create_host(installed, "node-a")
    # the lab API server runs no nodes: the Host of a Node that does not exist is NonResponsive
    assert wait_for("Ready on the Host", lambda: ready_reason(installed, "node-a")) == (
        "NonResponsive"
    )
    host = json.loads(kubectl(installed, "get", "host", "node-a", "-o", "json"))
    assert host["status"]["observedGeneration"] == host["metadata"]["generation"]
    # kopf's bookkeeping sits in our annotations, and nothing was written to the spec.
    annotations = host["metadata"].get("annotations") or {}
    assert any(k.startswith("hostedengine.io/") for k in annotations), annotations
    assert not any(k.startswith("kopf.zalando.org/") for k in annotations), annotations
    assert host["spec"]["nodeName"] == "node-a"

    assert replica.stop() == 0
    assert "operator-a" not in peers(installed)  # a clean exit hands over at once


def test_two_replicas_one_acts_the_other_takes_over(
    installed: Path, replicas: Callable[..., Replica]
) -> None:
    first = replicas("operator-first", "--priority=200")
    wait_for("first keep-alive", lambda: "operator-first" in peers(installed))
    second = replicas("operator-second", "--priority=100")
    wait_for("second keep-alive", lambda: "operator-second" in peers(installed))

    create_host(installed, "node-a")
    wait_for("Ready on node-a", lambda: ready_reason(installed, "node-a"))
    handled = "Handler 'host-watch' succeeded"
    assert handled in first.log()
    # With mandatory peering a replica starts paused and resumes only once it is the highest.
    assert "Resuming operations" in first.log()
    assert "Resuming operations" not in second.log()
    assert handled not in second.log()

    assert first.stop() == 0
    wait_for("the standby to resume", lambda: "Resuming operations" in second.log())
    create_host(installed, "node-b")
    assert wait_for("Ready on node-b", lambda: ready_reason(installed, "node-b")) == (
        "NonResponsive"
    )
    assert handled in second.log()


def test_helm_install_serves_the_operator_and_uninstall_keeps_the_crds(
    lab: Any, tmp_path: Path
) -> None:
    """A real `helm install` (Helm's Go library) on the lab; the operator runs against what the
    chart installed; `helm uninstall` removes the operator but keeps every CRD."""
    kubeconfig: Path = lab.kubeconfig_path
    namespace = "hosted-engine-system"
    kubectl(kubeconfig, "apply", "-f", str(MANIFESTS_DIR / "namespace.yaml"))
    # Release records in memory: the lab serves JSON only, and Helm's Secret storage speaks
    # protobuf.
    with helm.Config(kubeconfig_path=str(kubeconfig), namespace=namespace,
                     storage_driver="memory") as cfg:
        release = cfg.install(str(CHART_DIR), "heo", {"replicas": 2}, namespace=namespace,
                              timeout=60)
        assert release["status"] == "deployed"
        crds_before = set(kubectl(kubeconfig, "get", "crd", "-o", "name").split())
        assert {f"customresourcedefinition.apiextensions.k8s.io/{n}" for n in (
            "hosts.hostedengine.io", "clusterkopfpeerings.kopf.dev")} <= crds_before

        replica = Replica(kubeconfig, tmp_path / "pod.log", "heo-pod-a")
        try:
            wait_for("liveness", replica.alive)
            create_host(kubeconfig, "node-a")
            assert wait_for("Ready", lambda: ready_reason(kubeconfig, "node-a")) == (
                "NonResponsive"
            )
        finally:
            assert replica.stop() == 0

        cfg.uninstall("heo")
    assert kubectl(kubeconfig, "get", "deployment", "-n", namespace, "-o", "name").strip() == ""
    assert set(kubectl(kubeconfig, "get", "crd", "-o", "name").split()) == crds_before
    assert ready_reason(kubeconfig, "node-a") == "NonResponsive"  # the Host survived too
