"""StorageDomain handlers: NFS, iSCSI, FC, Gluster or CSI storage for VM disks.

- One daemon per domain runs the level-based reconcile
  (:class:`~hosted_engine.adapters.storage.StorageDomainReconciler`) whenever something it
  depends on changes, and the TCP reachability probe every ``spec.probeInterval`` (the only
  time-based part; a domain with no network endpoint, FC or CSI, has no timer at all). It
  learns about changes from watches, never by polling: kopf event handlers
  on StorageDomains (peers' rules), PersistentVolumes of domains, claims, StorageClasses and
  HostedEngines wake the daemons of the domains concerned through :class:`Triggers`.
- Deletion: the finalizer holds the domain while claims use it (``DeletionBlocked`` lists the
  users, the state is ``Locked``); it is re-checked when a claim or volume of the domain
  changes, then the domain's volumes and class are deleted and the finalizer released.
- Bad input never raises out of a handler: it becomes a condition and a Warning Event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping
from typing import Any, Final

import kopf
from pydantic import ValidationError

from hosted_engine import API_GROUP, API_VERSION
from hosted_engine.adapters import metrics
from hosted_engine.adapters.storage import Outcome, StorageApi, StorageDomainReconciler
from hosted_engine.handlers.startup import kube_client
from hosted_engine.logic.storage import (
    DOMAIN_ANNOTATION,
    EngineRef,
    engine_ref,
    probe_endpoints,
)
from hosted_engine.models.base import parse_duration
from hosted_engine.models.storagedomain import STORAGE_DOMAIN_LABEL, StorageDomainSpec

log = logging.getLogger(__name__)

PLURAL: Final = "storagedomains"
TRIGGERS_KEY: Final = "storagedomain-triggers"
RECONCILER_KEY: Final = "storagedomain-reconciler"
#: Default probe interval when the spec's cannot be read.
DEFAULT_PROBE_INTERVAL: Final = 60.0
#: Wait after an unexpected failure of a reconcile before the next attempt (seconds).
ERROR_BACKOFF: Final = 5.0
#: Safety net while a deletion is held: re-check even without an event (seconds).
HELD_RECHECK: Final = 300.0


class Triggers:
    """Wake-up flags of the per-domain daemons, and the routes from a watched object (a class,
    a volume, an engine) to the domains it concerns. Used only from kopf's event loop."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._generations: dict[str, tuple[Any, bool]] = {}
        self.classes: dict[str, str] = {}
        self.volumes: dict[str, str] = {}
        self.engines: dict[str, str] = {}
        #: what the domains read of each engine (a change in anything else wakes none)
        self.engine_refs: dict[str, EngineRef] = {}

    def event(self, name: str) -> asyncio.Event:
        return self._events.setdefault(name, asyncio.Event())

    def fire(self, name: str | None) -> None:
        if name:
            self.event(name).set()

    def fire_all(self) -> None:
        for event in self._events.values():
            event.set()

    def forget(self, name: str) -> None:
        self._events.pop(name, None)
        self._generations.pop(name, None)
        self.classes = {k: v for k, v in self.classes.items() if v != name}
        self.volumes = {k: v for k, v in self.volumes.items() if v != name}

    def learn(self, name: str, outcome: Outcome) -> bool:
        """Record the routes of ``outcome``; True when one is new (an event about it may have
        arrived before the route was known: the caller reconciles once more)."""
        new = False
        if outcome.storage_class and self.classes.get(outcome.storage_class) != name:
            self.classes[outcome.storage_class] = name
            new = True
        for volume in outcome.volumes:
            if self.volumes.get(volume) != name:
                self.volumes[volume] = name
                new = True
        return new

    def spec_changed(self, name: str, generation: Any, deleting: bool) -> bool:
        """Whether a domain's spec or deletion changed since last seen (records it)."""
        key = (generation, deleting)
        changed = self._generations.get(name) != key
        self._generations[name] = key
        return changed

    async def wait(self, name: str, timeout: float) -> bool:
        """Wait until fired or ``timeout`` passes; True when fired. Clears the flag."""
        event = self.event(name)
        with contextlib.suppress(TimeoutError):
            # not wait_for: see lab core; math.inf: no timer, only the trigger
            async with asyncio.timeout(None if math.isinf(timeout) else max(timeout, 0.0)):
                await event.wait()
        fired = event.is_set()
        event.clear()
        return fired


def triggers_of(memo: kopf.Memo) -> Triggers:
    triggers = memo.get(TRIGGERS_KEY)
    if not isinstance(triggers, Triggers):
        raise RuntimeError("storagedomain startup handler did not run")
    return triggers


def reconciler_of(memo: kopf.Memo) -> StorageDomainReconciler:
    reconciler = memo.get(RECONCILER_KEY)
    if not isinstance(reconciler, StorageDomainReconciler):
        raise RuntimeError("storagedomain startup handler did not run")
    return reconciler


@kopf.on.startup(id="storagedomain-startup")
def startup(memo: kopf.Memo, **_: Any) -> None:
    memo[TRIGGERS_KEY] = Triggers()
    memo[RECONCILER_KEY] = StorageDomainReconciler(StorageApi(kube_client(memo)))


