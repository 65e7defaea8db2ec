"""Discovery documents (/version, /api, /apis, ...) and the OpenAPI v3 documents kubectl needs.

https://kubernetes.io/docs/concepts/overview/kubernetes-api/#discovery-api and
https://kubernetes.io/docs/concepts/overview/kubernetes-api/#openapi-interface-definition.
kubectl checks in ``/openapi/v3`` that a PATCH operation of the kind accepts the
``fieldValidation`` query parameter before it uses server-side validation; the documents carry
those operations with their ``x-kubernetes-group-version-kind`` (schemas are not published, so
kubectl computes strategic merge patches of built-in kinds from its compiled-in types).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hosted_engine.lab.apiserver.resources import GROUP_ORDER, Registry, ResourceInfo

KUBE_VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0-lab",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2026-11-01T00:00:00Z",
                "goVersion": "go1.25", "compiler": "gc", "platform": "linux/amd64"}


def version() -> dict[str, Any]:
    return dict(KUBE_VERSION)


def core_versions() -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
        {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for info in sorted(registry.resources_in(group, version), key=lambda i: i.plural):
        resources.extend(info.api_resources())
    resources.extend(registry.aggregated.get((group, version), []))
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources}


def _group(registry: Registry, group: str) -> dict[str, Any]:
    versions = registry.groups().get(group, [])
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def group(registry: Registry, name: str) -> dict[str, Any]:
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(registry, name)}


def group_list(registry: Registry) -> dict[str, Any]:
    names = [g for g in registry.groups() if g and registry.groups()[g]]
    names.sort(key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g))
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(registry, g) for g in names]}


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


_PARAMS = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
           for n in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")]


def _crd_schema(info: ResourceInfo, gvk: dict[str, str]) -> dict[str, Any]:
    assert info.schema is not None
    schema = dict(info.schema.root)
    props = dict(schema.get("properties") or {})
    props.setdefault("apiVersion", {"type": "string", "description": "APIVersion defines the "
                                    "versioned schema of this representation of an object."})
    props.setdefault("kind", {"type": "string", "description": "Kind is a string value "
                              "representing the REST resource this object represents."})
    props.setdefault("metadata", {"type": "object", "description": "Standard object's "
                                  "metadata."})
    schema["properties"] = props
    schema["x-kubernetes-group-version-kind"] = [gvk]
    return schema


def openapi_v3_gv(registry: Registry, group: str, version: str) -> dict[str, Any]:
    """Paths of one group/version; components carry the CRDs' schemas (kubectl explain)."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for info in registry.resources_in(group, version):
        gvk = {"group": info.group, "version": info.version, "kind": info.kind}
        if not info.builtin and info.schema is not None:
            name = ".".join([*reversed(info.group.split(".")), info.version, info.kind])
            schemas[name] = _crd_schema(info, gvk)
        base = "/" + _gv_path(group, version)
        coll = f"{base}/namespaces/{{namespace}}/{info.plural}" if info.namespaced else \
            f"{base}/{info.plural}"
        ops = {}
        for verb, action in (("get", "get"), ("put", "put"), ("patch", "patch"),
                             ("delete", "delete")):
            ops[verb] = {"x-kubernetes-action": action,
                         "x-kubernetes-group-version-kind": gvk,
                         "parameters": _PARAMS,
                         "responses": {"200": {"description": "OK"}}}
        paths[coll + "/{name}"] = ops
        paths[coll] = {"post": {"x-kubernetes-action": "post",
                                "x-kubernetes-group-version-kind": gvk,
                                "parameters": _PARAMS,
                                "responses": {"201": {"description": "Created"}}}}
        for sub in info.subresources:
            if sub in ("status", "scale"):
                paths[f"{coll}/{{name}}/{sub}"] = {
                    v: {"x-kubernetes-action": v, "x-kubernetes-group-version-kind": gvk,
                        "parameters": _PARAMS, "responses": {"200": {"description": "OK"}}}
                    for v in ("get", "put", "patch")}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.0-lab"},
            "paths": paths, "components": {"schemas": schemas}}


def openapi_v3_root(registry: Registry) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for grp, versions in registry.groups().items():
        for ver in versions:
            if not registry.resources_in(grp, ver):
                continue
            path = _gv_path(grp, ver)
            digest = hashlib.sha256(json.dumps(
                openapi_v3_gv(registry, grp, ver), sort_keys=True).encode()).hexdigest()[:32]
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest.upper()}"}
    return {"paths": paths}


def openapi_v2(registry: Registry) -> dict[str, Any]:
    """A swagger 2.0 document listing the paths (no definitions)."""
    paths: dict[str, Any] = {}
    for info in registry.all():
        doc = openapi_v3_gv(registry, info.group, info.version)
        paths.update(doc["paths"])
    return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.37.0-lab"},
            "paths": paths, "definitions": {}}


def crd_resources(crd: dict[str, Any]) -> list[ResourceInfo]:
    """ResourceInfos for every served version of a CRD object."""
    from hosted_engine.lab.apiserver.schema import Schema

    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for ver in spec.get("versions") or []:
        if not ver.get("served", True):
            continue
        subs = ver.get("subresources") or {}
        subresources = tuple(s for s in ("status", "scale") if s in subs)
        schema = (ver.get("schema") or {}).get("openAPIV3Schema")
        out.append(ResourceInfo(
            group=spec.get("group", ""), version=ver.get("name", ""),
            plural=names.get("plural", ""), kind=names.get("kind", ""),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            singular=names.get("singular", "") or names.get("kind", "").lower(),
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=subresources,
            status_on_create="drop" if "status" in subresources else "keep",
            builtin=False,
            schema=Schema(schema) if schema else None,
            printer_columns=list(ver.get("additionalPrinterColumns") or []),
            scale=subs.get("scale"),
            selectable_fields=tuple(f.get("jsonPath", "").lstrip(".")
                                    for f in ver.get("selectableFields") or []),
            return_deleted_object=True,
        ))
    return out
