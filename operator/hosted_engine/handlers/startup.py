"""Operator-wide kopf settings, login, the shared API client and the liveness probe.

kopf's own state lives in annotations under ``hostedengine.io/`` (never in ``status``, which the
CRDs' structural schemas would prune), the finalizer is ``hostedengine.io/finalizer``, Events
are posted only when a handler asks for one, and replicas coordinate through the kopf peering
object :data:`PEERING_NAME` (the one with the highest priority acts, the others wait).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from typing import Any, Final

import kopf

from hosted_engine import API_GROUP, FINALIZER, MANAGED_BY_VALUE
from hosted_engine.adapters import kube, metrics
from hosted_engine.clock import get_clock

__all__ = [
    "ANNOTATION_PREFIX",
    "FINALIZER",
    "PEERING_LIFETIME",
    "PEERING_NAME",
    "configure_settings",
    "kube_client",
]

#: Prefix of kopf's progress and diff-base annotations on our objects.
ANNOTATION_PREFIX: Final = API_GROUP
#: Name of the ClusterKopfPeering (or per-namespace KopfPeering) objects the replicas share.
PEERING_NAME: Final = MANAGED_BY_VALUE
#: Seconds after which a silent replica is presumed dead and a standby takes over.
PEERING_LIFETIME: Final = 30
#: Threads for the synchronous handlers.
WORKER_LIMIT: Final = 20
#: Objects whose events are processed at once: unbounded (kopf's default). Each watched object
#: (Nodes, Pods, Leases, VMIs, migrations ...) keeps a cheap async worker for a few idle
#: seconds; a bound here made events of other objects wait seconds for a free worker.
QUEUE_WORKER_LIMIT: Final[int | None] = None
#: Watch requests end server-side after this long and are resumed (seconds).
WATCH_SERVER_TIMEOUT: Final = 300
#: Client-side guard for a stuck watch connection (seconds).
WATCH_CLIENT_TIMEOUT: Final = 330
#: Give up connecting to the API server after this long and retry (seconds).
CONNECT_TIMEOUT: Final = 30


def _instance() -> str:
    return os.environ.get("POD_ID") or socket.gethostname()


def configure_settings(settings: kopf.OperatorSettings) -> kopf.OperatorSettings:
    """Apply the operator's settings to kopf's (peering name/mode come from ``kopf.run``)."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX, v1=False
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration", v1=False
    )

    settings.posting.enabled = True
    settings.posting.loggers = False  # only explicit Events: log lines may be noisy
    settings.posting.reporting_component = MANAGED_BY_VALUE
    settings.posting.reporting_instance = _instance()
    settings.posting.event_name_prefix = "hosted-engine-"

    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = CONNECT_TIMEOUT

    settings.queueing.worker_limit = QUEUE_WORKER_LIMIT
    settings.execution.max_workers = WORKER_LIMIT

    settings.peering.stealth = True  # keep-alives are not worth a log line each
    settings.peering.lifetime = PEERING_LIFETIME
    return settings


@kopf.on.startup(id="hosted-engine-settings")
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_settings(settings)
    memo["kube"] = kube.Kube(user_agent=kube.USER_AGENT)
    metrics.serve_from_env()  # HE_METRICS_PORT (hosted-engine run --metrics-port)


@kopf.on.cleanup(id="hosted-engine-cleanup")
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    client = memo.get("kube")
    if isinstance(client, kube.Kube):
        client.close()
    metrics.stop_serving()


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Connection(kopf.ConnectionInfo):
    """kopf's connection, identified by the operator's User-Agent (kopf's own otherwise)."""

    def as_http_headers(self) -> dict[str, str]:
        return {**super().as_http_headers(), "User-Agent": kube.USER_AGENT}


@kopf.on.login(id="hosted-engine-login")
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's connection: the same cluster the adapters use (see :func:`kube.configure`)."""
    try:
        creds = kube.credentials()
    except kube.ConfigError as exc:
        raise kopf.LoginError(str(exc)) from None
    return _Connection(
        server=creds.server,
        ca_path=creds.ca_path,
        insecure=creds.insecure,
        scheme=creds.scheme,
        token=creds.token.get_secret_value() if creds.token else None,
        certificate_path=creds.certificate_path,
        private_key_path=creds.private_key_path,
        username=creds.username,
        password=creds.password.get_secret_value() if creds.password else None,
    )


@kopf.on.probe(id="now")
def probe_now(**_: Any) -> str:
    """Shown by the liveness endpoint; answering at all is what proves liveness."""
    return get_clock().now().isoformat()


def kube_client(memo: kopf.Memo) -> kube.Kube:
    """The shared API client that :func:`startup` created (made on first use otherwise)."""
    client = memo.get("kube")
    if not isinstance(client, kube.Kube):
        client = kube.Kube(user_agent=kube.USER_AGENT)
        memo["kube"] = client
    return client
