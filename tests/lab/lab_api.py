"""Helpers of the API server conformance suite (requests through ``ApiCore.handle``)."""

from __future__ import annotations

import json
from typing import Any

from hosted_engine.lab.apiserver import ApiRequest, ApiResponse, LabApiServer

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.io"},
    "spec": {
        "group": "example.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                  "shortNames": ["wd"], "categories": ["all"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}, "scale": {
                "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector"}},
            "additionalPrinterColumns": [
                {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                {"name": "Ready", "type": "string",
                 "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ],
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["color"],
                        "x-kubernetes-validations": [
                            {"rule": "self.replicas <= self.maxReplicas",
                             "message": "replicas must not exceed maxReplicas"},
                            {"rule": "self.color == oldSelf.color",
                             "message": "color is immutable"},
                        ],
                        "properties": {
                            "color": {"type": "string", "enum": ["red", "green", "blue"]},
                            "replicas": {"type": "integer", "minimum": 0, "maximum": 10,
                                         "default": 1},
                            "maxReplicas": {"type": "integer", "default": 5},
                            "name": {"type": "string", "pattern": "^[a-z]+$",
                                     "maxLength": 8},
                            "port": {"x-kubernetes-int-or-string": True},
                            "note": {"type": "string", "nullable": True},
                            "when": {"type": "string", "format": "date-time"},
                            "tags": {"type": "array", "items": {"type": "string"},
                                     "maxItems": 3, "x-kubernetes-list-type": "set"},
                            "extra": {"type": "object",
                                      "x-kubernetes-preserve-unknown-fields": True},
                            "labels": {"type": "object",
                                       "additionalProperties": {"type": "string"}},
                        },
                    },
                    "status": {
                        "type": "object",
                        "properties": {
                            "phase": {"type": "string"},
                            "replicas": {"type": "integer"},
                            "selector": {"type": "string"},
                            "conditions": {"type": "array", "items": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True}},
                        },
                    },
                },
            }},
        }],
    },
}


class Api:
    """Requests through the server's one code path (``ApiCore.handle``), with status codes."""

    def __init__(self, server: LabApiServer) -> None:
        self.server = server
        self.core = server.core
        self.client = server.client

    async def req(self, method: str, path: str, body: Any = None,
                  ctype: str = "application/json", query: dict[str, str] | None = None,
                  accept: str = "application/json") -> ApiResponse:
        # JSON round trips, as over HTTP: the test owns what it sends and what it gets
        sent = json.loads(json.dumps(body)) if body is not None else None
        resp = await self.core.handle(ApiRequest(method, path, query or {}, sent, ctype, accept,
                                                 local=True))
        if isinstance(resp.body, dict | list):
            resp.body = json.loads(json.dumps(resp.body))
        return resp

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        resp = await self.req(method, path, body, **kw)
        assert resp.status < 300, resp.body
        return resp.body

    async def widgets(self) -> None:
        resp = await self.req("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                              WIDGET_CRD)
        assert resp.status in (201, 409), resp.body

    async def widget(self, name: str = "w1", ns: str = "default", **spec: Any) -> Any:
        body = {"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": name},
                "spec": {"color": "red", **spec}}
        return await self.ok("POST", f"/apis/example.io/v1/namespaces/{ns}/widgets", body)

    async def cm(self, name: str, ns: str = "default", labels: dict[str, str] | None = None,
                 **extra: Any) -> Any:
        meta: dict[str, Any] = {"name": name, **extra}
        if labels:
            meta["labels"] = labels
        return await self.ok("POST", f"/api/v1/namespaces/{ns}/configmaps",
                             {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                              "data": {"k": "v"}})