def probe_interval(spec: Mapping[str, Any]) -> float:
    try:
        return max(parse_duration(str(spec.get("probeInterval") or "60s")).total_seconds(), 1.0)
    except ValueError:
        return DEFAULT_PROBE_INTERVAL


def next_probe_in(spec: Mapping[str, Any]) -> float | None:
    """Seconds until the next reachability probe; None when the domain has no network endpoint
    (FC, CSI): its daemon then runs only when something it depends on changes, never on a
    timer (each run LISTs claims, volumes, peers and engines)."""
    try:
        parsed = StorageDomainSpec.model_validate(dict(spec))
    except ValidationError:
        return probe_interval(spec)  # reported by the reconcile; keep looking
    return probe_interval(spec) if probe_endpoints(parsed) else None


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, id="storagedomain", cancellation_timeout=10.0)
async def run_domain(
    name: str, spec: kopf.Spec, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Reconcile on every trigger; probe the endpoints every ``spec.probeInterval``."""
    triggers = triggers_of(memo)
    reconciler = reconciler_of(memo)
    loop = asyncio.get_running_loop()
    next_probe = loop.time()
    while not stopped:
        due = loop.time() >= next_probe
        try:
            outcome = await asyncio.to_thread(reconciler.reconcile, name, probe=due)
        except Exception:  # the API went away, a bug: log, back off, try again
            log.exception("storagedomain %s: reconcile failed", name)
            metrics.record_reconcile_error("StorageDomain")
            await triggers.wait(name, ERROR_BACKOFF)
            continue
        if triggers.learn(name, outcome) or outcome.stale:
            triggers.fire(name)
        if due:
            delay = next_probe_in(spec)
            next_probe = loop.time() + delay if delay is not None else math.inf
        await triggers.wait(name, next_probe - loop.time())


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, id="storagedomain-delete")
async def delete_domain(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Hold the finalizer while claims use the domain, then delete what it materialised."""
    triggers = triggers_of(memo)
    reconciler = reconciler_of(memo)
    while True:
        try:
            outcome = await asyncio.to_thread(reconciler.reconcile_deletion, name)
        except Exception as exc:
            raise kopf.TemporaryError(f"deletion check failed: {exc}", delay=ERROR_BACKOFF) from exc
        if outcome.released:
            triggers.forget(name)
            triggers.fire_all()  # the peers' rules (sole data domain, shared target) change
            return
        if triggers.learn(name, outcome):
            continue  # an event may have come before its route: look again at once
        await triggers.wait(name, HELD_RECHECK)


# --- watches that wake the daemons ---------------------------------------------------------


@kopf.on.event(API_GROUP, API_VERSION, PLURAL, id="storagedomain-peers")
async def domain_event(name: str, meta: kopf.Meta, type: str, memo: kopf.Memo, **_: Any) -> None:
    """A domain's spec or deletion changed: every domain re-checks (shared iSCSI targets and
    the sole-data-domain warning depend on the others)."""
    triggers = triggers_of(memo)
    deleting = bool(meta.get("deletionTimestamp")) or type == "DELETED"
    if triggers.spec_changed(name, meta.get("generation"), deleting):
        triggers.fire_all()


@kopf.on.event("", "v1", "persistentvolumes", id="storagedomain-volumes",
               labels={STORAGE_DOMAIN_LABEL: kopf.PRESENT})
async def volume_event(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    triggers_of(memo).fire((meta.get("annotations") or {}).get(DOMAIN_ANNOTATION))


@kopf.on.event("", "v1", "persistentvolumeclaims", id="storagedomain-claims")
async def claim_event(spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
    triggers = triggers_of(memo)
    triggers.fire(triggers.classes.get(str(spec.get("storageClassName") or "")))
    triggers.fire(triggers.volumes.get(str(spec.get("volumeName") or "")))


@kopf.on.event("storage.k8s.io", "v1", "storageclasses", id="storagedomain-classes")
async def class_event(name: str, memo: kopf.Memo, **_: Any) -> None:
    triggers = triggers_of(memo)
    triggers.fire(triggers.classes.get(name))


@kopf.on.event(API_GROUP, API_VERSION, "hostedengines", id="storagedomain-engines")
async def engine_event(
    name: str, namespace: str | None, spec: kopf.Spec, body: kopf.Body, type: str | None,
    memo: kopf.Memo, **_: Any
) -> None:
    """An engine started, stopped or changed maintenance: its domain (and the one it left)
    re-checks a pending maintenance request. Its other status writes (health, heartbeats,
    every few seconds) wake no domain: a domain's reconcile LISTs claims, volumes and peers."""
    triggers = triggers_of(memo)
    key = f"{namespace}/{name}"
    ref = engine_ref(body)
    if type == "DELETED":
        triggers.engine_refs.pop(key, None)
    elif triggers.engine_refs.get(key) == ref:
        return
    else:
        triggers.engine_refs[key] = ref
    vm = spec.get("vm")
    disk = vm.get("disk") if isinstance(vm, Mapping) else None
    domain = str(disk.get("storageDomain") or "") if isinstance(disk, Mapping) else ""
    previous = triggers.engines.get(key)
    if domain:
        triggers.engines[key] = domain
    triggers.fire(domain)
    if previous != domain:
        triggers.fire(previous)
