"""The scheduler's filters and scores as pure functions (kube-scheduler's default profile).

References: kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/,
/docs/concepts/scheduling-eviction/taint-and-toleration/,
/docs/concepts/scheduling-eviction/resource-bin-packing/.
"""

from __future__ import annotations

from typing import Any

import pytest
from hosted_engine.lab.sim.placement import (
    StaticCache,
    feasible_nodes_to_find,
    filter_reasons,
    pod_requests,
    schedule,
    toleration_matches,
    used_by_node,
)
from hosted_engine.lab.sim.quantity import parse_quantity, to_units


def node(
    name: str,
    cpu: str = "4",
    memory: str = "8Gi",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, Any]] | None = None,
    unschedulable: bool = False,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}},
    }


def pod(cpu: str = "1", memory: str = "1Gi", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}
            ],
            **spec,
        },
    }


@pytest.mark.parametrize(
    ("text", "resource", "units"),
    [
        ("500m", "cpu", 500),
        ("2", "cpu", 2000),
        ("0.1m", "cpu", 1),
        ("1Gi", "memory", 2**30),
        ("1G", "memory", 10**9),
        ("1.5Gi", "memory", 3 * 2**29),
        ("110", "pods", 110),
        ("1e3", "memory", 1000),
    ],
)
def test_quantities_in_scheduler_units(text: str, resource: str, units: int) -> None:
    assert to_units(resource, text) == units


def test_a_malformed_quantity_is_rejected() -> None:
    with pytest.raises(ValueError):
        parse_quantity("lots")


def test_requests_sum_containers_take_max_of_init_and_add_overhead() -> None:
    p = pod("1", "1Gi")
    p["spec"]["containers"].append({"name": "d", "resources": {"limits": {"cpu": "500m"}}})
    p["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": "3"}}}]
    p["spec"]["overhead"] = {"memory": "100Mi"}
    req = pod_requests(p)
    # a limit without a request counts as the request; init containers run alone, before
    assert req["cpu"] == 3000
    assert req["memory"] == 2**30 + 100 * 2**20
    assert req["pods"] == 1


def test_resources_filter_names_every_missing_resource() -> None:
    used = {"cpu": 3500, "memory": 7 * 2**30, "pods": 1}
    assert filter_reasons(pod("1", "2Gi"), node("n"), used) == [
        "Insufficient cpu",
        "Insufficient memory",
    ]
    assert filter_reasons(pod("500m", "1Gi"), node("n"), used) == []


def test_extended_resources_must_be_offered() -> None:
    p = pod()
    p["spec"]["containers"][0]["resources"]["limits"] = {"devices.kubevirt.io/kvm": "1"}
    assert filter_reasons(p, node("n"), {}) == ["Insufficient devices.kubevirt.io/kvm"]


def test_cordoned_node_is_filtered_unless_tolerated() -> None:
    cordoned = node("n", unschedulable=True)
    assert filter_reasons(pod(), cordoned, {}) == ["node(s) were unschedulable"]
    tolerant = pod(
        tolerations=[
            {
                "key": "node.kubernetes.io/unschedulable",
                "operator": "Exists",
                "effect": "NoSchedule",
            }
        ]
    )
    assert filter_reasons(tolerant, cordoned, {}) == []


def test_taints_need_tolerations_but_prefer_no_schedule_only_scores() -> None:
    tainted = node("n", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])
    assert filter_reasons(pod(), tainted, {}) == ["node(s) had untolerated taint {dedicated: db}"]
    ok = pod(
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}
        ]
    )
    assert filter_reasons(ok, tainted, {}) == []
    wrong_value = pod(tolerations=[{"key": "dedicated", "value": "web"}])
    assert filter_reasons(wrong_value, tainted, {}) != []
    soft = node("s", taints=[{"key": "spot", "effect": "PreferNoSchedule"}])
    assert filter_reasons(pod(), soft, {}) == []
    # both fit, the PreferNoSchedule node loses
    assert schedule(pod(), [soft, node("t")], {}).node == "t"


def test_toleration_matching_rules() -> None:
    taint = {"key": "k", "value": "v", "effect": "NoExecute"}
    assert toleration_matches({"operator": "Exists"}, taint)  # empty key + Exists: everything
    assert toleration_matches({"key": "k", "operator": "Exists"}, taint)
    assert toleration_matches({"key": "k", "value": "v"}, taint)  # Equal is the default
    assert not toleration_matches({"key": "k", "value": "v", "effect": "NoSchedule"}, taint)
    assert not toleration_matches({"key": "other", "operator": "Exists"}, taint)


def test_node_selector_and_required_affinity_both_apply() -> None:
    nodes = [
        node("a", labels={"disk": "ssd", "zone": "1"}),
        node("b", labels={"disk": "hdd"}),
        node("c", labels={"disk": "ssd", "zone": "2"}),
    ]
    p = pod(
        nodeSelector={"disk": "ssd"},
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "zone", "operator": "NotIn", "values": ["1"]}
                            ]
                        }
                    ]
                }
            }
        },
    )
    decision = schedule(p, nodes, {})
    assert decision.node == "c"


