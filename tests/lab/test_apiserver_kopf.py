"""kopf (the operator framework) against the lab: finalizers (JSON patch with a
resourceVersion test op), status patches, Events with generateName, timers, delete handlers,
namespace-restricted and cluster-wide modes. kopf runs as ``kopf run`` in a subprocess with
KUBECONFIG pointing at the lab."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hosted_engine.lab.testing import LabThread
from kubernetes import client
from lab_api import WIDGET_CRD

OPERATOR = '''
import kopf
from kubernetes import client, config

@kopf.on.startup()
def configure(settings, **_):
    settings.posting.level = 10
    settings.watching.server_timeout = 5

@kopf.on.create("example.io", "v1", "widgets")
def created(name, logger, **_):
    kopf.info({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": name,
               "namespace": "default"}}, reason="Created", message="handled")
    return {"created": name}

@kopf.timer("example.io", "v1", "widgets", interval=0.2)
def ticking(patch, **_):
    patch.status["ticked"] = True

@kopf.on.delete("example.io", "v1", "widgets")
def deleted(name, **_):
    config.load_kube_config()
    client.CoreV1Api().create_namespaced_config_map("default", {
        "metadata": {"name": "deleted-" + name}})
'''


def eventually(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@pytest.fixture
def widgets(lab: LabThread, k8s_api: Any) -> Any:
    crd = copy.deepcopy(WIDGET_CRD)
    # kopf stores handler results and progress in status: keep unknown status fields there,
    # as the real server would prune them otherwise
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["properties"]["status"] = {"type": "object",
                                      "x-kubernetes-preserve-unknown-fields": True}
    client.ApiextensionsV1Api(k8s_api).create_custom_resource_definition(crd)
    return client.CustomObjectsApi(k8s_api)


def _kopf(lab: LabThread, tmp_path: Path, *mode: str) -> Iterator[subprocess.Popen[str]]:
    script = tmp_path / "operator.py"
    script.write_text(OPERATOR)
    log = open(tmp_path / "kopf.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "kopf", "run", str(script), "--standalone",
                             *mode], env=lab.env(), stdout=log, stderr=subprocess.STDOUT,
                            text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(params=[("-n", "default"), ("--all-namespaces",)], ids=["namespaced", "all"])
def operator(request: Any, lab: LabThread, widgets: Any,
             tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    yield from _kopf(lab, tmp_path, *request.param)


def test_kopf_lifecycle(lab: LabThread, widgets: Any, operator: Any, k8s_api: Any,
                        tmp_path: Path) -> None:
    """kopf adds its finalizer, runs the create handler (result in status), posts an Event,
    runs timers, and on deletion runs the delete handler and releases the object."""
    co = widgets
    co.create_namespaced_custom_object("example.io", "v1", "default", "widgets", {
        "apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"color": "red"}})

    def handled() -> Any:
        obj = co.get_namespaced_custom_object("example.io", "v1", "default", "widgets", "w")
        status = obj.get("status", {})
        return obj if status.get("created") == {"created": "w"} and status.get("ticked") \
            else None

    try:
        obj = eventually(handled)
    except AssertionError:
        raise AssertionError((tmp_path / "kopf.log").read_text()[-3000:]) from None
    assert "kopf.zalando.org/KopfFinalizerMarker" in obj["metadata"]["finalizers"]
    v1 = client.CoreV1Api(k8s_api)
    events = eventually(lambda: [e for e in v1.list_namespaced_event("default").items
                                 if e.reason == "Created" and e.involved_object.name == "w"])
    assert events[0].message == "handled"
    co.delete_namespaced_custom_object("example.io", "v1", "default", "widgets", "w")
    eventually(lambda: v1.read_namespaced_config_map("deleted-w", "default"))

    def gone() -> bool:
        try:
            co.get_namespaced_custom_object("example.io", "v1", "default", "widgets", "w")
        except client.ApiException as exc:
            return exc.status == 404
        return False
    eventually(gone)
    assert operator.poll() is None
