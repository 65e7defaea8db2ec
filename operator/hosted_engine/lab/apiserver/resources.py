"""The registry of served resources: built-in kinds and CRD-defined kinds.

A :class:`ResourceInfo` says how one ``group/version/plural`` is served (kind, scope, verbs,
subresources, short names, categories, printer columns, CRD schema). The :class:`Registry` maps
``(group, version, plural)`` to it in O(1) and answers discovery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hosted_engine.lab.apiserver.schema import Schema

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass
class ResourceInfo:
    """How one ``group/version/plural`` is served."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = ()
    # "drop": the main endpoint ignores status on create/update (status subresource present)
    status_on_create: str = "drop"
    builtin: bool = True
    # CRDs only
    schema: Schema | None = None
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    scale: dict[str, Any] | None = None
    selectable_fields: tuple[str, ...] = ()
    # extra field selector labels (besides metadata.name/metadata.namespace)
    field_labels: tuple[str, ...] = ()
    # a delete of an object without pending finalizers answers with the object (else a Status)
    return_deleted_object: bool = False

    def __post_init__(self) -> None:
        if not self.singular:
            self.singular = self.kind.lower()

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: all versions of a group/resource share their objects."""
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def api_resources(self) -> list[dict[str, Any]]:
        """Entries of an ``APIResourceList`` for this resource and its subresources."""
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        out = [main]
        for sub in self.subresources:
            verbs, kind, group, version = ["get", "patch", "update"], self.kind, None, None
            if sub == "scale":
                kind, group, version = "Scale", "autoscaling", "v1"
            elif sub == "eviction":
                verbs, kind, group, version = ["create"], "Eviction", "policy", "v1"
            elif sub == "log":
                verbs, kind = ["get"], "Pod"
            elif sub == "finalize":
                verbs = ["update"]
            entry: dict[str, Any] = {
                "name": f"{self.plural}/{sub}", "singularName": "",
                "namespaced": self.namespaced, "kind": kind, "verbs": verbs,
            }
            if group is not None:
                entry["group"], entry["version"] = group, version
            out.append(entry)
        return out


def _r(group: str, version: str, plural: str, kind: str, namespaced: bool = True,
       **kw: Any) -> ResourceInfo:
    return ResourceInfo(group, version, plural, kind, namespaced, **kw)


def builtin_resources() -> list[ResourceInfo]:
    """The built-in kinds the lab serves."""
    return [
        _r("", "v1", "namespaces", "Namespace", False, short_names=("ns",),
           subresources=("status", "finalize"),
           verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
           field_labels=("status.phase",)),
        _r("", "v1", "nodes", "Node", False, short_names=("no",), subresources=("status",),
           status_on_create="keep", field_labels=("spec.unschedulable",)),
        _r("", "v1", "pods", "Pod", short_names=("po",), categories=("all",),
           subresources=("status", "log", "eviction"), status_on_create="pod",
           field_labels=("spec.nodeName", "status.phase", "spec.restartPolicy",
                         "spec.schedulerName", "spec.serviceAccountName", "status.podIP",
                         "status.nominatedNodeName"),
           return_deleted_object=True),
        _r("", "v1", "services", "Service", short_names=("svc",), categories=("all",),
           subresources=("status",)),
        _r("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
        _r("", "v1", "secrets", "Secret", field_labels=("type",)),
        _r("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
        _r("", "v1", "endpoints", "Endpoints", short_names=("ep",)),
        _r("", "v1", "events", "Event", short_names=("ev",),
           field_labels=("involvedObject.kind", "involvedObject.namespace",
                         "involvedObject.name", "involvedObject.uid",
                         "involvedObject.apiVersion", "involvedObject.resourceVersion",
                         "involvedObject.fieldPath", "reason", "reportingComponent", "source",
                         "type")),
        _r("", "v1", "persistentvolumes", "PersistentVolume", False, short_names=("pv",),
           subresources=("status",), field_labels=("status.phase",)),
        _r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short_names=("pvc",),
           subresources=("status",)),
        _r("apps", "v1", "deployments", "Deployment", short_names=("deploy",),
           categories=("all",), subresources=("status", "scale")),
        _r("batch", "v1", "jobs", "Job", categories=("all",), subresources=("status",)),
        _r("coordination.k8s.io", "v1", "leases", "Lease"),
        _r("events.k8s.io", "v1", "events", "Event", short_names=("ev",),
           field_labels=("regarding.kind", "regarding.namespace", "regarding.name",
                         "regarding.uid", "reason", "type", "reportingController")),
        _r("storage.k8s.io", "v1", "storageclasses", "StorageClass", False,
           short_names=("sc",)),
        _r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget",
           short_names=("pdb",), subresources=("status",)),
        _r("rbac.authorization.k8s.io", "v1", "roles", "Role"),
        _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
        _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
        _r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding",
           False),
        _r("apiextensions.k8s.io", "v1", "customresourcedefinitions",
           "CustomResourceDefinition", False, short_names=("crd", "crds"),
           categories=("api-extensions",), subresources=("status",)),
    ]


# Preferred versions of well-known groups, for /apis ordering.
GROUP_ORDER = ("", "apps", "events.k8s.io", "batch", "policy", "rbac.authorization.k8s.io",
               "storage.k8s.io", "apiextensions.k8s.io", "coordination.k8s.io")


_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key of Kubernetes version names: GA before beta before alpha, higher first;
    names that are not Kubernetes-like go last, alphabetically (CRD "Version priority")."""
    m = _VERSION_RE.match(version)
    if not m:
        return (3, 0, 0, version)
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0), version)


class Registry:
    """Served resources, by ``(group, version, plural)`` and by ``(group, kind)``."""

    def __init__(self) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceInfo] = {}
        # group -> versions by priority (preferred first)
        self._groups: dict[str, list[str]] = {}
        # (group, version) -> extra discovery entries served by aggregated handlers
        self.aggregated: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.generation = 0

    def add(self, info: ResourceInfo) -> None:
        self._by_gvr[(info.group, info.version, info.plural)] = info
        self.add_group_version(info.group, info.version)

    def remove(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        info = self._by_gvr.pop((group, version, plural), None)
        if info is not None:
            if not any(g == group and v == version for g, v, _ in self._by_gvr) and \
                    (group, version) not in self.aggregated:
                versions = self._groups.get(group, [])
                if version in versions:
                    versions.remove(version)
                if not versions:
                    self._groups.pop(group, None)
            self.generation += 1
        return info

    def add_group_version(self, group: str, version: str) -> None:
        versions = self._groups.setdefault(group, [])
        if version not in versions:
            versions.append(version)
            versions.sort(key=version_priority)
        self.generation += 1

    def get(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_gvr.get((group, version, plural))

    def by_kind(self, group: str, kind: str) -> ResourceInfo | None:
        for info in self._by_gvr.values():
            if info.group == group and info.kind == kind:
                return info
        return None

    def versions_of(self, group: str, plural: str) -> list[ResourceInfo]:
        return [i for i in self._by_gvr.values() if i.group == group and i.plural == plural]

    def groups(self) -> dict[str, list[str]]:
        return self._groups

    def resources_in(self, group: str, version: str) -> list[ResourceInfo]:
        return [i for (g, v, _), i in self._by_gvr.items() if g == group and v == version]

    def all(self) -> list[ResourceInfo]:
        return list(self._by_gvr.values())

    def has_group_version(self, group: str, version: str) -> bool:
        return version in self._groups.get(group, [])
