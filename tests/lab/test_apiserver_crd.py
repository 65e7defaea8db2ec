"""CustomResourceDefinition conformance: structural schema validation, defaulting, pruning,
CEL rules, subresources, printer columns.
https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/
"""

from __future__ import annotations

from typing import Any

from lab_api import WIDGET_CRD, Api

W = "/apis/example.io/v1/namespaces/default/widgets"


async def _bad(api: Api, **spec: Any) -> dict[str, Any]:
    await api.widgets()
    resp = await api.req("POST", W, {"metadata": {"name": "bad"}, "spec": {"color": "red",
                                                                           **spec}})
    assert resp.status == 422, resp.body
    assert resp.body["reason"] == "Invalid"
    body: dict[str, Any] = resp.body
    return body


async def test_crd_is_established_and_served_at_once(api: Api) -> None:
    """A created CRD gets Established and NamesAccepted conditions and its resource is served
    at once ("Create a CustomResourceDefinition")."""
    await api.widgets()
    crd = await api.ok("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                              "widgets.example.io")
    conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conds == {"NamesAccepted": "True", "Established": "True"}
    assert (await api.req("GET", W)).status == 200


async def test_crd_name_must_match_plural_and_group(api: Api) -> None:
    """metadata.name must be <plural>.<group> ("Create a CustomResourceDefinition")."""
    bad = dict(WIDGET_CRD, metadata={"name": "wrong.example.io"})
    resp = await api.req("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                         bad)
    assert resp.status == 422


async def test_type_error_reports_field_path(api: Api) -> None:
    """A wrong type is 422 with the field path ("Validation")."""
    body = await _bad(api, replicas="three")
    assert body["details"]["causes"][0]["field"] == "spec.replicas"
    assert "must be of type integer" in body["message"]


async def test_enum(api: Api) -> None:
    """A value outside enum is 422 Unsupported value ("Validation")."""
    body = await _bad(api, color="pink")
    assert "Unsupported value" in body["message"] and 'supported values: "red"' in \
        body["message"]


async def test_bounds(api: Api) -> None:
    """minimum/maximum are enforced ("Validation")."""
    body = await _bad(api, replicas=11, maxReplicas=20)
    assert "less than or equal to 10" in body["message"]


async def test_pattern_and_max_length(api: Api) -> None:
    """pattern and maxLength are enforced ("Validation")."""
    body = await _bad(api, name="ABCDEFGHIJK")
    assert "should match" in body["message"] and "Too long" in body["message"]


async def test_required(api: Api) -> None:
    """A missing required field is 422 Required value ("Validation")."""
    await api.widgets()
    resp = await api.req("POST", W, {"metadata": {"name": "r"}, "spec": {}})
    assert resp.status == 422 and "spec.color: Required value" in resp.body["message"]


async def test_format_date_time(api: Api) -> None:
    """format: date-time is checked ("Validation", formats)."""
    body = await _bad(api, when="yesterday")
    assert "date-time" in body["message"]


async def test_int_or_string(api: Api) -> None:
    """x-kubernetes-int-or-string accepts integers and strings only ("IntOrString")."""
    await api.widgets()
    await api.ok("POST", W, {"metadata": {"name": "a"}, "spec": {"color": "red", "port": 80}})
    await api.ok("POST", W, {"metadata": {"name": "b"}, "spec": {"color": "red",
                                                                 "port": "http"}})
    await _bad(api, port=1.5)


async def test_nullable(api: Api) -> None:
    """nullable: true keeps null; null of a non-nullable field is pruned before defaulting
    ("Defaulting and Nullable")."""
    await api.widgets()
    out = await api.ok("POST", W, {"metadata": {"name": "n"},
                                   "spec": {"color": "red", "note": None, "replicas": None}})
    assert out["spec"]["note"] is None and out["spec"]["replicas"] == 1


async def test_list_set_and_max_items(api: Api) -> None:
    """x-kubernetes-list-type: set forbids duplicates; maxItems bounds a list
    ("Validation", "Listtype")."""
    body = await _bad(api, tags=["a", "a"])
    assert "Duplicate value" in body["message"]
    body = await _bad(api, tags=["a", "b", "c", "d"])
    assert "Too many" in body["message"]


async def test_defaulting(api: Api) -> None:
    """Defaults are applied to missing fields on create ("Defaulting")."""
    await api.widgets()
    out = await api.widget()
    assert out["spec"]["replicas"] == 1 and out["spec"]["maxReplicas"] == 5


async def test_pruning_and_preserve_unknown_fields(api: Api) -> None:
    """Unknown fields are pruned unless x-kubernetes-preserve-unknown-fields; maps with
    additionalProperties keep their keys ("Field pruning")."""
    await api.widgets()
    out = await api.ok("POST", W, {"metadata": {"name": "p"}, "junk": 1, "spec": {
        "color": "red", "junk": 2, "extra": {"anything": {"x": 1}}, "labels": {"a": "b"}}})
    assert "junk" not in out and "junk" not in out["spec"]
    assert out["spec"]["extra"] == {"anything": {"x": 1}} and out["spec"]["labels"] == {"a": "b"}


async def test_cel_rule(api: Api) -> None:
    """x-kubernetes-validations rules are evaluated and their message reported
    ("Validation rules")."""
    body = await _bad(api, replicas=6, maxReplicas=5)
    assert "replicas must not exceed maxReplicas" in body["message"]


async def test_cel_transition_rule(api: Api) -> None:
    """A rule using oldSelf runs on update only ("Transition rules")."""
    await api.widgets()
    await api.widget()
    resp = await api.req("PATCH", f"{W}/w1", {"spec": {"color": "blue"}},
                         ctype="application/merge-patch+json")
    assert resp.status == 422 and "color is immutable" in resp.body["message"]


async def test_validation_on_update(api: Api) -> None:
    """Updates are validated like creates ("Validation")."""
    await api.widgets()
    await api.widget()
    resp = await api.req("PATCH", f"{W}/w1", {"spec": {"replicas": -1}},
                         ctype="application/merge-patch+json")
    assert resp.status == 422


async def test_scale_subresource(api: Api) -> None:
    """/scale reads and writes spec.replicas through an autoscaling/v1 Scale
    ("Scale subresource")."""
    await api.widgets()
    await api.widget(replicas=2)
    scale = await api.ok("GET", f"{W}/w1/scale")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
    scale["spec"]["replicas"] = 4
    out = await api.ok("PUT", f"{W}/w1/scale", scale)
    assert out["spec"]["replicas"] == 4
    assert (await api.ok("GET", f"{W}/w1"))["spec"]["replicas"] == 4


async def test_printer_columns_as_table(api: Api) -> None:
    """Accept: as=Table renders additionalPrinterColumns, including a JSONPath filter
    ("Additional printer columns"; api-concepts: "Receiving resources as Tables")."""
    await api.widgets()
    await api.widget(replicas=3)
    await api.ok("PATCH", f"{W}/w1/status",
                 {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
                 ctype="application/merge-patch+json")
    table = await api.ok("GET", W, accept="application/json;as=Table;v=v1;g=meta.k8s.io")
    assert table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Color", "Replicas", "Ready", "Age"]
    assert table["rows"][0]["cells"][:4] == ["w1", "red", 3, "True"]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


async def test_crd_deletion_removes_objects(api: Api) -> None:
    """Deleting a CRD deletes its custom objects and stops serving them
    ("Delete a CustomResourceDefinition")."""
    await api.widgets()
    await api.widget()
    await api.ok("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                           "widgets.example.io")
    assert (await api.req("GET", f"{W}/w1")).status == 404
    await api.widgets()
    assert (await api.ok("GET", W))["items"] == []


async def test_multiple_versions_share_objects(api: Api) -> None:
    """With several served versions (conversion strategy None) an object is readable through
    each version with that apiVersion ("Specify multiple versions", None conversion)."""
    crd: dict[str, Any] = __import__("copy").deepcopy(WIDGET_CRD)
    v2 = __import__("copy").deepcopy(crd["spec"]["versions"][0])
    v2["name"], v2["storage"] = "v2", False
    crd["spec"]["versions"].append(v2)
    await api.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    await api.widget()
    out = await api.ok("GET", "/apis/example.io/v2/namespaces/default/widgets/w1")
    assert out["apiVersion"] == "example.io/v2"
