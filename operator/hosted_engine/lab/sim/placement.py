"""The kube-scheduler's decisions as pure functions: filters, scores and the choice.

Filters (in the default profile's order, first failing plugin wins per node): NodeUnschedulable,
TaintToleration (NoSchedule and NoExecute), NodeAffinity (nodeSelector plus required node
affinity), NodeResourcesFit. Scores (weights as in the default profile): NodeAffinity preferred
terms x2, TaintToleration PreferNoSchedule x3, NodeResourcesFit LeastAllocated x1 and
BalancedAllocation x1, each normalised to 0-100. Ties go to the first node name, so runs repeat.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hosted_engine.lab.sim.quantity import to_units

Obj = Mapping[str, Any]

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"


# -- resources ------------------------------------------------------------------------------


def container_requests(container: Obj) -> dict[str, int]:
    resources = container.get("resources") or {}
    requests = dict(resources.get("limits") or {})  # a limit without a request is the request
    requests.update(resources.get("requests") or {})
    return {name: to_units(name, value) for name, value in requests.items()}


def pod_requests(pod: Obj) -> dict[str, int]:
    """Effective requests: sum over containers, max with each init container, plus overhead."""
    spec = pod.get("spec") or {}
    total: Counter[str] = Counter()
    for container in spec.get("containers") or []:
        total.update(container_requests(container))
    for init in spec.get("initContainers") or []:
        for name, value in container_requests(init).items():
            total[name] = max(total[name], value)
    for name, value in (spec.get("overhead") or {}).items():
        total[name] += to_units(name, value)
    result = {name: value for name, value in total.items() if value > 0}
    result["pods"] = 1
    return result


def node_allocatable(node: Obj) -> dict[str, int]:
    status = node.get("status") or {}
    raw = status.get("allocatable") or status.get("capacity") or {}
    return {name: to_units(name, value) for name, value in raw.items()}


def occupies_node(pod: Obj) -> bool:
    """A bound pod counts against its node until it is terminal (Terminating ones still count)."""
    return (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES


def used_by_node(
    pods: Iterable[Obj], requests: Callable[[Obj], Mapping[str, int]] = pod_requests
) -> dict[str, Counter[str]]:
    used: dict[str, Counter[str]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and occupies_node(pod):
            used.setdefault(node, Counter()).update(requests(pod))
    return used


# -- labels, selectors, affinity --------------------------------------------------------------


def expression_matches(expr: Obj, values: Mapping[str, str]) -> bool:
    key = expr.get("key", "")
    op = expr.get("operator", "")
    wanted = [str(v) for v in expr.get("values") or []]
    present = key in values
    if op == "In":
        return present and values[key] in wanted
    if op == "NotIn":
        return not present or values[key] not in wanted
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(wanted) == 1:
        try:
            have, bound = int(values[key]), int(wanted[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def term_matches(term: Obj, node: Obj) -> bool:
    """A NodeSelectorTerm: its expressions and fields ANDed; an empty term matches nothing."""
    exprs = term.get("matchExpressions") or []
    field_exprs = term.get("matchFields") or []
    if not exprs and not field_exprs:
        return False
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    fields = {"metadata.name": meta.get("name", "")}
    return all(expression_matches(e, labels) for e in exprs) and all(
        expression_matches(e, fields) for e in field_exprs
    )


def _node_affinity(pod: Obj) -> Obj:
    return ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}


def matches_node_selection(pod: Obj, node: Obj) -> bool:
    """nodeSelector and requiredDuringSchedulingIgnoredDuringExecution, both must hold."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    required = _node_affinity(pod).get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    return any(term_matches(t, node) for t in required.get("nodeSelectorTerms") or [])


def preferred_weight(pod: Obj, node: Obj) -> int:
    terms = _node_affinity(pod).get("preferredDuringSchedulingIgnoredDuringExecution") or []
    return sum(
        int(t.get("weight", 0)) for t in terms if term_matches(t.get("preference") or {}, node)
    )


# -- taints and tolerations --------------------------------------------------------------------


def toleration_matches(toleration: Obj, taint: Obj) -> bool:
    effect = toleration.get("effect")
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key")
    op = toleration.get("operator") or "Equal"
    if not key:
        return op == "Exists"  # an empty key with Exists tolerates everything
    if key != taint.get("key"):
        return False
    if op == "Exists":
        return True
    return (toleration.get("value") or "") == (taint.get("value") or "")


