"""kube-controller-manager's node lifecycle, taint-eviction and pod GC controllers.

- Node health: a node whose Lease and Ready heartbeat have not moved for
  ``node_monitor_grace_period`` turns Ready=Unknown ("Kubelet stopped posting node status.") and its
  pods Ready=False; the controller checks every ``node_monitor_period``.
- Taints by condition: Ready=Unknown -> ``node.kubernetes.io/unreachable`` NoSchedule + NoExecute,
  Ready=False -> ``node.kubernetes.io/not-ready``; a cordoned node gets
  ``node.kubernetes.io/unschedulable:NoSchedule``. They are removed when the condition clears.
- Taint eviction: a pod that does not tolerate a NoExecute taint of its node is deleted (gracefully,
  with a DisruptionTarget condition) at once, or after the smallest ``tolerationSeconds`` of the
  tolerations that match (``DefaultTolerationSeconds`` admission adds 300 s for not-ready and
  unreachable, see :func:`add_default_tolerations`). On an unreachable node nothing completes that
  deletion: the pod stays Terminating.
- Pod GC: pods bound to a Node that no longer exists are force-deleted after a quarantine;
  Terminating pods on a not-ready node carrying ``node.kubernetes.io/out-of-service`` (non-graceful
  node shutdown) are marked Failed and force-deleted.

Sources: kubernetes.io/docs/concepts/architecture/nodes/#node-controller,
/docs/concepts/scheduling-eviction/taint-and-toleration/#taint-based-evictions,
/docs/concepts/cluster-administration/node-shutdown/#non-graceful-node-shutdown,
/docs/concepts/workloads/pods/pod-lifecycle/#pod-garbage-collection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hosted_engine.lab.sim.api import (
    NODES,
    PODS,
    Api,
    Conflict,
    Obj,
    condition,
    meta,
    name_of,
    ns_of,
    parse_time,
    record_event,
    rfc3339,
)
from hosted_engine.lab.sim.placement import toleration_matches

log = logging.getLogger(__name__)

UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
MANAGED_TAINTS = frozenset({UNREACHABLE, NOT_READY, UNSCHEDULABLE})
NODE_CONDITIONS = ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")


# -- pure decisions ------------------------------------------------------------------------------


def desired_condition_taints(node: Obj) -> list[tuple[str, str]]:
    """The (key, effect) taints the node's conditions and cordon call for."""
    ready = (condition(node, "Ready") or {}).get("status")
    out: list[tuple[str, str]] = []
    if ready == "Unknown":
        out += [(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]
    elif ready == "False":
        out += [(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]
    if (node.get("spec") or {}).get("unschedulable"):
        out.append((UNSCHEDULABLE, "NoSchedule"))
    return out


def reconcile_taints(node: Obj, now: datetime) -> list[Obj] | None:
    """The node's new taint list, or None when it is already right. Foreign taints are kept."""
    current = list((node.get("spec") or {}).get("taints") or [])
    wanted = desired_condition_taints(node)
    kept = [
        t
        for t in current
        if t.get("key") not in MANAGED_TAINTS or (t.get("key"), t.get("effect")) in wanted
    ]
    have = {(t.get("key"), t.get("effect")) for t in kept}
    for key, effect in wanted:
        if (key, effect) not in have:
            taint: Obj = {"key": key, "effect": effect}
            if effect == "NoExecute":
                taint["timeAdded"] = rfc3339(now)
            kept.append(taint)
    if kept == current:
        return None
    return kept


def eviction_time(pod: Obj, taints: Sequence[Obj]) -> datetime | bool:
    """When the taint manager deletes ``pod`` because of its node's NoExecute ``taints``.

    False: never (tolerated forever or no NoExecute taint); True: at once; else the time.
    """
    no_execute = [t for t in taints if t.get("effect") == "NoExecute"]
    if not no_execute:
        return False
    tolerations = list((pod.get("spec") or {}).get("tolerations") or [])
    deadline: datetime | None = None
    for taint in no_execute:
        used = [t for t in tolerations if toleration_matches(t, taint)]
        if not used:
            return True
        bounded = [
            float(t["tolerationSeconds"]) for t in used if t.get("tolerationSeconds") is not None
        ]
        if not bounded or len(bounded) < len(used):
            continue  # some matching toleration has no limit: this taint is tolerated forever
        added = parse_time(taint.get("timeAdded"))
        if added is None:
            return True
        when = added + timedelta(seconds=max(0.0, min(bounded)))
        deadline = when if deadline is None or when < deadline else deadline
    return deadline if deadline is not None else False


def add_default_tolerations(pod: Obj, seconds: int) -> bool:
    """DefaultTolerationSeconds admission: tolerate not-ready and unreachable NoExecute for
    ``seconds`` unless the pod already tolerates them. Returns whether it changed the pod."""
    spec = pod.setdefault("spec", {})
    tolerations = list(spec.get("tolerations") or [])
    changed = False
    for key in (NOT_READY, UNREACHABLE):
        taint = {"key": key, "effect": "NoExecute"}
        if any(toleration_matches(t, taint) for t in tolerations):
            continue
        tolerations.append(
            {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}
        )
        changed = True
    if changed:
        spec["tolerations"] = tolerations
    return changed


# -- the controller ----------------------------------------------------------------------------


@dataclass
class _Health:
    signal: tuple[Any, ...]
    observed_at: float


class NodeLifecycleController:
    """Runs the node lifecycle, taint-eviction and pod GC loops over a cluster snapshot."""

    def __init__(self, api: Api, timings: Any, wall: Callable[[], datetime]) -> None:
        self.api = api
        self.timings = timings
        self.wall = wall
        self.health: dict[str, _Health] = {}
        self.next_run = 0.0
        self.evicted: set[str] = set()
        self.orphans: dict[str, float] = {}
        self.forced: set[str] = set()

    async def reconcile(
        self,
        nodes: Sequence[Obj],
        leases: Mapping[str, Obj],
        pods_by_node: Mapping[str, Sequence[Obj]],
        now: float,
    ) -> None:
        if now < self.next_run:
            return
        self.next_run = now + self.timings.node_monitor_period
        names = set()
        for node in nodes:
            name = name_of(node)
            names.add(name)
            try:
                node = await self._monitor(node, leases.get(name), pods_by_node.get(name, ()), now)
                node = await self._taints(node)
                await self._evict(node, pods_by_node.get(name, ()))
                await self._out_of_service(node, pods_by_node.get(name, ()))
            except Conflict:
                continue
            except Exception:
                log.exception("node lifecycle: %s", name)
        for gone in set(self.health) - names:
            del self.health[gone]
        await self._gc_orphans(names, pods_by_node, now)

    async def _monitor(self, node: Obj, lease: Obj | None, pods: Iterable[Obj], now: float) -> Obj:
        name = name_of(node)
        ready = condition(node, "Ready") or {}
        signal = (
            ((lease or {}).get("spec") or {}).get("renewTime"),
            ready.get("lastHeartbeatTime"),
            ready.get("status"),
        )
        health = self.health.get(name)
        if health is None or health.signal != signal:
            self.health[name] = _Health(signal, now)
            return node
        if ready.get("status") == "Unknown":
            return node
        if now - health.observed_at <= self.timings.node_monitor_grace_period:
            return node
        stamp = rfc3339(self.wall())
        conditions = []
        old = {c.get("type"): c for c in (node.get("status") or {}).get("conditions") or []}
        for ctype in NODE_CONDITIONS:
            prev = old.get(ctype) or {}
            conditions.append(
                {
                    "type": ctype,
                    "status": "Unknown",
                    "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.",
                    "lastHeartbeatTime": prev.get("lastHeartbeatTime", stamp),
                    "lastTransitionTime": stamp,
                }
            )
        patched = await self.api.patch(
            NODES,
            name,
            {
                "metadata": {"resourceVersion": meta(node).get("resourceVersion")},
                "status": {"conditions": conditions},
            },
            subresource="status",
        )
        if patched is None:
            return node
        log.info("node %s: Ready=Unknown after %.1fs of silence", name, now - health.observed_at)
        self.health[name] = _Health((signal[0], signal[1], "Unknown"), health.observed_at)
        await record_event(
            self.api,
            patched,
            NODES,
            "Normal",
            "NodeNotReady",
            f"Node {name} status is now: NodeNotReady",
            "node-controller",
            self.wall(),
        )
        for pod in pods:
            if (condition(pod, "Ready") or {}).get("status") == "True":
                await self._mark_not_ready(pod, stamp)
        return patched

    async def _mark_not_ready(self, pod: Obj, stamp: str) -> None:
        ready = dict(condition(pod, "Ready") or {})
        ready.update({"status": "False", "lastTransitionTime": stamp})
        await self.api.patch(
            PODS, name_of(pod), {"status": {"conditions": [ready]}}, ns_of(pod), "status"
        )
        await record_event(
            self.api,
            pod,
            PODS,
            "Warning",
            "NodeNotReady",
            "Node is not ready",
            "node-controller",
            self.wall(),
        )

    async def _taints(self, node: Obj) -> Obj:
        taints = reconcile_taints(node, self.wall())
        if taints is None:
            return node
        patched = await self.api.patch(
            NODES,
            name_of(node),
            {
                "metadata": {"resourceVersion": meta(node).get("resourceVersion")},
                "spec": {"taints": taints},
            },
            # a merge patch replaces the list: taints are an atomic list in NodeSpec
            patch_type="merge",
        )
        return patched if patched is not None else node

    async def _evict(self, node: Obj, pods: Iterable[Obj]) -> None:
        taints = list((node.get("spec") or {}).get("taints") or [])
        if not any(t.get("effect") == "NoExecute" for t in taints):
            return
        wall_now = self.wall()
        for pod in pods:
            m = meta(pod)
            uid = str(m.get("uid", ""))
            if m.get("deletionTimestamp") or uid in self.evicted:
                continue
            when = eviction_time(pod, taints)
            if when is False or (isinstance(when, datetime) and when > wall_now):
                continue
            self.evicted.add(uid)
            await self._disruption(
                pod, "DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint"
            )
            await record_event(
                self.api,
                pod,
                PODS,
                "Normal",
                "TaintManagerEviction",
                f"Marking for deletion Pod {ns_of(pod)}/{name_of(pod)}",
                "taint-eviction-controller",
                self.wall(),
            )
            await self.api.delete(PODS, name_of(pod), ns_of(pod), uid=uid)

    async def _disruption(self, pod: Obj, reason: str, message: str) -> None:
        cond = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": rfc3339(self.wall()),
        }
        await self.api.patch(
            PODS, name_of(pod), {"status": {"conditions": [cond]}}, ns_of(pod), "status"
        )

    async def _out_of_service(self, node: Obj, pods: Iterable[Obj]) -> None:
        taints = (node.get("spec") or {}).get("taints") or []
        if not any(t.get("key") == OUT_OF_SERVICE for t in taints):
            return
        if (condition(node, "Ready") or {}).get("status") == "True":
            return
        for pod in pods:
            m = meta(pod)
            uid = str(m.get("uid", ""))
            if not m.get("deletionTimestamp") or uid in self.forced:
                continue
            self.forced.add(uid)
            await self._force(pod, "PodGC: node is out of service")

    async def _force(self, pod: Obj, message: str) -> None:
        phase = (pod.get("status") or {}).get("phase")
        if phase not in ("Succeeded", "Failed"):
            await self.api.patch(
                PODS,
                name_of(pod),
                {
                    "status": {
                        "phase": "Failed",
                        "conditions": [
                            {
                                "type": "DisruptionTarget",
                                "status": "True",
                                "reason": "DeletionByPodGC",
                                "message": message,
                                "lastTransitionTime": rfc3339(self.wall()),
                            }
                        ],
                    }
                },
                ns_of(pod),
                "status",
            )
        await self.api.delete(
            PODS, name_of(pod), ns_of(pod), grace_period_seconds=0, uid=str(meta(pod).get("uid"))
        )
        log.info("pod gc: force-deleted %s/%s (%s)", ns_of(pod), name_of(pod), message)

    async def _gc_orphans(
        self, names: set[str], pods_by_node: Mapping[str, Sequence[Obj]], now: float
    ) -> None:
        current: set[str] = set()
        for node_name, pods in pods_by_node.items():
            if not node_name or node_name in names:
                continue
            for pod in pods:
                uid = str(meta(pod).get("uid", ""))
                current.add(uid)
                first = self.orphans.setdefault(uid, now)
                if now - first >= self.timings.pod_gc_orphan_quarantine and uid not in self.forced:
                    self.forced.add(uid)
                    await self._force(pod, "PodGC: node no longer exists")
        for uid in set(self.orphans) - current:
            del self.orphans[uid]
