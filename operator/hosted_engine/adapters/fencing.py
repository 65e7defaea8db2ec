"""After a confirmed fence: release the pods a powered-off node still holds.

The ``node.kubernetes.io/out-of-service`` taint makes Kubernetes release a dead node's pods, but
only once the node-lifecycle controller has marked it NotReady (PodGC's ``gcTerminating``
force-deletes terminating pods on out-of-service nodes that are not Ready; the grace is 40 s).
A Host fenced on its Lease's silence or on its BMC's Off is often still Ready then; its power
is confirmed Off, a stronger proof than NotReady, so the operator force-deletes (grace 0) the
pods bound to it that do not tolerate the taint, as PodGC would, and as medik8s FAR's
``ResourceDeletion`` remediation does. Called only for a confirmed-off node.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from hosted_engine.adapters.kube import Body, Kube, KubeError
from hosted_engine.adapters.kubevirt import (
    LEASES,
    NODE_LEASE_NAMESPACE,
    NODES,
    OUT_OF_SERVICE_TAINT,
    PODS,
    meta,
    spec_of,
)

log = logging.getLogger(__name__)

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def tolerates_out_of_service(pod: Mapping[str, Any]) -> bool:
    for tol in spec_of(pod).get("tolerations") or []:
        if tol.get("effect") not in (None, "", "NoExecute"):
            continue
        key = tol.get("key")
        if (key in (None, "") and tol.get("operator") == "Exists") or key == OUT_OF_SERVICE_TAINT:
            return True
    return False


def pods_to_release(pods: list[Mapping[str, Any]], node: str) -> list[tuple[str, str]]:
    """(namespace, name) of the pods bound to ``node`` that the taint would evict."""
    return [
        (str(meta(p).get("namespace") or ""), str(meta(p).get("name") or ""))
        for p in pods
        if spec_of(p).get("nodeName") == node and not tolerates_out_of_service(p)
    ]


def read_node_and_lease(kube: Kube, node: str) -> tuple[Body | None, Body | None]:
    """The Node and its Lease (``kube-node-lease``) read from the API with a GET, not from a
    watch cache: the proof of loss checked right before a power-off. ``None`` for an object
    that does not exist; a :class:`KubeError` when the API does not answer."""
    return kube.find(NODES, node), kube.find(LEASES, node, NODE_LEASE_NAMESPACE)


def release_pods(kube: Kube, node: str) -> list[str]:
    """Force-delete the pods of a confirmed powered-off ``node``; their names ("ns/name")."""
    client = kube.api_client
    try:
        listed: Any = client.call_api(
            PODS.path(None),
            "GET",
            query_params=[("fieldSelector", f"spec.nodeName={node}")],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            response_types_map={200: "object"},
            _return_http_data_only=True,
        )
    except Exception as exc:
        raise KubeError(f"list pods on {node}: {exc}",
                        status=int(getattr(exc, "status", 0) or 0)) from exc
    items = list((listed or {}).get("items") or [])
    released: list[str] = []
    for namespace, name in pods_to_release(items, node):
        try:
            client.call_api(
                PODS.path(namespace, name),
                "DELETE",
                header_params=_HEADERS,
                body={"gracePeriodSeconds": 0, "propagationPolicy": "Background"},
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 202: "object"},
                _return_http_data_only=True,
            )
        except Exception as exc:
            status = int(getattr(exc, "status", 0) or 0)
            if status == 404:
                continue
            raise KubeError(f"delete pod {namespace}/{name}: {exc}", status=status) from exc
        released.append(f"{namespace}/{name}")
    if released:
        log.info("node %s is powered off: released %d pods", node, len(released))
    return released
