"""The common shape of a kind whose behaviour is not implemented yet.

Each kind's handler parses the object with its model and says so in the ``Ready`` condition:

- a spec the model rejects: ``Ready=False``, reason ``InvalidSpec``, the fields named in the
  message, plus a Warning Event; the rest of the status (the last good state) is left alone;
- a valid spec: ``Ready=Unknown``, reason ``NotImplemented``, with what is missing.

The status is patched only when the ``Ready`` condition would change. The real reconcilers
replace these handlers kind by kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf
from pydantic import ValidationError

from hosted_engine.clock import get_clock
from hosted_engine.models import (
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    Resource,
    describe_validation_error,
    set_condition,
)
from hosted_engine.models.conditions import conditions_changed


@dataclass(frozen=True)
class Outcome:
    """What one visit of the object decided: a status patch (or none) and an Event (or none)."""

    status: dict[str, Any] | None
    warning: tuple[str, str] | None  # (reason, message)


def _current_conditions(body: Mapping[str, Any]) -> list[Condition]:
    """The conditions already on the object; ones that do not parse are dropped."""
    out: list[Condition] = []
    for raw in (body.get("status") or {}).get("conditions") or []:
        try:
            out.append(Condition.model_validate(raw))
        except ValidationError:
            continue
    return out


def evaluate(
    model: type[Resource], body: Mapping[str, Any], not_implemented: str, *, now: datetime
) -> Outcome:
    """Parse ``body`` with ``model`` and decide the ``Ready`` condition (pure)."""
    generation = (body.get("metadata") or {}).get("generation")
    current = _current_conditions(body)
    try:
        model.model_validate(dict(body))
    except ValidationError as exc:
        message = describe_validation_error(exc)
        conditions = set_condition(
            current,
            ConditionType.READY,
            ConditionStatus.FALSE,
            Reason.INVALID_SPEC,
            message,
            observed_generation=generation,
            now=now,
        )
        invalid = {"conditions": [c.to_dict() for c in conditions]}
        changed = conditions_changed(current, conditions)
        return Outcome(invalid if changed else None, (Reason.INVALID_SPEC, message))

    conditions = set_condition(
        current,
        ConditionType.READY,
        ConditionStatus.UNKNOWN,
        Reason.NOT_IMPLEMENTED,
        not_implemented,
        observed_generation=generation,
        now=now,
    )
    old_generation = (body.get("status") or {}).get("observedGeneration")
    if not conditions_changed(current, conditions) and old_generation == generation:
        return Outcome(None, None)
    status: dict[str, Any] = {"conditions": [c.to_dict() for c in conditions]}
    if generation is not None:
        status["observedGeneration"] = generation
    return Outcome(status, None)


def apply(
    model: type[Resource],
    not_implemented: str,
    body: kopf.Body,
    patch: kopf.Patch,
) -> Outcome:
    """Run :func:`evaluate` on a kopf body: status into kopf's patch, warning as an Event."""
    outcome = evaluate(model, body, not_implemented, now=get_clock().now())
    if outcome.status is not None:
        patch.status.update(outcome.status)
    if outcome.warning is not None:
        reason, message = outcome.warning
        kopf.warn(body, reason=reason, message=message)
    return outcome
