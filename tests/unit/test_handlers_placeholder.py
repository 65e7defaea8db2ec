"""The placeholder handlers of the four kinds: they validate, and say what is not implemented."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from hosted_engine.handlers import host, placeholder
from hosted_engine.models import Host
from kopf._core.engines import posting  # test-only: capture the Events kopf would post

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

KINDS = [
    (host, Host, "Host", None),
]


def body(kind: str, spec: dict[str, Any], *, namespace: str | None = None,
         generation: int = 1, status: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x", "uid": "u-1", "generation": generation}
    if namespace:
        meta["namespace"] = namespace
    obj = {"apiVersion": "hostedengine.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


def ready(status: dict[str, Any]) -> dict[str, Any]:
    (cond,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    return cond


HOST = {"nodeName": "node-a"}


def test_valid_spec_reports_not_implemented_with_generation() -> None:
    outcome = placeholder.evaluate(Host, body("Host", HOST, generation=3),
                                   host.NOT_IMPLEMENTED, now=T0)
    assert outcome.warning is None
    assert outcome.status is not None
    cond = ready(outcome.status)
    assert (cond["status"], cond["reason"]) == ("Unknown", "NotImplemented")
    assert cond["message"] == host.NOT_IMPLEMENTED
    assert cond["observedGeneration"] == 3
    assert outcome.status["observedGeneration"] == 3


def test_second_visit_writes_nothing() -> None:
    first = placeholder.evaluate(Host, body("Host", HOST), host.NOT_IMPLEMENTED, now=T0)
    assert first.status is not None
    again = placeholder.evaluate(Host, body("Host", HOST, status=first.status),
                                 host.NOT_IMPLEMENTED, now=T0 + timedelta(minutes=5))
    assert again == placeholder.Outcome(None, None)


@pytest.mark.parametrize(("module", "model", "kind", "namespace"), KINDS)
def test_invalid_spec_names_the_field_and_warns(
    module: Any, model: Any, kind: str, namespace: str | None
) -> None:
    kept = {"someField": "last good", "conditions": []}
    outcome = placeholder.evaluate(
        model, body(kind, {"noSuchField": 1}, namespace=namespace, status=kept),
        module.NOT_IMPLEMENTED, now=T0,
    )
    assert outcome.status is not None and outcome.warning is not None
    cond = ready(outcome.status)
    assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec")
    assert "spec.noSuchField" in cond["message"]
    assert outcome.warning == ("InvalidSpec", cond["message"])
    # Only the condition is written: the last good state stays as it was.
    assert set(outcome.status) == {"conditions"}


def test_fixing_the_spec_moves_ready_on_and_a_new_transition_time() -> None:
    bad = placeholder.evaluate(Host, body("Host", {}), host.NOT_IMPLEMENTED, now=T0)
    assert bad.status is not None
    assert "spec.nodeName" in ready(bad.status)["message"]
    later = T0 + timedelta(minutes=1)
    good = placeholder.evaluate(Host, body("Host", HOST, generation=2, status=bad.status),
                                host.NOT_IMPLEMENTED, now=later)
    assert good.status is not None
    cond = ready(good.status)
    assert cond["reason"] == "NotImplemented"
    assert cond["lastTransitionTime"] == later.isoformat().replace("+00:00", "Z")


def test_other_conditions_are_kept() -> None:
    other = {"type": "Reachable", "status": "True", "reason": "EndpointReachable",
             "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    outcome = placeholder.evaluate(Host, body("Host", HOST, status={"conditions": [other]}),
                                   host.NOT_IMPLEMENTED, now=T0)
    assert outcome.status is not None
    assert [c["type"] for c in outcome.status["conditions"]] == ["Reachable", "Ready"]


@pytest.fixture
def event_queue() -> Iterator[asyncio.Queue[Any]]:
    """kopf's event queue, as the running operator sets it up for its handlers."""
    loop = asyncio.new_event_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    tokens = [
        posting.event_queue_var.set(queue),
        posting.event_queue_loop_var.set(loop),
        posting.settings_var.set(kopf.OperatorSettings()),
    ]
    try:
        yield queue
    finally:
        for var, token in zip(
            (posting.event_queue_var, posting.event_queue_loop_var, posting.settings_var),
            tokens, strict=True,
        ):
            var.reset(token)  # type: ignore[attr-defined]
        loop.close()


@pytest.mark.parametrize(("module", "model", "kind", "namespace"), KINDS)
def test_registered_handler_patches_status_and_posts_a_warning(
    module: Any, model: Any, kind: str, namespace: str | None, event_queue: asyncio.Queue[Any]
) -> None:
    patch = kopf.Patch()
    module.reconcile(body=kopf.Body(body(kind, {}, namespace=namespace)), patch=patch)
    assert ready(dict(patch["status"]))["reason"] == "InvalidSpec"
    loop = posting.event_queue_loop_var.get()
    loop.run_until_complete(asyncio.sleep(0))  # let call_soon_threadsafe deliver
    event = event_queue.get_nowait()
    assert (event.type, event.reason) == ("Warning", "InvalidSpec")
    assert "spec." in event.message


def test_every_kind_is_registered_on_create_update_and_resume() -> None:
    import hosted_engine.handlers  # noqa: F401
    from kopf._core.intents import registries

    handlers = registries.get_default_registry()._changing.get_all_handlers()
    for module, *_ in KINDS:
        ids = [h for h in handlers if h.fn is module.reconcile]
        reasons = {str(h.reason) for h in ids}
        assert {"create", "update"} <= reasons, module.__name__
        assert any(h.reason is None and h.initial for h in ids), module.__name__
