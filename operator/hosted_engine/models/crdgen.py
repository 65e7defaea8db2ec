"""Generate the CustomResourceDefinitions from the pydantic models.

pydantic's JSON Schema is not a Kubernetes structural schema. This module turns it into one:

* ``$ref``/``$defs`` inlined (the field's own description wins over the model docstring);
  single-item ``allOf`` collapsed;
* ``X | None`` (``anyOf [X, {type: null}]``) -> ``X`` with ``nullable: true``;
* JSON-Schema-2020 numeric ``exclusiveMinimum/Maximum`` -> OpenAPI 3.0 boolean form;
* no ``title``; no ``additionalProperties: false`` (forbidden next to ``properties``);
  ``patternProperties``/``propertyNames`` (forbidden) -> ``additionalProperties: <value>``
  (the model still checks the keys); ``const`` -> single-value ``enum``;
* defaults: scalar defaults are kept in ``spec`` (explicit defaults, applied by the API server),
  list/object defaults and every ``status`` default are dropped (the models apply them);
* any other ``anyOf``/``oneOf`` is an error: the models must not produce one.

kube-custom-resource's ``schema_apply`` walks the tree for the final clean-up; its own
``resolve_refs`` is not used because it lets a model's docstring overwrite a field description.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from kube_custom_resource.schema import schema_apply
from pydantic import BaseModel

from hosted_engine import API_GROUP, API_VERSION
from hosted_engine.models import KINDS
from hosted_engine.models.base import Resource

CATEGORY = "hostedengine"
CRD_LABELS = {
    "app.kubernetes.io/name": "hosted-engine-operator",
    "app.kubernetes.io/part-of": "hosted-engine-operator",
}

Schema = dict[str, Any]


class SchemaError(ValueError):
    """The models produced something that cannot become a structural schema."""


def _resolve(node: Any, defs: dict[str, Schema], path: str) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs, f"{path}[{i}]") for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        node = {**inner, **node}
    if "$ref" in node:
        ref = node.pop("$ref")
        name = ref.removeprefix("#/$defs/")
        if name not in defs:
            raise SchemaError(f"{path}: unknown reference {ref}")
        node = {**copy.deepcopy(defs[name]), **node}
        return _resolve(node, defs, path)
    out: Schema = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "$defs"):
            out[key] = {k: _resolve(v, defs, f"{path}.{k}") for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _resolve(value, defs, path + "[]")
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [_resolve(v, defs, path) for v in value]
        else:
            out[key] = value
    return out


def _nullable(node: Schema, path: str) -> Schema:
    for key in ("anyOf", "oneOf"):
        if key not in node:
            continue
        choices = node[key]
        non_null = [c for c in choices if c.get("type") != "null"]
        if len(non_null) == 1 and len(choices) == 2:
            rest = {k: v for k, v in node.items() if k != key}
            merged = {**non_null[0], **rest, "nullable": True}
            return merged
        raise SchemaError(f"{path}: {key} is not structural; the model must not produce it")
    return node


def _structural(node: Any, path: str, keep_defaults: bool) -> Any:
    if not isinstance(node, dict):
        return node
    node = _nullable(dict(node), path)
    out: Schema = {}
    for key, value in node.items():
        if key in ("title", "$defs", "propertyNames"):
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "default":
            if keep_defaults and not isinstance(value, (list, dict)) and value is not None:
                out[key] = value
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "properties":
            out[key] = {k: _structural(v, f"{path}.{k}", keep_defaults) for k, v in value.items()}
        elif key == "patternProperties":
            values = list(value.values())
            if len(values) != 1:
                raise SchemaError(f"{path}: several patternProperties")
            out["additionalProperties"] = _structural(values[0], f"{path}.*", keep_defaults)
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, f"{path}[]", keep_defaults)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        else:
            out[key] = value
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if isinstance(out.get("description"), str):
        out["description"] = " ".join(out["description"].replace("``", "`").split())
    return _ordered(out)


_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "nullable",
    "x-kubernetes-int-or-string",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "maxProperties",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "items",
    "additionalProperties",
    "properties",
    "required",
    "x-kubernetes-validations",
)


def _ordered(node: Schema) -> Schema:
    """Stable, readable key order (known keys first in a fixed order, others sorted)."""
    known = [k for k in _KEY_ORDER if k in node]
    rest = sorted(k for k in node if k not in _KEY_ORDER)
    return {k: node[k] for k in [*known, *rest]}


def structural_schema(model: type[BaseModel], *, keep_defaults: bool) -> Schema:
    """The structural OpenAPI v3 schema of one model."""
    raw = model.model_json_schema(mode="validation", by_alias=True)
    defs = raw.get("$defs", {})
    resolved = _resolve(raw, defs, model.__name__)
    result = _structural(resolved, model.__name__, keep_defaults)
    # kube-custom-resource's walker for the last clean-up of anything left behind.
    cleaned: Schema = schema_apply(  # type: ignore[no-untyped-call]
        result, lambda s: {k: v for k, v in s.items() if k not in ("title", "$defs")}
    )
    return cleaned


def _spec_and_status(kind: type[Resource]) -> tuple[type[BaseModel], type[BaseModel]]:
    fields = kind.model_fields
    spec = fields["spec"].annotation
    status = fields["status"].annotation
    assert isinstance(spec, type) and issubclass(spec, BaseModel)
    assert isinstance(status, type) and issubclass(status, BaseModel)
    return spec, status


def crd_for(kind: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind, as a dict."""
    info = kind.resource
    spec_model, status_model = _spec_and_status(kind)
    spec_schema = structural_schema(spec_model, keep_defaults=True)
    status_schema = structural_schema(status_model, keep_defaults=False)
    spec_doc = spec_model.__doc__ or f"Desired state of the {info.kind}."
    spec_schema["description"] = " ".join(spec_doc.replace("``", "`").split())
    status_schema["description"] = f"Observed state of the {info.kind}, written by the operator."
    root = {
        "type": "object",
        "description": info.description,
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of the object."},
            "kind": {"type": "string", "description": "Kind of the object."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name, "labels": dict(CRD_LABELS)},
        "spec": {
            "group": API_GROUP,
            "scope": info.scope.value,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.to_schema() for c in info.printer_columns],
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [crd_for(kind) for kind in KINDS]


def crd_file_name(crd: dict[str, Any]) -> str:
    return f"{crd['metadata']['name']}.yaml"


HEADER = "# Generated from hosted_engine.models by `make crds`; do not edit.\n"


def to_yaml(crd: dict[str, Any]) -> str:
    body = yaml.safe_dump(crd, sort_keys=False, default_flow_style=False, width=100)
    return HEADER + body


def render_all() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    return {crd_file_name(crd): to_yaml(crd) for crd in all_crds()}


def render_multi_document() -> str:
    return "---\n".join(render_all().values())


def write_all(directory: Path) -> list[Path]:
    """Write one file per CRD into ``directory``; remove stale generated files."""
    directory.mkdir(parents=True, exist_ok=True)
    files = render_all()
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    for stale in directory.glob(f"*.{API_GROUP}.yaml"):
        if stale.name not in files:
            stale.unlink()
    return written


def iter_cel_rules(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ``x-kubernetes-validations`` entry in a schema, with the path of its node."""
    if isinstance(schema, dict):
        for rule in schema.get("x-kubernetes-validations", []):
            yield path or ".", rule
        for key, value in schema.get("properties", {}).items():
            yield from iter_cel_rules(value, f"{path}.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                yield from iter_cel_rules(schema[key], f"{path}[]")
