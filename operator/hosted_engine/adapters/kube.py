"""The base Kubernetes adapter: a small typed wrapper over the official ``kubernetes`` client.

Every handler talks to the API through :class:`Kube`; feature adapters build on it in their own
modules. What it does:

- one connection configuration for the process (:func:`configure`): an explicit kubeconfig, the
  in-cluster service account, or ``$KUBECONFIG`` / ``~/.kube/config`` read *at call time* (the
  client library reads ``$KUBECONFIG`` once, at import, which is too early for a CLI);
- generic get / list / merge-patch / status-patch / create-or-get for any resource, core or custom,
  named by a :class:`Resource`;
- owner references and the ``app.kubernetes.io/managed-by`` label on everything it creates;
- core/v1 Events on any object;
- Secret values as :class:`pydantic.SecretStr`, so they never end up in a log line or a repr;
- :class:`kubernetes.client.ApiException` turned into the exception types below.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr

from hosted_engine import API_GROUP, API_VERSION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, __version__
from hosted_engine.clock import get_clock

#: Answers worth retrying an Event for (0: no answer at all).
TRANSIENT_STATUSES: Final = frozenset({0, 429, 500, 502, 503, 504})
#: Attempts to post one Event (or read a Secret), and the first pause between them
#: (doubling): ~1.5 s in all.
EVENT_ATTEMPTS: Final = 5
EVENT_RETRY_BASE: Final = 0.1

#: The User-Agent of the operator's API requests (both its clients), as audit logs show it.
USER_AGENT: Final = f"{MANAGED_BY_VALUE}/{__version__}"

Body = dict[str, Any]
EventType = Literal["Normal", "Warning"]

#: The component name that Events and field managers carry.
COMPONENT: Final = MANAGED_BY_VALUE
#: The longest Event message the API server accepts.
EVENT_MESSAGE_LIMIT: Final = 1024
_MERGE_PATCH: Final = "application/merge-patch+json"


# --------------------------------------------------------------------------------------------
# Errors


class KubeError(Exception):
    """An API call failed. ``status`` is the HTTP status (0 when there was no response)."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(KubeError):
    """404: the object (or its kind) does not exist."""


class Conflict(KubeError):
    """409: already exists, or a resourceVersion precondition failed."""


class Forbidden(KubeError):
    """401/403: the service account lacks a permission."""


class Invalid(KubeError):
    """400/422: the API server rejected the object (schema, CEL rule, immutable field)."""


class ConfigError(KubeError):
    """No usable connection configuration (kubeconfig or in-cluster service account)."""


_BY_STATUS: Final[dict[int, type[KubeError]]] = {
    400: Invalid,
    401: Forbidden,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Invalid,
}


def _api_message(exc: ApiException) -> str:
    """The API server's own one-line message (a metav1.Status), else the HTTP reason."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            status = json.loads(body)
        except ValueError:
            return body[:500]
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    return str(exc.reason or "request failed")


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except ApiException as exc:
        status = int(exc.status or 0)
        cls = _BY_STATUS.get(status, KubeError)
        raise cls(
            f"{action}: {status} {_api_message(exc)}", status=status, reason=str(exc.reason or "")
        ) from None


# --------------------------------------------------------------------------------------------
# Resources


@dataclass(frozen=True)
class Resource:
    """A kind of object the API serves: ``group`` is "" for the core group."""

    group: str
    version: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced:
            if namespace:
                base += f"/namespaces/{namespace}"
            elif name is not None:
                raise ValueError(f"{self.plural} are namespaced: a namespace is required")
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if sub:
                base += f"/{sub}"
        return base


def hostedengine_resource(plural: str, *, namespaced: bool) -> Resource:
    """A resource of this operator's own API group (hostedengine.io/v1alpha1)."""
    return Resource(API_GROUP, API_VERSION, plural, namespaced)


SECRETS: Final = Resource("", "v1", "secrets", namespaced=True)
EVENTS: Final = Resource("", "v1", "events", namespaced=True)


