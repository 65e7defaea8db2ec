"""Label selectors (equality- and set-based) and field selectors.

Grammar: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors
and https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from hosted_engine.lab.apiserver.errors import bad_request

Predicate = Callable[[Mapping[str, Any]], bool]

_KEY = r"[A-Za-z0-9./_-]+"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_CMP_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=|>|<)\s*([A-Za-z0-9._-]*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    terms: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [t for t in terms if t.strip()]


LabelReq = tuple[str, str, frozenset[str]]


def parse_label_selector(text: str | None) -> list[LabelReq]:
    """Parse ``a=b,c!=d,e in (x,y),!f,g`` into (key, op, values) requirements."""
    if not text:
        return []
    reqs: list[LabelReq] = []
    for term in _split_terms(text):
        m = _SET_RE.match(term)
        if m:
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append((m.group(1), m.group(2), values))
            continue
        m = _CMP_RE.match(term)
        if m:
            op = "=" if m.group(2) == "==" else m.group(2)
            if op in (">", "<") and not m.group(3).lstrip("-").isdigit():
                raise bad_request(f'unable to parse requirement: invalid value "{m.group(3)}"')
            reqs.append((m.group(1), op, frozenset([m.group(3)])))
            continue
        m = _EXISTS_RE.match(term)
        if m:
            reqs.append((m.group(2), "!" if m.group(1) else "exists", frozenset()))
            continue
        raise bad_request(f"unable to parse requirement: {term.strip()!r}")
    return reqs


def labels_match(reqs: list[LabelReq], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        value = labels.get(key)
        if op == "=":
            if value not in values:
                return False
        elif op == "!=":
            if present and value in values:
                return False
        elif op == "in":
            if not present or value not in values:
                return False
        elif op == "notin":
            if present and value in values:
                return False
        elif op == "exists":
            if not present:
                return False
        elif op == "!":
            if present:
                return False
        elif op in (">", "<"):
            if not present or not str(value).lstrip("-").isdigit():
                return False
            bound = int(next(iter(values)))
            if (op == ">" and not int(str(value)) > bound) or (
                op == "<" and not int(str(value)) < bound):
                return False
    return True


def selector_from_label_selector(sel: Mapping[str, Any] | None) -> list[LabelReq] | None:
    """A ``metav1.LabelSelector`` (matchLabels/matchExpressions) as requirements.

    ``None`` means the selector matches nothing (a nil selector); ``{}`` matches everything.
    """
    if sel is None:
        return None
    reqs: list[LabelReq] = [(k, "=", frozenset([str(v)]))
                            for k, v in (sel.get("matchLabels") or {}).items()]
    for expr in sel.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists",
              "DoesNotExist": "!"}.get(expr.get("operator", ""), "in")
        reqs.append((expr.get("key", ""), op, frozenset(expr.get("values") or [])))
    return reqs


FieldReq = tuple[str, str, str]


def parse_field_selector(text: str | None, allowed: tuple[str, ...] | None) -> list[FieldReq]:
    """Parse ``a=b,c!=d``; only ``allowed`` fields (plus metadata.name/namespace) may be used."""
    if not text:
        return []
    reqs: list[FieldReq] = []
    for term in _split_terms(text):
        m = re.match(r"^\s*([A-Za-z0-9._/-]+)\s*(==|!=|=)\s*(.*?)\s*$", term)
        if not m:
            raise bad_request(f'invalid selector: \'{text}\'; can\'t understand \'{term}\'')
        fld, op, value = m.group(1), m.group(2), m.group(3)
        if allowed is not None and fld not in ("metadata.name", "metadata.namespace") and \
                fld not in allowed:
            raise bad_request(f'field label not supported: {fld}')
        reqs.append((fld, "!=" if op == "!=" else "=", value))
    return reqs


def field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
        if cur is None:
            return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(reqs: list[FieldReq], obj: Mapping[str, Any]) -> bool:
    for fld, op, value in reqs:
        actual = field_value(obj, fld)
        if (op == "=") != (actual == value):
            return False
    return True


class Selector:
    """Label and field selectors of one request, compiled once."""

    __slots__ = ("fields", "labels")

    def __init__(self, label_selector: str | None = None, field_selector: str | None = None,
                 allowed_fields: tuple[str, ...] | None = None) -> None:
        self.labels = parse_label_selector(label_selector)
        self.fields = parse_field_selector(field_selector, allowed_fields)

    @property
    def empty(self) -> bool:
        return not self.labels and not self.fields

    def single_name(self) -> str | None:
        for fld, op, value in self.fields:
            if fld == "metadata.name" and op == "=":
                return value
        return None

    def matches(self, obj: Mapping[str, Any]) -> bool:
        if self.labels and not labels_match(
                self.labels, (obj.get("metadata") or {}).get("labels")):
            return False
        return not (self.fields and not fields_match(self.fields, obj))
