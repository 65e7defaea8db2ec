"""The writes of a RollingMaintenance run besides its hook Jobs (see :mod:`.jobs`).

- Maintenance of a Host is *requested*, never written into the Host's spec (the operator never
  writes a user's spec): the annotation ``hostedengine.io/maintenance-request: rolling/<run>``
  asks the Host handler for a maintenance exactly like ``spec.maintenance.mode: local``; removing
  it (only when it is this run's) cancels or ends that maintenance.
- A group's scheduling is disabled with a soft steer: the ``PreferNoSchedule`` taint
  :data:`~hosted_engine.adapters.jobs.STEER_TAINT` on its Nodes (never a cordon: the group's
  hosts stay valid migration targets, which the capacity checks count on).
- Status patches and Events of the RollingMaintenance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Final

from hosted_engine.adapters.jobs import STEER_TAINT
from hosted_engine.adapters.kube import Body, Kube, NotFound, hostedengine_resource
from hosted_engine.adapters.kubevirt import HOSTS, HostKube, meta
from hosted_engine.models.host import MAINTENANCE_REQUEST_ANNOTATION

ROLLINGMAINTENANCES: Final = hostedengine_resource("rollingmaintenances", namespaced=False)
REQUESTER: Final = "rolling"


def request_value(run: str) -> str:
    """The maintenance-request annotation's value for ``run``."""
    return f"{REQUESTER}/{run}"


class RollingKube:
    """Writes of a rolling run over the shared :class:`Kube` client (synchronous)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.nodes = HostKube(kube)

    def request_maintenance(self, host: str, run: str, on: bool) -> Body | None:
        """Put (or take back) this run's maintenance request on a Host; None when the Host is
        gone. Taking it back leaves another requester's annotation alone."""
        current = self.kube.find(HOSTS, host)
        if current is None:
            return None
        value = (meta(current).get("annotations") or {}).get(MAINTENANCE_REQUEST_ANNOTATION)
        if on and value == request_value(run):
            return current
        if not on and value != request_value(run):
            return current
        patch = {"metadata": {"annotations": {
            MAINTENANCE_REQUEST_ANNOTATION: request_value(run) if on else None}}}
        try:
            return self.kube.patch(HOSTS, host, patch)
        except NotFound:
            return None

    def steer(self, node: str, run: str, on: bool) -> None:
        """Steer new VMs away from ``node`` (PreferNoSchedule taint), or stop steering."""
        self.nodes.set_taint(node, STEER_TAINT, "PreferNoSchedule", on, run if on else None)

    def patch_status(self, name: str, status: Mapping[str, Any]) -> Body:
        return self.kube.patch_status(ROLLINGMAINTENANCES, name, status)

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """An Event on the RollingMaintenance (never fails the reconcile)."""
        with contextlib.suppress(Exception):
            self.kube.post_event(obj, reason=reason, message=message,
                                 type="Warning" if type_ == "Warning" else "Normal")


__all__ = ["REQUESTER", "ROLLINGMAINTENANCES", "RollingKube", "request_value"]
