"""The chart's metrics: off by default; when enabled, `hosted-engine run --metrics-port`, a
container port, a Service in front of it (valid against the official schemas) and, behind its
own flag, a ServiceMonitor that selects that Service's port; JSON logs on request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest
from packaging_checks import CHART_DIR, check_operator, load_docs, of_kind, one

RELEASE = "heo"
NAMESPACE = "hosted-engine-system"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[Obj]:
    manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [doc for path, text in sorted(manifests.items()) if path.endswith((".yaml", ".yml"))
            for doc in load_docs(text)]


def test_metrics_off_by_default(chart: helm.Chart) -> None:
    objects = render(chart)
    options = check_operator(objects)
    assert options.metrics_port is None and options.log_format == "text"
    assert not of_kind(objects, "Service") and not of_kind(objects, "ServiceMonitor")


def test_metrics_service_and_service_monitor(chart: helm.Chart) -> None:
    objects = render(chart, {"metrics": {"enabled": True, "port": 9300,
                                         "serviceMonitor": {"enabled": True,
                                                            "labels": {"release": "prom"}}},
                             "logFormat": "json"})
    monitor = one(objects, "ServiceMonitor")
    others = [o for o in objects if o["kind"] != "ServiceMonitor"]
    options = check_operator(others)  # the rest validates against the official schemas
    assert options.metrics_port == 9300 and options.log_format == "json"

    deployment = one(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == 9300

    service = one(objects, "Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9300, "targetPort": "metrics", "protocol": "TCP"}]

    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert all(service["metadata"]["labels"].get(k) == v for k, v in selector.items())
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")


def test_service_monitor_needs_metrics(chart: helm.Chart) -> None:
    objects = render(chart, {"metrics": {"enabled": False, "port": 9100,
                                         "serviceMonitor": {"enabled": True}}})
    assert not of_kind(objects, "ServiceMonitor")


@pytest.mark.parametrize("values", [
    {"metrics": {"enabled": True, "port": 80}},
    {"metrics": {"enabled": True, "port": 9100, "serviceMonitor": {"interval": "often"}}},
    {"logFormat": "xml"},
])
def test_schema_rejects_bad_metrics_values(chart: helm.Chart, values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(chart.merge_values(values))
