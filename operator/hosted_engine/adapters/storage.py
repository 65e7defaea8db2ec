"""StorageDomain I/O: PersistentVolumes, StorageClasses, claims, HostedEngines, the TCP probe,
and :class:`StorageDomainReconciler`, which reads the world, asks
:mod:`hosted_engine.logic.storage` what to do, and does it.

Synchronous (the ``kubernetes`` client is): call it from a thread, never from kopf's loop.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Final

from hosted_engine.adapters.kube import (
    Body,
    Conflict,
    Kube,
    KubeError,
    NotFound,
    Resource,
    hostedengine_resource,
)
from hosted_engine.clock import get_clock
from hosted_engine.logic import storage as logic
from hosted_engine.models.conditions import ConditionType, set_condition
from hosted_engine.models.storagedomain import StorageDomain

log = logging.getLogger(__name__)

PERSISTENT_VOLUMES: Final = Resource("", "v1", "persistentvolumes", namespaced=False)
PERSISTENT_VOLUME_CLAIMS: Final = Resource("", "v1", "persistentvolumeclaims", namespaced=True)
STORAGE_CLASSES: Final = Resource("storage.k8s.io", "v1", "storageclasses", namespaced=False)
SECRETS: Final = Resource("", "v1", "secrets", namespaced=True)
STORAGE_DOMAINS: Final = hostedengine_resource("storagedomains", namespaced=False)
HOSTED_ENGINES: Final = hostedengine_resource("hostedengines", namespaced=True)

#: Seconds a TCP connect to a storage endpoint may take before it counts as unreachable.
PROBE_TIMEOUT: Final = 2.0


# --------------------------------------------------------------------------------------------
# The probe


_PROBES = ThreadPoolExecutor(max_workers=8, thread_name_prefix="storage-probe")


def _shown(host: str, port: int) -> tuple[str, str]:
    address = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return address, (f"[{address}]:{port}" if ":" in address else f"{address}:{port}")


def probe_tcp(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> logic.EndpointResult:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    address, shown = _shown(host, port)
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return logic.EndpointResult(shown, True)
    except TimeoutError:
        return logic.EndpointResult(shown, False, f"no answer within {timeout:g}s")
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        return logic.EndpointResult(shown, False, reason)


def probe_all(
    endpoints: Sequence[tuple[str, int]], timeout: float = PROBE_TIMEOUT
) -> list[logic.EndpointResult]:
    """Probe every endpoint at once. Name resolution has no timeout of its own, so each probe
    runs in a worker and counts as unanswered when it has not finished in time."""
    futures = [(host, port, _PROBES.submit(probe_tcp, host, port, timeout))
               for host, port in endpoints]
    out = []
    for host, port, future in futures:
        try:
            out.append(future.result(timeout=timeout + 1.0))
        except FutureTimeout:
            shown = _shown(host, port)[1]
            out.append(logic.EndpointResult(shown, False, f"no answer within {timeout:g}s"))
    return out


# --------------------------------------------------------------------------------------------
# Reads and writes


class StorageApi:
    """The API calls of the StorageDomain reconciler."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def domain(self, name: str) -> Body | None:
        return self.kube.find(STORAGE_DOMAINS, name)

    def domains(self) -> list[Body]:
        return self.kube.list(STORAGE_DOMAINS)

    def volumes(self, domain_name: str) -> list[Body]:
        return self.kube.list(
            PERSISTENT_VOLUMES, label_selector=logic.domain_selector(domain_name)
        )

    def storage_class(self, name: str) -> Body | None:
        return self.kube.find(STORAGE_CLASSES, name)

    def claims(self) -> list[Body]:
        return self.kube.list(PERSISTENT_VOLUME_CLAIMS)

    def hosted_engines(self) -> list[Body]:
        try:
            return self.kube.list(HOSTED_ENGINES)
        except NotFound:  # the HostedEngine CRD is not installed
            return []

    def missing_secret_keys(self, wanted: Sequence[tuple[str, str, list[str]]]) -> list[str]:
        """What is missing of the CHAP Secrets (names and keys only, never values)."""
        out = []
        for namespace, name, keys in wanted:
            secret = self.kube.find(SECRETS, name, namespace)
            if secret is None:
                out.append(f"Secret {namespace}/{name} does not exist")
                continue
            present = set((secret.get("data") or {}).keys())  # stringData is write-only
            lacking = [k for k in keys if k not in present]
            if lacking:
                out.append(f"Secret {namespace}/{name} lacks {', '.join(lacking)}")
        return out

    def create_volume(self, body: Mapping[str, Any], owner: Mapping[str, Any]) -> None:
        self.kube.create_or_get(PERSISTENT_VOLUMES, body, owner=owner)

    def patch_volume(self, name: str, patch: Mapping[str, Any]) -> None:
        self.kube.patch(PERSISTENT_VOLUMES, name, patch)

    def delete_volume(self, name: str) -> None:
        self.kube.delete(PERSISTENT_VOLUMES, name)

    def create_storage_class(self, body: Mapping[str, Any], owner: Mapping[str, Any]) -> None:
        self.kube.create_or_get(STORAGE_CLASSES, body, owner=owner)

    def delete_storage_class(self, name: str) -> None:
        self.kube.delete(STORAGE_CLASSES, name)

    def patch_status(self, name: str, status: Mapping[str, Any]) -> None:
        self.kube.patch_status(STORAGE_DOMAINS, name, status)

    def event(self, domain: Mapping[str, Any], notice: logic.Notice) -> None:
        try:
            self.kube.post_event(
                domain,
                reason=notice.reason,
                message=notice.message,
                type="Warning" if notice.type == "Warning" else "Normal",
            )
        except (KubeError, ValueError) as exc:  # an Event is never worth failing a reconcile
            log.warning("event %s on storagedomain not posted: %s", notice.reason, exc)


