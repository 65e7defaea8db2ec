"""Prometheus metrics of the operator (prometheus-client), served over HTTP on a port.

The handlers call the ``record_*`` helpers; nothing here talks to the Kubernetes API. The
metrics live in their own :data:`REGISTRY` (not the client library's global one), served by
:func:`serve` (``hosted-engine run --metrics-port``, or ``HE_METRICS_PORT`` in the environment;
the operator's startup handler calls :func:`serve_from_env`).

Metric families (prefix ``hosted_engine_``):

======================================== ======= =============================================
name                                     type    labels
======================================== ======= =============================================
engine_state                             gauge   namespace, name, state (1 for the current)
engine_up                                gauge   namespace, name (VM up and health good)
engine_health                            gauge   namespace, name, health (1 for the current)
engine_global_maintenance                gauge   namespace, name
engine_global_maintenance_since_seconds  gauge   namespace, name (unix time; 0 when off)
engine_spares_required / _available      gauge   namespace, name
host_score                               gauge   namespace, name, host
failovers_total                          counter namespace, name
fence_actions_total                      counter host, result
maintenance_duration_seconds             histo   host (drain start to Maintenance)
migrations_total                         counter host, result (succeeded, failed)
backup_runs_total                        counter namespace, name, result
backup_duration_seconds                  histo   namespace, name
backup_size_bytes                        gauge   namespace, name (last successful run)
backup_last_success_timestamp_seconds    gauge   namespace, name
reconcile_errors_total                   counter kind
watch_lag_seconds                        histo   kind (Lease: event handled minus renewTime)
======================================== ======= =============================================

Counters that mirror a count the operator keeps in status (failovers) are advanced by the
difference to the last value seen, so a status written twice never counts twice; a restarted
operator starts them from the status it reads (Prometheus' ``increase`` handles the reset).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

#: Environment variable with the port to serve metrics on (unset or 0: off).
PORT_ENV: Final = "HE_METRICS_PORT"
#: Environment variable with the address to bind (default all interfaces).
ADDRESS_ENV: Final = "HE_METRICS_ADDRESS"
PREFIX: Final = "hosted_engine"

ENGINE_STATES: Final = (
    "Pending",
    "EngineDown",
    "EngineStart",
    "EngineStarting",
    "EngineUp",
    "EngineUpBadHealth",
    "EngineStop",
    "EngineForceStop",
    "EngineUnexpectedlyDown",
    "EngineMaybeAway",
    "EngineMigrating",
    "GlobalMaintenance",
    "LocalMaintenance",
    "HostLost",
    "Fencing",
    "Degraded",
    "Upgrading",
)
HEALTH_VALUES: Final = ("good", "bad", "unknown")

REGISTRY: Final = CollectorRegistry(auto_describe=True)

ENGINE_STATE = Gauge(
    f"{PREFIX}_engine_state",
    "HA state of the HostedEngine: 1 for the current state, 0 for the others.",
    ["namespace", "name", "state"],
    registry=REGISTRY,
)
ENGINE_UP = Gauge(
    f"{PREFIX}_engine_up",
    "1 when the engine VM is up and its liveliness page is healthy.",
    ["namespace", "name"],
    registry=REGISTRY,
)
ENGINE_HEALTH = Gauge(
    f"{PREFIX}_engine_health",
    "Liveliness of the engine: 1 for the current value (good, bad, unknown).",
    ["namespace", "name", "health"],
    registry=REGISTRY,
)
GLOBAL_MAINTENANCE = Gauge(
    f"{PREFIX}_engine_global_maintenance",
    "1 while the HostedEngine is in global maintenance.",
    ["namespace", "name"],
    registry=REGISTRY,
)
GLOBAL_MAINTENANCE_SINCE = Gauge(
    f"{PREFIX}_engine_global_maintenance_since_seconds",
    "Unix time global maintenance began (0 when not in global maintenance).",
    ["namespace", "name"],
    registry=REGISTRY,
)
SPARES_REQUIRED = Gauge(
    f"{PREFIX}_engine_spares_required",
    "Hosts that must keep room for the engine (spec.sparesCount).",
    ["namespace", "name"],
    registry=REGISTRY,
)
SPARES_AVAILABLE = Gauge(
    f"{PREFIX}_engine_spares_available",
    "Other allowed hosts that could take the engine now.",
    ["namespace", "name"],
    registry=REGISTRY,
)
HOST_SCORE = Gauge(
    f"{PREFIX}_host_score",
    "Score of a host for the engine (0..3400, oVirt's scale).",
    ["namespace", "name", "host"],
    registry=REGISTRY,
)
FAILOVERS = Counter(
    f"{PREFIX}_failovers",
    "Engine failovers to another host after a host was lost.",
    ["namespace", "name"],
    registry=REGISTRY,
)
FENCE_ACTIONS = Counter(
    f"{PREFIX}_fence_actions",
    "Fence actions on hosts by result (Confirmed, Failed, Refused).",
    ["host", "result"],
    registry=REGISTRY,
)
MAINTENANCE_DURATION = Histogram(
    f"{PREFIX}_maintenance_duration_seconds",
    "Time from the start of a host's drain until it reached Maintenance.",
    ["host"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
    registry=REGISTRY,
)
MIGRATIONS = Counter(
    f"{PREFIX}_migrations",
    "Live migrations of a host's drain by result (succeeded, failed).",
    ["host", "result"],
    registry=REGISTRY,
)
BACKUP_RUNS = Counter(
    f"{PREFIX}_backup_runs",
    "Finished backup runs by result (Succeeded, Failed, Partial).",
    ["namespace", "name", "result"],
    registry=REGISTRY,
)
BACKUP_DURATION = Histogram(
    f"{PREFIX}_backup_duration_seconds",
    "Duration of finished backup runs.",
    ["namespace", "name"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400),
    registry=REGISTRY,
)
BACKUP_SIZE = Gauge(
    f"{PREFIX}_backup_size_bytes",
    "Size of the last successful backup run.",
    ["namespace", "name"],
    registry=REGISTRY,
)
BACKUP_LAST_SUCCESS = Gauge(
    f"{PREFIX}_backup_last_success_timestamp_seconds",
    "Unix time of the last successful backup run.",
    ["namespace", "name"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    f"{PREFIX}_reconcile_errors",
    "Reconciles that failed with an error, by kind.",
    ["kind"],
    registry=REGISTRY,
)

#: Buckets of the watch lag: 10 ms (a prompt watch) to 5 min (an operator minutes behind).
WATCH_LAG_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
                            60.0, 120.0, 300.0)
WATCH_LAG = Histogram(
    f"{PREFIX}_watch_lag_seconds",
    "Time from an object's change (a Lease's spec.renewTime) until the operator handled its "
    "watch event (MODIFIED events only, not the initial listing; clamped at 0).",
    ["kind"],
    buckets=WATCH_LAG_BUCKETS,
    registry=REGISTRY,
)

_lock = threading.Lock()
_failovers_seen: dict[tuple[str, str], int] = {}
_hosts_seen: dict[tuple[str, str], set[str]] = {}
_backup_runs_seen: dict[tuple[str, str], set[str]] = {}
_fences_seen: dict[str, str] = {}


def _time(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------------------------
# HostedEngine


def record_engine_status(namespace: str, name: str, status: Mapping[str, Any]) -> None:
    """Everything the HostedEngine's status (wire format, camelCase) tells: state, health,
    scores per host, global maintenance, spares, failovers."""
    state = str(status.get("state") or "Pending")
    engine = status.get("engine") or {}
    health = str(engine.get("health") or "unknown")
    for s in ENGINE_STATES if state in ENGINE_STATES else (*ENGINE_STATES, state):
        ENGINE_STATE.labels(namespace, name, s).set(1 if s == state else 0)
    for h in HEALTH_VALUES:
        ENGINE_HEALTH.labels(namespace, name, h).set(1 if h == health else 0)
    ENGINE_UP.labels(namespace, name).set(
        1 if engine.get("vm") == "up" and health == "good" else 0
    )
    maintenance = status.get("maintenance") or {}
    in_global = maintenance.get("mode") == "global"
    GLOBAL_MAINTENANCE.labels(namespace, name).set(1 if in_global else 0)
    since = _time(maintenance.get("since")) if in_global else None
    GLOBAL_MAINTENANCE_SINCE.labels(namespace, name).set(since or 0)
    spares = status.get("spares") or {}
    SPARES_REQUIRED.labels(namespace, name).set(int(spares.get("required") or 0))
    SPARES_AVAILABLE.labels(namespace, name).set(int(spares.get("available") or 0))
    key = (namespace, name)
    rows = [r for r in status.get("hosts") or [] if r.get("host")]
    with _lock:
        hosts = {str(r["host"]) for r in rows}
        for gone in _hosts_seen.get(key, set()) - hosts:
            HOST_SCORE.remove(namespace, name, gone)
        _hosts_seen[key] = hosts
        for r in rows:
            HOST_SCORE.labels(namespace, name, str(r["host"])).set(int(r.get("score") or 0))
        failovers = int(status.get("failovers") or 0)
        previous = _failovers_seen.get(key)
        counter = FAILOVERS.labels(namespace, name)
        if previous is not None and failovers > previous:
            counter.inc(failovers - previous)
        _failovers_seen[key] = max(failovers, previous or 0)


def forget_engine(namespace: str, name: str) -> None:
    """Drop a deleted HostedEngine's series."""
    key = (namespace, name)
    with _lock:
        for host in _hosts_seen.pop(key, set()):
            HOST_SCORE.remove(namespace, name, host)
        _failovers_seen.pop(key, None)
    for s in ENGINE_STATES:
        _remove(ENGINE_STATE, namespace, name, s)
    for h in HEALTH_VALUES:
        _remove(ENGINE_HEALTH, namespace, name, h)
    for gauge in (ENGINE_UP, GLOBAL_MAINTENANCE, GLOBAL_MAINTENANCE_SINCE, SPARES_REQUIRED,
                  SPARES_AVAILABLE):
        _remove(gauge, namespace, name)
    _remove(FAILOVERS, namespace, name)


