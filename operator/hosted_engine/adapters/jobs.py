"""Hook Jobs (docs/decisions/0004-hook-jobs.md): one batch/v1 Job per (run, host, stage), pinned
to the host's Node, and what a finished Job says (exit code, last log lines).

- :func:`hook_job_body` (pure) builds the Job: ``backoffLimit: 0``, ``activeDeadlineSeconds`` =
  the stage timeout, ``nodeName`` = the host's Node (so it runs while the Node is cordoned),
  tolerations for the unschedulable taint and the rolling steer taint (with ``nodeName`` the
  scheduler is bypassed; the tolerations keep it explicit) and, without a limit, for the
  not-ready and unreachable NoExecute taints (a pinned hook is never evicted),
  ``restartPolicy: Never``, a dedicated service account without a token, the "restricted" Pod
  Security level (non-root, no privilege escalation, no capabilities, RuntimeDefault
  seccomp), no TTL (the Job is kept
  until its result is recorded; it goes with its owner). The command is either the hook's
  ``command`` or ``/bin/sh /hooks/<key>`` with the ConfigMap mounted read-only at ``/hooks``;
  the run's payload is appended to it either way (CloudStack appends its payload to every
  stage script). A hook's ``hostAccess`` adds only what it names: ``hostPID``, ``hostNetwork``,
  the host's ``/`` mounted at ``/host`` (read-only or read-write), or a privileged container
  run as root (:class:`HostAccess`).
- :class:`JobsKube` creates (idempotent: deterministic names), deletes, and reads a finished
  Job's pod for the exit code and the tail of its log (``pods/log?tailLines=``).
- :func:`job_outcome` (pure) turns a Job and its pod into (state, exit code).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from hosted_engine import API_GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from hosted_engine.adapters.kube import (
    Body,
    Kube,
    KubeError,
    NotFound,
    Resource,
    _translated,
)
from hosted_engine.adapters.kubevirt import meta, parse_time, status_of

JOBS: Final = Resource("batch", "v1", "jobs", namespaced=True)
PODS: Final = Resource("", "v1", "pods", namespaced=True)
SERVICE_ACCOUNTS: Final = Resource("", "v1", "serviceaccounts", namespaced=True)
CONFIGMAPS: Final = Resource("", "v1", "configmaps", namespaced=True)

#: Labels on every hook Job (and its pod): the run, the Host and the stage.
RUN_LABEL: Final = f"{API_GROUP}/rolling-run"
HOST_LABEL: Final = f"{API_GROUP}/rolling-host"
STAGE_LABEL: Final = f"{API_GROUP}/rolling-stage"
#: The service account hooks run under: it has no permissions on the API.
HOOK_SERVICE_ACCOUNT: Final = "hosted-engine-hooks"
#: The unprivileged user hooks run as (nobody).
HOOK_USER: Final = 65534
#: Where a ConfigMap script is mounted in the hook's container.
SCRIPT_MOUNT: Final = "/hooks"
#: The PreferNoSchedule taint that steers new VMs away from a group under rolling maintenance.
STEER_TAINT: Final = f"{API_GROUP}/rolling-maintenance"
UNSCHEDULABLE_TAINT: Final = "node.kubernetes.io/unschedulable"
NOT_READY_TAINT: Final = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT: Final = "node.kubernetes.io/unreachable"
#: Lines of a hook's log kept in the status.
LOG_TAIL_LINES: Final = 20
LOG_TAIL_BYTES: Final = 4096
#: Where the operator's own namespace is when it runs in a pod.
_SA_NAMESPACE_FILE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
DEFAULT_NAMESPACE: Final = "hosted-engine-system"


def operator_namespace() -> str:
    """The operator's namespace: ``$POD_NAMESPACE``, else the service account's, else the
    manifests' ``hosted-engine-system``."""
    env = os.environ.get("POD_NAMESPACE", "").strip()
    if env:
        return env
    with contextlib.suppress(OSError):
        text = Path(_SA_NAMESPACE_FILE).read_text().strip()
        if text:
            return text
    return DEFAULT_NAMESPACE


#: Where the host's root filesystem is mounted when a hook asks for it.
HOST_ROOT_MOUNT: Final = "/host"


@dataclass(frozen=True)
class HostAccess:
    """A hook's host privileges (decision 0004); the default grants none."""

    privileged: bool = False
    host_pid: bool = False
    host_network: bool = False
    host_root: str | None = None  # "ReadOnly" | "ReadWrite": the host's / at /host

    @property
    def any(self) -> bool:
        return self.privileged or self.host_pid or self.host_network or bool(self.host_root)


