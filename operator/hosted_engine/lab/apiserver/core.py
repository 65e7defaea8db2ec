"""The request semantics of the API server, shared by the HTTP front end and the LocalClient.

:class:`ApiCore.handle` takes an :class:`ApiRequest` (method, path, query, parsed body) and
returns an :class:`ApiResponse` (status, body object, or a stream of watch events). Everything
the real kube-apiserver does that clients rely on lives here: metadata, optimistic concurrency,
patches, status subresources, CRD registration and schemas, selectors, paging, watch replay and
bookmarks, finalizers, garbage collection, namespace deletion, eviction and PDBs, admission
hooks, aggregated API groups, pod logs and fault injection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import copy
import json
import logging
import math
import random
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hosted_engine.clock import Clock, get_clock
from hosted_engine.lab.apiserver import discovery, patching, tables
from hosted_engine.lab.apiserver.admission import Admission, AdmissionRequest, FaultRule, Faults
from hosted_engine.lab.apiserver.errors import (
    ApiError,
    FieldError,
    already_exists,
    bad_request,
    conflict,
    gone,
    invalid,
    method_not_allowed,
    not_found,
)
from hosted_engine.lab.apiserver.resources import Registry, ResourceInfo, builtin_resources
from hosted_engine.lab.apiserver.selectors import (
    Selector,
    labels_match,
    selector_from_label_selector,
)
from hosted_engine.lab.apiserver.store import Bucket, Obj, Store, Watcher

log = logging.getLogger(__name__)

SEED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                  "characters, '-' or '.', and must start and end with an alphanumeric character "
                  "(e.g. 'example.com', regex used for validation is "
                  "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
              "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
              "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
_WARNINGS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "lab_apiserver_warnings", default=None)
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
TABLE_RE = re.compile(r"as=Table")


@dataclass
class ApiRequest:
    """A request, already parsed: ``body`` is the decoded JSON/YAML object (or None)."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    content_type: str = "application/json"
    accept: str = "application/json"
    local: bool = False
    user_agent: str = ""


@dataclass
class ApiResponse:
    """``body`` is a JSON-able object, ``bytes``/``str`` (raw), or None; ``events`` a watch
    stream of ``{"type", "object"}`` dicts; ``chunks`` a raw byte stream (followed logs)."""

    status: int
    body: Any = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    events: AsyncIterator[dict[str, Any]] | None = None
    chunks: AsyncIterator[bytes] | None = None


@dataclass
class Route:
    info: ResourceInfo
    namespace: str | None
    name: str | None
    subresource: str
    watch: bool = False


AggregatedHandler = Callable[[ApiRequest, list[str]], Awaitable[ApiResponse]]
LogProvider = Callable[[str, str, str, Mapping[str, str]], Any]


@dataclass
class ServerConfig:
    """Tunables of the server (defaults follow kube-apiserver where it has one)."""

    event_log_size: int = 5000  # watch events kept per resource for replay
    bookmark_interval: float = 30.0  # seconds between BOOKMARKs (kopf times out at 70 s)
    max_watch_queue: int = 100_000
    # Pods bound to a node wait for their kubelet to confirm a graceful delete (part 2 runs one).
    pod_graceful_deletion: bool = False
    require_namespace: bool = True
    # watches without timeoutSeconds end after a random time in [min, 2*min), like
    # kube-apiserver's --min-request-timeout (1800 s); clients then re-watch from their RV
    min_request_timeout: float = 1800.0


