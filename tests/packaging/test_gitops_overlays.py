"""examples/gitops/: the kustomize overlays build into valid, sound installs (real kubectl
kustomize, strict kubernetes-validate, the operator's own CLI parser for the arguments)."""

from __future__ import annotations

from pathlib import Path

from packaging_checks import check_operator, of_kind, one
from test_manifests import kustomize_build

OVERLAYS = Path(__file__).resolve().parents[2] / "examples" / "gitops"


def test_standalone_overlay_runs_one_replica_without_peering() -> None:
    objects = kustomize_build(OVERLAYS / "standalone")
    options = check_operator(objects)
    assert options.standalone and options.clusterwide
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_production_overlay_serves_metrics_and_json_logs_with_peering() -> None:
    objects = kustomize_build(OVERLAYS / "production")
    options = check_operator(objects)
    assert not options.standalone
    assert options.metrics_port == 9090 and options.log_format == "json"
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    (service,) = [s for s in of_kind(objects, "Service") if s["metadata"]["name"].endswith(
        "-metrics")]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    selector = service["spec"]["selector"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
