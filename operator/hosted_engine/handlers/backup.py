"""Backup handlers: scheduled, consistent backups of the engine.

A placeholder until the real reconciler lands: it validates the object and reports, in the
``Ready`` condition, what is not implemented yet (see hosted_engine.handlers.placeholder).
"""

from __future__ import annotations

from typing import Any, Final

import kopf

from hosted_engine import API_GROUP, API_VERSION
from hosted_engine.handlers import placeholder
from hosted_engine.models import Backup

NOT_IMPLEMENTED: Final = (
    "Backups are not taken yet: scheduling, snapshots, export to the target, retention "
    "and verification are not implemented."
)


@kopf.on.resume(API_GROUP, API_VERSION, "backups", id="backup-placeholder")
@kopf.on.create(API_GROUP, API_VERSION, "backups", id="backup-placeholder")
@kopf.on.update(API_GROUP, API_VERSION, "backups", id="backup-placeholder")
def reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    placeholder.apply(Backup, NOT_IMPLEMENTED, body, patch)
