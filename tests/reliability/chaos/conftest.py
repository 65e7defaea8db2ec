"""Fixtures of the chaos part of the reliability suite.

The simulation (chaos_sim.py) needs nothing. The lab tests reuse the integration harness
(tests/integration/harness.py: LabCluster, Cluster, waits) and run the operator as a real
``hosted-engine run`` process so that it can be killed abruptly (SIGKILL) from inside the lab's
API server, at a chosen write (see killpoints.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parents[1] / "integration"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
