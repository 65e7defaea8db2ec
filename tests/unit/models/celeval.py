"""A small evaluator of a CRD schema's CEL rules with cel-python, for tests.

It mimics what the API server does for ``x-kubernetes-validations``: apply the schema's
defaults, then evaluate every rule at its node with ``self`` bound to the node's value (and
``oldSelf`` for transition rules when an old object is given; transition rules are skipped
otherwise). Kubernetes' quantity library (``quantity``, ``compareTo``) is provided.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import celpy
from celpy import celtypes
from hosted_engine.models.base import Resource, parse_quantity, validation_messages
from hosted_engine.models.crdgen import crd_for
from pydantic import ValidationError

_ENV = celpy.Environment()


class _Quantity(celtypes.StringType):
    pass


def _quantity(value: Any) -> _Quantity:
    parse_quantity(str(value))
    return _Quantity(str(value))


def _compare_to(a: Any, b: Any) -> celtypes.IntType:
    x, y = parse_quantity(str(a)), parse_quantity(str(b))
    return celtypes.IntType((x > y) - (x < y))


FUNCTIONS = {"quantity": _quantity, "compareTo": _compare_to}


@functools.cache
def _program(rule: str) -> Any:
    return _ENV.program(_ENV.compile(rule), functions=FUNCTIONS)


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting, as the API server does it before validation."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for key, sub in schema["properties"].items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(sub, out[key])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def evaluate(schema: dict[str, Any], value: Any, old: Any = None, path: str = "spec") -> list[str]:
    """Messages of the rules that fail (``path: message``)."""
    failures: list[str] = []
    if value is None:
        return failures
    for rule in schema.get("x-kubernetes-validations", []):
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is None:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if uses_old:
            activation["oldSelf"] = celpy.json_to_cel(old)
        program = _program(rule["rule"])
        result = program.evaluate(activation)
        if isinstance(result, Exception) or not bool(result):
            failures.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                sub_old = old.get(key) if isinstance(old, dict) else None
                failures += evaluate(sub, value[key], sub_old, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            failures += evaluate(schema["items"], item, None, f"{path}[{i}]")
    return failures


def spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec: dict[str, Any] = root["properties"]["spec"]
    return spec


def cel_failures(crd: dict[str, Any], spec: dict[str, Any], old: Any = None) -> list[str]:
    schema = spec_schema(crd)
    return evaluate(schema, apply_defaults(schema, spec), old)


def model_errors(kind: type[Resource], spec: dict[str, Any]) -> list[str]:
    """Messages the model gives for ``spec`` (empty when valid)."""
    spec_model = kind.model_fields["spec"].annotation
    assert spec_model is not None
    try:
        spec_model.model_validate(spec)  # type: ignore[union-attr]
    except ValidationError as exc:
        return validation_messages(exc, "spec")
    return []


def both(
    kind: type[Resource], spec: dict[str, Any], old: Any = None
) -> tuple[list[str], list[str]]:
    """(model errors, CEL failures) for ``spec`` of ``kind``."""
    return model_errors(kind, spec), cel_failures(_crd(kind), spec, old)


@functools.cache
def _crd(kind: type[Resource]) -> dict[str, Any]:
    return crd_for(kind)
