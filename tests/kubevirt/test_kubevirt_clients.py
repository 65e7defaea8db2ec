"""The simulated KubeVirt through real clients over HTTPS: kubectl (apply validates against the
CRD schemas, printer columns, wait), the ``kubernetes`` client on the subresources, and the
``hosted-engine lab`` fault commands."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hosted_engine.cli.main import main
from hosted_engine.lab.kubevirt import GUEST_HTTP_ANNOTATION
from hosted_engine.lab.kubevirt.guest import ENGINE_HEALTH_PATH
from hosted_engine.lab.sim.api import NAMESPACES
from hosted_engine.lab.sim.lab import Lab
from hosted_engine.lab.sim.runner import LabRunner
from kvlab import NS, fast_timings

VM_YAML = f"""
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: engine
  namespace: {NS}
  annotations:
    {GUEST_HTTP_ANNOTATION}: engine
spec:
  runStrategy: Always
  template:
    spec:
      domain:
        cpu: {{cores: 2}}
        memory: {{guest: 2Gi}}
        devices:
          interfaces: [{{name: default, masquerade: {{}}}}]
      networks: [{{name: default, pod: {{}}}}]
"""


@pytest.fixture
def cluster() -> Iterator[LabRunner]:
    from hosted_engine.lab.testing import shared_certificates

    lab = Lab(hosts=3, timings=fast_timings(), bmc=False, certificates=shared_certificates())
    with LabRunner(lab) as runner:
        async def namespace() -> None:
            await lab.api.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": NS}})

        runner.call(namespace)
        yield runner


def kubectl(runner: LabRunner, *args: str, stdin: str | None = None,
            check: bool = True) -> str:
    exe = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    result = subprocess.run([exe, "--kubeconfig", str(runner.kubeconfig_path), *args],
                            input=stdin, capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result.stdout if result.returncode == 0 else ""


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)


def cli(capsys: pytest.CaptureFixture[str], runner: LabRunner, *argv: str) -> str:
    code = main([*argv, "--kubeconfig", str(runner.kubeconfig_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def vmi_field(runner: LabRunner, path: str) -> str:
    return kubectl(runner, "get", "vmi", "engine", "-n", NS, "-o", f"jsonpath={path}",
                   check=False)


def test_kubectl_drives_a_vm_and_the_cli_injects_guest_faults(
    cluster: LabRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "virtualmachine.kubevirt.io/engine created" in kubectl(
        cluster, "apply", "-f", "-", stdin=VM_YAML)
    kubectl(cluster, "wait", "--for=condition=Ready", "vm/engine", "-n", NS, "--timeout=30s")
    table = kubectl(cluster, "get", "vm", "-n", NS)
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "AGE", "STATUS", "READY"]
    assert row.split()[0] == "engine" and row.split()[2:] == ["Running", "True"]
    wide = kubectl(cluster, "get", "vmi", "-n", NS, "-o", "wide").splitlines()
    assert wide[0].split()[:6] == ["NAME", "AGE", "PHASE", "IP", "NODENAME", "READY"]
    ip = vmi_field(cluster, "{.status.interfaces[0].ipAddress}")
    url = f"http://{ip}:8080{ENGINE_HEALTH_PATH}"
    with urllib.request.urlopen(url, timeout=2) as resp:
        assert resp.status == 200 and b"DB Up" in resp.read()

    cli(capsys, cluster, "lab", "hang-guest", f"{NS}/engine")
    with pytest.raises(TimeoutError):
        urllib.request.urlopen(url, timeout=0.3)
    cli(capsys, cluster, "lab", "heal-guest", f"{NS}/engine")
    with urllib.request.urlopen(url, timeout=2) as resp:
        assert resp.status == 200

    uid = vmi_field(cluster, "{.metadata.uid}")
    cli(capsys, cluster, "lab", "crash-vm", f"{NS}/engine")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=1)
    eventually(lambda: vmi_field(cluster, "{.metadata.uid}") not in ("", uid)
               and vmi_field(cluster, "{.status.phase}") == "Running")
    status = json.loads(cli(capsys, cluster, "lab", "status", "-o", "json"))
    assert [vm["name"] for vm in status["vms"]] == ["engine"]


def test_python_client_stop_subresource_rewrites_run_strategy(cluster: LabRunner) -> None:
    kubectl(cluster, "apply", "-f", "-", stdin=VM_YAML)
    kubectl(cluster, "wait", "--for=condition=Ready", "vm/engine", "-n", NS, "--timeout=30s")
    client = cluster.api_client()
    try:
        path = f"/apis/subresources.kubevirt.io/v1/namespaces/{NS}/virtualmachines/engine/stop"
        response = client.call_api(path, "PUT", body={}, auth_settings=["BearerToken"],
                                   header_params={"Content-Type": "application/json"},
                                   _preload_content=False)
        assert response.status == 202
        from kubernetes import client as k8s

        objects = k8s.CustomObjectsApi(client)
        vm = objects.get_namespaced_custom_object("kubevirt.io", "v1", NS,
                                                  "virtualmachines", "engine")
        assert vm["spec"]["runStrategy"] == "Halted"
        with pytest.raises(k8s.ApiException) as info:
            client.call_api(path, "PUT", body={}, auth_settings=["BearerToken"],
                            header_params={"Content-Type": "application/json"},
                            _preload_content=False)
        assert info.value.status == 409
    finally:
        client.close()
    eventually(lambda: kubectl(cluster, "get", "vm", "engine", "-n", NS, "-o",
                               "jsonpath={.status.printableStatus}") == "Stopped")


def test_export_is_served_with_the_lab_ca(cluster: LabRunner) -> None:
    """The export proxy presents the lab CA's certificate: the CA in the kubeconfig verifies
    it, and the disk's bytes match the deterministic stream."""
    import base64
    import hashlib
    import ssl

    from hosted_engine.lab.kubevirt.diskstream import disk_sha256
    from hosted_engine.lab.kubevirt.export import TOKEN_HEADER

    size = 1024 * 1024 + 5
    kubectl(cluster, "apply", "-f", "-", stdin=f"""
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: shared}}
provisioner: lab.hostedengine.io/shared
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: disk, namespace: {NS}}}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: shared
  resources: {{requests: {{storage: "{size}"}}}}
---
apiVersion: export.kubevirt.io/v1beta1
kind: VirtualMachineExport
metadata: {{name: pvc-export, namespace: {NS}}}
spec:
  source: {{apiGroup: "", kind: PersistentVolumeClaim, name: disk}}
""")
    kubectl(cluster, "wait", "--for=jsonpath={.status.phase}=Ready", "vmexport/pvc-export",
            "-n", NS, "--timeout=30s")
    export = json.loads(kubectl(cluster, "get", "vmexport", "pvc-export", "-n", NS,
                                "-o", "json"))
    cert = export["status"]["links"]["external"]["cert"]
    assert cert.encode() == cluster.lab.server.certificates.ca_pem
    secret = json.loads(kubectl(cluster, "get", "secret", export["status"]["tokenSecretRef"],
                                "-n", NS, "-o", "json"))
    token = base64.b64decode(secret["data"]["token"]).decode()
    [volume] = export["status"]["links"]["external"]["volumes"]
    url = next(f["url"] for f in volume["formats"] if f["format"] == "raw")
    context = ssl.create_default_context(cadata=cert)
    request = urllib.request.Request(url, headers={TOKEN_HEADER: token})
    with urllib.request.urlopen(request, context=context, timeout=10) as resp:
        data = resp.read()
    assert hashlib.sha256(data).hexdigest() == disk_sha256(f"{NS}/disk", size)
