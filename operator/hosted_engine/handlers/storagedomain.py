"""StorageDomain handlers: storage for VM disks.

A placeholder until the real reconciler lands: it validates the object and reports, in the
``Ready`` condition, what is not implemented yet (see hosted_engine.handlers.placeholder).
"""

from __future__ import annotations

from typing import Any, Final

import kopf

from hosted_engine import API_GROUP, API_VERSION
from hosted_engine.handlers import placeholder
from hosted_engine.models import StorageDomain

NOT_IMPLEMENTED: Final = (
    "Storage domains are not attached yet: NFS, iSCSI, FC, Gluster and CSI provisioning "
    "and the reachability checks are not implemented."
)


@kopf.on.resume(API_GROUP, API_VERSION, "storagedomains", id="storagedomain-placeholder")
@kopf.on.create(API_GROUP, API_VERSION, "storagedomains", id="storagedomain-placeholder")
@kopf.on.update(API_GROUP, API_VERSION, "storagedomains", id="storagedomain-placeholder")
def reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    placeholder.apply(StorageDomain, NOT_IMPLEMENTED, body, patch)
