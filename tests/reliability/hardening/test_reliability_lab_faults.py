"""The lab's fault injection and request log, as the hardening suite uses them: faults aimed at
one client by its User-Agent, watch streams dropped mid-stream (the client resumes from its
last resourceVersion and loses nothing), the seeded 5 % profile, and the request-log hook that
records (verb, group, resource, subresource, namespace) like an audit log."""

from __future__ import annotations

from typing import Any

import pytest
from hosted_engine.adapters.kube import Resource
from hosted_engine.lab.apiserver import ApiRequest, ApiResponse, LabApiServer
from hosted_engine.lab.apiserver.admission import (
    FaultRule,
    Faults,
    RequestRecord,
    random_faults,
)

CMS = "/api/v1/namespaces/default/configmaps"
OPERATOR = "hosted-engine-operator/0.1.0"


async def call(server: LabApiServer, method: str, path: str, body: Any = None,
               agent: str = OPERATOR, **query: str) -> ApiResponse:
    ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
    return await server.core.handle(ApiRequest(method, path, query, body, ctype,
                                               user_agent=agent))


async def test_faults_aim_at_one_user_agent(lab_server: LabApiServer) -> None:
    await call(lab_server, "POST", CMS, {"metadata": {"name": "a"}})
    lab_server.add_fault(FaultRule(verb="get", status=500, user_agent="hosted-engine-operator/"))
    assert (await call(lab_server, "GET", f"{CMS}/a")).status == 500
    assert (await call(lab_server, "GET", f"{CMS}/a", agent="kubectl/v1.37")).status == 200
    assert (await call(lab_server, "GET", f"{CMS}/a", agent="")).status == 200


async def test_request_log_records_what_rbac_sees(lab_server: LabApiServer) -> None:
    seen: list[RequestRecord] = []
    lab_server.faults.observers.append(seen.append)

    async def subresource(req: ApiRequest, rest: list[str]) -> ApiResponse:
        return ApiResponse(202, {})

    lab_server.core.register_aggregated(
        "subresources.kubevirt.io", "v1",
        [{"name": "virtualmachines/start", "namespaced": True, "kind": "VirtualMachine",
          "verbs": ["update"]}], subresource)
    await call(lab_server, "POST", CMS, {"metadata": {"name": "a"}})
    await call(lab_server, "PATCH", f"{CMS}/a", {"data": {"k": "v"}})
    await call(lab_server, "GET", "/api/v1/nodes")
    resp = await call(lab_server, "PUT", "/apis/subresources.kubevirt.io/v1/namespaces/engine/"
                      "virtualmachines/engine/start", {})
    assert resp.status == 202
    await lab_server.client.get("", "v1", "configmaps", "a", "default")  # in-process
    assert [(r.verb, r.group, r.resource, r.subresource, r.namespace, r.name, r.local)
            for r in seen] == [
        ("create", "", "configmaps", "", "default", "", False),
        ("patch", "", "configmaps", "", "default", "a", False),
        ("list", "", "nodes", "", "", "", False),
        ("update", "subresources.kubevirt.io", "virtualmachines", "start", "engine", "engine",
         False),
        ("get", "", "configmaps", "", "default", "a", True),
    ]
    assert {r.user_agent for r in seen if not r.local} == {OPERATOR}


async def _watch(server: LabApiServer, rv: str) -> list[dict[str, Any]]:
    resp = await call(server, "GET", CMS, watch="true", resourceVersion=rv, timeoutSeconds="1")
    assert resp.status == 200 and resp.events is not None
    return [e async for e in resp.events]


async def test_dropped_watch_streams_lose_nothing_for_a_client_that_resumes(
        lab_server: LabApiServer) -> None:
    names = [f"cm-{i}" for i in range(30)]
    first = await call(lab_server, "POST", CMS, {"metadata": {"name": "start"}})
    start_rv = first.body["metadata"]["resourceVersion"]
    for name in names:
        await call(lab_server, "POST", CMS, {"metadata": {"name": name}})
    lab_server.faults.reseed(3)
    lab_server.add_fault(FaultRule(verb="watch", drop_watch=True, drop_per_event=0.2))

    got: list[str] = []
    rv, watches = start_rv, 0
    while len(got) < len(names) and watches < 200:
        watches += 1
        events = await _watch(lab_server, rv)
        for ev in events:
            got.append(ev["object"]["metadata"]["name"])
            rv = ev["object"]["metadata"]["resourceVersion"]
    assert got == names  # each event once, in order, across the dropped streams
    assert lab_server.faults.dropped_streams >= 3 and watches > 3


