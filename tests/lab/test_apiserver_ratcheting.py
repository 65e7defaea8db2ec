"""CRD validation ratcheting on update (KEP-4008, on by default since Kubernetes 1.30, GA 1.33):
errors on values an update leaves unchanged are not reported; transition rules (``oldSelf``)
are never ratcheted.
https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#validation-ratcheting
"""

from __future__ import annotations

from typing import Any

from lab_api import Api

W = "/apis/example.io/v1/namespaces/default/widgets"
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.io"
MERGE = "application/merge-patch+json"


async def _tighten(api: Api, **changes: Any) -> None:
    """Change the spec schema of the widgets CRD (what makes stored objects invalid)."""
    crd = await api.ok("GET", CRD)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for field, extra in changes.items():
        spec["properties"][field].update(extra)
    await api.ok("PUT", CRD, crd)


async def test_unchanged_invalid_field_is_ratcheted(api: Api) -> None:
    await api.widgets()
    await api.ok("POST", W, {"metadata": {"name": "w1"},
                             "spec": {"color": "red", "name": "abcdefgh"}})
    await _tighten(api, name={"maxLength": 4})
    # a new object with that value is refused under the new schema
    resp = await api.req("POST", W, {"metadata": {"name": "w2"},
                                     "spec": {"color": "red", "name": "abcdefgh"}})
    assert resp.status == 422, resp.body
    # status writes and spec writes that keep the old value are accepted
    out = await api.ok("PATCH", f"{W}/w1/status", {"status": {"phase": "Ok"}}, ctype=MERGE)
    assert out["status"]["phase"] == "Ok"
    out = await api.ok("PATCH", f"{W}/w1", {"spec": {"replicas": 2}}, ctype=MERGE)
    assert out["spec"] == {**out["spec"], "replicas": 2, "name": "abcdefgh"}
    # changing the field to another invalid value is refused
    resp = await api.req("PATCH", f"{W}/w1", {"spec": {"name": "abcdefghi"}}, ctype=MERGE)
    assert resp.status == 422 and "spec.name" in str(resp.body), resp.body
    # and a changed field is validated normally next to the ratcheted one
    resp = await api.req("PATCH", f"{W}/w1", {"spec": {"replicas": 11}}, ctype=MERGE)
    assert resp.status == 422 and "spec.replicas" in str(resp.body), resp.body


async def test_transition_rules_are_not_ratcheted(api: Api) -> None:
    await api.widgets()
    await api.widget(labels={"a": "1", "b": "2"})
    await api.ok("PATCH", f"{W}/w1", {"spec": {"replicas": 2}}, ctype=MERGE)
    await _tighten(api, labels={"x-kubernetes-validations": [
        {"rule": "oldSelf.size() <= 1", "message": "labels are frozen"}]})
    # labels stay unchanged, yet their transition rule runs and fails
    resp = await api.req("PATCH", f"{W}/w1", {"spec": {"replicas": 3}}, ctype=MERGE)
    assert resp.status == 422 and "labels are frozen" in resp.body["message"], resp.body
    # a plain rule on an unchanged spec does not block a status write; the transition rule does
    resp = await api.req("PATCH", f"{W}/w1/status", {"status": {"phase": "Ok"}}, ctype=MERGE)
    assert resp.status == 422 and "labels are frozen" in resp.body["message"], resp.body
