"""The RollingMaintenance examples are valid, accepted by the API server, and run to the end on
the lab (their hook scripts are real shell scripts the lab's kubelet runs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import HOSTS, ROOT, Cluster, LabCluster
from hosted_engine.adapters.rolling import ROLLINGMAINTENANCES as RUNS
from hosted_engine.lab.sim.timings import LabTimings
from hosted_engine.models import RollingMaintenance

pytestmark = pytest.mark.lab

EXAMPLES = sorted((ROOT / "examples").glob("rollingmaintenance*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture
def lab_cluster(make_lab_cluster: Callable[..., LabCluster]) -> LabCluster:
    return make_lab_cluster(3, timings=LabTimings.fast())


def test_there_are_examples_with_a_script_and_with_image_and_command() -> None:
    hooks = [h for p in EXAMPLES for d in documents(p) if d["kind"] == "RollingMaintenance"
             for h in d["spec"]["stages"].values()]
    assert any("script" in h for h in hooks) and any("command" in h for h in hooks)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    runs = [d for d in documents(path) if d["kind"] == "RollingMaintenance"]
    assert runs
    for run in runs:
        RollingMaintenance.model_validate(run)


def test_examples_run_to_the_end_on_the_lab(cluster: Cluster) -> None:
    groups = {"node-1": "rack-a", "node-2": "rack-a", "node-3": "rack-b"}
    for node, group in groups.items():
        cluster.create(HOSTS, {"apiVersion": "hostedengine.io/v1alpha1", "kind": "Host",
                               "metadata": {"name": node},
                               "spec": {"nodeName": node, "group": group}})
    for node in groups:
        cluster.wait_field(HOSTS, node, "status.state", "Up", timeout=30)
    cluster.ensure_namespace("hosted-engine-system")  # hooks of runs without hooksNamespace
    for path in EXAMPLES:
        created = cluster.apply_yaml(path)
        (run,) = [d for d in created if d["kind"] == "RollingMaintenance"]
        name = run["metadata"]["name"]
        state = cluster.wait_field(RUNS, name, "status.state",
                                   predicate=lambda s: s in ("Succeeded", "Failed"), timeout=60)
        obj = cluster.get(RUNS, name)
        assert state == "Succeeded", obj and obj.get("status")
        assert obj is not None
        for host in obj["status"]["hosts"]:
            assert host["state"] == "Succeeded"
            for stage in host["stages"]:
                assert stage["result"] == "Succeeded" and stage["logTail"]