# --------------------------------------------------------------------------------------------
# The reconciler


@dataclass
class Outcome:
    """What one reconcile saw: the names of the classes and volumes that belong to the domain
    (so that watch events on them can be routed back), and whether deletion may proceed."""

    storage_class: str | None = None
    volumes: list[str] = field(default_factory=list)
    released: bool = False
    state: str | None = None
    stale: bool = False
    """A write met a newer version of an object: reconcile again."""


def _status_dict(status: Any) -> dict[str, Any]:
    out: dict[str, Any] = status.to_dict()
    return out


def _status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A merge patch turning ``old`` into ``new`` (``None`` deletes a key), or None if equal."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    for key in old:
        if key not in new:
            patch[key] = None
    return patch or None


class StorageDomainReconciler:
    """One level-based pass over a domain: idempotent, safe to run at any time."""

    def __init__(self, api: StorageApi, probe_timeout: float = PROBE_TIMEOUT) -> None:
        self.api = api
        self.probe_timeout = probe_timeout
        self._stale = False

    def _observe(self, body: Mapping[str, Any], *, probe: bool) -> logic.Observed:
        name = str((body.get("metadata") or {}).get("name"))
        parsed = logic.parse(body)
        volumes = self.api.volumes(name)
        claims = self.api.claims()
        storage_class = None
        results = None
        missing: list[str] = []
        if isinstance(parsed, StorageDomain):
            storage_class = self.api.storage_class(logic.storage_class_name(parsed))
            if probe:
                endpoints = logic.probe_endpoints(parsed.spec)
                results = probe_all(endpoints, self.probe_timeout)
            missing = self.api.missing_secret_keys(logic.chap_secret_keys(parsed.spec))
        peers = [d for d in self.api.domains() if (d.get("metadata") or {}).get("name") != name]
        return logic.Observed(
            volumes=volumes,
            storage_class=storage_class,
            claims=claims,
            engines=self.api.hosted_engines(),
            peers=peers,
            probe=results,
            missing_secrets=missing,
        )

    def reconcile(self, name: str, *, probe: bool) -> Outcome:
        body = self.api.domain(name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return Outcome()
        observed = self._observe(body, probe=probe)
        now = get_clock().now()
        decision = logic.decide(body, observed, now)
        self._stale = False
        errors = self._apply(body, decision)
        status = decision.status
        if errors:
            status.conditions = set_condition(
                status.conditions, ConditionType.READY, False, logic.REASON_APPLY_FAILED,
                "; ".join(errors)[:1024],
                observed_generation=(body.get("metadata") or {}).get("generation"), now=now,
            )
            decision.events.extend(
                logic.transition_events(
                    logic.current_status(body).conditions, status.conditions
                )
            )
        new = _status_dict(status)
        patch = _status_patch(dict(body.get("status") or {}), new)
        if patch is not None:
            self.api.patch_status(name, patch)
        seen: set[tuple[str, str]] = set()
        for notice in decision.events:
            if (notice.reason, notice.message) in seen:
                continue
            seen.add((notice.reason, notice.message))
            self.api.event(body, notice)
        return Outcome(
            storage_class=status.storage_class_name,
            volumes=list(status.persistent_volumes),
            state=status.state.value,
            stale=self._stale,
        )

    def _apply(self, owner: Mapping[str, Any], decision: logic.Decision) -> list[str]:
        errors: list[str] = []
        name = str((owner.get("metadata") or {}).get("name"))

        def attempt(what: str, fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except Conflict:
                # the object changed since it was read (e.g. the PV controller bound the
                # volume): not an error, the next pass sees the new state
                self._stale = True
            except KubeError as exc:
                log.warning("storagedomain %s: %s failed: %s", name, what, exc)
                errors.append(f"{what}: {exc}")

        if decision.storage_class is not None:
            attempt("create StorageClass", self.api.create_storage_class,
                    decision.storage_class, owner)
        plan = decision.volumes
        for body in plan.create:
            attempt(f"create PV {body['metadata']['name']}", self.api.create_volume, body, owner)
        for pv in plan.delete:
            attempt(f"delete PV {pv}", self.api.delete_volume, pv)
        for pv in plan.reserve:
            attempt(f"reserve PV {pv}", self.api.patch_volume, pv,
                    logic.reserve_patch(name, plan.versions.get(pv)))
        for pv in plan.release:
            attempt(f"release PV {pv}", self.api.patch_volume, pv,
                    logic.release_patch(plan.versions.get(pv)))
        return errors

    def reconcile_deletion(self, name: str) -> Outcome:
        """Hold the deletion while claims use the domain; else delete its children."""
        body = self.api.domain(name)
        if body is None:
            return Outcome(released=True)
        observed = logic.Observed(
            volumes=self.api.volumes(name),
            claims=self.api.claims(),
            storage_class=self._class_of(body),
        )
        decision = logic.decide_deletion(body, observed, get_clock().now())
        if decision.status is not None:
            patch = _status_patch(dict(body.get("status") or {}), _status_dict(decision.status))
            if patch is not None:
                self.api.patch_status(name, patch)
        for pv in decision.delete_volumes:
            self.api.delete_volume(pv)
        if decision.delete_storage_class:
            self.api.delete_storage_class(decision.delete_storage_class)
        for notice in decision.events:
            self.api.event(body, notice)
        return Outcome(
            storage_class=decision.storage_class_name or None,
            volumes=[str((v.get("metadata") or {}).get("name")) for v in observed.volumes],
            released=decision.release,
        )

    def _class_of(self, body: Mapping[str, Any]) -> Body | None:
        parsed = logic.parse(body)
        if isinstance(parsed, StorageDomain):
            return self.api.storage_class(logic.storage_class_name(parsed))
        name = (body.get("status") or {}).get("storageClassName")
        return self.api.storage_class(str(name)) if name else None