# --------------------------------------------------------------------------------------------
# Connection


@dataclass(frozen=True)
class Credentials:
    """What a client needs to reach the API server; handed to kopf's login handler.

    ``token`` is a secret: ``repr`` hides it.
    """

    server: str
    ca_path: str | None = None
    insecure: bool = False
    scheme: str | None = None
    token: SecretStr | None = None
    certificate_path: str | None = None
    private_key_path: str | None = None
    username: str | None = None
    password: SecretStr | None = None


@dataclass
class _ConnectionSource:
    kubeconfig: str | None = None
    context: str | None = None


_source = _ConnectionSource()
_configuration: kubernetes.client.Configuration | None = None


def in_cluster() -> bool:
    """Whether this process runs in a pod with a service account mounted."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )


def _load(kubeconfig: str | None, context: str | None) -> kubernetes.client.Configuration:
    cfg = kubernetes.client.Configuration()
    try:
        if kubeconfig is None and context is None and in_cluster():
            kubernetes.config.load_incluster_config(client_configuration=cfg)
        else:
            # Read $KUBECONFIG now, not when the client library was imported. A list of files
            # (path1:path2) is merged by the client library, as kubectl does.
            paths = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            files = [os.path.expanduser(p) for p in paths.split(os.pathsep) if p]
            missing = [f for f in files if not os.path.exists(f)]
            if not files or len(missing) == len(files):
                raise ConfigError(f"kubeconfig {paths} does not exist")
            kubernetes.config.load_kube_config(
                config_file=os.pathsep.join(f for f in files if f not in missing),
                context=context,
                client_configuration=cfg,
                persist_config=False,
            )
    except kubernetes.config.ConfigException as exc:
        raise ConfigError(f"cannot load the Kubernetes configuration: {exc}") from None
    return cfg


def configure(
    kubeconfig: str | None = None, context: str | None = None
) -> kubernetes.client.Configuration:
    """Choose the cluster for the whole process and make it the client's default.

    With neither argument: the in-cluster service account when running in a pod, otherwise
    ``$KUBECONFIG`` (its files merged) or ``~/.kube/config``. Raises :class:`ConfigError`.
    """
    global _configuration
    _source.kubeconfig, _source.context = kubeconfig, context
    cfg = _load(kubeconfig, context)
    kubernetes.client.Configuration.set_default(cfg)
    _configuration = cfg
    return cfg


def configuration() -> kubernetes.client.Configuration:
    """The process's configuration (loaded on first use with the defaults of :func:`configure`)."""
    return _configuration if _configuration is not None else configure()


