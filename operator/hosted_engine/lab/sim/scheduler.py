"""The lab's kube-scheduler: binds Pending pods to nodes (decisions in :mod:`.placement`).

A pod is the scheduler's when ``spec.nodeName`` is empty, its ``schedulerName`` is empty or
``default-scheduler``, and it is not being deleted. Binding sets ``spec.nodeName`` and the
``PodScheduled=True`` condition and posts a ``Scheduled`` Event. When nothing fits the pod gets
``PodScheduled=False`` (reason ``Unschedulable``) with kube-scheduler's message and a
``FailedScheduling`` Warning Event, and is retried every ``scheduler_retry`` seconds or as soon
as the cluster changes. Pods are taken oldest first; capacity taken by a binding counts for the
next pod in the same pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from hosted_engine.lab.sim.api import (
    PODS,
    Api,
    Obj,
    condition,
    meta,
    name_of,
    ns_of,
    record_event,
    rfc3339,
)
from hosted_engine.lab.sim.placement import (
    StaticCache,
    node_allocatable,
    pod_requests,
    schedule,
    used_by_node,
)

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"


def wants_scheduling(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    if spec.get("nodeName") or meta(pod).get("deletionTimestamp"):
        return False
    if spec.get("schedulerName") not in (None, "", SCHEDULER_NAME):
        return False
    return (pod.get("status") or {}).get("phase") in (None, "", "Pending")


class Scheduler:
    def __init__(self, api: Api, timings: Any, wall: Callable[[], datetime]) -> None:
        self.api = api
        self.timings = timings
        self.wall = wall
        #: pod uid -> (loop time of the last attempt, cluster fingerprint then)
        self.attempts: dict[str, tuple[float, tuple[Any, ...]]] = {}
        #: pod uid -> effective requests (a pod's containers are immutable)
        self._requests: dict[str, dict[str, int]] = {}
        #: node name -> (resourceVersion, allocatable)
        self._allocatable: dict[str, tuple[Any, dict[str, int]]] = {}
        #: kube-scheduler's nextStartNodeIndex
        self.next_start = 0
        self.static = StaticCache()

    def requests_of(self, pod: Mapping[str, Any]) -> dict[str, int]:
        uid = str(meta(pod).get("uid"))
        cached = self._requests.get(uid)
        if cached is None:
            cached = self._requests[uid] = pod_requests(pod)
        return cached

    def _allocatables(self, nodes: Sequence[Obj]) -> dict[str, dict[str, int]]:
        out = {}
        for node in nodes:
            name, rv = name_of(node), meta(node).get("resourceVersion")
            cached = self._allocatable.get(name)
            if cached is None or cached[0] != rv:
                cached = self._allocatable[name] = (rv, node_allocatable(node))
            out[name] = cached[1]
        return out

    async def reconcile(self, nodes: Sequence[Obj], pods: Sequence[Obj], now: float) -> None:
        pending = [p for p in pods if wants_scheduling(p)]
        live = {str(meta(p).get("uid")) for p in pending}
        for uid in set(self.attempts) - live:
            del self.attempts[uid]
        if len(self._requests) > 2 * len(pods) + 1000:
            present = {str(meta(p).get("uid")) for p in pods}
            self._requests = {u: r for u, r in self._requests.items() if u in present}
        if not pending:
            return
        pending.sort(
            key=lambda p: (str(meta(p).get("creationTimestamp", "")), ns_of(p), name_of(p))
        )
        used = used_by_node(pods, self.requests_of)
        allocatable = self._allocatables(nodes)
        fingerprint = (
            tuple((name_of(n), meta(n).get("resourceVersion")) for n in nodes),
            sum(1 for p in pods if (p.get("spec") or {}).get("nodeName")),
        )
        started = time.monotonic()
        for count, pod in enumerate(pending):
            if count % 50 == 49:
                if time.monotonic() - started > self.timings.scheduler_pass_budget:
                    return  # the rest waits for the next pass
                await asyncio.sleep(0)
            uid = str(meta(pod).get("uid"))
            last = self.attempts.get(uid)
            if (
                last is not None
                and last[1] == fingerprint
                and now - last[0] < self.timings.scheduler_retry
            ):
                continue
            requests = self.requests_of(pod)
            decision = schedule(
                pod, nodes, used, requests, allocatable, self.next_start, self.static
            )
            if nodes:
                self.next_start = (self.next_start + decision.processed) % len(nodes)
            if decision.node is None:
                self.attempts[uid] = (now, fingerprint)
                await self._unschedulable(pod, decision.message)
                continue
            bound = await self._bind(pod, decision.node)
            if bound:
                self.attempts.pop(uid, None)
                used.setdefault(decision.node, Counter()).update(requests)

    async def _bind(self, pod: Obj, node: str) -> bool:
        m = meta(pod)
        patched = await self.api.patch(
            PODS,
            name_of(pod),
            {"metadata": {"resourceVersion": m.get("resourceVersion")}, "spec": {"nodeName": node}},
            ns_of(pod),
        )
        if patched is None:
            return False
        stamp = rfc3339(self.wall())
        await self.api.patch(
            PODS,
            name_of(pod),
            {
                "status": {
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "True",
                            "lastProbeTime": None,
                            "lastTransitionTime": stamp,
                        }
                    ]
                }
            },
            ns_of(pod),
            "status",
        )
        await record_event(
            self.api,
            patched,
            PODS,
            "Normal",
            "Scheduled",
            f"Successfully assigned {ns_of(pod)}/{name_of(pod)} to {node}",
            SCHEDULER_NAME,
            self.wall(),
        )
        log.debug("scheduled %s/%s on %s", ns_of(pod), name_of(pod), node)
        return True

    async def _unschedulable(self, pod: Obj, message: str) -> None:
        current = condition(pod, "PodScheduled") or {}
        if current.get("status") == "False" and current.get("message") == message:
            return  # the real scheduler does not repeat an identical condition either
        await self.api.patch(
            PODS,
            name_of(pod),
            {
                "status": {
                    "phase": "Pending",
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": message,
                            "lastProbeTime": None,
                            "lastTransitionTime": rfc3339(self.wall()),
                        }
                    ],
                }
            },
            ns_of(pod),
            "status",
        )
        await record_event(
            self.api,
            pod,
            PODS,
            "Warning",
            "FailedScheduling",
            message,
            SCHEDULER_NAME,
            self.wall(),
        )
