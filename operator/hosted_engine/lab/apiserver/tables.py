"""``meta.k8s.io/v1`` Tables for ``kubectl get`` (``Accept: application/json;as=Table``).

Columns of CRDs come from ``additionalPrinterColumns`` (a JSONPath subset: ``.a.b``, ``[n]``,
``[*]`` and ``[?(@.k=="v")]`` filters); built-in kinds have columns like the real server's.
https://kubernetes.io/docs/reference/using-api/api-concepts/#receiving-resources-as-tables
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from hosted_engine.lab.apiserver.resources import ResourceInfo

Obj = dict[str, Any]

_TOKEN = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+|\*)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*"
                    r"['\"]([^'\"]*)['\"]\)\]|\['([^']+)'\]")


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate a small JSONPath subset, returning all matches."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    current = [obj]
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m:
            return []
        pos = m.end()
        nxt: list[Any] = []
        for item in current:
            if m.group(1) is not None or m.group(5) is not None:
                key = m.group(1) or m.group(5)
                if isinstance(item, dict) and key in item:
                    nxt.append(item[key])
            elif m.group(2) is not None:
                if isinstance(item, list):
                    if m.group(2) == "*":
                        nxt.extend(item)
                    elif int(m.group(2)) < len(item):
                        nxt.append(item[int(m.group(2))])
            elif isinstance(item, list):
                for el in item:
                    if isinstance(el, dict) and str(_dig(el, m.group(3))) == m.group(4):
                        nxt.append(el)
        current = nxt
    return current


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def age(ts: str | None, now: datetime) -> str:
    if not ts:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    secs = max(0, int((now - then).total_seconds()))
    if secs < 120:
        return f"{secs}s"
    if secs < 3600 * 3:
        m, s = divmod(secs, 60)
        return f"{m}m{s}s" if m < 10 and s else f"{m}m"
    if secs < 86400 * 2:
        h, rem = divmod(secs, 3600)
        return f"{h}h{rem // 60}m" if h < 8 and rem // 60 else f"{h}h"
    return f"{secs // 86400}d"


def _cond(obj: Obj, typ: str) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == typ:
            return str(c.get("status", "Unknown"))
    return "Unknown"


def _pod_ready(obj: Obj) -> str:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    total = len((obj.get("spec") or {}).get("containers") or [])
    ready = sum(1 for s in statuses if isinstance(s, dict) and s.get("ready"))
    return f"{ready}/{total}"


def _node_status(obj: Obj) -> str:
    ready = _cond(obj, "Ready")
    text = {"True": "Ready", "False": "NotReady"}.get(ready, "Unknown")
    if (obj.get("spec") or {}).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _roles(obj: Obj) -> str:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels
                   if k.startswith("node-role.kubernetes.io/") and "/" in k)
    return ",".join(roles) or "<none>"


Column = tuple[str, str, int, Callable[[Obj], Any]]

_S = "string"


def _builtin_columns(info: ResourceInfo) -> list[Column]:
    st: Callable[[Obj], Obj] = lambda o: o.get("status") or {}  # noqa: E731
    sp: Callable[[Obj], Obj] = lambda o: o.get("spec") or {}  # noqa: E731
    cols: dict[str, list[Column]] = {
        "namespaces": [("Status", _S, 0, lambda o: st(o).get("phase", ""))],
        "nodes": [("Status", _S, 0, _node_status), ("Roles", _S, 0, _roles),
                  ("Version", _S, 0, lambda o: ((st(o).get("nodeInfo") or {})
                                                .get("kubeletVersion", "")))],
        "pods": [("Ready", _S, 0, _pod_ready),
                 ("Status", _S, 0, lambda o: "Terminating" if (o.get("metadata") or {}).get(
                     "deletionTimestamp") else st(o).get("phase", "")),
                 ("Restarts", "integer", 0, lambda o: sum(
                     int(s.get("restartCount", 0)) for s in st(o).get("containerStatuses") or []
                     if isinstance(s, dict))),
                 ("IP", _S, 1, lambda o: st(o).get("podIP", "<none>")),
                 ("Node", _S, 1, lambda o: sp(o).get("nodeName", "<none>"))],
        "services": [("Type", _S, 0, lambda o: sp(o).get("type", "ClusterIP")),
                     ("Cluster-IP", _S, 0, lambda o: sp(o).get("clusterIP", "<none>"))],
        "configmaps": [("Data", "integer", 0, lambda o: len(o.get("data") or {})
                        + len(o.get("binaryData") or {}))],
        "secrets": [("Type", _S, 0, lambda o: o.get("type", "Opaque")),
                    ("Data", "integer", 0, lambda o: len(o.get("data") or {}))],
        "deployments": [("Ready", _S, 0, lambda o: f"{st(o).get('readyReplicas', 0)}/"
                         f"{sp(o).get('replicas', 1)}"),
                        ("Up-to-date", "integer", 0, lambda o: st(o).get("updatedReplicas", 0)),
                        ("Available", "integer", 0,
                         lambda o: st(o).get("availableReplicas", 0))],
        "jobs": [("Status", _S, 0, lambda o: "Complete" if _cond(o, "Complete") == "True" else
                  ("Failed" if _cond(o, "Failed") == "True" else "Running")),
                 ("Completions", _S, 0, lambda o: f"{st(o).get('succeeded', 0)}/"
                  f"{sp(o).get('completions', 1)}")],
        "leases": [("Holder", _S, 0, lambda o: sp(o).get("holderIdentity", ""))],
        "persistentvolumes": [("Capacity", _S, 0, lambda o: (sp(o).get("capacity") or {})
                               .get("storage", "")),
                              ("Status", _S, 0, lambda o: st(o).get("phase", ""))],
        "persistentvolumeclaims": [("Status", _S, 0, lambda o: st(o).get("phase", "")),
                                   ("Volume", _S, 0, lambda o: sp(o).get("volumeName", ""))],
        "storageclasses": [("Provisioner", _S, 0, lambda o: o.get("provisioner", ""))],
        "poddisruptionbudgets": [
            ("Min Available", _S, 0, lambda o: str(sp(o).get("minAvailable", "N/A"))),
            ("Max Unavailable", _S, 0, lambda o: str(sp(o).get("maxUnavailable", "N/A"))),
            ("Allowed Disruptions", "integer", 0,
             lambda o: st(o).get("disruptionsAllowed", 0))],
        "events": [("Type", _S, 0, lambda o: o.get("type", "")),
                   ("Reason", _S, 0, lambda o: o.get("reason", "")),
                   ("Object", _S, 0, lambda o: "{}/{}".format(
                       str((o.get("involvedObject") or o.get("regarding") or {}).get(
                           "kind", "")).lower(),
                       (o.get("involvedObject") or o.get("regarding") or {}).get("name", ""))),
                   ("Message", _S, 0, lambda o: o.get("message") or o.get("note") or "")],
        "customresourcedefinitions": [
            ("Created At", "date", 0,
             lambda o: (o.get("metadata") or {}).get("creationTimestamp", ""))],
    }
    return cols.get(info.plural, [])


def columns(info: ResourceInfo, now: datetime) -> list[Column]:
    name: Column = ("Name", _S, 0, lambda o: (o.get("metadata") or {}).get("name", ""))
    age_col: Column = ("Age", "date", 0, lambda o: age(
        (o.get("metadata") or {}).get("creationTimestamp"), now))
    if info.builtin:
        extra = _builtin_columns(info)
        if info.plural == "customresourcedefinitions":
            return [name, *extra]
        return [name, *(c for c in extra if c[2] == 0), age_col, *(c for c in extra if c[2] > 0)]
    cols: list[Column] = [name]
    has_age = False
    for pc in info.printer_columns:
        path = pc.get("jsonPath", "")
        if path == ".metadata.creationTimestamp":
            has_age = True
            cols.append((pc.get("name", "Age"), pc.get("type", "date"),
                         int(pc.get("priority", 0)), age_col[3]))
            continue
        cols.append((pc.get("name", ""), pc.get("type", _S), int(pc.get("priority", 0)),
                     _printer(path, pc.get("type", _S), now)))
    if not has_age:
        cols.append(age_col)
    return cols


def _printer(path: str, typ: str, now: datetime) -> Callable[[Obj], Any]:
    def cell(obj: Obj) -> Any:
        found = jsonpath(obj, path)
        if not found:
            return None
        value = found[0] if len(found) == 1 else ",".join(str(x) for x in found)
        if typ == "date" and isinstance(value, str):
            return age(value, now)
        if typ == "integer" and isinstance(value, int | float):
            return int(value)
        if isinstance(value, dict | list):
            return json.dumps(value)
        return value
    return cell


def to_table(info: ResourceInfo, objs: list[Obj], now: datetime, rv: str,
             include_object: str = "Metadata", headers: bool = True,
             continue_token: str = "") -> Obj:
    cols = columns(info, now)
    rows = []
    for obj in objs:
        row: Obj = {"cells": [c[3](obj) for c in cols]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj.get("metadata") or {}}
        rows.append(row)
    meta: Obj = {"resourceVersion": rv}
    if continue_token:
        meta["continue"] = continue_token
    table: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
                  "columnDefinitions": [], "rows": rows}
    if headers:
        table["columnDefinitions"] = [
            {"name": c[0], "type": c[1], "format": "name" if c[0] == "Name" else "",
             "description": c[0], "priority": c[2]} for c in cols]
    return table
