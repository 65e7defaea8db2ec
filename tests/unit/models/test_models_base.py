"""Shared types: camelCase, Duration, Quantity, references, selectors, error messages."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated

import pytest
from hosted_engine.models.base import (
    ClusterSecretRef,
    Duration,
    DurationRange,
    LabelSelector,
    ObjectMeta,
    Quantity,
    QuantityRange,
    SecretKeyRef,
    SpecModel,
    UniqueItems,
    camel,
    describe_validation_error,
    format_bytes,
    format_duration,
    parse_duration,
    parse_quantity,
    validation_messages,
)
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError


class Sample(SpecModel):
    wait_time: Annotated[Duration, DurationRange(minimum="1s", maximum="1h")] = Duration("60s")
    memory_size: Annotated[Quantity, QuantityRange(minimum="1Gi")] = Quantity("16Gi")
    verify_tls: bool = True
    host_id: int | None = None


# --- camelCase -------------------------------------------------------------------------------


def test_camel_keeps_kubernetes_acronyms() -> None:
    assert camel("storage_domain") == "storageDomain"
    assert camel("verify_tls") == "verifyTLS"
    assert camel("insecure_skip_tls_verify") == "insecureSkipTLSVerify"
    assert camel("host_id") == "hostID"
    assert camel("url") == "url"


def test_dump_uses_camel_case_and_round_trips() -> None:
    sample = Sample.model_validate({"waitTime": "5m", "memorySize": "2Gi", "verifyTLS": False})
    wire = sample.to_dict()
    assert wire == {"waitTime": "5m", "memorySize": "2Gi", "verifyTLS": False}
    assert sample.model_dump()["waitTime"] == "5m"
    assert Sample.model_validate(wire) == sample
    # snake_case names are accepted too (populate by name).
    assert Sample(wait_time=Duration("5m")).wait_time == "5m"


def test_spec_models_refuse_unknown_fields_naming_them() -> None:
    with pytest.raises(ValidationError) as exc:
        Sample.model_validate({"waitTme": "5m"})
    assert validation_messages(exc.value, "spec") == [
        "spec.waitTme: Extra inputs are not permitted"
    ]


def test_object_meta_ignores_what_it_does_not_need() -> None:
    meta = ObjectMeta.model_validate(
        {"name": "x", "generation": 3, "managedFields": [{}], "resourceVersion": "7"}
    )
    assert (meta.name, meta.generation, meta.resource_version) == ("x", 3, "7")


# --- Duration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("1.5h", 5400),
        ("2h0m1s", 7201),
        ("0s", 0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert Duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "90", "5 m", "-5s", "1d", "s", "1h-30m", "5M", "1.s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="Kubernetes-style duration"):
        parse_duration(text)


def test_format_duration_is_canonical() -> None:
    assert format_duration(timedelta(seconds=90)) == "1m30s"
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h30m"
    assert format_duration(timedelta(milliseconds=250)) == "250ms"
    assert format_duration(timedelta(0)) == "0s"
    assert Duration(timedelta(minutes=5)) == "5m"


@given(st.integers(min_value=0, max_value=10**9))
def test_duration_format_parse_round_trip(millis: int) -> None:
    value = timedelta(milliseconds=millis)
    assert parse_duration(format_duration(value)) == value


def test_duration_field_bounds_and_messages() -> None:
    assert Sample(wait_time=Duration("1s")).wait_time.timedelta == timedelta(seconds=1)
    with pytest.raises(ValidationError) as exc:
        Sample.model_validate({"waitTime": "500ms"})
    assert validation_messages(exc.value, "spec") == [
        "spec.waitTime: duration 500ms is too short: must be at least 1s"
    ]
    with pytest.raises(ValidationError, match="must be at most 1h"):
        Sample.model_validate({"waitTime": "61m"})
    with pytest.raises(ValidationError) as exc:
        Sample.model_validate({"waitTime": "soon"})
    assert "spec.waitTime: invalid duration 'soon'" in describe_validation_error(exc.value, "spec")
    with pytest.raises(ValidationError, match="waitTime"):
        Sample.model_validate({"waitTime": 90})


# --- Quantity ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("74Gi", Decimal(74 * 2**30)),
        ("500m", Decimal("0.5")),
        ("4", Decimal(4)),
        (4, Decimal(4)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("100M", Decimal(10**8)),
        ("1e3", Decimal(1000)),
        ("2k", Decimal(2000)),
        ("0.5", Decimal("0.5")),
    ],
)
def test_parse_quantity(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value
    assert Quantity(text).value == value


@pytest.mark.parametrize("text", ["", "Gi", "-1Gi", "1GB", "1 Gi", "1gi", "abc", "1.2.3"])
def test_bad_quantities_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity(text)


def test_quantity_helpers() -> None:
    assert Quantity("1.5Gi").to_bytes() == 3 * 2**29
    assert Quantity("100m").to_bytes() == 1  # rounded up
    assert Quantity("500m").to_cores() == 0.5
    assert Quantity.from_bytes(74 * 2**30) == "74Gi"
    assert format_bytes(1536) == "1536"
    assert format_bytes(3 * 2**60) == "3Ei"
    assert format_bytes(2048) == "2Ki"
    assert format_bytes(0) == "0"


@given(st.integers(min_value=0, max_value=2**62))
def test_bytes_round_trip(n: int) -> None:
    assert Quantity.from_bytes(n).to_bytes() == n


def test_quantity_field_is_int_or_string_and_bounded() -> None:
    assert Sample.model_validate({"memorySize": 2**31}).memory_size == "2147483648"
    assert Sample.model_validate({"memorySize": 2**31}).to_dict()["memorySize"] == "2147483648"
    with pytest.raises(ValidationError) as exc:
        Sample.model_validate({"memorySize": "512Mi"})
    assert validation_messages(exc.value) == [
        "memorySize: quantity 512Mi is too small: must be at least 1Gi"
    ]
    with pytest.raises(ValidationError, match="memorySize"):
        Sample.model_validate({"memorySize": True})


# --- references and selectors ------------------------------------------------------------------


def test_secret_refs() -> None:
    ref = SecretKeyRef.model_validate({"name": "engine-root", "key": "password"})
    assert ref.namespace is None
    with pytest.raises(ValidationError, match="namespace"):
        ClusterSecretRef.model_validate({"name": "bmc"})
    with pytest.raises(ValidationError, match="name"):
        SecretKeyRef.model_validate({"name": "Not_A_Name", "key": "k"})


def test_label_selector_matches_like_kubernetes() -> None:
    sel = LabelSelector.model_validate(
        {
            "matchLabels": {"rack": "a"},
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["z1", "z2"]},
                {"key": "gpu", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel.matches({"rack": "a", "zone": "z1"})
    assert not sel.matches({"rack": "a", "zone": "z3"})
    assert not sel.matches({"rack": "b", "zone": "z1"})
    assert not sel.matches({"rack": "a", "zone": "z1", "gpu": "yes"})
    assert LabelSelector().matches({"anything": "x"})
    not_in = LabelSelector.model_validate(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}
    )
    assert not_in.matches({}) and not not_in.matches({"tier": "db"})


def test_label_selector_requirement_values_follow_operator() -> None:
    with pytest.raises(ValidationError, match="values must be non-empty when operator is In"):
        LabelSelector.model_validate({"matchExpressions": [{"key": "a", "operator": "In"}]})
    with pytest.raises(ValidationError, match="values must be empty when operator is Exists"):
        LabelSelector.model_validate(
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}
        )
    with pytest.raises(ValidationError, match="matchLabels"):
        LabelSelector.model_validate({"matchLabels": {"bad key!": "x"}})


def test_error_paths_include_list_indexes() -> None:
    with pytest.raises(ValidationError) as exc:
        LabelSelector.model_validate(
            {
                "matchExpressions": [
                    {"key": "a", "operator": "Exists"},
                    {"key": "b", "operator": "Maybe"},
                ]
            }
        )
    (line,) = validation_messages(exc.value, "spec.selector")
    assert line.startswith("spec.selector.matchExpressions[1].operator: ")


def test_range_bounds_become_cel_rules_on_the_field() -> None:
    props = Sample.model_json_schema()["properties"]
    assert props["waitTime"]["x-kubernetes-validations"] == [
        {"rule": "duration(self) >= duration('1s')", "message": "must be at least 1s"},
        {"rule": "duration(self) <= duration('1h')", "message": "must be at most 1h"},
    ]
    assert props["memorySize"]["x-kubernetes-validations"] == [
        {
            "rule": "quantity(string(self)).compareTo(quantity('1Gi')) >= 0",
            "message": "must be at least 1Gi",
        }
    ]
    assert QuantityRange(minimum="1Gi", cel=False).rules() == []


class Names(SpecModel):
    names: Annotated[list[str], UniqueItems()] = []


def test_unique_items_refuses_duplicates_and_is_a_set_in_the_schema() -> None:
    assert Names(names=["a", "b"]).names == ["a", "b"]
    with pytest.raises(ValidationError) as exc:
        Names.model_validate({"names": ["a", "b", "a", "b", "a"]})
    assert validation_messages(exc.value) == ["names: duplicate entries: a, b"]
    assert Names.model_json_schema()["properties"]["names"]["x-kubernetes-list-type"] == "set"
