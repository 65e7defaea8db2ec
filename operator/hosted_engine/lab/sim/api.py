"""What the simulators need from the API server, and small helpers shared by them.

:class:`Api` is the narrow async interface every simulator talks through (get, list, create,
merge/strategic patch, delete). :mod:`hosted_engine.lab.sim.lab` adapts the lab API server's
in-process client to it, so the simulators stay ordinary API clients and could run against any
server that offers these verbs.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

Obj = dict[str, Any]


@dataclass(frozen=True)
class Res:
    """One served resource: group, version, plural, scope and kind."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


NAMESPACES = Res("", "v1", "namespaces", "Namespace", namespaced=False)
NODES = Res("", "v1", "nodes", "Node", namespaced=False)
PODS = Res("", "v1", "pods", "Pod")
EVENTS = Res("", "v1", "events", "Event")
SECRETS = Res("", "v1", "secrets", "Secret")
CONFIGMAPS = Res("", "v1", "configmaps", "ConfigMap")
PVS = Res("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)
PVCS = Res("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
LEASES = Res("coordination.k8s.io", "v1", "leases", "Lease")
JOBS = Res("batch", "v1", "jobs", "Job")
STORAGECLASSES = Res("storage.k8s.io", "v1", "storageclasses", "StorageClass", namespaced=False)


class Conflict(Exception):
    """A write carrying a stale resourceVersion lost an optimistic-concurrency race."""


class Api(Protocol):
    """The verbs the simulators use. Errors other than NotFound/AlreadyExists propagate."""

    async def get(self, res: Res, name: str, namespace: str | None = None) -> Obj | None:
        """The object, or None when it does not exist."""
        ...

    async def list(
        self,
        res: Res,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]: ...

    async def create(self, res: Res, body: Obj, namespace: str | None = None) -> Obj | None:
        """The created object, or None when it already exists."""
        ...

    async def patch(
        self,
        res: Res,
        name: str,
        body: Obj,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: str | None = None,
    ) -> Obj | None:
        """A strategic-merge patch for built-in kinds (merge patch otherwise, or
        ``patch_type`` "merge"/"strategic"); None if gone."""
        ...

    async def delete(
        self,
        res: Res,
        name: str,
        namespace: str | None = None,
        grace_period_seconds: int | None = None,
        uid: str | None = None,
        propagation: str | None = None,
    ) -> bool:
        """Whether the object existed. ``uid`` is a precondition (the kubelet's final delete);
        ``propagation`` is the propagationPolicy (Foreground, Background, Orphan)."""
        ...


# -- helpers -------------------------------------------------------------------------------


def rfc3339(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def name_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name", ""))


def ns_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("namespace", ""))


def key_of(obj: Mapping[str, Any]) -> tuple[str, str]:
    return (ns_of(obj), name_of(obj))


def condition(obj: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def random_suffix(length: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet
    return "".join(secrets.choice(alphabet) for _ in range(length))


async def record_event(
    api: Api,
    involved: Mapping[str, Any],
    res: Res,
    event_type: str,
    reason: str,
    message: str,
    component: str,
    now: datetime,
    host: str | None = None,
) -> None:
    """A core/v1 Event about ``involved``, as the component would post it."""
    m = meta(involved)
    namespace = str(m.get("namespace") or "default")
    stamp = rfc3339(now)
    source: Obj = {"component": component}
    if host:
        source["host"] = host
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{m.get('name', 'object')}.{secrets.token_hex(8)}",
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": res.api_version,
            "kind": res.kind,
            "name": m.get("name", ""),
            "uid": m.get("uid", ""),
            "resourceVersion": m.get("resourceVersion", ""),
            **({"namespace": m["namespace"]} if m.get("namespace") else {}),
        },
        "reason": reason,
        "message": message,
        "type": event_type,
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": None,
        "source": source,
        "reportingComponent": component,
        "reportingInstance": host or component,
    }
    await api.create(EVENTS, body, namespace)
