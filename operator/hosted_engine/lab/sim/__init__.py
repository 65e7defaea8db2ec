"""The lab's Kubernetes-side simulators: nodes and their kubelets, the node lifecycle
controller, the scheduler, the Job and PV controllers, and the :class:`~.lab.Lab` that composes
them with the API server, the BMCs and the KubeVirt simulators.

Every simulator is an ordinary client of the lab API server; every duration comes from
:class:`~hosted_engine.lab.sim.timings.LabTimings`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Lab", "LabRunner", "LabTimings"]


def __getattr__(name: str) -> Any:
    # lazy, so that ``hosted_engine.lab.sim.api`` stays importable without the whole lab
    if name == "Lab":
        from hosted_engine.lab.sim.lab import Lab

        return Lab
    if name == "LabRunner":
        from hosted_engine.lab.sim.runner import LabRunner

        return LabRunner
    if name == "LabTimings":
        from hosted_engine.lab.sim.timings import LabTimings

        return LabTimings
    raise AttributeError(name)
