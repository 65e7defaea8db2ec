"""Host handlers: maintenance, deploy/undeploy, power management and fencing of one node.

A placeholder until the real reconciler lands: it validates the object and reports, in the
``Ready`` condition, what is not implemented yet (see hosted_engine.handlers.placeholder).
"""

from __future__ import annotations

from typing import Any, Final

import kopf

from hosted_engine import API_GROUP, API_VERSION
from hosted_engine.handlers import placeholder
from hosted_engine.models import Host

NOT_IMPLEMENTED: Final = (
    "Host operations are not implemented yet: maintenance with live-migration drain, "
    "hosted-engine deploy/undeploy, power management and fencing."
)


@kopf.on.resume(API_GROUP, API_VERSION, "hosts", id="host-placeholder")
@kopf.on.create(API_GROUP, API_VERSION, "hosts", id="host-placeholder")
@kopf.on.update(API_GROUP, API_VERSION, "hosts", id="host-placeholder")
def reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    placeholder.apply(Host, NOT_IMPLEMENTED, body, patch)
