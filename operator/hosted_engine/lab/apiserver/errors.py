"""Errors as Kubernetes ``Status`` objects.

Every failure the server reports is an :class:`ApiError`; :meth:`ApiError.status` renders the
``metav1.Status`` body the real kube-apiserver sends (kind, reason, code, details, causes).
"""

from __future__ import annotations

import json
from typing import Any

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """A request failure rendered as a ``Status`` with an HTTP code."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(name: str, group: str, plural: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return details


def qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        404, f'{qualified(group, plural)} "{name}" not found', "NotFound",
        _details(name, group, plural),
    )


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        409, f'{qualified(group, plural)} "{name}" already exists', "AlreadyExists",
        _details(name, group, plural),
    )


MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def conflict(group: str, plural: str, name: str, why: str = MODIFIED) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {qualified(group, plural)} "{name}": {why}',
        "Conflict",
        _details(name, group, plural),
    )


class FieldError:
    """One field problem of an ``Invalid`` (422) answer."""

    __slots__ = ("detail", "field", "kind", "value")

    def __init__(self, field: str, kind: str, detail: str = "", value: Any = None) -> None:
        self.field = field
        self.kind = kind  # "Invalid value", "Required value", "Unsupported value", "Forbidden"...
        self.detail = detail
        self.value = value

    @property
    def reason(self) -> str:
        return {
            "Invalid value": "FieldValueInvalid",
            "Required value": "FieldValueRequired",
            "Unsupported value": "FieldValueNotSupported",
            "Forbidden": "FieldValueForbidden",
            "Duplicate value": "FieldValueDuplicate",
            "Too many": "FieldValueTooMany",
            "Too long": "FieldValueTooLong",
        }.get(self.kind, "FieldValueInvalid")

    def __str__(self) -> str:
        if self.kind in ("Invalid value", "Unsupported value", "Duplicate value"):
            text = f"{self.field}: {self.kind}: {json.dumps(self.value, default=str)}"
            return f"{text}: {self.detail}" if self.detail else text
        return f"{self.field}: {self.kind}: {self.detail}" if self.detail else (
            f"{self.field}: {self.kind}"
        )


def invalid(kind: str, group: str, plural: str, name: str, errors: list[FieldError]) -> ApiError:
    gk = f"{kind}.{group}" if group else kind
    joined = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    details = _details(name, group, kind)
    details["causes"] = [
        {"reason": e.reason, "message": str(e).split(": ", 1)[1] if ": " in str(e) else str(e),
         "field": e.field}
        for e in errors
    ]
    return ApiError(422, f'{gk} "{name}" is invalid: {joined}', "Invalid", details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def method_not_allowed() -> ApiError:
    return ApiError(405, "the server does not allow this method on the requested resource",
                    "MethodNotAllowed")


def gone(message: str = "too old resource version") -> ApiError:
    return ApiError(410, message, "Expired")