async def test_the_five_percent_profile_is_seeded_and_about_five_percent() -> None:
    def run(seed: int) -> list[tuple[str, int | None, float]]:
        faults = Faults()
        faults.reseed(seed)
        for rule in random_faults(0.05, user_agent=OPERATOR, latency=0.0):
            faults.add(rule)
        hits: list[tuple[str, int | None, float]] = []
        for i in range(4000):
            verb = ("get", "list", "patch", "create")[i % 4]
            for rule in faults.rules:
                if rule.drop_watch or not rule.matches(verb, "", "pods", "", "ns", "p", False,
                                                       OPERATOR):
                    continue
                if faults.chance(rule.rate):
                    hits.append((verb, rule.status, rule.latency))
        return hits

    first, again, other = run(1), run(1), run(2)
    assert first == again and first != other
    share = len(first) / 4000
    assert 0.035 < share < 0.065, share
    assert {status for _, status, _ in first} == {409, 429, 500, None}
    assert all(verb == "patch" for verb, status, _ in first if status == 409)
    reasons = {r.status: r.reason for r in random_faults(0.05) if r.status}
    assert reasons == {409: "Conflict", 429: "TooManyRequests", 500: "InternalError"}


def test_an_event_survives_transient_api_errors(lab: Any) -> None:
    """Regression: one 500/429 lost an Event (EngineUnexpectedlyDown went missing under 5 %
    API faults); the adapter now retries transient failures, once posted stays once."""
    from hosted_engine.adapters.kube import EVENTS, Kube

    kube = Kube(lab.api_client())
    try:
        cm = kube.create(Resource("", "v1", "configmaps", True),
                         {"metadata": {"name": "involved", "namespace": "default"}})
        lab.server.add_fault(FaultRule(verb="create", resource="events", status=500, count=1))
        lab.server.add_fault(FaultRule(verb="create", resource="events", status=429, count=1))
        kube.post_event({**cm, "apiVersion": "v1", "kind": "ConfigMap"},
                        reason="SomethingHappened", message="once")
        events = [e for e in kube.list(EVENTS, "default")
                  if e.get("reason") == "SomethingHappened"]
        assert len(events) == 1 and events[0]["message"] == "once"
        assert [r.fired for r in lab.server.faults.rules] == [1, 1]
    finally:
        kube.close()


def test_a_secret_read_survives_transient_api_errors(lab: Any) -> None:
    """Regression: one 500 reading the BMC credentials left a Host's power management
    CredentialsUnavailable (found under 5 % API faults); transient errors are retried."""
    from hosted_engine.adapters.kube import SECRETS, Kube, NotFound

    kube = Kube(lab.api_client())
    try:
        kube.create(SECRETS, {"metadata": {"name": "bmc", "namespace": "default"},
                              "stringData": {"password": "pw"}})
        lab.server.add_fault(FaultRule(verb="get", resource="secrets", status=500, count=2))
        assert kube.read_secret("default", "bmc", "password").get_secret_value() == "pw"
        assert lab.server.faults.rules[0].fired == 2
        with pytest.raises(NotFound):  # not transient: at once
            kube.read_secret("default", "missing", "password")
    finally:
        kube.close()


def test_a_status_patch_survives_transient_api_errors(lab: Any) -> None:
    """Regression: one injected 500, 429 or 409 on a status patch failed a Host's reconcile
    under 5 % API faults; a status merge patch (no resourceVersion: applying it twice is
    applying it once) is retried a few times, and the last failure is raised."""
    from hosted_engine.adapters.kube import EVENT_ATTEMPTS, Kube, KubeError

    nodes = Resource("", "v1", "nodes", namespaced=False)
    kube = Kube(lab.api_client())
    try:
        kube.create(nodes, {"metadata": {"name": "n1"}})
        for status in (500, 429, 409):
            lab.server.add_fault(FaultRule(verb="patch", resource="nodes", subresource="status",
                                           status=status, count=1))
        written = kube.patch_status(nodes, "n1", {"phase": "Running"})
        assert written["status"]["phase"] == "Running"
        assert [r.fired for r in lab.server.faults.rules] == [1, 1, 1]
        assert (kube.get(nodes, "n1").get("status") or {}).get("phase") == "Running"
        rule = lab.server.add_fault(FaultRule(verb="patch", resource="nodes",
                                              subresource="status", status=500))
        with pytest.raises(KubeError) as failed:  # still failing: the caller must know
            kube.patch_status(nodes, "n1", {"phase": "Terminated"})
        assert failed.value.status == 500 and rule.fired == EVENT_ATTEMPTS
        lab.server.faults.clear()
        assert (kube.get(nodes, "n1").get("status") or {}).get("phase") == "Running"
        forbidden = lab.server.add_fault(FaultRule(verb="patch", resource="nodes",
                                                   subresource="status", status=403))
        with pytest.raises(KubeError) as refused:  # not transient: raised at once
            kube.patch_status(nodes, "n1", {"phase": "Terminated"})
        assert refused.value.status == 403 and forbidden.fired == 1
    finally:
        kube.close()
