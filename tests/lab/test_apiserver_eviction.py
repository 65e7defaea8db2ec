"""Eviction API and PodDisruptionBudgets.
https://kubernetes.io/docs/concepts/scheduling-eviction/api-eviction/
https://kubernetes.io/docs/tasks/run-application/configure-pdb/
"""

from __future__ import annotations

from lab_api import Api

PODS = "/api/v1/namespaces/default/pods"
PDBS = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"


async def _running_pod(api: Api, name: str, app: str = "web") -> None:
    await api.ok("POST", PODS, {"metadata": {"name": name, "labels": {"app": app}},
                                "spec": {"containers": [{"name": "c", "image": "i"}]}})
    await api.ok("PATCH", f"{PODS}/{name}/status", {"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        ctype="application/merge-patch+json")


def _eviction(name: str) -> dict[str, object]:
    return {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": "default"}}


async def test_eviction_without_pdb_deletes_pod(api: Api) -> None:
    """An eviction allowed by every budget deletes the pod and answers 201
    ("API-initiated eviction")."""
    await _running_pod(api, "p")
    resp = await api.req("POST", f"{PODS}/p/eviction", _eviction("p"))
    assert resp.status == 201
    assert (await api.req("GET", f"{PODS}/p")).status == 404


async def test_pdb_status_is_computed(api: Api) -> None:
    """A PDB's status counts healthy pods and the disruptions allowed
    ("Specifying a Disruption Budget": status)."""
    await _running_pod(api, "a")
    await _running_pod(api, "b")
    await api.ok("POST", PDBS, {"metadata": {"name": "pdb"}, "spec": {
        "minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})
    pdb = await api.ok("GET", f"{PDBS}/pdb")
    assert pdb["status"]["currentHealthy"] == 2 and pdb["status"]["desiredHealthy"] == 1
    assert pdb["status"]["disruptionsAllowed"] == 1 and pdb["status"]["expectedPods"] == 2


async def test_eviction_violating_pdb_is_429(api: Api) -> None:
    """An eviction that would violate a PodDisruptionBudget answers 429 TooManyRequests and
    keeps the pod ("API-initiated eviction": how it works)."""
    await _running_pod(api, "a")
    await _running_pod(api, "b")
    await api.ok("POST", PDBS, {"metadata": {"name": "pdb"}, "spec": {
        "minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})
    assert (await api.req("POST", f"{PODS}/a/eviction", _eviction("a"))).status == 201
    resp = await api.req("POST", f"{PODS}/b/eviction", _eviction("b"))
    assert resp.status == 429 and resp.body["reason"] == "TooManyRequests"
    assert resp.body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert (await api.req("GET", f"{PODS}/b")).status == 200


async def test_pdb_percentage(api: Api) -> None:
    """minAvailable as a percentage rounds up ("Specifying a Disruption Budget")."""
    for n in "abc":
        await _running_pod(api, n)
    await api.ok("POST", PDBS, {"metadata": {"name": "pdb"}, "spec": {
        "minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}}})
    pdb = await api.ok("GET", f"{PDBS}/pdb")
    assert pdb["status"]["desiredHealthy"] == 2 and pdb["status"]["disruptionsAllowed"] == 1


async def test_eviction_of_pending_pod_ignores_budget(api: Api) -> None:
    """Pods not yet running can be evicted whatever the budget ("API-initiated eviction"
    and unhealthy pod eviction policy)."""
    await api.ok("POST", PODS, {"metadata": {"name": "p", "labels": {"app": "web"}},
                                "spec": {"containers": [{"name": "c", "image": "i"}]}})
    await api.ok("POST", PDBS, {"metadata": {"name": "pdb"}, "spec": {
        "minAvailable": 5, "selector": {"matchLabels": {"app": "web"}}}})
    assert (await api.req("POST", f"{PODS}/p/eviction", _eviction("p"))).status == 201