@dataclass(frozen=True)
class HookSource:
    """Where a hook's program comes from: ``command`` in ``image``, or a ConfigMap script."""

    image: str
    command: tuple[str, ...] = ()
    configmap: str | None = None
    key: str | None = None
    host_access: HostAccess = HostAccess()

    def argv(self) -> tuple[str, ...]:
        """The command line before the payload is appended."""
        if self.configmap is not None and self.key is not None:
            return ("/bin/sh", f"{SCRIPT_MOUNT}/{self.key}")
        return self.command


def hook_job_body(
    *,
    name: str,
    namespace: str,
    node: str,
    run: str,
    host: str,
    stage: str,
    source: HookSource,
    command: Sequence[str],
    timeout_s: float,
) -> Body:
    """The Job of one stage hook (no owner reference yet: :meth:`JobsKube.create` adds it)."""
    labels = {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        RUN_LABEL: run,
        HOST_LABEL: host,
        STAGE_LABEL: stage,
    }
    container: dict[str, Any] = {
        "name": "hook",
        "image": source.image,
        "command": list(command),
        "env": [
            {"name": "ROLLING_MAINTENANCE_RUN", "value": run},
            {"name": "ROLLING_MAINTENANCE_HOST", "value": host},
            {"name": "ROLLING_MAINTENANCE_STAGE", "value": stage},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec: dict[str, Any] = {
        "nodeName": node,
        "restartPolicy": "Never",
        "serviceAccountName": HOOK_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        # no privileges by default (decision 0004): the "restricted" Pod Security level, which
        # the operator's own namespace enforces
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": HOOK_USER,
            "runAsGroup": HOOK_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "tolerations": [
            {"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"},
            {"key": STEER_TAINT, "operator": "Exists", "effect": "PreferNoSchedule"},
            # pinned to its node, an evicted hook could not run anywhere else: it stays while
            # the node is briefly NotReady (a reboot, a kubelet restart), as DaemonSet pods
            # do; the stage timeout bounds it
            {"key": NOT_READY_TAINT, "operator": "Exists", "effect": "NoExecute"},
            {"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute"},
        ],
        "containers": [container],
    }
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if source.configmap is not None and source.key is not None:
        mounts.append({"name": "hook-script", "mountPath": SCRIPT_MOUNT, "readOnly": True})
        volumes.append(
            {
                "name": "hook-script",
                "configMap": {
                    "name": source.configmap,
                    "items": [{"key": source.key, "path": source.key}],
                    "defaultMode": 0o555,
                },
            }
        )
    _grant_host_access(source.host_access, pod_spec, container, mounts, volumes)
    if mounts:
        container["volumeMounts"] = mounts
        pod_spec["volumes"] = volumes
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(1, math.ceil(timeout_s)),
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


def _grant_host_access(
    access: HostAccess,
    pod_spec: dict[str, Any],
    container: dict[str, Any],
    mounts: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
) -> None:
    """Add what the hook asked for, and nothing else, to the pod (in place)."""
    if access.host_pid:
        pod_spec["hostPID"] = True
    if access.host_network:
        pod_spec["hostNetwork"] = True
        pod_spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    if access.host_root:
        read_only = access.host_root != "ReadWrite"
        mounts.append({"name": "host-root", "mountPath": HOST_ROOT_MOUNT, "readOnly": read_only})
        volumes.append({"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}})
    if access.privileged:
        # privileged implies root and escalation (the API refuses privileged together with
        # allowPrivilegeEscalation: false)
        container["securityContext"] = {"privileged": True, "allowPrivilegeEscalation": True}
        pod_spec["securityContext"] = {
            "runAsNonRoot": False,
            "runAsUser": 0,
            "runAsGroup": 0,
            "seccompProfile": {"type": "RuntimeDefault"},
        }


# --------------------------------------------------------------------------------------------
# Reading a Job


@dataclass(frozen=True)
class JobOutcome:
    """What a Job says: ``state`` Running | Succeeded | Failed | DeadlineExceeded."""

    state: str
    exit_code: int | None = None
    finished_at: datetime | None = None
    pod: str | None = None


def _condition(job: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for cond in status_of(job).get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return dict(cond)
    return None


def job_finished(job: Mapping[str, Any]) -> bool:
    return _condition(job, "Complete") is not None or _condition(job, "Failed") is not None


def exit_code_of(pod: Mapping[str, Any] | None) -> int | None:
    """The hook container's exit code from the pod status (None while it runs)."""
    for cs in status_of(pod).get("containerStatuses") or []:
        terminated = (cs.get("state") or {}).get("terminated")
        if terminated is None:
            terminated = (cs.get("lastState") or {}).get("terminated")
        if terminated is not None and terminated.get("exitCode") is not None:
            with contextlib.suppress(TypeError, ValueError):
                return int(terminated["exitCode"])
    return None


def job_outcome(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobOutcome:
    """The Job's state and its (last) pod's exit code."""
    latest = sorted(pods, key=lambda p: str(meta(p).get("creationTimestamp") or ""))
    pod = latest[-1] if latest else None
    code = exit_code_of(pod)
    pod_name = str(meta(pod).get("name")) if pod is not None else None
    complete = _condition(job, "Complete")
    failed = _condition(job, "Failed")
    if complete is not None:
        at = parse_time(status_of(job).get("completionTime")) or parse_time(
            complete.get("lastTransitionTime")
        )
        return JobOutcome("Succeeded", 0 if code is None else code, at, pod_name)
    if failed is not None:
        at = parse_time(failed.get("lastTransitionTime"))
        if failed.get("reason") == "DeadlineExceeded":
            return JobOutcome("DeadlineExceeded", code, at, pod_name)
        return JobOutcome("Failed", code, at, pod_name)
    return JobOutcome("Running", None, None, pod_name)


def tail(text: str, lines: int = LOG_TAIL_LINES, limit: int = LOG_TAIL_BYTES) -> str:
    """The last ``lines`` lines of ``text``, at most ``limit`` characters."""
    kept = "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return kept[-limit:]


# --------------------------------------------------------------------------------------------
# The client


class JobsKube:
    """Hook Jobs over the shared :class:`Kube` client (synchronous; call from a thread)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def ensure_service_account(self, namespace: str) -> None:
        """The hooks' service account (no Role is bound to it: no API permissions)."""
        body = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": HOOK_SERVICE_ACCOUNT, "namespace": namespace},
            "automountServiceAccountToken": False,
        }
        self.kube.create_or_get(SERVICE_ACCOUNTS, body)

    def create(self, body: Mapping[str, Any], owner: Mapping[str, Any]) -> Body:
        """Create the Job owned by ``owner`` (the same name again returns the existing one)."""
        created, _ = self.kube.create_or_get(JOBS, body, owner=owner)
        return created

    def delete(self, namespace: str, name: str) -> bool:
        """Delete the Job and its pods (the hook process is stopped)."""
        return self.kube.delete(JOBS, name, namespace)

    def find(self, namespace: str, name: str) -> Body | None:
        return self.kube.find(JOBS, name, namespace)

    def script_problem(self, namespace: str, configmap: str, key: str) -> str | None:
        """Why a hook script cannot be mounted (ConfigMap or key missing), None when it can.
        Other API errors are raised: the caller decides (no answer is not a refusal)."""
        found = self.kube.find(CONFIGMAPS, configmap, namespace)
        if found is None:
            return f"ConfigMap {namespace}/{configmap} not found"
        keys = set(found.get("data") or {}) | set(found.get("binaryData") or {})
        if key not in keys:
            return f"ConfigMap {namespace}/{configmap} has no key {key!r}"
        return None

    def pods(self, namespace: str, job: str) -> list[Body]:
        return self.kube.list(PODS, namespace, label_selector=f"job-name={job}")

    def log_tail(self, namespace: str, pod: str, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the hook container's log ("" when there is none)."""
        path = PODS.path(namespace, pod, "log")
        query = [("container", "hook"), ("tailLines", str(lines)),
                 ("limitBytes", str(LOG_TAIL_BYTES * 4))]
        try:
            with _translated(f"log of pods/{pod}"):
                response = self.kube.api_client.call_api(
                    path, "GET", query_params=query,
                    header_params={"Accept": "text/plain"},
                    auth_settings=["BearerToken"], _preload_content=False,
                    _return_http_data_only=True,
                )
        except (NotFound, KubeError):
            return ""
        data = getattr(response, "data", b"")
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        return tail(text, lines)

    def outcome(self, namespace: str, job: Mapping[str, Any],
                with_log: bool = True) -> tuple[JobOutcome, str]:
        """A Job's outcome and, once it finished (and ``with_log``), the tail of its log."""
        name = str(meta(job).get("name"))
        pods = self.pods(namespace, name) if job_finished(job) else []
        result = job_outcome(job, pods)
        log = ""
        if with_log and result.state != "Running" and result.pod is not None:
            log = self.log_tail(namespace, result.pod)
        return result, log


__all__ = [
    "HOOK_SERVICE_ACCOUNT",
    "HOST_LABEL",
    "HOST_ROOT_MOUNT",
    "JOBS",
    "RUN_LABEL",
    "STAGE_LABEL",
    "STEER_TAINT",
    "HookSource",
    "HostAccess",
    "JobOutcome",
    "JobsKube",
    "hook_job_body",
    "job_finished",
    "job_outcome",
    "operator_namespace",
    "tail",
]