def _remove(metric: Gauge | Counter, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


# --------------------------------------------------------------------------------------------
# Hosts


def record_fence(host: str, request_id: str | None, result: str) -> None:
    """A fence request reached a final result (counted once per request id)."""
    with _lock:
        if request_id is not None and _fences_seen.get(host) == f"{request_id}/{result}":
            return
        if request_id is not None:
            _fences_seen[host] = f"{request_id}/{result}"
    FENCE_ACTIONS.labels(host, result).inc()


def record_maintenance_done(host: str, seconds: float) -> None:
    """A host reached Maintenance ``seconds`` after its drain started."""
    MAINTENANCE_DURATION.labels(host).observe(max(0.0, seconds))


def record_migrations(host: str, *, succeeded: int = 0, failed: int = 0) -> None:
    if succeeded:
        MIGRATIONS.labels(host, "succeeded").inc(succeeded)
    if failed:
        MIGRATIONS.labels(host, "failed").inc(failed)


_FENCE_RESULTS: Final = frozenset({"Confirmed", "Failed", "Refused"})


def record_host_status(host: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """What a Host's status write (wire format, before and after) tells: a fence that reached a
    result, migrations of its drain that finished, maintenance reached (with its duration)."""
    fencing = new.get("fencing") or {}
    phase = fencing.get("phase")
    old_fencing = old.get("fencing") or {}
    request_id = fencing.get("requestId")
    if phase in _FENCE_RESULTS and (
        old_fencing.get("phase") != phase or old_fencing.get("requestId") != request_id
    ):
        record_fence(host, request_id, str(phase))
    drain = new.get("drain") or {}
    old_drain = old.get("drain") or {}
    same_drain = old_drain.get("startedAt") == drain.get("startedAt")
    for key, result in (("moved", "succeeded"), ("failed", "failed")):
        before = len(old_drain.get(key) or []) if same_drain else 0
        after = len(drain.get(key) or [])
        if after > before:
            record_migrations(host, **{result: after - before})
    if new.get("state") == "Maintenance" and old.get("state") != "Maintenance":
        started = _time(drain.get("startedAt"))
        finished = _time(drain.get("finishedAt")) or _time(new.get("stateSince"))
        if started is not None and finished is not None:
            record_maintenance_done(host, finished - started)


# --------------------------------------------------------------------------------------------
# Backups


def record_backup_runs(namespace: str, name: str, runs: Iterable[Mapping[str, Any]]) -> None:
    """Finished runs of a Backup (its ``status.runs``, wire format); each run id counts once.

    The first call for a Backup only remembers the runs already there (a restarted operator
    does not count history again) but still sets the last-success gauges."""
    key = (namespace, name)
    finished = [r for r in runs if r.get("id") and r.get("phase") not in (None, "Running")]
    with _lock:
        first = key not in _backup_runs_seen
        seen = _backup_runs_seen.setdefault(key, set())
        new = [r for r in finished if str(r["id"]) not in seen]
        seen.update(str(r["id"]) for r in finished)
    for run in new if not first else []:
        result = str(run.get("phase"))
        if result == "Deleted":  # retention removed an old run: not a result
            continue
        BACKUP_RUNS.labels(namespace, name, result).inc()
        if run.get("durationSeconds") is not None:
            BACKUP_DURATION.labels(namespace, name).observe(float(run["durationSeconds"]))
    good = [r for r in finished if r.get("phase") == "Succeeded"]
    if good:
        newest = max(good, key=lambda r: _time(r.get("finishedAt")) or 0.0)
        if newest.get("sizeBytes") is not None:
            BACKUP_SIZE.labels(namespace, name).set(int(newest["sizeBytes"]))
        finished_at = _time(newest.get("finishedAt"))
        if finished_at is not None:
            BACKUP_LAST_SUCCESS.labels(namespace, name).set(finished_at)


# --------------------------------------------------------------------------------------------
# Errors


def record_reconcile_error(kind: str) -> None:
    RECONCILE_ERRORS.labels(kind).inc()


# --------------------------------------------------------------------------------------------
# Watch lag


def record_watch_lag(kind: str, event_type: str | None, changed_at: datetime | None,
                     now: datetime) -> float | None:
    """One watch event of ``kind`` handled at ``now``, for an object changed at ``changed_at``
    (a Lease's ``spec.renewTime``): observe ``now - changed_at`` (clamped at 0: the node's clock
    may be ahead of the operator's) and return it. Only ``MODIFIED`` events count: the watch's
    initial listing (kopf's type ``None``) hands over objects changed up to a period before
    the operator started (not a lag); ADDED (a new node) and DELETED are not counted."""
    if event_type != "MODIFIED" or changed_at is None:
        return None
    lag = max(0.0, (now - changed_at).total_seconds())
    WATCH_LAG.labels(kind).observe(lag)
    return lag


# --------------------------------------------------------------------------------------------
# Serving


class MetricsServer:
    """The HTTP endpoint (``/metrics``) in a daemon thread."""

    def __init__(self, port: int, address: str = "0.0.0.0") -> None:
        self._server, self._thread = start_http_server(port, address, registry=REGISTRY)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


_server: MetricsServer | None = None


def serve(port: int, address: str = "0.0.0.0") -> MetricsServer:
    """Serve the metrics on ``address:port`` (port 0: any free port); once per process."""
    global _server
    with _lock:
        if _server is None:
            _server = MetricsServer(port, address)
            log.info("metrics served on %s:%d/metrics", address, _server.port)
        return _server


def serve_from_env() -> MetricsServer | None:
    """Serve when ``HE_METRICS_PORT`` is set to a port (not 0)."""
    raw = os.environ.get(PORT_ENV, "").strip()
    if not raw or raw == "0":
        return None
    try:
        port = int(raw)
    except ValueError:
        log.warning("%s=%r is not a port: metrics not served", PORT_ENV, raw)
        return None
    return serve(port, os.environ.get(ADDRESS_ENV) or "0.0.0.0")


def stop_serving() -> None:
    global _server
    with _lock:
        server, _server = _server, None
    if server is not None:
        server.stop()
