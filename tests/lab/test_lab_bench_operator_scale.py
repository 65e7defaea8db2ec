"""The instrument of bench/operator_scale.py and bench/reaction.py at tiny size: the lab in its
own process, the project's objects created by its in-process client, and only the requests
that come over HTTP (the operator's) counted, by verb and resource."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import operator_scale as ops  # noqa: E402
import reaction  # noqa: E402

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab() -> Iterator[ops.LabProcess]:
    with tempfile.TemporaryDirectory(prefix="opscale-test-") as tmp:
        process = ops.LabProcess(2, fast=True, workdir=Path(tmp))
        try:
            process.cmd("setup", vms=0, engine=False, data_domain=True)
            yield process
        finally:
            process.stop()


def test_setup_objects_and_http_requests_counted_by_verb_and_resource(
        lab: ops.LabProcess) -> None:
    status = lab.cmd("status")
    assert status["hosts"] == 2
    assert status["hosts_converged"] == 0  # no operator: nobody reconciled them
    assert set(status["storagedomains"]) == {"hosted-engine", "data"}
    assert status["requests"] == {}  # the lab's own client is not the operator
    assert status["lab_rss_mib"] > 0
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(lab.kubeconfig))
    try:
        custom = client.CustomObjectsApi(api)
        custom.list_cluster_custom_object(ops.GROUP, ops.VERSION, "hosts")
        custom.get_cluster_custom_object(ops.GROUP, ops.VERSION, "hosts", "node-1")
        custom.patch_cluster_custom_object_status(
            ops.GROUP, ops.VERSION, "hosts", "node-2",
            {"status": {"state": "Up", "observedGeneration": 1}})
    finally:
        api.close()
    status = lab.cmd("status")
    assert status["requests"] == {"list hosts": 1, "get hosts": 1, "patch hosts/status": 1}
    assert status["hosts_converged"] == 1  # node-2 now reports its generation and a state


def test_a_spec_change_not_reflected_is_reported_as_such(lab: ops.LabProcess) -> None:
    row = lab.cmd("react", plural="storagedomains", name="data", namespace=None,
                  patch={"spec": {"maintenance": True}}, path="status.state",
                  expected="Maintenance", timeout=0.2)
    assert row["ok"] is False and row["generation"] == 2


def test_summary_percentiles() -> None:
    rows = {"x": [{"ok": True, "generation_s": g / 1000, "reflected_s": g / 500}
                  for g in range(1, 101)] + [{"ok": False}]}
    table = reaction.summarize(rows)
    assert table[2] == "| x | 101 | 1 | 51 / 99 | 102 / 198 / 200 | 101 |"
