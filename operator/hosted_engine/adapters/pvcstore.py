"""A ``pvc`` backup target: every access goes through a Job that mounts the claim.

The operator cannot mount an arbitrary PersistentVolumeClaim (it would need to run on the claim's
node, with the claim in its own pod spec). So each operation is a batch/v1 Job in the Backup's (or
Restore's) namespace whose pod mounts the claim at ``/target`` and runs the data mover
(:mod:`hosted_engine.adapters.pvcmover`, mounted from a ConfigMap at ``/mover``) with ``python3``
in the operator's own image (``$HE_DATA_MOVER_IMAGE``, default the released operator image):

- write: stream the run's exports into the claim and write the manifest last
  (:meth:`PvcJobs.write`); the export token comes from the export's token Secret as an env var;
- delete: remove a run's folder (retention, a failed run, ``delete-run``);
- verify: measure every object of a run (sizes, SHA-256) for a Restore, which compares them with
  the manifest itself (:func:`hosted_engine.logic.backup.verify_object`);
- upload: stream the run's disk to CDI's upload proxy for a Restore (the upload token in a
  Secret of the Restore).

Jobs have deterministic names (a restarted operator finds them), ``backoffLimit: 0``, a deadline,
run as an unprivileged user without an API token, and are owned by the Backup or Restore. The
mover prints one ``RESULT <json>`` line, read back from the pod's log.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hosted_engine import MANAGED_BY_LABEL, MANAGED_BY_VALUE, __version__
from hosted_engine.adapters.jobs import JOBS, PODS, job_finished, job_outcome
from hosted_engine.adapters.kube import (
    SECRETS,
    Body,
    Kube,
    KubeError,
    Resource,
    _translated,
)

CONFIGMAPS: Final = Resource("", "v1", "configmaps", namespaced=True)
MOVER_LABEL: Final = "hostedengine.io/data-mover"
TARGET_MOUNT: Final = "/target"
MOVER_MOUNT: Final = "/mover"
MOVER_USER: Final = 65534
DEFAULT_IMAGE: Final = f"ghcr.io/hosted-engine-operator/hosted-engine-operator:{__version__}"
#: How long one mover Job may run.
WRITE_DEADLINE: Final = 2 * 3600
SHORT_DEADLINE: Final = 600
_SCRIPT: Final = Path(__file__).with_name("pvcmover.py")


def mover_image() -> str:
    return os.environ.get("HE_DATA_MOVER_IMAGE", "").strip() or DEFAULT_IMAGE


def mover_script() -> str:
    return _SCRIPT.read_text()


def mover_job_body(*, name: str, namespace: str, claim: str, argv: list[str],
                   env: list[dict[str, Any]], purpose: str, deadline: int,
                   read_only: bool = False) -> Body:
    """The Job running the data mover on ``claim`` (its ConfigMap has the same name)."""
    labels = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, MOVER_LABEL: purpose}
    container = {
        "name": "mover",
        "image": mover_image(),
        "command": ["python3", f"{MOVER_MOUNT}/pvcmover.py", *argv],
        "env": env,
        "volumeMounts": [
            {"name": "target", "mountPath": TARGET_MOUNT, "readOnly": read_only},
            {"name": "mover", "mountPath": MOVER_MOUNT, "readOnly": True},
        ],
        "securityContext": {"allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline,
            "template": {"metadata": {"labels": dict(labels)}, "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": MOVER_USER,
                                    "runAsGroup": MOVER_USER, "fsGroup": MOVER_USER,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
                "volumes": [
                    {"name": "target", "persistentVolumeClaim": {"claimName": claim,
                                                                  "readOnly": read_only}},
                    {"name": "mover", "configMap": {"name": name, "defaultMode": 0o444}},
                ],
            }},
        },
    }


@dataclass(frozen=True)
class MoverResult:
    """A finished mover Job: ``result`` (its RESULT line) or ``error``."""

    result: dict[str, Any] | None
    error: str | None = None


class PvcJobs:
    """The mover Jobs of a ``pvc`` target (synchronous; call from a thread)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def start(self, owner: Body, name: str, claim: str, argv: list[str], *,
              purpose: str, config: dict[str, Any] | None = None,
              env: list[dict[str, Any]] | None = None, deadline: int = SHORT_DEADLINE,
              read_only: bool = False, ttl: int | None = None) -> None:
        """Create (once) the ConfigMap and the Job, both owned by ``owner``."""
        namespace = str((owner.get("metadata") or {}).get("namespace"))
        data = {"pvcmover.py": mover_script()}
        if config is not None:
            data["config.json"] = json.dumps(config)
        self.kube.create_or_get(CONFIGMAPS, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {MOVER_LABEL: purpose}},
            "data": data}, owner=owner)
        body = mover_job_body(name=name, namespace=namespace, claim=claim, argv=argv,
                              env=env or [], purpose=purpose, deadline=deadline,
                              read_only=read_only)
        if ttl is not None:
            body["spec"]["ttlSecondsAfterFinished"] = ttl
        self.kube.create_or_get(JOBS, body, owner=owner)

    def result(self, namespace: str, name: str) -> MoverResult | None:
        """None while the Job runs (or does not exist); its result once it finished."""
        job = self.kube.find(JOBS, name, namespace)
        if job is None or not job_finished(job):
            return None
        pods = self.kube.list(PODS, namespace, label_selector=f"job-name={name}")
        outcome = job_outcome(job, pods)
        log = self._log(namespace, outcome.pod) if outcome.pod else ""
        for line in reversed(log.splitlines()):
            if line.startswith("RESULT "):
                try:
                    parsed = json.loads(line[len("RESULT "):])
                except ValueError:
                    break
                if outcome.state == "Succeeded" and isinstance(parsed, dict):
                    return MoverResult(parsed)
            if line.startswith("ERROR "):
                return MoverResult(None, f"data mover Job {name}: {line[len('ERROR '):]}"[:900])
        return MoverResult(None, f"data mover Job {name} {outcome.state} "
                                 f"(exit code {outcome.exit_code}) without a result")

    def exists(self, namespace: str, name: str) -> bool:
        return self.kube.find(JOBS, name, namespace) is not None

    def remove(self, namespace: str, name: str) -> None:
        """Delete the Job (and its pods) and its ConfigMap."""
        for resource in (JOBS, CONFIGMAPS):
            self.kube.delete(resource, name, namespace)

    def secret(self, owner: Body, name: str, key: str, value: str) -> None:
        """A Secret (owned by ``owner``) holding a token for a mover Job, replaced if present."""
        import base64

        namespace = str((owner.get("metadata") or {}).get("namespace"))
        data = {key: base64.b64encode(value.encode()).decode()}
        _, created = self.kube.create_or_get(SECRETS, {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace}, "data": data}, owner=owner)
        if not created:
            self.kube.patch(SECRETS, name, {"data": data}, namespace)

    def _log(self, namespace: str, pod: str) -> str:
        path = PODS.path(namespace, pod, "log")
        try:
            with _translated(f"log of pods/{pod}"):
                response = self.kube.api_client.call_api(
                    path, "GET", query_params=[("container", "mover")],
                    header_params={"Accept": "text/plain"},
                    auth_settings=["BearerToken"], _preload_content=False,
                    _return_http_data_only=True,
                )
        except KubeError:
            return ""
        data = getattr(response, "data", b"")
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


__all__ = [
    "MOVER_LABEL",
    "MoverResult",
    "PvcJobs",
    "mover_image",
    "mover_job_body",
    "mover_script",
    "secret_env",
]
