"""Fixtures of the hardening suite: the operator on the lab (tests/integration/harness.py), with
the lab's API faults aimed at the operator's requests, and a capture of every log line.

- ``make_cluster(hosts=3, fault_rate=0.0, seed=..., **lab_options)``: a lab (fast timings) with
  the CRDs, faults added (seeded, aimed at the operator's User-Agent) *before* the operator
  starts, so that its very first list and watch are already exposed; returns a
  :class:`harness.Cluster`. Everything stops at the end of the test, operator first.
- ``output``: a handler on the root logger that keeps every record at INFO and above (the
  operator's default level), plain and as JSON, for the secret scan and the traceback check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from reliability_hardening_support import USER_AGENT, OutputCapture

from harness import Cluster, LabCluster, OperatorThread  # isort: skip  (path set just above)
from hosted_engine.lab.apiserver.admission import random_faults  # isort: skip

pytestmark = pytest.mark.lab


@pytest.fixture
def output() -> Iterator[OutputCapture]:
    handler = OutputCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # the operator's default level (hosted-engine run)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., Cluster]]:
    labs: list[LabCluster] = []
    operators: list[OperatorThread] = []

    def make(hosts: int = 3, *, fault_rate: float = 0.0, seed: int = 12,
             **lab_options: Any) -> Cluster:
        lab = LabCluster(hosts, **lab_options).start()
        labs.append(lab)
        if fault_rate:
            faults = lab.lab.server.faults

            async def add() -> None:
                faults.reseed(seed)
                for rule in random_faults(fault_rate, user_agent=USER_AGENT, latency=0.2):
                    faults.add(rule)

            lab.runner.call(add)
        op = OperatorThread(lab.kubeconfig).start()
        operators.append(op)
        return Cluster(lab, op)

    yield make
    errors = []
    for op in reversed(operators):
        try:
            op.stop()
        except RuntimeError as exc:
            errors.append(str(exc))
    for lab in reversed(labs):
        lab.stop()
    assert not errors, errors