def tolerated(tolerations: Sequence[Obj], taint: Obj) -> bool:
    return any(toleration_matches(t, taint) for t in tolerations)


def pod_tolerations(pod: Obj) -> list[Obj]:
    return list((pod.get("spec") or {}).get("tolerations") or [])


def node_taints(node: Obj) -> list[Obj]:
    return list((node.get("spec") or {}).get("taints") or [])


def describe_taint(taint: Obj) -> str:
    return f"{{{taint.get('key', '')}: {taint.get('value') or ''}}}"


# -- filters, scores, choice -------------------------------------------------------------------


def static_reason(pod: Obj, node: Obj) -> str | None:
    """The filters that depend only on the pod's constraints and the node's labels, taints and
    cordon (NodeUnschedulable, TaintToleration, NodeAffinity): why not, or None."""
    tolerations = pod_tolerations(pod)
    if (node.get("spec") or {}).get("unschedulable") and not tolerated(
        tolerations, {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
    ):
        return "node(s) were unschedulable"
    for taint in node_taints(node):
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerated(tolerations, taint):
            return f"node(s) had untolerated taint {describe_taint(taint)}"
    if not matches_node_selection(pod, node):
        return "node(s) didn't match Pod's node affinity/selector"
    return None


def resource_reasons(
    requests: Mapping[str, int], allocatable: Mapping[str, int], used: Mapping[str, int]
) -> list[str]:
    """NodeResourcesFit: every requested resource must fit in what is left."""
    reasons = []
    for name, amount in sorted(requests.items()):
        if used.get(name, 0) + amount > allocatable.get(name, 0):
            reasons.append("Too many pods" if name == "pods" else f"Insufficient {name}")
    return reasons


def filter_reasons(
    pod: Obj,
    node: Obj,
    used: Mapping[str, int],
    requests: Mapping[str, int] | None = None,
    allocatable: Mapping[str, int] | None = None,
) -> list[str]:
    """Why ``pod`` cannot go to ``node`` (kube-scheduler's messages); empty when it fits.

    ``requests`` and ``allocatable`` may be passed precomputed (the scheduler caches them)."""
    reason = static_reason(pod, node)
    if reason is not None:
        return [reason]
    if allocatable is None:
        allocatable = node_allocatable(node)
    if requests is None:
        requests = pod_requests(pod)
    return resource_reasons(requests, allocatable, used)


def untolerated_prefer_no_schedule(pod: Obj, node: Obj) -> int:
    tolerations = pod_tolerations(pod)
    return sum(
        1
        for t in node_taints(node)
        if t.get("effect") == "PreferNoSchedule" and not tolerated(tolerations, t)
    )


def pod_signature(pod: Obj) -> str:
    """What the static filters and scores read from a pod (pods of one template share it)."""
    spec = pod.get("spec") or {}
    return json.dumps(
        [spec.get("tolerations"), spec.get("nodeSelector"), _node_affinity(pod)],
        sort_keys=True,
    )


class StaticCache:
    """Static filter verdicts and score inputs per (pod signature, node, node resourceVersion),
    so that thousands of pods from one template cost one evaluation per node."""

    def __init__(self, limit: int = 500_000) -> None:
        self.limit = limit
        self._data: dict[tuple[str, str, Any], tuple[str | None, int, int]] = {}

    def lookup(self, signature: str, pod: Obj, node: Obj) -> tuple[str | None, int, int]:
        m = node.get("metadata") or {}
        key = (signature, str(m.get("name")), m.get("resourceVersion"))
        found = self._data.get(key)
        if found is None:
            if len(self._data) >= self.limit:
                self._data.clear()
            found = self._data[key] = (
                static_reason(pod, node),
                preferred_weight(pod, node),
                untolerated_prefer_no_schedule(pod, node),
            )
        return found


def _normalise(raw: Mapping[str, float], reverse: bool = False) -> dict[str, float]:
    top = max(raw.values(), default=0.0)
    if top <= 0:
        return {k: (100.0 if reverse else 0.0) for k in raw}
    if reverse:
        return {k: 100.0 - v * 100.0 / top for k, v in raw.items()}
    return {k: v * 100.0 / top for k, v in raw.items()}


def _fractions(
    requests: Mapping[str, int], allocatable: Mapping[str, int], used: Mapping[str, int]
) -> list[float]:
    out = []
    for name in ("cpu", "memory"):
        alloc = allocatable.get(name, 0)
        if alloc > 0:
            out.append(min(1.0, (used.get(name, 0) + requests.get(name, 0)) / alloc))
    return out


def scores(
    pod: Obj,
    nodes: Sequence[Obj],
    used: Mapping[str, Mapping[str, int]],
    requests: Mapping[str, int] | None = None,
    allocatable: Mapping[str, Mapping[str, int]] | None = None,
    static: Mapping[str, tuple[str | None, int, int]] | None = None,
) -> dict[str, float]:
    if requests is None:
        requests = pod_requests(pod)
    names = [n["metadata"]["name"] for n in nodes]
    by_name = dict(zip(names, nodes, strict=True))

    def inputs(n: str) -> tuple[int, int]:
        if static is not None and n in static:
            return static[n][1], static[n][2]
        return preferred_weight(pod, by_name[n]), untolerated_prefer_no_schedule(pod, by_name[n])

    raw = {n: inputs(n) for n in names}
    affinity = _normalise({n: float(raw[n][0]) for n in names})
    prefer_no = _normalise({n: float(raw[n][1]) for n in names}, reverse=True)
    total: dict[str, float] = {}
    for n in names:
        alloc = (allocatable or {}).get(n)
        if alloc is None:
            alloc = node_allocatable(by_name[n])
        fractions = _fractions(requests, alloc, used.get(n, {}))
        least = 100.0 * sum(1.0 - f for f in fractions) / len(fractions) if fractions else 0.0
        balanced = 100.0
        if len(fractions) == 2:
            balanced = 100.0 * (1.0 - abs(fractions[0] - fractions[1]) / 2)
        total[n] = 2 * affinity[n] + 3 * prefer_no[n] + least + balanced
    return total


@dataclass(frozen=True)
class Decision:
    node: str | None
    message: str = ""
    #: how many nodes the filters looked at
    processed: int = 0


def feasible_nodes_to_find(total: int) -> int:
    """kube-scheduler's adaptive percentageOfNodesToScore: filtering stops once this many
    feasible nodes are found (all nodes below 100; 50 % minus 1 % per 125 nodes, at least 5 %
    and at least 100 nodes)."""
    if total < 100:
        return total
    percentage = max(5.0, 50.0 - total / 125.0)
    return max(100, int(total * percentage / 100))


def schedule(
    pod: Obj,
    nodes: Sequence[Obj],
    used: Mapping[str, Mapping[str, int]],
    requests: Mapping[str, int] | None = None,
    allocatable: Mapping[str, Mapping[str, int]] | None = None,
    start: int = 0,
    cache: StaticCache | None = None,
) -> Decision:
    """The node for ``pod``, or why none fits (the FailedScheduling message).

    Filtering starts at node index ``start`` and stops after
    :func:`feasible_nodes_to_find` feasible nodes, as kube-scheduler does; the caller rotates
    ``start`` by :attr:`Decision.processed` between pods.
    """
    if requests is None:
        requests = pod_requests(pod)
    signature = pod_signature(pod) if cache is not None else ""
    static: dict[str, tuple[str | None, int, int]] = {}
    feasible: list[Obj] = []
    failures: Counter[str] = Counter()
    total = len(nodes)
    wanted = feasible_nodes_to_find(total)
    processed = 0
    for offset in range(total):
        node = nodes[(start + offset) % total]
        name = node["metadata"]["name"]
        processed += 1
        if cache is not None:
            static[name] = cache.lookup(signature, pod, node)
            reason = static[name][0]
            if reason is not None:
                reasons = [reason]
            else:
                alloc = (allocatable or {}).get(name)
                if alloc is None:
                    alloc = node_allocatable(node)
                reasons = resource_reasons(requests, alloc, used.get(name, {}))
        else:
            reasons = filter_reasons(
                pod, node, used.get(name, {}), requests, (allocatable or {}).get(name)
            )
        if reasons:
            failures.update(reasons)
        else:
            feasible.append(node)
            if len(feasible) >= wanted:
                break
    if not feasible:
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(failures.items()))
        message = f"0/{total} nodes are available"
        return Decision(None, f"{message}: {detail}." if detail else f"{message}.", processed)
    ranked = scores(pod, feasible, used, requests, allocatable, static if cache else None)
    best = min(ranked, key=lambda name: (-round(ranked[name], 6), name))
    return Decision(best, "", processed)