@pytest.mark.parametrize(
    ("expr", "fits"),
    [
        ({"key": "gen", "operator": "Gt", "values": ["3"]}, True),
        ({"key": "gen", "operator": "Lt", "values": ["3"]}, False),
        ({"key": "gen", "operator": "Exists"}, True),
        ({"key": "gpu", "operator": "DoesNotExist"}, True),
        ({"key": "gen", "operator": "In", "values": ["4", "5"]}, True),
    ],
)
def test_affinity_operators(expr: dict[str, Any], fits: bool) -> None:
    p = pod(
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [expr]}]
                }
            }
        }
    )
    assert (filter_reasons(p, node("n", labels={"gen": "4"}), {}) == []) is fits


def test_match_fields_selects_by_node_name_and_terms_are_ored() -> None:
    p = pod(
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": ["b"]}
                            ]
                        },
                        {"matchExpressions": [{"key": "role", "operator": "In", "values": ["x"]}]},
                    ]
                }
            }
        }
    )
    assert schedule(p, [node("a"), node("b"), node("c", labels={"role": "x"})], {}).node == "b"


def test_preferred_affinity_weights_pick_the_node() -> None:
    prefs = [
        {
            "weight": 20,
            "preference": {
                "matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}
                ]
            },
        },
        {
            "weight": 90,
            "preference": {
                "matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["c"]}
                ]
            },
        },
    ]
    p = pod(affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": prefs}})
    assert schedule(p, [node("a"), node("b"), node("c")], {}).node == "c"


def test_least_allocated_spreads_and_ties_break_by_name() -> None:
    nodes = [node("b"), node("a"), node("c")]
    assert schedule(pod(), nodes, {}).node == "a"
    bound = [
        {
            "spec": {"nodeName": "a", "containers": pod()["spec"]["containers"]},
            "status": {"phase": "Running"},
        }
    ]
    assert schedule(pod(), nodes, used_by_node(bound)).node == "b"


def test_terminal_pods_free_their_resources_terminating_ones_do_not() -> None:
    done = {
        "metadata": {},
        "spec": {"nodeName": "a", **pod("4", "1Gi")["spec"]},
        "status": {"phase": "Succeeded"},
    }
    leaving = {
        "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": "b", **pod("4", "1Gi")["spec"]},
        "status": {"phase": "Running"},
    }
    used = used_by_node([done, leaving])
    assert "a" not in used
    assert used["b"]["cpu"] == 4000


def test_failed_scheduling_message_counts_reasons_like_kube_scheduler() -> None:
    nodes = [
        node("a", cpu="500m"),
        node("b", unschedulable=True),
        node("c", taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]),
    ]
    decision = schedule(pod("1"), nodes, {})
    assert decision.node is None
    assert decision.message == (
        "0/3 nodes are available: 1 Insufficient cpu, "
        "1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, "
        "1 node(s) were unschedulable."
    )


def test_large_clusters_filter_only_an_adaptive_share_of_nodes() -> None:
    """kube-scheduler's percentageOfNodesToScore default (adaptive): kubernetes.io/docs/
    concepts/scheduling-eviction/scheduler-perf-tuning/."""
    assert feasible_nodes_to_find(50) == 50
    assert feasible_nodes_to_find(100) == 100
    assert feasible_nodes_to_find(1000) == 420
    assert feasible_nodes_to_find(5000) == 500
    nodes = [node(f"n{i:04d}") for i in range(1000)]
    decision = schedule(pod(), nodes, {}, start=990)
    assert decision.processed == 420
    # the search wrapped around from node 990 and the least loaded, first-named node won
    assert decision.node == "n0000"


def test_the_static_cache_changes_no_decision() -> None:
    nodes = [
        node("a", labels={"disk": "ssd"}),
        node("b", taints=[{"key": "spot", "effect": "PreferNoSchedule"}]),
        node("c", unschedulable=True),
        node("d", taints=[{"key": "gpu", "effect": "NoSchedule"}], labels={"disk": "ssd"}),
    ]
    prefs = [
        {
            "weight": 50,
            "preference": {
                "matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]
            },
        }
    ]
    pods = [
        pod(),
        pod(nodeSelector={"disk": "ssd"}),
        pod(affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": prefs}}),
        pod(tolerations=[{"key": "gpu", "operator": "Exists"}], nodeSelector={"disk": "ssd"}),
        pod(nodeSelector={"disk": "nvme"}),
        pod(cpu="64"),
    ]
    cache = StaticCache()
    for p in pods * 2:  # the second round is served from the cache
        assert schedule(p, nodes, {}, cache=cache) == schedule(p, nodes, {})
