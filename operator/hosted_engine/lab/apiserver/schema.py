"""Structural schemas of CRDs: pruning, defaulting, validation and CEL rules.

Follows https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/
(sections "Specifying a structural schema", "Field pruning", "Defaulting", "Validation",
"Validation rules"). CEL ``x-kubernetes-validations`` are evaluated with cel-python; a rule that
cel-python cannot compile is skipped (the real server would have rejected the CRD instead).

Updates are ratcheted as in Kubernetes >= 1.30 (KEP-4008, CRDValidationRatcheting, on by default
since beta, GA in 1.33): an error on a value left unchanged by the update (deep-equal to the old
value at the same path, objects correlated by key) is not reported. The lab therefore does not
evaluate the checks of an unchanged subtree at all (a status write leaves ``spec`` alone, so its
CEL rules do not run again); transition rules (``oldSelf``) are not ratcheted and still run.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
import uuid as uuidlib
from datetime import datetime
from typing import Any

from hosted_engine.lab.apiserver.errors import FieldError

log = logging.getLogger(__name__)

_TYPE_NAMES = {"object": dict, "array": list, "string": str, "boolean": bool}
_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def _type_ok(value: Any, typ: str) -> bool:
    if typ == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if typ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    expected = _TYPE_NAMES.get(typ)
    return expected is None or isinstance(value, expected)


def _fmt_ok(value: Any, fmt: str) -> bool:
    if not isinstance(value, str):
        return True
    try:
        if fmt == "date-time":
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif fmt == "date":
            datetime.strptime(value, "%Y-%m-%d")
        elif fmt == "uuid":
            uuidlib.UUID(value)
        elif fmt == "byte":
            base64.b64decode(value, validate=True)
        elif fmt == "email":
            return re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value) is not None
        elif fmt in ("ipv4",):
            parts = value.split(".")
            return len(parts) == 4 and all(p.isdigit() and 0 <= int(p) <= 255 for p in parts)
        elif fmt == "hostname":
            return re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*"
                                r"[a-z0-9])?)*", value) is not None
    except ValueError:
        return False
    return True


def _show(value: Any) -> str:
    return json.dumps(value, default=str)


def _quantity_functions() -> dict[str, Any]:
    """Kubernetes' CEL quantity library (``quantity()``, ``compareTo``, ``isLessThan``,
    ``isGreaterThan``), which cel-python lacks; exact comparisons via parse_quantity."""
    from celpy import celtypes

    from hosted_engine.models.base import parse_quantity

    class Quantity(celtypes.StringType):
        pass

    def quantity(value: Any) -> Quantity:
        parse_quantity(str(value))
        return Quantity(str(value))

    def compare(a: Any, b: Any) -> int:
        x, y = parse_quantity(str(a)), parse_quantity(str(b))
        return (x > y) - (x < y)

    return {
        "quantity": quantity,
        "compareTo": lambda a, b: celtypes.IntType(compare(a, b)),
        "isLessThan": lambda a, b: celtypes.BoolType(compare(a, b) < 0),
        "isGreaterThan": lambda a, b: celtypes.BoolType(compare(a, b) > 0),
    }


class _Cel:
    """Compiled CEL programs, cached by expression."""

    def __init__(self) -> None:
        self._programs: dict[str, Any] = {}
        self._env: Any = None

    def program(self, expr: str) -> Any:
        if expr in self._programs:
            return self._programs[expr]
        prog = None
        try:
            import celpy

            if self._env is None:
                self._env = celpy.Environment()
            prog = self._env.program(self._env.compile(expr), functions=_quantity_functions())
        except Exception as exc:
            log.warning("CEL rule %r not supported by cel-python: %s", expr, exc)
        self._programs[expr] = prog
        return prog

    def evaluate(self, expr: str, value: Any, old: Any, has_old: bool) -> bool | None:
        """True/False, or None when the rule cannot be evaluated (skipped)."""
        if "oldSelf" in expr and not has_old:
            return None  # transition rules only run on update
        prog = self.program(expr)
        if prog is None:
            return None
        import celpy

        to_cel = celpy.json_to_cel  # type: ignore[attr-defined]
        activation = {"self": to_cel(value)}
        if has_old:
            activation["oldSelf"] = to_cel(old)
        try:
            return bool(prog.evaluate(activation))
        except Exception:
            return False


CEL = _Cel()
_MISSING = object()


class Schema:
    """One version's ``openAPIV3Schema``."""

    def __init__(self, openapi: dict[str, Any]) -> None:
        self.root = openapi or {}
        #: id(sub-schema) -> whether it or a sub-schema has a transition rule (``oldSelf``)
        self._transition: dict[int, bool] = {}

    def _has_transition_rules(self, s: dict[str, Any]) -> bool:
        """Whether ``s`` or any schema below it has a rule that uses ``oldSelf``."""
        key = id(s)
        known = self._transition.get(key)
        if known is not None:
            return known
        self._transition[key] = False  # guards against cycles while computing
        found = any("oldSelf" in str(r.get("rule", ""))
                    for r in s.get("x-kubernetes-validations") or [])
        subs: list[Any] = [*(s.get("properties") or {}).values(), s.get("items"),
                           s.get("additionalProperties"), *(s.get("allOf") or [])]
        found = found or any(isinstance(sub, dict) and self._has_transition_rules(sub)
                             for sub in subs)
        self._transition[key] = found
        return found

    # -- pruning and defaulting -------------------------------------------------------------
    def prune_and_default(self, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Remove unknown fields, drop nulls of non-nullable fields and apply defaults.

        Returns the object and the paths of unknown fields that were pruned.
        """
        unknown: list[str] = []
        out = dict(obj)
        props = self.root.get("properties") or {}
        for key in list(out):
            if key in _ROOT_KEEP:
                continue
            if key in props:
                out[key] = self._walk(out[key], props[key], key, unknown)
                if out[key] is _MISSING:
                    del out[key]
            elif not self.root.get("x-kubernetes-preserve-unknown-fields"):
                unknown.append(key)
                del out[key]
        for key, sub in props.items():
            if key not in out and key not in _ROOT_KEEP and "default" in sub:
                out[key] = self._walk(copy.deepcopy(sub["default"]), sub, key, [])
        return out, unknown

    def _walk(self, value: Any, schema: dict[str, Any], path: str, unknown: list[str]) -> Any:
        if value is None:
            return None if schema.get("nullable") else _MISSING
        if isinstance(value, dict) and not schema.get("x-kubernetes-int-or-string"):
            props = schema.get("properties")
            addl = schema.get("additionalProperties")
            preserve = schema.get("x-kubernetes-preserve-unknown-fields") or schema.get(
                "x-kubernetes-embedded-resource")
            if props is None and addl is None and (preserve or schema.get("type") != "object"):
                return value
            out = {}
            for key, sub in value.items():
                spath = f"{path}.{key}"
                if props is not None and key in props:
                    walked = self._walk(sub, props[key], spath, unknown)
                elif isinstance(addl, dict):
                    walked = self._walk(sub, addl, spath, unknown)
                elif addl is True or preserve:
                    walked = sub
                else:
                    unknown.append(spath)
                    continue
                if walked is not _MISSING:
                    out[key] = walked
            for key, sub in (props or {}).items():
                if key not in out and "default" in sub:
                    out[key] = self._walk(copy.deepcopy(sub["default"]), sub, f"{path}.{key}", [])
            return out
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            items = schema["items"]
            result = []
            for i, item in enumerate(value):
                walked = self._walk(item, items, f"{path}[{i}]", unknown)
                result.append(None if walked is _MISSING else walked)
            return result
        return value

    # -- validation -------------------------------------------------------------------------
    def validate(self, obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
        errors: list[FieldError] = []
        props = self.root.get("properties") or {}
        for key in self.root.get("required") or []:
            if key not in obj and key not in _ROOT_KEEP:
                errors.append(FieldError(key, "Required value"))
        for key, sub in props.items():
            if key in _ROOT_KEEP or key not in obj:
                continue
            old_v = old.get(key, _MISSING) if old is not None else _MISSING
            self._check(obj[key], sub, key, errors, old_v)
        self._rules(obj, self.root, "", errors, old if old is not None else _MISSING)
        return errors

    def _check(self, value: Any, s: dict[str, Any], path: str, errors: list[FieldError],
               old: Any, transition_only: bool = False) -> None:
        if not transition_only and old is not _MISSING and value == old:
            # Ratcheting: errors on an unchanged value are not reported; only transition
            # rules below it still run.
            if not self._has_transition_rules(s):
                return
            transition_only = True
        if transition_only:
            self._transition_rules(value, s, path, errors, old)
            return
        if value is None:
            if not s.get("nullable"):
                typ = s.get("type", "")
                errors.append(FieldError(path, "Invalid value", f"{path} in body must be of "
                                         f"type {typ}: \"null\"", "null"))
            return
        typ = s.get("type")
        if s.get("x-kubernetes-int-or-string"):
            if not (isinstance(value, str) or _type_ok(value, "integer")):
                errors.append(FieldError(path, "Invalid value", f"{path} in body must be of "
                                         "type integer,string: " + _show(_kind(value)),
                                         _kind(value)))
                return
        elif typ and not _type_ok(value, typ):
            errors.append(FieldError(path, "Invalid value", f"{path} in body must be of type "
                                     f"{typ}: {_show(_kind(value))}", _kind(value)))
            return
        if "enum" in s and value not in s["enum"]:
            errors.append(FieldError(path, "Unsupported value",
                                     "supported values: " + ", ".join(_show(v) for v in s["enum"]),
                                     value))
        if isinstance(value, int | float) and not isinstance(value, bool):
            self._bounds(value, s, path, errors)
        if isinstance(value, str):
            if "maxLength" in s and len(value) > s["maxLength"]:
                errors.append(FieldError(path, "Too long",
                                         f"may not be more than {s['maxLength']} bytes"))
            if "minLength" in s and len(value) < s["minLength"]:
                errors.append(FieldError(path, "Invalid value", f"{path} in body should be at "
                                         f"least {s['minLength']} chars long", value))
            if "pattern" in s and re.search(s["pattern"], value) is None:
                errors.append(FieldError(path, "Invalid value", f"{path} in body should match "
                                         f"'{s['pattern']}'", value))
            if "format" in s and not _fmt_ok(value, s["format"]):
                errors.append(FieldError(path, "Invalid value", f"{path} in body must be of "
                                         f"type {s['format']}: {_show(value)}", value))
        if isinstance(value, list):
            self._check_list(value, s, path, errors, old)
        if isinstance(value, dict) and not s.get("x-kubernetes-int-or-string"):
            self._check_object(value, s, path, errors, old)
        for key in ("allOf",):
            for sub in s.get(key) or []:
                self._check(value, sub, path, errors, old)
        if s.get("anyOf") and not any(self._quiet_ok(value, sub, path) for sub in s["anyOf"]):
            errors.append(FieldError(path, "Invalid value", "must validate at least one "
                                     "schema (anyOf)", _kind(value)))
        if s.get("oneOf") and sum(self._quiet_ok(value, sub, path) for sub in s["oneOf"]) != 1:
            errors.append(FieldError(path, "Invalid value", "must validate one and only one "
                                     "schema (oneOf)", _kind(value)))
        if isinstance(s.get("not"), dict) and self._quiet_ok(value, s["not"], path):
            errors.append(FieldError(path, "Invalid value", "must not validate the schema "
                                     "(not)", _kind(value)))
        self._rules(value, s, path, errors, old)

    def _transition_rules(self, value: Any, s: dict[str, Any], path: str,
                          errors: list[FieldError], old: Any) -> None:
        """The transition rules of an unchanged value (old == value) and below it."""
        if not self._has_transition_rules(s):
            return
        self._rules(value, s, path, errors, old, transition_only=True)
        for sub in s.get("allOf") or []:
            self._transition_rules(value, sub, path, errors, old)
        if isinstance(value, dict) and not s.get("x-kubernetes-int-or-string"):
            props = s.get("properties") or {}
            addl = s.get("additionalProperties")
            for key, sub_value in value.items():
                sub = props.get(key) if key in props else addl
                if isinstance(sub, dict):
                    self._transition_rules(sub_value, sub, f"{path}.{key}", errors,
                                           old.get(key, _MISSING))
        # list items are not correlated with old items here (no oldSelf for them), as in
        # _check_list

    def _quiet_ok(self, value: Any, s: dict[str, Any], path: str) -> bool:
        errs: list[FieldError] = []
        self._check(value, s, path, errs, _MISSING)
        return not errs

    @staticmethod
    def _bounds(value: float, s: dict[str, Any], path: str, errors: list[FieldError]) -> None:
        if "minimum" in s:
            if s.get("exclusiveMinimum") and value <= s["minimum"]:
                errors.append(FieldError(path, "Invalid value", f"{path} in body should be "
                                         f"greater than {s['minimum']}", value))
            elif value < s["minimum"]:
                errors.append(FieldError(path, "Invalid value", f"{path} in body should be "
                                         f"greater than or equal to {s['minimum']}", value))
        if "maximum" in s:
            if s.get("exclusiveMaximum") and value >= s["maximum"]:
                errors.append(FieldError(path, "Invalid value", f"{path} in body should be "
                                         f"less than {s['maximum']}", value))
            elif value > s["maximum"]:
                errors.append(FieldError(path, "Invalid value", f"{path} in body should be "
                                         f"less than or equal to {s['maximum']}", value))
        if "multipleOf" in s and s["multipleOf"] and value % s["multipleOf"] != 0:
            errors.append(FieldError(path, "Invalid value", f"{path} in body should be a "
                                     f"multiple of {s['multipleOf']}", value))

    def _check_list(self, value: list[Any], s: dict[str, Any], path: str,
                    errors: list[FieldError], old: Any) -> None:
        if "maxItems" in s and len(value) > s["maxItems"]:
            errors.append(FieldError(path, "Too many",
                                     f"{len(value)}: must have at most {s['maxItems']} items"))
        if "minItems" in s and len(value) < s["minItems"]:
            errors.append(FieldError(path, "Invalid value", f"{path} in body should have at "
                                     f"least {s['minItems']} items", _kind(value)))
        list_type = s.get("x-kubernetes-list-type")
        if s.get("uniqueItems") or list_type == "set":
            seen: list[Any] = []
            for i, item in enumerate(value):
                if item in seen:
                    errors.append(FieldError(f"{path}[{i}]", "Duplicate value", "", item))
                seen.append(item)
        if list_type == "map":
            keys = s.get("x-kubernetes-list-map-keys") or []
            seen_keys: set[str] = set()
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    k = json.dumps([item.get(x) for x in keys])
                    if k in seen_keys:
                        errors.append(FieldError(f"{path}[{i}]", "Duplicate value", "",
                                                 {x: item.get(x) for x in keys}))
                    seen_keys.add(k)
        items = s.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                self._check(item, items, f"{path}[{i}]", errors, _MISSING)

    def _check_object(self, value: dict[str, Any], s: dict[str, Any], path: str,
                      errors: list[FieldError], old: Any) -> None:
        props = s.get("properties") or {}
        for key in s.get("required") or []:
            if key not in value:
                errors.append(FieldError(f"{path}.{key}", "Required value"))
        if "maxProperties" in s and len(value) > s["maxProperties"]:
            errors.append(FieldError(path, "Too many", f"{len(value)}: must have at most "
                                     f"{s['maxProperties']} items"))
        if "minProperties" in s and len(value) < s["minProperties"]:
            errors.append(FieldError(path, "Invalid value", f"{path} in body should have at "
                                     f"least {s['minProperties']} properties", _kind(value)))
        addl = s.get("additionalProperties")
        for key, sub_value in value.items():
            old_v = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            if key in props:
                self._check(sub_value, props[key], f"{path}.{key}", errors, old_v)
            elif isinstance(addl, dict):
                self._check(sub_value, addl, f"{path}.{key}", errors, old_v)

    @staticmethod
    def _rules(value: Any, s: dict[str, Any], path: str, errors: list[FieldError],
               old: Any, transition_only: bool = False) -> None:
        for rule in s.get("x-kubernetes-validations") or []:
            expr = rule.get("rule", "")
            if transition_only and "oldSelf" not in expr:
                continue
            result = CEL.evaluate(expr, value, None if old is _MISSING else old,
                                  old is not _MISSING)
            if result is False:
                message = rule.get("message") or f"failed rule: {expr}"
                fpath = path + (rule.get("fieldPath") or "")
                fpath = fpath.lstrip(".") or "<nil>"
                errors.append(FieldError(fpath, "Invalid value", message, _kind(value)))


def _kind(value: Any) -> Any:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return value
