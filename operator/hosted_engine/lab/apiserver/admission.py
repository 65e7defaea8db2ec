"""Admission hooks and fault injection: the extension points simulators and tests use.

Admission (https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/):
mutating hooks run first and may change the object, then validating hooks; either may deny by
raising :class:`~hosted_engine.lab.apiserver.errors.ApiError` (for instance 429 to emulate
KubeVirt's eviction webhook).
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hosted_engine.lab.apiserver.errors import ApiError


@dataclass
class AdmissionRequest:
    """What an admission hook sees. ``object`` may be changed by mutating hooks."""

    operation: str  # CREATE, UPDATE, DELETE, CONNECT
    group: str
    version: str
    resource: str
    subresource: str
    namespace: str
    name: str
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    dry_run: bool = False
    options: dict[str, Any] = field(default_factory=dict)


AdmissionHook = Callable[[AdmissionRequest], "Awaitable[None] | None"]
HookKey = tuple[str, str, str, str]  # (group, resource, subresource, operation), "*" = any


class Admission:
    """Mutating and validating hooks per (group, resource, subresource, operation)."""

    def __init__(self) -> None:
        self.mutating: dict[HookKey, list[AdmissionHook]] = {}
        self.validating: dict[HookKey, list[AdmissionHook]] = {}

    def register(self, kind: str, group: str, resource: str, subresource: str, operation: str,
                 hook: AdmissionHook) -> Callable[[], None]:
        """Register a ``kind`` ("mutating" or "validating") hook; returns an unregister
        function. Use "*" for any resource or operation and "" for the main resource."""
        table = self.mutating if kind == "mutating" else self.validating
        key = (group, resource, subresource, operation.upper())
        table.setdefault(key, []).append(hook)

        def unregister() -> None:
            hooks = table.get(key, [])
            if hook in hooks:
                hooks.remove(hook)
        return unregister

    def _hooks(self, table: dict[HookKey, list[AdmissionHook]],
               req: AdmissionRequest) -> list[AdmissionHook]:
        if not table:
            return []
        out: list[AdmissionHook] = []
        for res in (req.resource, "*"):
            for op in (req.operation, "*"):
                out.extend(table.get((req.group, res, req.subresource, op), ()))
        return out

    def wants(self, group: str, resource: str, subresource: str, operation: str) -> bool:
        if not self.mutating and not self.validating:
            return False
        req = AdmissionRequest(operation, group, "", resource, subresource, "", "", None, None)
        return bool(self._hooks(self.mutating, req) or self._hooks(self.validating, req))

    async def run(self, req: AdmissionRequest) -> None:
        for table in (self.mutating, self.validating):
            for hook in self._hooks(table, req):
                result = hook(req)
                if inspect.isawaitable(result):
                    await result


@dataclass
class FaultRule:
    """One fault: which requests it matches and what it does.

    ``status`` answers with that HTTP code (a Status with ``reason``); ``latency`` delays the
    request (seconds); ``drop_watch`` ends matching watch streams at once. ``rate`` is the
    probability of firing per matching request, ``count`` the number of times it fires (None:
    unlimited). Matching fields left None match anything. ``local`` also applies the fault to
    the in-process LocalClient (off: faults target the operator's HTTP traffic).
    """

    verb: str | None = None  # get, list, watch, create, update, patch, delete, ...
    group: str | None = None
    resource: str | None = None
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None
    status: int | None = None
    reason: str | None = None
    message: str = "injected fault"
    latency: float = 0.0
    drop_watch: bool = False
    rate: float = 1.0
    count: int | None = None
    local: bool = False
    fired: int = 0

    def matches(self, verb: str, group: str, resource: str, subresource: str, namespace: str,
                name: str, local: bool) -> bool:
        if local and not self.local:
            return False
        if self.count is not None and self.fired >= self.count:
            return False
        return all(want is None or want == have for want, have in (
            (self.verb, verb), (self.group, group), (self.resource, resource),
            (self.subresource, subresource), (self.namespace, namespace), (self.name, name)))


class Faults:
    """The fault injector of one server."""

    def __init__(self, seed: int | None = None) -> None:
        self.rules: list[FaultRule] = []
        self._random = random.Random(seed)
        self.on_drop_watches: Callable[[FaultRule], None] | None = None

    def add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        if rule.drop_watch and self.on_drop_watches is not None:
            self.on_drop_watches(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    async def apply(self, verb: str, group: str, resource: str, subresource: str,
                    namespace: str, name: str, local: bool) -> list[FaultRule]:
        """Fire matching rules: sleep, raise, or return the watch-dropping rules that fired."""
        if not self.rules:
            return []
        fired: list[FaultRule] = []
        for rule in list(self.rules):
            if not rule.matches(verb, group, resource, subresource, namespace, name, local):
                continue
            if rule.rate < 1.0 and self._random.random() >= rule.rate:
                continue
            rule.fired += 1
            if rule.latency:
                await asyncio.sleep(rule.latency)
            if rule.status:
                headers = {"Retry-After": "1"} if rule.status == 429 else {}
                raise ApiError(rule.status, rule.message, rule.reason, headers=headers)
            if rule.drop_watch:
                fired.append(rule)
        return fired
