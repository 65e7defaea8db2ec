"""HostedEngine handlers: the engine VM and its HA.

A placeholder until the real reconciler lands: it validates the object and reports, in the
``Ready`` condition, what is not implemented yet (see hosted_engine.handlers.placeholder).
"""

from __future__ import annotations

from typing import Any, Final

import kopf

from hosted_engine import API_GROUP, API_VERSION
from hosted_engine.handlers import placeholder
from hosted_engine.models import HostedEngine

NOT_IMPLEMENTED: Final = (
    "The operator does not manage the engine VM yet: placement by score, start, health "
    "checks, restart, failover, fencing and maintenance modes are not implemented."
)


@kopf.on.resume(API_GROUP, API_VERSION, "hostedengines", id="hostedengine-placeholder")
@kopf.on.create(API_GROUP, API_VERSION, "hostedengines", id="hostedengine-placeholder")
@kopf.on.update(API_GROUP, API_VERSION, "hostedengines", id="hostedengine-placeholder")
def reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    placeholder.apply(HostedEngine, NOT_IMPLEMENTED, body, patch)
