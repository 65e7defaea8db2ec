"""The generated CRDs: committed copies are current, structural, valid Kubernetes objects, and
their CEL rules compile and agree with the models."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml
from hosted_engine import API_GROUP, API_VERSION
from hosted_engine.models import KINDS, crdgen

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
CRDS = crdgen.all_crds()
IDS = [c["metadata"]["name"] for c in CRDS]


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    out: list[tuple[str, dict[str, Any]]] = []
    if not isinstance(node, dict):
        return out
    out.append((path or ".", node))
    for key, sub in node.get("properties", {}).items():
        out += _walk(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            out += _walk(node[key], f"{path}[{key}]")
    for key in ("anyOf", "allOf", "oneOf"):
        for i, sub in enumerate(node.get(key, [])):
            out += _walk(sub, f"{path}<{key}{i}>")
    return out


def _root(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


# --- committed files ----------------------------------------------------------------------------


def test_committed_crds_are_current() -> None:
    fresh = crdgen.render_all()
    committed = {p.name: p.read_text() for p in CRD_DIR.glob("*.yaml")}
    stale = sorted(set(committed) - set(fresh))
    missing = sorted(set(fresh) - set(committed))
    differ = sorted(n for n in fresh if n in committed and committed[n] != fresh[n])
    assert not (stale or missing or differ), (
        f"crds/ is out of date (missing {missing}, stale {stale}, different {differ}): "
        "run `make crds` and commit the result"
    )


def test_one_file_per_kind_named_plural_dot_group() -> None:
    names = sorted(crdgen.render_all())
    expected = sorted(f"{k.resource.plural}.{API_GROUP}.yaml" for k in KINDS)
    assert names == expected
    assert len(names) == 6


def test_cli_prints_every_crd_as_multi_document_yaml(tmp_path: Path) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "hosted_engine", "crds"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    docs = [d for d in yaml.safe_load_all(printed) if d]
    assert [d["metadata"]["name"] for d in docs] == IDS
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "hosted_engine", "crds", "--output-dir", str(out)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.yaml" for n in IDS)
    for name in IDS:
        assert yaml.safe_load((out / f"{name}.yaml").read_text()) == yaml.safe_load(
            (CRD_DIR / f"{name}.yaml").read_text()
        )


def test_write_all_removes_stale_generated_files(tmp_path: Path) -> None:
    stale = tmp_path / f"oldkinds.{API_GROUP}.yaml"
    stale.write_text("old")
    other = tmp_path / "README.md"
    other.write_text("keep me")
    crdgen.write_all(tmp_path)
    assert not stale.exists()
    assert other.read_text() == "keep me"


# --- names, scope, columns -------------------------------------------------------------------

EXPECTED = {
    "HostedEngine": ("Namespaced", ["he"]),
    "Host": ("Cluster", ["hehost"]),
    "StorageDomain": ("Cluster", ["sd"]),
    "Backup": ("Namespaced", ["hebackup"]),
    "Restore": ("Namespaced", ["herestore"]),
    "RollingMaintenance": ("Cluster", ["herolling"]),
}


@pytest.mark.parametrize("crd", CRDS, ids=IDS)
def test_names_scope_subresources(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    kind = spec["names"]["kind"]
    scope, short = EXPECTED[kind]
    assert spec["group"] == API_GROUP
    assert spec["scope"] == scope
    assert spec["names"]["shortNames"] == short
    assert spec["names"]["categories"] == ["hostedengine"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{API_GROUP}"
    (version,) = spec["versions"]
    assert version["name"] == API_VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    status = _root(crd)["properties"]["status"]
    assert status["properties"]["observedGeneration"]["type"] == "integer"
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) >= {"type", "status", "lastTransitionTime"}
    assert "x-kubernetes-preserve-unknown-fields" not in status


@pytest.mark.parametrize("crd", CRDS, ids=IDS)
def test_printer_columns_point_at_real_fields(crd: dict[str, Any]) -> None:
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert columns[-1] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    root = _root(crd)
    for col in columns[:-1]:
        node = root
        for part in col["jsonPath"].strip(".").split("."):
            assert part in node.get("properties", {}), f"{col['name']}: {col['jsonPath']}"
            node = node["properties"][part]
        if col["type"] in ("string", "date"):
            assert node.get("type") == "string" or node.get("x-kubernetes-int-or-string")
        else:
            assert node.get("type") == col["type"]


def test_printer_columns_per_kind() -> None:
    names = {
        c["spec"]["names"]["kind"]: [
            col["name"] for col in c["spec"]["versions"][0]["additionalPrinterColumns"]
        ]
        for c in CRDS
    }
    assert names["HostedEngine"][:4] == ["State", "Host", "Health", "Maintenance"]
    assert names["Host"][:5] == ["Node", "State", "Score", "HE", "Power"]
    assert names["StorageDomain"][:5] == ["Type", "Role", "State", "Capacity", "Free"]
    assert names["Backup"][:3] == ["Schedule", "Last Success", "Phase"]


# --- structural lint ------------------------------------------------------------------------------


@pytest.mark.parametrize("crd", CRDS, ids=IDS)
def test_schema_is_structural(crd: dict[str, Any]) -> None:
    problems = []
    for path, node in _walk(_root(crd)):
        typed = (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        )
        if not typed:
            problems.append(f"{path}: no type")
        for key in ("$ref", "$defs", "definitions", "title", "patternProperties", "const"):
            if key in node:
                problems.append(f"{path}: forbidden {key}")
        if "properties" in node and node.get("additionalProperties") is not None:
            problems.append(f"{path}: additionalProperties beside properties")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties false")
        for key in ("anyOf", "oneOf", "allOf"):
            if key in node:
                problems.append(f"{path}: {key} (non-structural union)")
        if node.get("type") == "null":
            problems.append(f"{path}: type null")
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            if key in node and not isinstance(node[key], bool):
                problems.append(f"{path}: {key} must be the OpenAPI 3.0 boolean form")
        if node.get("uniqueItems"):
            problems.append(f"{path}: uniqueItems")
        bounded = path.startswith((".spec", ".status"))
        plain_string = node.get("type") == "string" and not {"enum", "format"} & set(node)
        if bounded and plain_string and "maxLength" not in node:
            problems.append(f"{path}: string without maxLength")
        if bounded and node.get("type") == "array" and "maxItems" not in node:
            problems.append(f"{path}: list without maxItems")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("crd", CRDS, ids=IDS)
def test_preserve_unknown_fields_nowhere(crd: dict[str, Any]) -> None:
    """No free-form field: even extra cloud-init user data is a string."""
    nodes = [p for p, n in _walk(_root(crd)) if n.get("x-kubernetes-preserve-unknown-fields")]
    assert nodes == []


def test_optional_becomes_nullable_and_quantities_are_int_or_string() -> None:
    sd = _root(CRDS[IDS.index(f"storagedomains.{API_GROUP}")])["properties"]["spec"]
    capacity = sd["properties"]["capacity"]
    assert capacity["nullable"] is True
    assert capacity["x-kubernetes-int-or-string"] is True
    assert "type" not in capacity
    assert sd["properties"]["nfs"]["nullable"] is True
    assert sd["properties"]["nfs"]["type"] == "object"


def test_scalar_defaults_in_spec_only() -> None:
    he = _root(CRDS[IDS.index(f"hostedengines.{API_GROUP}")])
    health = he["properties"]["spec"]["properties"]["health"]["properties"]
    assert health["restartGrace"]["default"] == "60s"
    assert health["url"]["default"] == "http://{fqdn}/ovirt-engine/services/health"
    assert health["expect"]["default"] == "DB Up"
    failover = he["properties"]["spec"]["properties"]["failover"]["properties"]
    assert failover["silenceThreshold"]["default"] == "22s"
    status_defaults = [p for p, n in _walk(he["properties"]["status"]) if "default" in n]
    assert status_defaults == []
    list_defaults = [p for p, n in _walk(he) if isinstance(n.get("default"), (list, dict))]
    assert list_defaults == []


def test_extra_user_data_is_a_bounded_string() -> None:
    he = _root(CRDS[IDS.index(f"hostedengines.{API_GROUP}")])
    vm = he["properties"]["spec"]["properties"]["vm"]["properties"]
    extra = vm["cloudInit"]["properties"]["extraUserData"]
    assert extra["type"] == "string"
    assert extra["maxLength"] == 65536


def test_generator_rejects_a_non_structural_union() -> None:
    from pydantic import BaseModel

    class Bad(BaseModel):
        value: int | str

    with pytest.raises(crdgen.SchemaError, match="anyOf"):
        crdgen.structural_schema(Bad, keep_defaults=False)


# --- official validation -------------------------------------------------------------------------


@pytest.mark.parametrize("crd", CRDS, ids=IDS)
def test_validates_against_the_official_schema(crd: dict[str, Any]) -> None:
    kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)


def test_the_validator_is_strict_enough_to_catch_a_typo() -> None:
    bad = copy.deepcopy(CRDS[0])
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["propertiez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


# --- CEL ------------------------------------------------------------------------------------------

RULES = [
    (crd["metadata"]["name"], path, rule)
    for crd in CRDS
    for path, rule in crdgen.iter_cel_rules(_root(crd))
]


@pytest.mark.parametrize(
    ("crd", "path", "rule"), RULES, ids=[f"{c}:{p}:{i}" for i, (c, p, _) in enumerate(RULES)]
)
def test_every_cel_rule_compiles(crd: str, path: str, rule: dict[str, Any]) -> None:
    assert set(rule) <= {"rule", "message", "fieldPath", "reason"}
    assert rule["message"]
    celpy.Environment().compile(rule["rule"])


def test_cel_rules_cover_the_cross_field_rules() -> None:
    messages = {r["message"] for _, _, r in RULES}
    for expected in (
        "nfs must be set when type is nfs, and only then",
        "a hostedEngine domain needs a capacity of at least 74Gi",
        "a static address requires address, prefix and gateway",
        "scope: set exactly one of hosts, selector, groups",
        "stageTimeout must be at least pollInterval",
        "target: set exactly one of s3, pvc, filesystem",
        "source: set exactly one of backup, location",
        "image source: set exactly one of containerDisk, url, pvc",
        "nodeName is immutable",
        "type is immutable",
    ):
        assert expected in messages, expected


@pytest.mark.parametrize("crd", CRDS, ids=IDS)
def test_every_spec_field_is_described_for_kubectl_explain(crd: dict[str, Any]) -> None:
    spec = _root(crd)["properties"]["spec"]
    missing = [
        path
        for path, node in _walk(spec, ".spec")
        if not path.endswith(("[items]", "[additionalProperties]")) and "description" not in node
    ]
    assert missing == []


def test_lists_of_names_are_sets() -> None:
    he = _root(CRDS[IDS.index(f"hostedengines.{API_GROUP}")])["properties"]["spec"]
    names = he["properties"]["hosts"]["properties"]["names"]
    assert names["x-kubernetes-list-type"] == "set"
    rolling = _root(CRDS[IDS.index(f"rollingmaintenances.{API_GROUP}")])["properties"]["spec"]
    hosts = rolling["properties"]["scope"]["properties"]["hosts"]
    assert hosts["x-kubernetes-list-type"] == "set"
