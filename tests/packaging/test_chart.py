"""The Helm chart, rendered and linted by real Helm (helm-python-sdk embeds Helm's Go library)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest
from packaging_checks import (
    CHART_DIR,
    CRDS_DIR,
    KOPF_PEERING_CRDS,
    MANIFESTS_DIR,
    check_operator,
    load_docs,
    of_kind,
    one,
    project_crds,
    rules_of,
)

Obj = dict[str, Any]
RELEASE = "heo"
NAMESPACE = "hosted-engine-system"
KEEP = "helm.sh/resource-policy"


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[Obj]:
    manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith((".yaml", ".yml"))
        for doc in load_docs(text)
    ]


def hostedengine_crds(objects: list[Obj]) -> list[Obj]:
    return [
        o for o in of_kind(objects, "CustomResourceDefinition")
        if o["spec"]["group"] == "hostedengine.io"
    ]


def test_lint_is_clean() -> None:
    report = helm.lint(str(CHART_DIR), strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert problems == []


def test_default_install(chart: helm.Chart) -> None:
    objects = render(chart)
    options = check_operator(objects)
    assert options.clusterwide and not options.standalone
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(":" + chart.metadata["appVersion"])


def test_crds_are_the_generated_ones_and_kept_on_uninstall(chart: helm.Chart) -> None:
    generated = project_crds()
    assert generated, "crds/ is empty: run `make crds`"
    rendered = {c["metadata"]["name"]: c for c in hostedengine_crds(render(chart))}
    assert set(rendered) == {c["metadata"]["name"] for c in generated}
    for crd in generated:
        out = rendered[crd["metadata"]["name"]]
        assert out["spec"] == crd["spec"]
        assert out["metadata"]["annotations"][KEEP] == "keep"


def test_chart_copy_of_the_crds_is_current() -> None:
    generated = {p.name: p.read_bytes() for p in sorted(CRDS_DIR.glob("*.yaml"))}
    copied = {p.name: p.read_bytes() for p in sorted((CHART_DIR / "crds-src").glob("*.yaml"))}
    assert generated, "crds/ is empty: run `make crds`"
    assert copied == generated, "the chart's CRDs differ from crds/: run `make crds`"


def test_crds_disabled(chart: helm.Chart) -> None:
    objects = render(chart, {"crds": {"enabled": False}})
    assert hostedengine_crds(objects) == []
    check_operator(objects)


def test_two_replicas_need_peering(chart: helm.Chart) -> None:
    objects = render(chart, {"replicas": 2})
    options = check_operator(objects)
    assert not options.standalone
    assert one(objects, "Deployment")["spec"]["replicas"] == 2
    with pytest.raises(helm.HelmValuesError, match="peering/enabled"):
        render(chart, {"replicas": 2, "peering": {"enabled": False}})


def test_single_standalone_replica(chart: helm.Chart) -> None:
    objects = render(chart, {"replicas": 1, "peering": {"enabled": False}})
    options = check_operator(objects)
    assert options.standalone
    assert of_kind(objects, "ClusterKopfPeering") == []
    assert of_kind(objects, "PodDisruptionBudget") == []


def test_watched_namespaces_get_their_peering_objects(chart: helm.Chart) -> None:
    objects = render(chart, {"watchNamespaces": ["engine", "backups"]})
    options = check_operator(objects)
    assert options.namespaces == ("engine", "backups")
    assert of_kind(objects, "ClusterKopfPeering") == []


def test_kopf_peering_crds_ship_in_helms_crds_directory(chart: helm.Chart) -> None:
    # Helm installs crds/ before the templates (the peering object needs its kind served),
    # never deletes them, and `--skip-crds` leaves them to another kopf operator.
    shipped = [doc for crd in chart.crds for doc in load_docs(crd["data"])]
    assert shipped == load_docs(KOPF_PEERING_CRDS.read_text())
    assert [c["spec"]["group"] for c in of_kind(render(chart), "CustomResourceDefinition")] == [
        "hostedengine.io"
    ] * len(hostedengine_crds(render(chart)))


def test_rbac_matches_the_plain_manifests(chart: helm.Chart) -> None:
    def by_role(rules: dict[str, list[Obj]], prefix: str) -> dict[str, list[Obj]]:
        return {name.removeprefix(prefix): value for name, value in rules.items()}

    chart_rules = by_role(rules_of(render(chart)), f"{RELEASE}-hosted-engine-operator")
    manifest_rules = by_role(
        rules_of(load_docs((MANIFESTS_DIR / "rbac.yaml").read_text())), "hosted-engine-operator"
    )
    assert chart_rules == manifest_rules
    assert set(chart_rules) == {"-framework", "-application"}


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"bogus": 1}, "bogus"),
        ({"replicas": -1}, "/replicas"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
        ({"liveness": {"port": 80}}, "/liveness/port"),
        ({"securityContext": {"runAsNonRoot": False}}, "/securityContext/runAsNonRoot"),
    ],
)
def test_values_schema_rejects_bad_values(
    chart: helm.Chart, values: dict[str, Any], where: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as exc:
        chart.validate_schema(chart.merge_values(values))
    assert where in str(exc.value)


def test_notes_say_how_the_replicas_coordinate(chart: helm.Chart) -> None:
    notes = chart.render({}, name=RELEASE, namespace=NAMESPACE)[
        "hosted-engine-operator/templates/NOTES.txt"
    ]
    assert "ClusterKopfPeering" in notes and NAMESPACE in notes
