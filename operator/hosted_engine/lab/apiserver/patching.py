"""Patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch and a
server-side apply that merges the applied configuration into the live object.

Strategic merge patch follows
https://github.com/kubernetes/community/blob/master/contributors/devel/sig-api-machinery/strategic-merge-patch.md
with the merge keys of the built-in types the lab serves.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from hosted_engine.lab.apiserver.errors import ApiError

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (MERGE_PATCH, JSON_PATCH, STRATEGIC_PATCH, APPLY_PATCH)

# Built-in list fields with patchStrategy=merge, by field name -> patchMergeKey ("" = primitive).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "addresses": "type",
    "hostAliases": "ip",
    "resourceClaims": "name",
    "finalizers": "",
    "ports": "",  # decided per item: containerPort (containers) or port (services)
    "topologySpreadConstraints": "topologyKey",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    """RFC 6902. A failing ``test`` operation or a bad path gives 422 like the real server."""
    if not isinstance(ops, list):
        raise ApiError(400, "json patch must be a list of operations", "BadRequest")
    try:
        patched: dict[str, Any] = jsonpatch.JsonPatch(ops).apply(target, in_place=False)
        return patched
    except jsonpatch.JsonPatchTestFailed as exc:
        raise ApiError(422, f"the server rejected our request due to an error in our request: "
                            f"testing value failed: {exc}", "Invalid") from exc
    except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPointerException) as exc:
        raise ApiError(422, f"the server rejected our request due to an error in our request: "
                            f"{exc}", "Invalid") from exc
    except jsonpatch.InvalidJsonPatch as exc:
        raise ApiError(400, f"invalid json patch: {exc}", "BadRequest") from exc


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field not in MERGE_KEYS:
        return None
    key = MERGE_KEYS[field]
    if field == "ports":
        for item in items:
            if isinstance(item, dict):
                return "containerPort" if "containerPort" in item else "port"
        return "port"
    return key


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    """Apply a strategic merge patch (directives $patch, $retainKeys, $setElementOrder,
    $deleteFromPrimitiveList; lists merged by their patchMergeKey)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = dict(target)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            current = result.get(name)
            if isinstance(current, list):
                result[name] = [x for x in current if x not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
            continue
        if isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, key)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current: Any, patch: list[Any], field: str) -> list[Any]:
    key = _merge_key(field, patch)
    if key is None or not isinstance(current, list):
        # replace (default strategy); strip directives from items
        return [x for x in (copy.deepcopy(patch)) if not (isinstance(x, dict) and x.get(
            "$patch") == "delete")]
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [copy.deepcopy(x) for x in patch
                if not (isinstance(x, dict) and "$patch" in x)]
    if key == "":
        out = list(current)
        for item in patch:
            if item not in out:
                out.append(item)
        return out
    out = list(current)
    index = {x.get(key): i for i, x in enumerate(out) if isinstance(x, dict)}
    for item in patch:
        if not isinstance(item, dict):
            out.append(item)
            continue
        k = item.get(key)
        if item.get("$patch") == "delete":
            if k in index:
                out[index[k]] = None
            continue
        if k in index and out[index[k]] is not None:
            out[index[k]] = strategic_merge(out[index[k]], item, field)
        else:
            index[k] = len(out)
            out.append(copy.deepcopy(item))
    return [x for x in out if x is not None]


def apply_merge(live: Any, applied: Any, previous: Any, list_keys: dict[str, str],
                field: str = "") -> Any:
    """Server-side apply, simplified to one field manager at a time.

    ``applied`` wins for every field it sets; fields the same manager applied before
    (``previous``) and no longer applies are removed; fields set by others stay. Lists merge by
    key when the field has one (built-in merge keys or the CRD's ``x-kubernetes-list-map-keys``),
    otherwise the applied list replaces the live one.
    """
    if not isinstance(applied, dict):
        if isinstance(applied, list):
            key = list_keys.get(field) or _merge_key(field, applied) or None
            if key and isinstance(live, list):
                prev_items = {x.get(key) for x in previous or [] if isinstance(x, dict)}
                app_items = {x.get(key): x for x in applied if isinstance(x, dict)}
                out = []
                for item in live:
                    if not isinstance(item, dict):
                        continue
                    k = item.get(key)
                    if k in app_items:
                        prev = next((p for p in previous or [] if isinstance(p, dict)
                                     and p.get(key) == k), None)
                        out.append(apply_merge(item, app_items.pop(k), prev, list_keys, field))
                    elif k not in prev_items:
                        out.append(item)
                out.extend(copy.deepcopy(v) for v in app_items.values())
                return out
        return copy.deepcopy(applied)
    result = dict(live) if isinstance(live, dict) else {}
    prev = previous if isinstance(previous, dict) else {}
    for key in prev:
        if key not in applied and key in result:
            del result[key]
    for key, value in applied.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge(result.get(key), value, prev.get(key), list_keys, key)
    return result
