"""``--state-dir``: the objects and the resourceVersion counter survive a restart.

The state is one JSON file written atomically (on stop and periodically while dirty).
CRDs are restored first so that their resources are served before their objects come back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hosted_engine.lab.apiserver import discovery
from hosted_engine.lab.apiserver.core import ApiCore

STATE_FILE = "objects.json"
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")


def save(core: ApiCore, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"resourceVersion": core.store.rv, "resources": []}
    for (group, plural), bucket in core.store.buckets.items():
        objs = list(bucket.iter(None))
        if objs:
            data["resources"].append({"group": group, "plural": plural, "items": objs})
    path = directory / STATE_FILE
    tmp = path.with_name(STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)
    core.store.dirty = False


def load(core: ApiCore, directory: Path) -> bool:
    """Restore a saved state into a fresh core; False when there is none."""
    path = directory / STATE_FILE
    if not path.exists():
        return False
    data = json.loads(path.read_text())
    store = core.store
    resources = sorted(data.get("resources", []),
                       key=lambda r: (r["group"], r["plural"]) != CRD_KEY)
    for res in resources:
        key = (res["group"], res["plural"])
        bucket = store.bucket(key)
        for obj in res["items"]:
            meta = obj["metadata"]
            ns, name = meta.get("namespace") or "", meta["name"]
            objs = bucket.objects.setdefault(ns, {})
            if name in objs:
                store.uids.pop(objs[name]["metadata"].get("uid", ""), None)
            else:
                bucket.count += 1
            objs[name] = obj
            store.uids[meta.get("uid", "")] = (key, ns, name)
            store._reindex(key, ns, name, None, obj)
            if key == CRD_KEY:
                for info in discovery.crd_resources(obj):
                    core.registry.add(info)
    store.rv = max(store.rv, int(data.get("resourceVersion", 1)))
    for bucket in store.buckets.values():
        bucket.compacted_rv = store.rv  # no replay across a restart: clients relist (410)
    store.dirty = False
    return True