def _now_str(clock: Clock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


def _fold_string_data(secret: Obj) -> None:
    """A Secret's write-only ``stringData`` merged into ``data`` (base64), as kube-apiserver's
    v1 conversion does on every create, update and patch: a ``stringData`` key wins over the
    same ``data`` key, and ``stringData`` is never stored nor returned."""
    string = secret.pop("stringData", None)
    if string is None:
        return
    if not isinstance(string, dict) or not all(isinstance(v, str) for v in string.values()):
        raise bad_request("Secret in version \"v1\" cannot be handled as a Secret: json: "
                          "cannot unmarshal into Go struct field Secret.stringData of type "
                          "map[string]string")
    if not string:
        return
    data = dict(secret.get("data") or {})
    for key, value in string.items():
        data[key] = base64.b64encode(value.encode()).decode()
    secret["data"] = data


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def _strip(obj: Obj, *keys: str) -> Obj:
    return {k: v for k, v in obj.items() if k not in keys}


class ApiCore:
    """The API server's semantics (no HTTP here)."""

    def __init__(self, config: ServerConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or ServerConfig()
        self._clock = clock
        self.registry = Registry()
        self.store = Store(self.config.event_log_size, self.config.max_watch_queue)
        self.admission = Admission()
        self.faults = Faults()
        self.faults.on_drop_watches = self._drop_watches
        self.aggregated: dict[tuple[str, str], AggregatedHandler] = {}
        self.log_provider: LogProvider | None = None
        # server-side apply: last applied config per (key, ns, name, manager)
        # (key, namespace, name) -> (manager, subresource) -> applied configuration
        self._applied: dict[tuple[Any, ...], dict[tuple[str, str], Obj]] = {}
        self._gc_queue: asyncio.Queue[tuple[Any, ...]] | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self._pending_gc: list[tuple[Any, ...]] = []
        for info in builtin_resources():
            self.registry.add(info)
        self.crd_info = self.registry.get("apiextensions.k8s.io", "v1",
                                          "customresourcedefinitions")
        self.ns_info = self.registry.get("", "v1", "namespaces")
        for ns in SEED_NAMESPACES:
            self._seed_namespace(ns)

    # -- infrastructure ---------------------------------------------------------------------
    @property
    def clock(self) -> Clock:
        return self._clock or get_clock()

    def now(self) -> str:
        return _now_str(self.clock)

    def _seed_namespace(self, name: str) -> None:
        obj = {"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "uid": str(uuid.uuid4()),
                            "creationTimestamp": self.now(),
                            "labels": {"kubernetes.io/metadata.name": name}},
               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
        self.store.put(("", "namespaces"), obj, None)

    def start(self) -> None:
        """Start the background controllers (GC, namespace deletion) in the running loop."""
        if self._gc_task is None:
            self._gc_queue = asyncio.Queue()
            for item in self._pending_gc:
                self._gc_queue.put_nowait(item)
            self._pending_gc.clear()
            self._gc_task = asyncio.get_running_loop().create_task(self._gc_loop())

    async def stop(self) -> None:
        if self._gc_task is not None:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc_task
            self._gc_task = None
            self._gc_queue = None
        for bucket in self.store.buckets.values():
            for w in list(bucket.watchers):
                w.close()

    def _enqueue(self, *item: Any) -> None:
        if self._gc_queue is not None:
            self._gc_queue.put_nowait(item)
        else:
            self._pending_gc.append(item)

    def _drop_watches(self, rule: FaultRule) -> None:
        for (group, plural), bucket in self.store.buckets.items():
            if (rule.group is None or rule.group == group) and (
                    rule.resource is None or rule.resource == plural):
                for w in list(bucket.watchers):
                    if rule.namespace is None or w.namespace == rule.namespace:
                        w.close()

    # -- extension points -------------------------------------------------------------------
    def register_aggregated(self, group: str, version: str, resources: list[dict[str, Any]],
                            handler: AggregatedHandler) -> None:
        """Serve ``/apis/GROUP/VERSION/...`` with ``handler(request, path_parts)`` and list
        ``resources`` (APIResource dicts) in discovery, like an aggregated API server."""
        self.registry.aggregated[(group, version)] = list(resources)
        self.registry.add_group_version(group, version)
        self.aggregated[(group, version)] = handler

    def register_log_provider(self, provider: LogProvider) -> None:
        """``provider(namespace, pod, container, query)`` returns the log as ``str``/``bytes``
        or, when following, an async iterator of ``bytes``."""
        self.log_provider = provider

    # -- routing ----------------------------------------------------------------------------
    def route(self, parts: list[str]) -> tuple[str, str, list[str]]:
        """Split a resource path into (group, version, rest)."""
        if parts[0] == "api":
            return "", parts[1], parts[2:]
        return parts[1], parts[2], parts[3:]

    def resolve(self, group: str, version: str, rest: list[str]) -> Route:
        watch = False
        if rest and rest[0] == "watch":
            watch, rest = True, rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and not (
                len(rest) == 3 and rest[2] in ("status", "finalize") and group == ""):
            namespace, rest = rest[1], rest[2:]
        if not rest:
            raise not_found(group, "", "")
        info = self.registry.get(group, version, rest[0])
        if info is None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound",
                           {})
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if len(rest) > 3 or (sub and sub not in info.subresources):
            raise ApiError(404, "the server could not find the requested resource", "NotFound",
                           {})
        if info.namespaced and namespace is None and name is not None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound",
                           {})
        if not info.namespaced and namespace is not None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound",
                           {})
        return Route(info, namespace, name, sub, watch)

    async def handle(self, req: ApiRequest) -> ApiResponse:
        """Serve one request; errors become Status responses; warnings (unknown fields with
        fieldValidation=Warn) become ``Warning`` headers."""
        warnings: list[str] = []
        token = _WARNINGS.set(warnings)
        try:
            resp = await self._handle(req)
        except ApiError as exc:
            resp = ApiResponse(exc.code, exc.status(), headers=exc.headers)
        finally:
            _WARNINGS.reset(token)
        if warnings:
            resp.headers["Warning"] = ", ".join(
                '299 - "' + w.replace('"', '\\"') + '"' for w in warnings)
        return resp

    async def _handle(self, req: ApiRequest) -> ApiResponse:
        path = req.path.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        method = req.method.upper()
        if not parts:
            return ApiResponse(200, {"paths": ["/api", "/api/v1", "/apis", "/version",
                                               "/openapi/v2", "/openapi/v3", "/healthz"]})
        head = parts[0]
        if head in ("healthz", "readyz", "livez"):
            return ApiResponse(200, "ok", "text/plain")
        if head == "version":
            return ApiResponse(200, discovery.version())
        if head == "openapi":
            if len(parts) >= 2 and parts[1] == "v2" and "protobuf" in req.accept:
                # kubectl asks for v2 only as protobuf; the lab publishes JSON documents.
                raise ApiError(406, "only application/json is served", "NotAcceptable")
            return self._openapi(parts)
        if head == "api" and len(parts) == 1:
            return ApiResponse(200, discovery.core_versions())
        if head == "apis" and len(parts) == 1:
            return ApiResponse(200, discovery.group_list(self.registry))
        if head == "apis" and len(parts) == 2:
            if parts[1] not in self.registry.groups():
                raise ApiError(404, "the server could not find the requested resource",
                               "NotFound", {})
            return ApiResponse(200, discovery.group(self.registry, parts[1]))
        if head not in ("api", "apis"):
            raise ApiError(404, "the server could not find the requested resource", "NotFound",
                           {})
        group, version, rest = self.route(parts)
        if not self.registry.has_group_version(group, version):
            raise ApiError(404, "the server could not find the requested resource", "NotFound",
                           {})
        if not rest:
            return ApiResponse(200, discovery.resource_list(self.registry, group, version))
        handler = self.aggregated.get((group, version))
        if handler is not None and self._is_aggregated(group, version, rest):
            verb = {"GET": "get", "PUT": "update", "POST": "create", "PATCH": "patch",
                    "DELETE": "delete"}.get(method, method.lower())
            # [namespaces/NS/]RESOURCE[/NAME[/SUBRESOURCE]], as RBAC and audit logs see it
            ns, tail = (rest[1], rest[2:]) if len(rest) >= 3 and rest[0] == "namespaces" \
                else ("", rest)
            await self.faults.apply(verb, group, tail[0], tail[2] if len(tail) > 2 else "", ns,
                                    tail[1] if len(tail) > 1 else "", req.local, req.user_agent)
            return await handler(req, rest)
        route = self.resolve(group, version, rest)
        return await self._dispatch(req, method, route)

    def _is_aggregated(self, group: str, version: str, rest: list[str]) -> bool:
        names = {r.get("name", "").split("/")[0] for r in
                 self.registry.aggregated.get((group, version), [])}
        plural = rest[2] if len(rest) >= 3 and rest[0] == "namespaces" else rest[0]
        return plural in names

    def _openapi(self, parts: list[str]) -> ApiResponse:
        if len(parts) >= 2 and parts[1] == "v2":
            return ApiResponse(200, discovery.openapi_v2(self.registry))
        if len(parts) == 2 and parts[1] == "v3":
            return ApiResponse(200, discovery.openapi_v3_root(self.registry))
        if len(parts) >= 3 and parts[1] == "v3":
            rest = parts[2:]
            if rest[0] == "api" and len(rest) == 2:
                return ApiResponse(200, discovery.openapi_v3_gv(self.registry, "", rest[1]))
            if rest[0] == "apis" and len(rest) == 3 and \
                    self.registry.has_group_version(rest[1], rest[2]):
                return ApiResponse(200, discovery.openapi_v3_gv(self.registry, rest[1], rest[2]))
        raise ApiError(404, "the server could not find the requested resource", "NotFound", {})

    async def _dispatch(self, req: ApiRequest, method: str, route: Route) -> ApiResponse:
        info, q = route.info, req.query
        watch = route.watch or _flag(q, "watch")
        verb = self._verb(method, route, watch)
        dropped = await self.faults.apply(verb, info.group, info.plural, route.subresource,
                                          route.namespace or "", route.name or "", req.local,
                                          req.user_agent)
        drop_rate = max((rule.drop_per_event for rule in dropped), default=0.0)
        if dropped and watch and not drop_rate:
            return ApiResponse(200, events=_empty_events())
        ns = route.namespace
        if route.subresource == "log":
            return await self._pod_log(route, q)
        if route.subresource == "eviction":
            if method != "POST":
                raise method_not_allowed()
            return await self._evict(route, req.body or {}, q)
        if route.subresource == "scale":
            return await self._scale(req, method, route)
        if verb == "watch":
            events = await self.watch(info, ns, q, route.name)
            if drop_rate:
                events = self._drop_mid_stream(events, drop_rate)
            if TABLE_RE.search(req.accept):
                events = self._table_events(info, events, q.get("includeObject", "Metadata"))
            return ApiResponse(200, events=events, content_type="application/json")
        if verb == "list":
            return ApiResponse(200, self.list_objects(info, ns, q, req.accept))
        if verb == "get":
            obj = self.get(info, ns or "", route.name or "")
            if TABLE_RE.search(req.accept):
                return ApiResponse(200, tables.to_table(
                    info, [obj], self.clock.now(), obj["metadata"]["resourceVersion"],
                    q.get("includeObject", "Metadata")))
            return ApiResponse(200, obj)
        if verb == "create":
            if route.name is not None:
                raise method_not_allowed()
            obj = await self.create(info, ns, _body(req), q)
            return ApiResponse(201, obj)
        if verb == "update":
            obj = await self.update(info, ns or "", route.name or "", _body(req), q,
                                    route.subresource)
            return ApiResponse(200, obj)
        if verb == "patch":
            obj, created = await self.patch(info, ns or "", route.name or "", req.body,
                                            req.content_type, q, route.subresource)
            return ApiResponse(201 if created else 200, obj)
        if verb == "delete":
            code, body = await self.delete(info, ns or "", route.name or "",
                                           req.body if isinstance(req.body, dict) else {}, q)
            return ApiResponse(code, body)
        if verb == "deletecollection":
            return ApiResponse(200, await self.delete_collection(
                info, ns, req.body if isinstance(req.body, dict) else {}, q))
        raise method_not_allowed()

    @staticmethod
    def _verb(method: str, route: Route, watch: bool) -> str:
        if method == "GET":
            if watch:
                return "watch"
            return "get" if route.name else "list"
        if method == "POST":
            return "create"
        if method == "PUT":
            return "update"
        if method == "PATCH":
            return "patch"
        if method == "DELETE":
            return "delete" if route.name else "deletecollection"
        raise method_not_allowed()

    # -- reads ------------------------------------------------------------------------------
    def _present(self, info: ResourceInfo, obj: Obj) -> Obj:
        if obj.get("apiVersion") != info.api_version:
            obj = dict(obj)
            obj["apiVersion"] = info.api_version
        if info.plural == "poddisruptionbudgets":
            obj = dict(obj)
            obj["status"] = self._pdb_status(obj)
        return obj

    def get(self, info: ResourceInfo, namespace: str, name: str) -> Obj:
        obj = self.store.get(info.key, namespace if info.namespaced else "", name)
        if obj is None:
            raise not_found(info.group, info.plural, name)
        return self._present(info, obj)

    def _selector(self, info: ResourceInfo, q: Mapping[str, str]) -> Selector:
        allowed = info.field_labels + info.selectable_fields
        return Selector(q.get("labelSelector"), q.get("fieldSelector"), allowed)

    def list_objects(self, info: ResourceInfo, namespace: str | None, q: Mapping[str, str],
                     accept: str = "application/json") -> Obj:
        sel = self._selector(info, q)
        rv = str(self.store.rv)
        want_rv, match = q.get("resourceVersion", ""), q.get("resourceVersionMatch", "")
        if want_rv and want_rv != "0":
            if not want_rv.isdigit():
                raise bad_request(f"Invalid value: {want_rv!r}: must be a valid resourceVersion")
            if int(want_rv) > self.store.rv:
                raise ApiError(504, f"Too large resource version: {want_rv}, current: {rv}",
                               "Timeout", {"causes": [{"reason": "ResourceVersionTooLarge",
                                                       "message": "Too large resource version"}],
                                           "retryAfterSeconds": 1})
            if match == "Exact" and want_rv != rv:
                raise gone(f"too old resource version: {want_rv} ({rv})")
        bucket = self.store.buckets.get(info.key)
        single = sel.single_name()
        if bucket is None:
            objs: list[Obj] = []
        elif single is not None and namespace is not None:
            found = bucket.get(namespace, single)
            objs = [found] if found is not None and sel.matches(found) else []
        else:
            objs = [o for o in bucket.iter(namespace) if sel.empty or sel.matches(o)]
        objs.sort(key=lambda o: (_meta(o).get("namespace", ""), _meta(o)["name"]))
        cont = q.get("continue", "")
        if cont:
            try:
                token = json.loads(base64.urlsafe_b64decode(cont.encode()).decode())
                start, rv = tuple(token["start"]), token["rv"]
            except (ValueError, KeyError, TypeError) as exc:
                raise bad_request("invalid continue token") from exc
            objs = [o for o in objs
                    if (_meta(o).get("namespace", ""), _meta(o)["name"]) > start]
        limit = int(q.get("limit") or 0)
        meta: Obj = {"resourceVersion": rv}
        if limit and len(objs) > limit:
            last = objs[limit - 1]
            remaining = len(objs) - limit
            objs = objs[:limit]
            token = {"rv": rv, "start": [_meta(last).get("namespace", ""), _meta(last)["name"]]}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
            meta["remainingItemCount"] = remaining
        items = [self._present(info, o) for o in objs]
        if TABLE_RE.search(accept):
            return tables.to_table(info, items, self.clock.now(), rv,
                                   q.get("includeObject", "Metadata"),
                                   continue_token=meta.get("continue", ""))
        return {"kind": f"{info.kind}List", "apiVersion": info.api_version, "metadata": meta,
                "items": items}

    async def watch(self, info: ResourceInfo, namespace: str | None, q: Mapping[str, str],
                    name: str | None = None, accept: str = "") -> AsyncIterator[dict[str, Any]]:
        """Watch events as ``{"type", "object"}`` dicts."""
        sel = self._selector(info, q)
        if name is not None:
            sel.fields.append(("metadata.name", "=", name))
        bucket = self.store.bucket(info.key)
        watcher = Watcher(namespace, sel, self.config.max_watch_queue)
        rv_text = q.get("resourceVersion", "")
        initial: list[tuple[int, str, Obj]] = []
        send_initial = _flag(q, "sendInitialEvents")
        if rv_text in ("", "0") or send_initial:
            for obj in bucket.iter(namespace):
                if sel.empty or sel.matches(obj):
                    initial.append((int(_meta(obj)["resourceVersion"]), "ADDED", obj))
            initial.sort(key=lambda e: e[0])
        else:
            if not rv_text.isdigit():
                raise bad_request(f"invalid resourceVersion {rv_text!r}")
            since = int(rv_text)
            if since < bucket.compacted_rv:
                return self._error_stream(gone(f"too old resource version: {since} "
                                               f"({bucket.compacted_rv})"))
            for ev in bucket.log:
                if ev.rv > since:
                    if namespace is not None and _meta(ev.obj).get("namespace") != namespace:
                        continue
                    seen = watcher.translate(ev)
                    if seen is not None:
                        initial.append((ev.rv, seen[0], seen[1]))
        bucket.watchers.add(watcher)
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else random.uniform(
            self.config.min_request_timeout, 2 * self.config.min_request_timeout)
        bookmarks = _flag(q, "allowWatchBookmarks")
        return self._stream(info, bucket, watcher, initial, timeout, bookmarks, send_initial)

    async def _table_events(self, info: ResourceInfo, events: AsyncIterator[dict[str, Any]],
                            include: str) -> AsyncIterator[dict[str, Any]]:
        first = True
        try:
            async for ev in events:
                obj = ev["object"]
                if ev["type"] in ("ERROR", "BOOKMARK"):
                    yield ev
                    continue
                table = tables.to_table(info, [obj], self.clock.now(),
                                        _meta(obj).get("resourceVersion", ""), include,
                                        headers=first)
                first = False
                yield {"type": ev["type"], "object": table}
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def _drop_mid_stream(self, events: AsyncIterator[dict[str, Any]], rate: float
                               ) -> AsyncIterator[dict[str, Any]]:
        """Fault injection: end the stream before an event with probability ``rate`` (the
        event stays in the log: a client that resumes from its last resourceVersion gets it)."""
        try:
            async for ev in events:
                if ev["type"] != "BOOKMARK" and self.faults.chance(rate):
                    self.faults.dropped_streams += 1
                    return
                yield ev
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def _error_stream(self, err: ApiError) -> AsyncIterator[dict[str, Any]]:
        yield {"type": "ERROR", "object": err.status()}

    async def _stream(self, info: ResourceInfo, bucket: Bucket, watcher: Watcher,
                      initial: list[tuple[int, str, Obj]], timeout: float | None,
                      bookmarks: bool, send_initial: bool) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        try:
            for _, typ, obj in initial:
                yield {"type": typ, "object": self._present(info, obj)}
            if send_initial and bookmarks:
                yield self._bookmark(info, {"k8s.io/initial-events-end": "true"})
            while True:
                wait = self.config.bookmark_interval if bookmarks else None
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        return
                    wait = left if wait is None else min(wait, left)
                try:
                    # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that
                    # arrives together with an item, and the watch would never stop.
                    async with asyncio.timeout(wait):
                        item = await watcher.queue.get()
                except TimeoutError:
                    if bookmarks and (deadline is None or loop.time() < deadline):
                        yield self._bookmark(info)
                    continue
                if Watcher.is_close(item):
                    return
                _, typ, obj = item
                yield {"type": typ, "object": self._present(info, obj)}
        finally:
            bucket.watchers.discard(watcher)

    def _bookmark(self, info: ResourceInfo, annotations: dict[str, str] | None = None) -> Obj:
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        if annotations:
            meta["annotations"] = annotations
        return {"type": "BOOKMARK", "object": {"kind": info.kind,
                                               "apiVersion": info.api_version, "metadata": meta}}

    # -- writes -----------------------------------------------------------------------------
    def _check_namespace(self, info: ResourceInfo, url_ns: str | None, obj: Obj) -> str:
        meta = obj["metadata"]
        if not info.namespaced:
            meta.pop("namespace", None)
            return ""
        body_ns = meta.get("namespace")
        if url_ns is None:
            url_ns = body_ns or "default"
        if body_ns and body_ns != url_ns:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        meta["namespace"] = url_ns
        ns_obj = self.store.get(("", "namespaces"), "", url_ns)
        if ns_obj is None and self.config.require_namespace:
            raise not_found("", "namespaces", url_ns)
        if ns_obj is not None and _meta(ns_obj).get("deletionTimestamp"):
            raise ApiError(403, f"{info.plural} \"{meta.get('name') or ''}\" is forbidden: "
                                f"unable to create new content in namespace {url_ns} because it "
                                "is being terminated", "Forbidden",
                           {"name": meta.get("name", ""), "kind": info.plural,
                            "causes": [{"reason": "NamespaceTerminating",
                                        "message": f"namespace {url_ns} is being terminated",
                                        "field": "metadata.namespace"}]})
        return url_ns

    def _check_type(self, info: ResourceInfo, obj: Obj) -> None:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if api_version and api_version != info.api_version and not (
                not info.builtin and api_version.split("/")[0] == info.group):
            raise bad_request(f"the API version in the data ({api_version}) does not match the "
                              f"expected API version ({info.api_version})")
        if kind and kind != info.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind "
                              f"({info.kind})")
        obj["apiVersion"], obj["kind"] = info.api_version, info.kind
        if info.plural == "secrets" and not info.group:
            _fold_string_data(obj)

    def _validate_name(self, info: ResourceInfo, name: str, errors: list[FieldError]) -> None:
        if info.plural == "namespaces":
            if not _LABEL.match(name) or len(name) > 63:
                errors.append(FieldError("metadata.name", "Invalid value", _LABEL_MSG, name))
        elif not _SUBDOMAIN.match(name) or len(name) > 253:
            errors.append(FieldError("metadata.name", "Invalid value", _SUBDOMAIN_MSG, name))

    def _schema(self, info: ResourceInfo, obj: Obj, old: Obj | None, q: Mapping[str, str]
                ) -> Obj:
        """CRD structural schema: prune, default, validate; fieldValidation for unknowns."""
        errors: list[FieldError] = []
        name = _meta(obj).get("name", "")
        if info.schema is not None:
            obj, unknown = info.schema.prune_and_default(obj)
            mode = q.get("fieldValidation", "Warn")
            if unknown and mode == "Strict":
                raise bad_request("strict decoding error: " + ", ".join(
                    f'unknown field "{u}"' for u in unknown))
            if unknown and mode == "Warn":
                pending = _WARNINGS.get()
                if pending is not None:
                    pending.extend(f'unknown field "{u}"' for u in unknown)
            errors = info.schema.validate(obj, old)
        if errors:
            raise invalid(info.kind, info.group, info.plural, name, errors)
        return obj

    def _defaults_on_create(self, info: ResourceInfo, obj: Obj) -> None:
        if info.status_on_create == "drop" and info.has_status:
            obj.pop("status", None)
        if info.plural == "namespaces":
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            labels = obj["metadata"]["labels"] = dict(obj["metadata"].get("labels") or {})
            labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif info.status_on_create == "pod":
            spec = obj["spec"] = dict(obj.get("spec") or {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif info.plural == "secrets":
            obj.setdefault("type", "Opaque")
        elif info.plural == "jobs":
            spec = obj["spec"] = dict(obj.get("spec") or {})
            for key, value in (("parallelism", 1), ("completions", 1), ("backoffLimit", 6)):
                spec.setdefault(key, value)
        elif info.plural == "services":
            spec = obj["spec"] = dict(obj.get("spec") or {})
            spec.setdefault("type", "ClusterIP")
            if spec.get("clusterIP") in (None, ""):
                spec["clusterIP"] = f"10.96.{random.randint(0, 255)}.{random.randint(1, 254)}"
        elif info.plural == "customresourcedefinitions":
            obj["status"] = {}

    async def create(self, info: ResourceInfo, namespace: str | None, body: Obj,
                     q: Mapping[str, str] | None = None) -> Obj:
        q = q or {}
        if "create" not in info.verbs:
            raise method_not_allowed()
        obj = dict(body)
        self._check_type(info, obj)
        meta = obj["metadata"] = dict(obj.get("metadata") or {})
        ns = self._check_namespace(info, namespace, obj)
        errors: list[FieldError] = []
        name: str = meta.get("name") or ""
        bucket = self.store.bucket(info.key)
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise invalid(info.kind, info.group, info.plural, "", [FieldError(
                    "metadata.name", "Required value", "name or generateName is required")])
            for _ in range(20):
                name = prefix + "".join(random.choice(_NAME_CHARS) for _ in range(5))
                if bucket.get(ns, name) is None:
                    break
            meta["name"] = name
        self._validate_name(info, name, errors)
        if errors:
            raise invalid(info.kind, info.group, info.plural, name, errors)
        if bucket.get(ns, name) is not None:
            raise already_exists(info.group, info.plural, name)
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion",
                    "managedFields", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self.now()
        meta["generation"] = 1
        self._defaults_on_create(info, obj)
        obj = self._schema(info, obj, None, q)
        if info.plural == "customresourcedefinitions":
            self._validate_crd(obj)
        obj = await self._admit("CREATE", info, "", ns, name, obj, None, q)
        if bucket.get(ns, name) is not None:  # created by another request while admitting
            raise already_exists(info.group, info.plural, name)
        if _dry_run(q):
            return obj
        stored = self.store.put(info.key, obj, None)
        if info.plural == "customresourcedefinitions":
            stored = self._register_crd(stored)
        return self._present(info, stored)

    async def _admit(self, op: str, info: ResourceInfo, sub: str, ns: str, name: str,
                     obj: Obj | None, old: Obj | None, q: Mapping[str, str]) -> Obj:
        if not self.admission.wants(info.group, info.plural, sub, op):
            return obj or {}
        req = AdmissionRequest(op, info.group, info.version, info.plural, sub, ns, name,
                               copy.deepcopy(obj) if obj is not None else None,
                               old, _dry_run(q))
        await self.admission.run(req)
        return req.object if req.object is not None else (obj or {})

    def _existing(self, info: ResourceInfo, namespace: str, name: str) -> tuple[str, Obj]:
        """(storage namespace, stored object) or 404."""
        ns = namespace if info.namespaced else ""
        obj = self.store.get(info.key, ns, name)
        if obj is None:
            raise not_found(info.group, info.plural, name)
        return ns, obj

    async def update(self, info: ResourceInfo, namespace: str, name: str, body: Obj,
                     q: Mapping[str, str] | None = None, subresource: str = "",
                     _patched: bool = False) -> Obj:
        q = q or {}
        ns, old = self._existing(info, namespace, name)
        obj = dict(body)
        self._check_type(info, obj)
        meta = obj["metadata"] = dict(obj.get("metadata") or {})
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name "
                              f"on the URL ({name})")
        if info.namespaced and meta.get("namespace") and meta["namespace"] != ns:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        old_meta = _meta(old)
        rv = meta.get("resourceVersion")
        if rv and rv != old_meta.get("resourceVersion"):
            raise conflict(info.group, info.plural, name)
        if not rv and not _patched and not info.builtin:
            raise invalid(info.kind, info.group, info.plural, name, [FieldError(
                "metadata.resourceVersion", "Invalid value", "must be specified for an update",
                0)])
        if meta.get("uid") and meta["uid"] != old_meta.get("uid"):
            raise conflict(info.group, info.plural, name,
                           f"Precondition failed: UID in precondition: {meta['uid']}, UID in "
                           f"object meta: {old_meta.get('uid')}")
        if subresource == "status":
            new = dict(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
            obj = new
            meta = obj["metadata"] = dict(old_meta)
        elif subresource == "finalize" and info.plural == "namespaces":
            new = dict(old)
            new["spec"] = dict(old.get("spec") or {})
            new["spec"]["finalizers"] = list((obj.get("spec") or {}).get("finalizers") or [])
            obj, meta = new, dict(old_meta)
            obj["metadata"] = meta
        else:
            if info.has_status:
                if "status" in old:
                    obj["status"] = old["status"]
                else:
                    obj.pop("status", None)
            for key in ("uid", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generation", "selfLink"):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            meta["name"] = name
            if info.namespaced:
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            meta.pop("managedFields", None)
            if info.plural == "namespaces":
                obj["spec"] = old.get("spec") or {}
        errors: list[FieldError] = []
        if old_meta.get("deletionTimestamp"):
            added = [f for f in meta.get("finalizers") or []
                     if f not in (old_meta.get("finalizers") or [])]
            if added:
                errors.append(FieldError(
                    "metadata.finalizers", "Forbidden",
                    "no new finalizers can be added if the object is being deleted, found new "
                    "finalizers []string{" + ", ".join(json.dumps(f) for f in added) + "}"))
        if errors:
            raise invalid(info.kind, info.group, info.plural, name, errors)
        obj = self._schema(info, obj, old, q)
        if info.plural == "customresourcedefinitions" and subresource == "":
            self._validate_crd(obj)
        obj = await self._admit("UPDATE", info, subresource, ns, name, obj, old, q)
        if self.store.get(info.key, ns, name) is not old:  # written while an async hook ran
            raise conflict(info.group, info.plural, name)
        meta = obj["metadata"] = dict(obj["metadata"])
        meta["resourceVersion"] = old_meta.get("resourceVersion")
        if _strip(obj, "metadata", "status") != _strip(old, "metadata", "status") or (
                not info.has_status and obj.get("status") != old.get("status")):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if obj == old:
            return self._present(info, old)  # no-op: no new resourceVersion, no event
        if _dry_run(q):
            return self._present(info, obj)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            final = self.store.remove(info.key, obj)
            self._after_remove(info, obj)
            return self._present(info, final)
        stored = self.store.put(info.key, obj, old)
        if info.plural == "customresourcedefinitions":
            stored = self._register_crd(stored)
        if meta.get("deletionTimestamp"):
            self._enqueue("deleting", info.key, ns, name)
        return self._present(info, stored)

    async def patch(self, info: ResourceInfo, namespace: str, name: str, body: Any,
                    content_type: str, q: Mapping[str, str] | None = None,
                    subresource: str = "") -> tuple[Obj, bool]:
        """Apply a patch; returns (object, created) — server-side apply may create."""
        q = q or {}
        ctype = content_type.split(";")[0].strip()
        ns = namespace if info.namespaced else ""
        current = self.store.get(info.key, ns, name)
        if ctype == patching.APPLY_PATCH:
            return await self._apply(info, ns, name, body, q, subresource, current)
        if current is None:
            raise not_found(info.group, info.plural, name)
        current = self._present(info, current) if info.plural != "poddisruptionbudgets" else \
            current
        if ctype == patching.MERGE_PATCH or ctype == "application/json":
            if not isinstance(body, dict):
                raise bad_request("merge patch must be a JSON object")
            new = patching.merge_patch(current, body)
        elif ctype == patching.JSON_PATCH:
            new = patching.json_patch(current, body)
        elif ctype == patching.STRATEGIC_PATCH:
            if not info.builtin:
                raise ApiError(415, f"the body of the request was in an unknown format - "
                                    f"accepted media types include: {patching.JSON_PATCH}, "
                                    f"{patching.MERGE_PATCH}, {patching.APPLY_PATCH}",
                               "UnsupportedMediaType")
            if not isinstance(body, dict):
                raise bad_request("strategic merge patch must be a JSON object")
            new = patching.strategic_merge(current, body)
        else:
            raise ApiError(415, f"the body of the request was in an unknown format - accepted "
                                f"media types include: {', '.join(patching.PATCH_TYPES)}",
                           "UnsupportedMediaType")
        if not isinstance(new, dict):
            raise bad_request("patch result is not an object")
        return await self.update(info, ns, name, new, q, subresource, _patched=True), False

    async def _apply(self, info: ResourceInfo, ns: str, name: str, body: Any,
                     q: Mapping[str, str], subresource: str, current: Obj | None,
                     ) -> tuple[Obj, bool]:
        manager = q.get("fieldManager")
        if not manager:
            raise bad_request("PATCH, application/apply-patch+yaml requires fieldManager to be "
                              "set")
        if not isinstance(body, dict):
            raise bad_request("apply patch must be an object")
        key = (info.key, ns, name)
        mkey = (manager, subresource)
        list_keys = _list_map_keys(info.schema.root if info.schema else {})
        if current is None:
            if subresource:
                raise not_found(info.group, info.plural, name)
            obj = dict(body)
            obj.setdefault("metadata", {})
            obj["metadata"] = dict(obj["metadata"], name=name)
            created = await self.create(info, ns if info.namespaced else None, obj, q)
            if not _dry_run(q):
                self._applied.setdefault(key, {})[mkey] = copy.deepcopy(body)
            return created, True
        previous = self._applied.get(key, {}).get(mkey)
        applied = copy.deepcopy(body)
        applied_meta = dict(applied.get("metadata") or {})
        applied_meta.pop("resourceVersion", None)
        applied["metadata"] = applied_meta
        new = patching.apply_merge(current, applied, previous, list_keys)
        new["metadata"]["resourceVersion"] = _meta(current).get("resourceVersion")
        obj = await self.update(info, ns, name, new, q, subresource, _patched=True)
        if not _dry_run(q):
            self._applied.setdefault(key, {})[mkey] = copy.deepcopy(body)
        return obj, False

    # -- deletion ---------------------------------------------------------------------------
    async def delete(self, info: ResourceInfo, namespace: str, name: str, options: Obj,
                     q: Mapping[str, str] | None = None) -> tuple[int, Obj]:
        q = q or {}
        ns, old = self._existing(info, namespace, name)
        old_meta = _meta(old)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != old_meta.get("uid"):
            raise conflict(info.group, info.plural, name,
                           f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                           f"object meta: {old_meta.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != old_meta.get(
                "resourceVersion"):
            raise conflict(info.group, info.plural, name,
                           f"Precondition failed: ResourceVersion in precondition: "
                           f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                           f"{old_meta.get('resourceVersion')}")
        policy = options.get("propagationPolicy") or q.get("propagationPolicy")
        if options.get("orphanDependents") is True or _flag(q, "orphanDependents"):
            policy = "Orphan"
        await self._admit("DELETE", info, "", ns, name, None, old, q)
        finalizers = list(old_meta.get("finalizers") or [])
        if policy == "Foreground" and FOREGROUND not in finalizers and \
                self.store.dependents.get(old_meta.get("uid", "")):
            finalizers.append(FOREGROUND)
        if policy == "Orphan" and ORPHAN not in finalizers and \
                self.store.dependents.get(old_meta.get("uid", "")):
            finalizers.append(ORPHAN)
        grace = options.get("gracePeriodSeconds", q.get("gracePeriodSeconds"))
        graceful = (info.plural == "pods" and self.config.pod_graceful_deletion and
                    (old.get("spec") or {}).get("nodeName") and
                    (old.get("status") or {}).get("phase") not in ("Succeeded", "Failed") and
                    str(grace) != "0")
        if info.plural == "namespaces":
            finalizers_pending = True
        else:
            finalizers_pending = bool(finalizers) or bool(graceful)
        if _dry_run(q):
            return 200, self._present(info, old)
        # like the real handler: 202 only when the client set orphanDependents=false
        pending_code = 202 if options.get("orphanDependents") is False or str(
            q.get("orphanDependents", "")).lower() == "false" else 200
        if finalizers_pending:
            if old_meta.get("deletionTimestamp") and finalizers == list(
                    old_meta.get("finalizers") or []) and not graceful:
                return pending_code, self._present(info, old)
            new = dict(old)
            meta = new["metadata"] = dict(old_meta)
            meta["finalizers"] = finalizers
            if not finalizers:
                meta.pop("finalizers")
            if not old_meta.get("deletionTimestamp"):
                seconds = 0
                if graceful:
                    seconds = int(grace if grace is not None else
                                  (old.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
                meta["deletionTimestamp"] = _now_str_at(self.clock, seconds)
                meta["deletionGracePeriodSeconds"] = seconds
                meta["generation"] = int(old_meta.get("generation", 1)) + 1
            if info.plural == "namespaces":
                new["status"] = dict(old.get("status") or {}, phase="Terminating")
            stored = self.store.put(info.key, new, old)
            self._enqueue("deleting", info.key, ns, name)
            return pending_code, self._present(info, stored)
        final = self.store.remove(info.key, old)
        self._after_remove(info, old, policy)
        if info.return_deleted_object:
            return 200, self._present(info, final)
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                     "details": {"name": name, "group": info.group, "kind": info.plural,
                                 "uid": old_meta.get("uid")}}

    def _after_remove(self, info: ResourceInfo, obj: Obj, policy: str | None = None) -> None:
        meta = _meta(obj)
        uid = meta.get("uid", "")
        if info.plural == "customresourcedefinitions":
            self._unregister_crd(obj)
        if policy != "Orphan" and uid in self.store.dependents:
            self._enqueue("owner-gone", uid)
        for ref in meta.get("ownerReferences") or []:
            if isinstance(ref, dict) and ref.get("uid") in self.store.uids:
                self._enqueue("dependent-gone", ref["uid"])
        ns = meta.get("namespace")
        if ns:
            ns_obj = self.store.get(("", "namespaces"), "", ns)
            if ns_obj is not None and _meta(ns_obj).get("deletionTimestamp"):
                self._enqueue("deleting", ("", "namespaces"), "", ns)
        self._applied.pop((info.key, meta.get("namespace") or "", meta.get("name")), None)

    async def delete_collection(self, info: ResourceInfo, namespace: str | None, options: Obj,
                                q: Mapping[str, str]) -> Obj:
        if "deletecollection" not in info.verbs:
            raise method_not_allowed()
        listed = self.list_objects(info, namespace, {k: v for k, v in q.items()
                                             if k in ("labelSelector", "fieldSelector")})
        items = []
        for obj in listed["items"]:
            m = _meta(obj)
            try:
                _, body = await self.delete(info, m.get("namespace", ""), m["name"], options, q)
                items.append(body if body.get("kind") != "Status" else obj)
            except ApiError as exc:
                if exc.code != 404:
                    raise
        return {"kind": f"{info.kind}List", "apiVersion": info.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)}, "items": items}

    # -- garbage collector and namespace controller -----------------------------------------
    async def _gc_loop(self) -> None:
        assert self._gc_queue is not None
        while True:
            item = await self._gc_queue.get()
            try:
                await self._gc_step(item)
            except Exception:
                log.exception("garbage collector failed on %r", item)

    def _info_for_key(self, key: tuple[str, str]) -> ResourceInfo | None:
        for info in self.registry.versions_of(*key):
            return info
        return None

    async def _gc_step(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "owner-gone":
            uid = item[1]
            for key, ns, name in list(self.store.dependents.get(uid, ())):
                dep = self.store.get(key, ns, name)
                info = self._info_for_key(key)
                if dep is None or info is None:
                    continue
                owners = [r.get("uid") for r in _meta(dep).get("ownerReferences") or []]
                if any(o in self.store.uids for o in owners):
                    continue
                if _meta(dep).get("deletionTimestamp"):
                    continue
                with contextlib.suppress(ApiError):
                    await self.delete(info, ns, name, {"propagationPolicy": "Background"})
        elif kind == "dependent-gone":
            owner = self.store.uids.get(item[1])
            if owner is not None:
                self._enqueue("deleting", *owner)
        elif kind == "deleting":
            _, key, ns, name = item
            obj = self.store.get(key, ns, name)
            info = self._info_for_key(key)
            if obj is None or info is None or not _meta(obj).get("deletionTimestamp"):
                return
            if key == ("", "namespaces"):
                await self._finalize_namespace(obj)
                return
            finalizers = _meta(obj).get("finalizers") or []
            if ORPHAN in finalizers:
                await self._orphan_dependents(info, obj)
            elif FOREGROUND in finalizers:
                await self._delete_dependents_first(info, obj)

    def _dependents(self, uid: str) -> list[tuple[ResourceInfo, str, str, Obj]]:
        out = []
        for dkey, dns, dname in list(self.store.dependents.get(uid, ())):
            dep = self.store.get(dkey, dns, dname)
            dinfo = self._info_for_key(dkey)
            if dep is not None and dinfo is not None:
                out.append((dinfo, dns, dname, dep))
        return out

    async def _orphan_dependents(self, info: ResourceInfo, obj: Obj) -> None:
        """Orphan propagation: drop the owner's reference from every dependent, then the
        ``orphan`` finalizer."""
        uid = _meta(obj).get("uid", "")
        for dinfo, _, _, dep in self._dependents(uid):
            new = dict(dep)
            meta = new["metadata"] = dict(_meta(dep))
            meta["ownerReferences"] = [r for r in meta.get("ownerReferences") or []
                                       if r.get("uid") != uid]
            if not meta["ownerReferences"]:
                del meta["ownerReferences"]
            self.store.put(dinfo.key, new, dep)
        await self._drop_finalizer(info, obj, ORPHAN)

    async def _delete_dependents_first(self, info: ResourceInfo, obj: Obj) -> None:
        """Foreground propagation: delete the dependents; drop ``foregroundDeletion`` once no
        dependent with ``blockOwnerDeletion`` remains."""
        uid = _meta(obj).get("uid", "")
        blocking = False
        for dinfo, dns, dname, dep in self._dependents(uid):
            if not _meta(dep).get("deletionTimestamp"):
                with contextlib.suppress(ApiError):
                    await self.delete(dinfo, dns, dname, {"propagationPolicy": "Foreground"})
            if self.store.get(dinfo.key, dns, dname) is not None and any(
                    r.get("uid") == uid and r.get("blockOwnerDeletion")
                    for r in _meta(dep).get("ownerReferences") or []):
                blocking = True
        if not blocking:
            meta = _meta(obj)
            fresh = self.store.get(info.key, meta.get("namespace") or "", meta["name"])
            if fresh is not None:
                await self._drop_finalizer(info, fresh, FOREGROUND)

    async def _drop_finalizer(self, info: ResourceInfo, obj: Obj, finalizer: str) -> None:
        meta = _meta(obj)
        new = dict(obj)
        new["metadata"] = dict(meta)
        new["metadata"]["finalizers"] = [f for f in meta.get("finalizers") or []
                                         if f != finalizer]
        await self.update(info, meta.get("namespace", ""), meta["name"], new, {},
                          _patched=True)

    async def _finalize_namespace(self, ns_obj: Obj) -> None:
        ns = _meta(ns_obj)["name"]
        remaining = False
        for info in self.registry.all():
            if not info.namespaced:
                continue
            bucket = self.store.buckets.get(info.key)
            if bucket is None or ns not in bucket.objects:
                continue
            for obj in list(bucket.iter(ns)):
                remaining = True
                if not _meta(obj).get("deletionTimestamp"):
                    with contextlib.suppress(ApiError):
                        await self.delete(info, ns, _meta(obj)["name"],
                                          {"propagationPolicy": "Background"})
        if remaining:
            # re-check: objects without finalizers are gone now
            still = any(ns in (self.store.buckets.get(i.key) or Bucket(1)).objects
                        for i in self.registry.all() if i.namespaced)
            if still:
                return
        fresh = self.store.get(("", "namespaces"), "", ns)
        if fresh is None:
            return
        new = dict(fresh)
        new["spec"] = dict(fresh.get("spec") or {}, finalizers=[])
        if _meta(fresh).get("finalizers"):
            self.store.put(("", "namespaces"), new, fresh)
        else:
            assert self.ns_info is not None
            self.store.remove(("", "namespaces"), fresh)
            self._after_remove(self.ns_info, fresh)

    # -- CRDs -------------------------------------------------------------------------------
    def _validate_crd(self, obj: Obj) -> None:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        errors: list[FieldError] = []
        name = _meta(obj).get("name", "")
        expected = f"{names.get('plural', '')}.{spec.get('group', '')}"
        if name != expected:
            errors.append(FieldError("metadata.name", "Invalid value",
                                     "must be spec.names.plural+\".\"+spec.group", name))
        for fld in ("plural", "kind"):
            if not names.get(fld):
                errors.append(FieldError(f"spec.names.{fld}", "Required value"))
        if not spec.get("group"):
            errors.append(FieldError("spec.group", "Required value"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            errors.append(FieldError("spec.scope", "Unsupported value",
                                     'supported values: "Cluster", "Namespaced"',
                                     spec.get("scope")))
        versions = spec.get("versions") or []
        if not versions:
            errors.append(FieldError("spec.versions", "Invalid value",
                                     "must have exactly one version marked as storage version",
                                     []))
        elif sum(1 for v in versions if v.get("storage")) != 1:
            errors.append(FieldError("spec.versions", "Invalid value",
                                     "must have exactly one version marked as storage version",
                                     [v.get("name") for v in versions]))
        for i, ver in enumerate(versions):
            if not (ver.get("schema") or {}).get("openAPIV3Schema"):
                errors.append(FieldError(f"spec.versions[{i}].schema.openAPIV3Schema",
                                         "Required value", "schemas are required"))
        existing = self.registry.by_kind(spec.get("group", ""), names.get("kind", ""))
        if existing is not None and existing.builtin:
            errors.append(FieldError("spec.names.kind", "Invalid value", "built-in kind",
                                     names.get("kind")))
        if errors:
            raise invalid("CustomResourceDefinition", "apiextensions.k8s.io",
                          "customresourcedefinitions", name, errors)

    def _register_crd(self, crd: Obj) -> Obj:
        """Serve the CRD's versions and mark it Established (status written by the server)."""
        spec = crd.get("spec") or {}
        group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
        for old in self.registry.versions_of(group, plural):
            self.registry.remove(old.group, old.version, old.plural)
        for info in discovery.crd_resources(crd):
            self.registry.add(info)
        now = self.now()
        status = {
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
            "acceptedNames": spec.get("names") or {},
            "storedVersions": [v.get("name") for v in spec.get("versions") or []
                               if v.get("storage")],
        }
        old_status = crd.get("status") or {}
        if old_status.get("acceptedNames") == status["acceptedNames"] and \
                old_status.get("storedVersions") == status["storedVersions"] and \
                old_status.get("conditions"):
            return crd
        new = dict(crd)
        new["status"] = status
        return self.store.put(("apiextensions.k8s.io", "customresourcedefinitions"), new, crd)

    def _unregister_crd(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
        for info in self.registry.versions_of(group, plural):
            self.registry.remove(info.group, info.version, info.plural)
        self.store.drop_bucket((group, plural))
        for k in [k for k in self._applied if k[0] == (group, plural)]:
            del self._applied[k]  # CRD deletion is rare: a scan is fine

    # -- subresources -----------------------------------------------------------------------
    async def _pod_log(self, route: Route, q: Mapping[str, str]) -> ApiResponse:
        pod = self.get(route.info, route.namespace or "", route.name or "")
        containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        container = q.get("container") or (containers[0] if len(containers) == 1 else "")
        if not container and len(containers) > 1:
            raise bad_request(f"a container name must be specified for pod {route.name}, "
                              f"choose one of: [{' '.join(containers)}]")
        if containers and container not in containers:
            raise bad_request(f"container {container} is not valid for pod {route.name}")
        if self.log_provider is None:
            return ApiResponse(200, b"", "text/plain")
        result = self.log_provider(route.namespace or "", route.name or "", container, q)
        if asyncio.iscoroutine(result):
            result = await result
        if isinstance(result, str):
            result = result.encode()
        if isinstance(result, bytes):
            if q.get("tailLines"):
                n = int(q["tailLines"])
                lines = result.splitlines(keepends=True)
                result = b"".join(lines[-n:]) if n else b""
            return ApiResponse(200, result, "text/plain")
        return ApiResponse(200, None, "text/plain", chunks=result)

    async def _scale(self, req: ApiRequest, method: str, route: Route) -> ApiResponse:
        info = route.info
        ns, name = route.namespace or "", route.name or ""
        obj = self.get(info, ns, name)
        spec_path, status_path, selector_path = ".spec.replicas", ".status.replicas", None
        if info.scale:
            spec_path = info.scale.get("specReplicasPath", spec_path)
            status_path = info.scale.get("statusReplicasPath", status_path)
            selector_path = info.scale.get("labelSelectorPath")

        def scale_of(o: Obj) -> Obj:
            found = tables.jsonpath(o, spec_path)
            status_found = tables.jsonpath(o, status_path)
            status: Obj = {"replicas": int(status_found[0]) if status_found else 0}
            if selector_path:
                sel = tables.jsonpath(o, selector_path)
                if sel:
                    status["selector"] = sel[0]
            elif info.plural == "deployments":
                labels = ((o.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
                status["selector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            m = _meta(o)
            return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                    "metadata": {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                   "creationTimestamp") if k in m},
                    "spec": {"replicas": int(found[0]) if found else 0}, "status": status}
        if method == "GET":
            return ApiResponse(200, scale_of(obj))
        current = scale_of(obj)
        if method == "PUT":
            new_scale = _body(req)
        elif method == "PATCH":
            ctype = req.content_type.split(";")[0]
            if ctype == patching.JSON_PATCH:
                new_scale = patching.json_patch(current, req.body)
            else:
                new_scale = patching.merge_patch(current, req.body or {})
        else:
            raise method_not_allowed()
        rv = _meta(new_scale).get("resourceVersion")
        if method == "PUT" and rv and rv != _meta(obj).get("resourceVersion"):
            raise conflict(info.group, info.plural, name)
        replicas = (new_scale.get("spec") or {}).get("replicas", 0)
        parts = [p for p in spec_path.split(".") if p]
        new = copy.deepcopy(obj)
        cur = new
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = replicas
        updated = await self.update(info, ns, name, new, req.query, "", _patched=True)
        return ApiResponse(200, scale_of(updated))

    # -- eviction and disruption budgets ----------------------------------------------------
    @staticmethod
    def _pod_healthy(pod: Obj) -> bool:
        if _meta(pod).get("deletionTimestamp"):
            return False
        status = pod.get("status") or {}
        if status.get("phase") != "Running":
            return False
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in status.get("conditions") or [] if isinstance(c, dict))

    def _pdbs_for(self, pod: Obj) -> list[Obj]:
        """The PodDisruptionBudgets of the pod's namespace whose selector matches it."""
        bucket = self.store.buckets.get(("policy", "poddisruptionbudgets"))
        if bucket is None:
            return []
        labels = _meta(pod).get("labels")
        out = []
        for pdb in bucket.iter(_meta(pod).get("namespace", "")):
            reqs = selector_from_label_selector((pdb.get("spec") or {}).get("selector"))
            if reqs is not None and labels_match(reqs, labels):
                out.append(pdb)
        return out

    def _pdb_pods(self, pdb: Obj) -> list[Obj]:
        reqs = selector_from_label_selector((pdb.get("spec") or {}).get("selector"))
        if reqs is None:
            return []
        ns = _meta(pdb).get("namespace", "")
        bucket = self.store.buckets.get(("", "pods"))
        if bucket is None:
            return []
        return [p for p in bucket.iter(ns) if labels_match(reqs, _meta(p).get("labels"))]

    def _pdb_status(self, pdb: Obj) -> Obj:
        pods = self._pdb_pods(pdb)
        expected = len(pods)
        healthy = sum(1 for p in pods if self._pod_healthy(p))
        spec = pdb.get("spec") or {}

        def resolve(value: Any) -> int:
            if isinstance(value, str) and value.endswith("%"):
                return math.ceil(expected * int(value[:-1]) / 100)
            return int(value)
        if "minAvailable" in spec:
            desired = resolve(spec["minAvailable"])
        elif "maxUnavailable" in spec:
            desired = max(0, expected - resolve(spec["maxUnavailable"]))
        else:
            desired = expected
        allowed = max(0, healthy - desired)
        old = pdb.get("status") or {}
        return {"observedGeneration": _meta(pdb).get("generation", 1),
                "disruptionsAllowed": allowed, "currentHealthy": healthy,
                "desiredHealthy": desired, "expectedPods": expected,
                "disruptedPods": old.get("disruptedPods") or {},
                "conditions": [{"type": "DisruptionAllowed",
                                "status": "True" if allowed > 0 else "False",
                                "reason": "SufficientPods" if allowed > 0 else
                                "InsufficientPods", "message": "",
                                "observedGeneration": _meta(pdb).get("generation", 1),
                                "lastTransitionTime": self.now()}]}

    async def _evict(self, route: Route, body: Obj, q: Mapping[str, str]) -> ApiResponse:
        info = route.info
        ns, name = route.namespace or "", route.name or ""
        pod = self.get(info, ns, name)
        if body.get("metadata", {}).get("name") not in (None, name):
            raise bad_request("name in URL does not match name in Eviction object")
        phase = (pod.get("status") or {}).get("phase")
        if phase not in ("Succeeded", "Failed", "Pending") and not _meta(pod).get(
                "deletionTimestamp"):
            pdbs = self._pdbs_for(pod)
            if len(pdbs) > 1:
                raise ApiError(500, "This pod has more than one PodDisruptionBudget, which the "
                                    "eviction subresource does not support.", "InternalError")
            for pdb in pdbs:
                status = self._pdb_status(pdb)
                if status["disruptionsAllowed"] <= 0 and self._pod_healthy(pod):
                    raise ApiError(
                        429, "Cannot evict pod as it would violate the pod's disruption budget.",
                        "TooManyRequests",
                        {"causes": [{"reason": "DisruptionBudget",
                                     "message": f"The disruption budget {_meta(pdb)['name']} "
                                                f"needs {status['desiredHealthy']} healthy pods "
                                                f"and has {status['currentHealthy']} currently"}]},
                        headers={"Retry-After": "10"})
        await self._admit("CREATE", info, "eviction", ns, name, body, pod, q)
        options = dict(body.get("deleteOptions") or {})
        if _dry_run(q):
            return ApiResponse(201, _success())
        try:
            await self.delete(info, ns, name, options, q)
        except ApiError as exc:
            if exc.code != 404:
                raise
        return ApiResponse(201, _success())


def _success() -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "code": 201}


def _now_str_at(clock: Clock, seconds: float) -> str:
    t: datetime = clock.now() + timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _flag(q: Mapping[str, str], name: str) -> bool:
    """A boolean query parameter (clients send true, True or 1)."""
    return str(q.get(name, "")).lower() in ("true", "1")


def _dry_run(q: Mapping[str, str]) -> bool:
    return bool(q.get("dryRun"))


def _body(req: ApiRequest) -> Obj:
    if not isinstance(req.body, dict):
        raise bad_request("the request body must be a JSON object")
    return req.body


def _list_map_keys(schema: Obj, path: str = "") -> dict[str, str]:
    """Field name -> first list-map key, from a CRD schema (for server-side apply)."""
    out: dict[str, str] = {}
    for key, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, dict):
            continue
        if sub.get("x-kubernetes-list-type") == "map" and sub.get("x-kubernetes-list-map-keys"):
            out[key] = sub["x-kubernetes-list-map-keys"][0]
        out.update(_list_map_keys(sub, key))
        items = sub.get("items")
        if isinstance(items, dict):
            out.update(_list_map_keys(items, key))
    return out


async def _empty_events() -> AsyncIterator[dict[str, Any]]:
    return
    yield  # pragma: no cover
