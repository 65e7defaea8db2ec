"""metav1.Condition-shaped conditions and set_condition's semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hosted_engine.models.conditions import (
    Condition,
    ConditionStatus,
    ConditionType,
    ObjectStatus,
    Reason,
    conditions_changed,
    get_condition,
    is_condition_true,
    remove_condition,
    set_condition,
)
from pydantic import ValidationError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
T2 = T0 + timedelta(minutes=10)


def test_first_set_appends_with_now_and_generation() -> None:
    out = set_condition(
        [], ConditionType.AVAILABLE, True, Reason.ENGINE_UP, "up", observed_generation=3, now=T0
    )
    (cond,) = out
    assert cond.type == "Available"
    assert cond.status == ConditionStatus.TRUE
    assert cond.last_transition_time == T0
    assert cond.observed_generation == 3
    assert cond.to_dict() == {
        "type": "Available",
        "status": "True",
        "observedGeneration": 3,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "reason": "EngineUp",
        "message": "up",
    }


def test_same_status_keeps_transition_time_but_updates_the_rest() -> None:
    first = set_condition([], "Ready", "False", "Pending", "a", observed_generation=1, now=T0)
    second = set_condition(first, "Ready", "False", "Waiting", "b", observed_generation=2, now=T1)
    (cond,) = second
    assert cond.last_transition_time == T0
    assert (cond.reason, cond.message, cond.observed_generation) == ("Waiting", "b", 2)


def test_status_change_moves_transition_time() -> None:
    first = set_condition([], "Ready", False, "Pending", observed_generation=1, now=T0)
    second = set_condition(first, "Ready", True, "Reconciled", observed_generation=1, now=T1)
    third = set_condition(second, "Ready", "Unknown", "Lost", observed_generation=1, now=T2)
    assert second[0].last_transition_time == T1
    assert third[0].last_transition_time == T2
    assert third[0].status == ConditionStatus.UNKNOWN


def test_other_conditions_are_untouched_and_order_kept() -> None:
    conds = set_condition([], "Available", True, "EngineUp", observed_generation=1, now=T0)
    conds = set_condition(conds, "Degraded", False, "Fine", observed_generation=1, now=T0)
    original = list(conds)
    updated = set_condition(conds, "Available", False, "EngineDown", observed_generation=2, now=T1)
    assert [c.type for c in updated] == ["Available", "Degraded"]
    assert updated[1] == original[1]
    assert conds == original  # the input list is not modified
    assert get_condition(updated, "Degraded") is original[1]
    assert get_condition(updated, "Missing") is None
    assert not is_condition_true(updated, "Available")
    assert is_condition_true(conds, "Available")
    assert [c.type for c in remove_condition(updated, "Available")] == ["Degraded"]


def test_conditions_changed_detects_real_changes_only() -> None:
    a = set_condition([], "Ready", True, "Reconciled", observed_generation=1, now=T0)
    same = set_condition(a, "Ready", True, "Reconciled", observed_generation=1, now=T1)
    assert not conditions_changed(a, same)
    assert conditions_changed(
        a, set_condition(a, "Ready", True, "X", observed_generation=1, now=T1)
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("reason", "not camel case"), ("reason", ""), ("type", "bad type!"), ("status", "Yes")],
)
def test_condition_fields_are_validated(field: str, value: str) -> None:
    raw = {
        "type": "Ready",
        "status": "True",
        "reason": "Reconciled",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    raw[field] = value
    with pytest.raises(ValidationError) as exc:
        Condition.model_validate(raw)
    assert exc.value.errors()[0]["loc"][0] == field


def test_set_condition_refuses_a_bad_status() -> None:
    with pytest.raises(ValueError):
        set_condition([], "Ready", "Maybe", "X", observed_generation=None, now=T0)


def test_object_status_round_trip() -> None:
    status = ObjectStatus(
        observed_generation=4,
        conditions=set_condition([], "Ready", True, "Reconciled", observed_generation=4, now=T0),
    )
    wire = status.to_dict()
    assert wire["observedGeneration"] == 4
    assert ObjectStatus.model_validate(wire) == status
    # unknown status fields (e.g. from an older operator) are ignored, not fatal
    assert ObjectStatus.model_validate({**wire, "legacy": 1}) == status
