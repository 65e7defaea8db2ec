"""The in-process client: exactly the HTTP semantics (the same :meth:`ApiCore.handle` path:
validation, admission, defaulting, resourceVersions, watch events) without HTTP or JSON.

Simulators use it so that thousands of heartbeats stay cheap. Every call must run in the
server's event loop. Results are private copies the caller may change.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from hosted_engine.lab.apiserver.core import ApiCore, ApiRequest, ApiResponse
from hosted_engine.lab.apiserver.errors import ApiError

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


def _clone(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def resource_path(group: str, version: str, plural: str, namespace: str | None = None,
                  name: str | None = None, subresource: str = "") -> str:
    """The REST path of a resource, e.g. ``/apis/G/V/namespaces/NS/PLURAL/NAME/SUB``."""
    parts = ["/api", version] if not group else ["/apis", group, version]
    if namespace:
        parts += ["namespaces", namespace]
    parts.append(plural)
    if name:
        parts.append(name)
        if subresource:
            parts.append(subresource)
    return "/".join(parts)


def _raise(resp: ApiResponse) -> None:
    if resp.status >= 400:
        body = resp.body if isinstance(resp.body, dict) else {}
        raise ApiError(resp.status, str(body.get("message", "")), body.get("reason"),
                       body.get("details"), resp.headers)


class LocalClient:
    """Async client of an :class:`ApiCore`, by (group, version, plural[, subresource])."""

    def __init__(self, core: ApiCore) -> None:
        self.core = core

    async def request(self, method: str, path: str, query: Mapping[str, str] | None = None,
                      body: Any = None, content_type: str = "application/json",
                      accept: str = "application/json") -> Any:
        """Any request by path; raises :class:`ApiError` on failure; returns the body."""
        resp = await self.core.handle(ApiRequest(method, path, dict(query or {}), body,
                                                 content_type, accept, local=True))
        _raise(resp)
        if resp.events is not None or resp.chunks is not None:
            return resp
        return _clone(resp.body) if isinstance(resp.body, dict | list) else resp.body

    async def get(self, group: str, version: str, plural: str, name: str,
                  namespace: str | None = None, subresource: str = "") -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "GET", resource_path(group, version, plural, namespace, name, subresource))
        return result

    async def list(self, group: str, version: str, plural: str, namespace: str | None = None,
                   label_selector: str | None = None, field_selector: str | None = None,
                   limit: int | None = None, continue_: str | None = None,
                   resource_version: str | None = None) -> dict[str, Any]:
        q = {k: v for k, v in (("labelSelector", label_selector),
                               ("fieldSelector", field_selector),
                               ("limit", str(limit) if limit else None),
                               ("continue", continue_),
                               ("resourceVersion", resource_version)) if v}
        result: dict[str, Any] = await self.request(
            "GET", resource_path(group, version, plural, namespace), q)
        return result

    async def create(self, group: str, version: str, plural: str, body: dict[str, Any],
                     namespace: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        q = {"dryRun": "All"} if dry_run else {}
        result: dict[str, Any] = await self.request(
            "POST", resource_path(group, version, plural, namespace), q, _clone(body))
        return result

    async def replace(self, group: str, version: str, plural: str, name: str,
                      body: dict[str, Any], namespace: str | None = None,
                      subresource: str = "") -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "PUT", resource_path(group, version, plural, namespace, name, subresource), {},
            _clone(body))
        return result

    async def patch(self, group: str, version: str, plural: str, name: str, patch: Any,
                    namespace: str | None = None, patch_type: str = "merge",
                    subresource: str = "", field_manager: str | None = None,
                    dry_run: bool = False) -> dict[str, Any]:
        """``patch_type``: merge, json, strategic or apply (needs ``field_manager``)."""
        q = {k: v for k, v in (("fieldManager", field_manager),
                               ("dryRun", "All" if dry_run else None)) if v}
        result: dict[str, Any] = await self.request(
            "PATCH", resource_path(group, version, plural, namespace, name, subresource), q,
            _clone(patch), PATCH_TYPES[patch_type])
        return result

    async def patch_status(self, group: str, version: str, plural: str, name: str,
                           patch: Any, namespace: str | None = None,
                           patch_type: str = "merge") -> dict[str, Any]:
        return await self.patch(group, version, plural, name, patch, namespace, patch_type,
                                "status")

    async def delete(self, group: str, version: str, plural: str, name: str,
                     namespace: str | None = None, propagation_policy: str | None = None,
                     grace_period_seconds: int | None = None,
                     preconditions: dict[str, str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            body["preconditions"] = preconditions
        result: dict[str, Any] = await self.request(
            "DELETE", resource_path(group, version, plural, namespace, name), {}, body)
        return result

    async def watch(self, group: str, version: str, plural: str, namespace: str | None = None,
                    resource_version: str | None = None, label_selector: str | None = None,
                    field_selector: str | None = None, timeout_seconds: float | None = None,
                    allow_bookmarks: bool = False) -> AsyncIterator[dict[str, Any]]:
        """Watch events ``{"type", "object"}`` from ``resource_version`` (None: current
        objects as ADDED first). A 410 arrives as an ERROR event, like over HTTP."""
        q = {k: v for k, v in (("watch", "true"), ("resourceVersion", resource_version),
                               ("labelSelector", label_selector),
                               ("fieldSelector", field_selector),
                               ("timeoutSeconds", str(timeout_seconds)
                                if timeout_seconds is not None else None),
                               ("allowWatchBookmarks", "true" if allow_bookmarks else None))
             if v}
        resp = await self.request("GET", resource_path(group, version, plural, namespace), q)
        assert isinstance(resp, ApiResponse) and resp.events is not None
        events = resp.events
        try:
            async for event in events:
                yield _clone(event)
        finally:
            await events.aclose()  # type: ignore[attr-defined]