def credentials() -> Credentials:
    """Fresh credentials for the configured cluster (reloaded: tokens may have rotated)."""
    cfg = configure(_source.kubeconfig, _source.context)
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    scheme: str | None = None
    token: str | None = None
    if header:
        parts = header.split(" ", 1)
        scheme, token = (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return Credentials(
        server=str(cfg.host),
        ca_path=cfg.ssl_ca_cert or None,
        insecure=not cfg.verify_ssl,
        scheme=scheme,
        token=SecretStr(token) if token else None,
        certificate_path=cfg.cert_file or None,
        private_key_path=cfg.key_file or None,
        username=cfg.username or None,
        password=SecretStr(cfg.password) if cfg.password else None,
    )


# --------------------------------------------------------------------------------------------
# Object helpers (pure)


def owner_reference(owner: Mapping[str, Any], *, controller: bool = True) -> Body:
    """An ownerReference to ``owner`` (a full object body with apiVersion, kind and uid)."""
    meta = owner.get("metadata") or {}
    missing = [k for k in ("apiVersion", "kind") if not owner.get(k)]
    missing += [f"metadata.{k}" for k in ("name", "uid") if not meta.get(k)]
    if missing:
        raise ValueError(f"owner lacks {', '.join(missing)}")
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def adopt(child: Mapping[str, Any], owner: Mapping[str, Any] | None) -> Body:
    """A copy of ``child`` with the managed-by label and, if given, an owner reference.

    A namespaced owner can own only objects of its own namespace (garbage collection does not
    cross namespaces); a cluster-scoped owner can own anything.
    """
    body: Body = copy.deepcopy(dict(child))
    meta = body.setdefault("metadata", {})
    meta.setdefault("labels", {})[MANAGED_BY_LABEL] = MANAGED_BY_VALUE
    if owner is not None:
        owner_ns = (owner.get("metadata") or {}).get("namespace")
        if owner_ns and meta.get("namespace") != owner_ns:
            raise ValueError(
                f"a namespaced owner ({owner_ns}) cannot own an object in "
                f"{meta.get('namespace') or 'the cluster scope'}"
            )
        ref = owner_reference(owner)
        refs = [r for r in meta.get("ownerReferences", []) if r.get("uid") != ref["uid"]]
        meta["ownerReferences"] = [*refs, ref]
    return body


def _event_name(name: str) -> str:
    # Event names are DNS subdomains (253); keep room for the random suffix.
    return f"{name[:230]}.{secrets.token_hex(8)}"


def event_body(
    involved: Mapping[str, Any],
    *,
    reason: str,
    message: str,
    type: EventType = "Normal",
    now: datetime,
    instance: str = "",
) -> Body:
    """A core/v1 Event about ``involved``; cluster-scoped objects get theirs in "default"."""
    if not reason or not reason[0].isupper() or not reason.isalnum():
        raise ValueError(f"event reason must be CamelCase, got {reason!r}")
    meta = involved.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    ref = {
        "apiVersion": involved.get("apiVersion"),
        "kind": involved.get("kind"),
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": _event_name(str(meta.get("name") or "object")),
            "namespace": namespace,
        },
        "involvedObject": {k: v for k, v in ref.items() if v},
        "reason": reason,
        "message": message[:EVENT_MESSAGE_LIMIT],
        "type": type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance or COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


# --------------------------------------------------------------------------------------------
# The client


class Kube:
    """Typed access to the API server. Synchronous: call it from sync kopf handlers (kopf runs
    those in a thread pool), never from a coroutine."""

    def __init__(self, api_client: kubernetes.client.ApiClient | None = None, *,
                 user_agent: str | None = None) -> None:
        self._client = api_client or kubernetes.client.ApiClient(configuration())
        if user_agent:
            self._client.user_agent = user_agent

    @property
    def api_client(self) -> kubernetes.client.ApiClient:
        return self._client

    def close(self) -> None:
        self._client.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        return self._client.call_api(
            path,
            method,
            query_params=query or [],
            header_params=headers,
            body=body,
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> Body:
        with _translated(f"get {resource.plural}/{name}"):
            result: Body = self._call("GET", resource.path(namespace, name))
        return result

    def find(self, resource: Resource, name: str, namespace: str | None = None) -> Body | None:
        """Like :meth:`get`, but ``None`` when the object does not exist."""
        try:
            return self.get(resource, name, namespace)
        except NotFound:
            return None

    def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
    ) -> list[Body]:
        """All objects (across namespaces when ``namespace`` is None)."""
        query = [("labelSelector", label_selector)] if label_selector else []
        items: list[Body] = []
        cont = ""
        with _translated(f"list {resource.plural}"):
            while True:
                page_query = [*query, ("continue", cont)] if cont else query
                page: Body = self._call("GET", resource.path(namespace), query=page_query)
                items.extend(page.get("items") or [])
                cont = (page.get("metadata") or {}).get("continue") or ""
                if not cont:
                    return items

    def patch(
        self, resource: Resource, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> Body:
        """A JSON merge patch of the object (metadata, or spec of objects the operator owns)."""
        with _translated(f"patch {resource.plural}/{name}"):
            result: Body = self._call(
                "PATCH", resource.path(namespace, name), body=dict(patch), content_type=_MERGE_PATCH
            )
        return result

    def patch_status(
        self, resource: Resource, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> Body:
        """A JSON merge patch of the status subresource (``None`` values delete keys).

        The patch carries no resourceVersion, so applying it twice is applying it once: a
        transient failure (429, 5xx, no answer) or a 409 (no precondition of ours can fail) is
        retried a few times, as for Events; the last failure is raised, and the caller must
        then treat nothing of the patch as written."""
        for attempt in range(EVENT_ATTEMPTS):
            try:
                with _translated(f"patch {resource.plural}/{name}/status"):
                    result: Body = self._call(
                        "PATCH",
                        resource.path(namespace, name, "status"),
                        body={"status": dict(status)},
                        content_type=_MERGE_PATCH,
                    )
                return result
            except KubeError as exc:
                retry = exc.status in TRANSIENT_STATUSES or isinstance(exc, Conflict)
                if not retry or attempt == EVENT_ATTEMPTS - 1:
                    raise
                time.sleep(EVENT_RETRY_BASE * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def create(self, resource: Resource, body: Mapping[str, Any]) -> Body:
        namespace = (body.get("metadata") or {}).get("namespace")
        with _translated(f"create {resource.plural}"):
            result: Body = self._call("POST", resource.path(namespace), body=dict(body))
        return result

    def create_or_get(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        owner: Mapping[str, Any] | None = None,
    ) -> tuple[Body, bool]:
        """Create ``body`` labelled as managed by the operator and owned by ``owner``; if it
        already exists, return the existing object. The flag says whether it was created."""
        child = adopt(body, owner)
        meta = child["metadata"]
        try:
            return self.create(resource, child), True
        except Conflict:
            if not meta.get("name"):
                raise
            return self.get(resource, meta["name"], meta.get("namespace")), False

    def delete(self, resource: Resource, name: str, namespace: str | None = None) -> bool:
        """Delete (background propagation); ``False`` when it was already gone."""
        try:
            with _translated(f"delete {resource.plural}/{name}"):
                self._call(
                    "DELETE",
                    resource.path(namespace, name),
                    body={"propagationPolicy": "Background"},
                )
        except NotFound:
            return False
        return True

    def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        reason: str,
        message: str,
        type: EventType = "Normal",
    ) -> Body:
        """Post a core/v1 Event. ``message`` must never contain a secret."""
        event = event_body(
            involved,
            reason=reason,
            message=message,
            type=type,
            now=get_clock().now(),
            instance=os.environ.get("POD_ID", ""),
        )
        # Like client-go's event recorder: a transient failure (429, 5xx, no answer) is retried
        # a few times, so that an Event is not lost to one busy moment of the API server.
        for attempt in range(EVENT_ATTEMPTS):
            try:
                return self.create(EVENTS, event)
            except Conflict:  # AlreadyExists: an attempt whose answer was lost got through
                return event
            except KubeError as exc:
                if exc.status not in TRANSIENT_STATUSES or attempt == EVENT_ATTEMPTS - 1:
                    raise
                time.sleep(EVENT_RETRY_BASE * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def read_secret(self, namespace: str, name: str, key: str) -> SecretStr:
        """One value of a Secret, decoded. Errors name the Secret and key, never the value.
        A transient failure (429, 5xx) is retried a few times, as for Events."""
        for attempt in range(EVENT_ATTEMPTS):
            try:
                secret = self.get(SECRETS, name, namespace)
                break
            except KubeError as exc:
                if exc.status not in TRANSIENT_STATUSES or attempt == EVENT_ATTEMPTS - 1:
                    raise
                time.sleep(EVENT_RETRY_BASE * 2**attempt)
        data = secret.get("data") or {}
        if key in data:
            try:
                raw = base64.b64decode(data[key], validate=True)
            except (binascii.Error, ValueError):
                raise Invalid(f"Secret {namespace}/{name} key {key!r} is not base64") from None
            return SecretStr(raw.decode("utf-8"))
        # (stringData is write-only: the API server merges it into data and never returns it)
        raise NotFound(f"Secret {namespace}/{name} has no key {key!r}", status=404)
