"""Fixtures of the integration tests: the operator, in-process, on the lab (see harness.py).

- ``lab_cluster``: a fresh lab (3 nodes, fast timings, KubeVirt simulators, no BMCs) with the
  project's CRDs applied. ``make_lab_cluster(hosts=..., timings=..., bmc=True, peering_crds=...)``
  for other shapes.
- ``operator``: the real operator (every handler) running standalone against ``lab_cluster``.
  ``make_operator(standalone=False, priority=...)`` starts more (with peering).
- ``cluster``: both, as a :class:`harness.Cluster` (client, apply, waits for conditions and
  fields). Everything is stopped at the end of the test, operator first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import Cluster, LabCluster, OperatorThread

pytestmark = pytest.mark.lab


@pytest.fixture
def make_lab_cluster() -> Iterator[Callable[..., LabCluster]]:
    started: list[LabCluster] = []

    def make(hosts: int = 3, **options: Any) -> LabCluster:
        lab = LabCluster(hosts, **options).start()
        started.append(lab)
        return lab

    yield make
    for lab in reversed(started):
        lab.stop()


@pytest.fixture
def lab_cluster(make_lab_cluster: Callable[..., LabCluster]) -> LabCluster:
    return make_lab_cluster()


@pytest.fixture
def make_operator(lab_cluster: LabCluster) -> Iterator[Callable[..., OperatorThread]]:
    started: list[OperatorThread] = []

    def make(**options: Any) -> OperatorThread:
        op = OperatorThread(lab_cluster.kubeconfig, **options).start()
        started.append(op)
        return op

    yield make
    errors = []
    for op in reversed(started):
        try:
            op.stop()
        except RuntimeError as exc:
            errors.append(str(exc))
    assert not errors, errors


@pytest.fixture
def operator(make_operator: Callable[..., OperatorThread]) -> OperatorThread:
    return make_operator()


@pytest.fixture
def cluster(lab_cluster: LabCluster, operator: OperatorThread) -> Cluster:
    return Cluster(lab_cluster, operator)
