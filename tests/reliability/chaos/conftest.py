"""Fixtures of the chaos part of the reliability suite.

The simulation (chaos_sim.py) needs nothing. The lab tests reuse the integration harness
(tests/integration/harness.py: LabCluster, Cluster, waits) and run the operator as a real
``hosted-engine run`` process so that it can be killed abruptly (SIGKILL) from inside the lab's
API server, at a chosen write (see killpoints.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parents[1] / "integration"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from harness import LabCluster  # noqa: E402  (on the path from here on)
from hosted_engine.lab.sim.timings import LabTimings  # noqa: E402


@pytest.fixture
def lab_cluster() -> Iterator[LabCluster]:
    """A 3-node lab with the fast timings (a test module may define its own)."""
    with LabCluster(3, timings=LabTimings.fast()) as lab:
        yield lab
