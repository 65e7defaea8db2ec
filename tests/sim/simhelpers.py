"""Small builders and readers shared by the simulator scenarios."""

from __future__ import annotations

from typing import Any

from hosted_engine.lab.sim.api import EVENTS, NODES, PODS, Obj
from hosted_engine.lab.sim.lab import Lab


def pod(name: str, cpu: str = "100m", memory: str = "64Mi", **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/app:1",
                    "resources": {"requests": {"cpu": cpu, "memory": memory}},
                }
            ],
            **spec,
        },
    }


def job(name: str, script: str, **spec: Any) -> Obj:
    template_spec = spec.pop("template_spec", {})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "backoffLimit": spec.pop("backoffLimit", 0),
            **spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "hook", "image": "busybox", "command": ["/bin/sh", "-c", script]}
                    ],
                    **template_spec,
                }
            },
        },
    }


def get_pod(lab: Lab, name: str) -> Obj | None:
    return lab.informer(PODS).get(name, "default")


def get_node(lab: Lab, name: str) -> Obj:
    node = lab.informer(NODES).get(name)
    assert node is not None, name
    return node


def cond(obj: Obj | None, ctype: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


def phase(lab: Lab, name: str) -> str | None:
    p = get_pod(lab, name)
    return None if p is None else (p.get("status") or {}).get("phase")


def taints(node: Obj) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in (node.get("spec") or {}).get("taints") or []}


async def events_for(lab: Lab, name: str, reason: str | None = None) -> list[Obj]:
    items = await lab.api.list(EVENTS, "default")
    return [
        e
        for e in items
        if e["involvedObject"]["name"] == name and (reason is None or e["reason"] == reason)
    ]


def is_terminating(lab: Lab, name: str) -> bool:
    p = get_pod(lab, name)
    return p is not None and bool(p["metadata"].get("deletionTimestamp"))
