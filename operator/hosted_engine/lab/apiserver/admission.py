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
    request (seconds); ``drop_watch`` ends matching watch streams at once, or, with
    ``drop_per_event`` > 0, serves them but ends each before an event with that probability
    (a connection lost mid-stream: the client resumes from the last resourceVersion it saw
    and the event is replayed; such a rule closes no open stream when added). ``rate`` is the
    probability of firing per matching request, ``count`` the number of times it fires
    (None: unlimited). Matching fields left None match anything; ``user_agent`` matches a
    prefix of the User-Agent header (to aim at one client, e.g. the operator). ``local`` also
    applies the fault to the in-process LocalClient (off: faults target HTTP traffic).
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
    drop_per_event: float = 0.0
    user_agent: str | None = None
    rate: float = 1.0
    count: int | None = None
    local: bool = False
    fired: int = 0

    def matches(self, verb: str, group: str, resource: str, subresource: str, namespace: str,
                name: str, local: bool, user_agent: str = "") -> bool:
        if local and not self.local:
            return False
        if self.count is not None and self.fired >= self.count:
            return False
        if self.user_agent is not None and not user_agent.startswith(self.user_agent):
            return False
        return all(want is None or want == have for want, have in (
            (self.verb, verb), (self.group, group), (self.resource, resource),
            (self.subresource, subresource), (self.namespace, namespace), (self.name, name)))


@dataclass(frozen=True)
class RequestRecord:
    """One resource request as the server saw it (what an audit log records)."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    user_agent: str
    local: bool


RequestObserver = Callable[[RequestRecord], None]
#: Observers of every resource request of every server in this process (request logs that
#: span several labs, e.g. the RBAC check of the reliability suite). Keep them cheap.
GLOBAL_OBSERVERS: list[RequestObserver] = []

#: What real API servers answer for each injected status (reason, message).
_FAULT_TEXT: dict[int, tuple[str, str]] = {
    409: ("Conflict", "Operation cannot be fulfilled: the object has been modified; please "
                      "apply your changes to the latest version and try again"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected fault"),
}
#: Verbs that answer 409 Conflict on a real server (a precondition or a conflict; a create's
#: 409 is AlreadyExists, which only an existing object causes: not injected).
_WRITE_VERBS = ("update", "patch", "delete")


def random_faults(rate: float, *, user_agent: str | None = None,
                  latency: float = 0.2) -> list[FaultRule]:
    """Rules that disturb ``rate`` of the matching requests (split evenly between 409 on
    updates, patches and deletes, 429 with Retry-After, 500 and slow responses of ``latency``
    s) and end watch streams before ``rate`` of their events (dropped connections, resumed
    by the client).
    Add them with :meth:`Faults.add` after :meth:`Faults.reseed` for a reproducible run, and
    before the client starts watching."""
    share = rate / 4
    rules = [FaultRule(verb=verb, status=409, user_agent=user_agent, rate=share)
             for verb in _WRITE_VERBS]
    rules += [FaultRule(status=code, user_agent=user_agent, rate=share) for code in (429, 500)]
    rules.append(FaultRule(latency=latency, user_agent=user_agent, rate=share))
    rules.append(FaultRule(verb="watch", drop_watch=True, drop_per_event=rate,
                           user_agent=user_agent))
    for rule in rules:
        if rule.status:
            rule.reason, rule.message = _FAULT_TEXT[rule.status]
    return rules


class Faults:
    """The fault injector of one server, and its request log hook (:attr:`observers`)."""

    def __init__(self, seed: int | None = None) -> None:
        self.rules: list[FaultRule] = []
        self._random = random.Random(seed)
        self.on_drop_watches: Callable[[FaultRule], None] | None = None
        self.observers: list[RequestObserver] = []
        self.dropped_streams = 0  # watch streams ended mid-stream by ``drop_per_event``

    def reseed(self, seed: int | None) -> None:
        """Restart the random sequence that decides which requests a rule hits."""
        self._random = random.Random(seed)

    def chance(self, probability: float) -> bool:
        """True with ``probability`` (from the seeded sequence)."""
        return self._random.random() < probability

    def add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        if rule.drop_watch and not rule.drop_per_event and self.on_drop_watches is not None:
            self.on_drop_watches(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    async def apply(self, verb: str, group: str, resource: str, subresource: str,
                    namespace: str, name: str, local: bool,
                    user_agent: str = "") -> list[FaultRule]:
        """Tell the observers, then fire matching rules: sleep, raise, or return the
        watch-dropping rules that fired."""
        if self.observers or GLOBAL_OBSERVERS:
            record = RequestRecord(verb, group, resource, subresource, namespace, name,
                                   user_agent, local)
            for observer in (*self.observers, *GLOBAL_OBSERVERS):
                observer(record)
        if not self.rules:
            return []
        fired: list[FaultRule] = []
        for rule in list(self.rules):
            if not rule.matches(verb, group, resource, subresource, namespace, name, local,
                                user_agent):
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
