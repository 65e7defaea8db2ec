"""Checks shared by the packaging tests, for everything that installs the operator: manifests/,
the kustomize build and the rendered Helm chart.

Objects are validated with kubernetes-validate (strict) against the official schemas of
:data:`KUBE_VERSION`; custom objects (kopf's peering objects) against the openAPIV3Schema of
their CRD. The operator's own invariants (RBAC without wildcards and with what kopf needs, a
non-root read-only Deployment whose liveness probe is the endpoint ``hosted-engine run`` serves,
peering objects the replicas actually use) are checked on the parsed objects, with the real CLI
parser reading the container's arguments.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from hosted_engine.cli import run as run_cli
from hosted_engine.cli.main import build_parser
from kopf._cogs.structs import references  # kopf's own names for what it watches

ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = ROOT / "crds"
CHART_DIR = ROOT / "charts" / "hosted-engine-operator"
MANIFESTS_DIR = ROOT / "manifests"
KOPF_PEERING_CRDS = MANIFESTS_DIR / "crds" / "kopf-peering.yaml"
KUBE_VERSION = "1.37.0"

#: The four kinds issue 2 requires (plurals); crds/ may add more.
REQUIRED_PLURALS = {"hostedengines", "hosts", "storagedomains", "backups"}

Obj = dict[str, Any]


def load_docs(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def project_crds() -> list[Obj]:
    """The generated hostedengine.io CRDs in crds/."""
    return [doc for path in sorted(CRDS_DIR.glob("*.yaml")) for doc in load_docs(path.read_text())]


def crd_schemas(objects: Iterable[Obj]) -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) -> openAPIV3Schema, for every CRD version among ``objects``."""
    schemas: dict[tuple[str, str], Obj] = {}
    for obj in objects:
        if obj.get("kind") != "CustomResourceDefinition":
            continue
        spec = obj["spec"]
        for version in spec["versions"]:
            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def validate_all(objects: list[Obj], extra_crds: Iterable[Obj] = ()) -> None:
    """Every object is valid: built-in kinds against the official schemas (strict), custom
    objects against their CRD's schema."""
    assert objects, "nothing to validate"
    schemas = crd_schemas([*objects, *extra_crds])
    for obj in objects:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        name = f"{key[1]} {obj.get('metadata', {}).get('name')}"
        if key in schemas:
            jsonschema.Draft7Validator(schemas[key]).validate(obj)
            assert obj["metadata"]["name"], name
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} is not a valid {key}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{name}: no official schema and no CRD among the objects for {key}")


def of_kind(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: Iterable[Obj], kind: str) -> Obj:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------------------------
# RBAC


def rules_of(objects: Iterable[Obj]) -> dict[str, list[Obj]]:
    """ClusterRole/Role name -> rules."""
    return {
        o["metadata"]["name"]: o.get("rules") or []
        for o in objects
        if o["kind"] in ("ClusterRole", "Role")
    }


def allows(rules: Iterable[Mapping[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r.get("apiGroups", [])
        and resource in r.get("resources", [])
        and verb in r.get("verbs", [])
        for r in rules
    )


def check_rbac(objects: list[Obj], crds: Iterable[Obj]) -> None:
    roles = rules_of(objects)
    assert roles, "no RBAC"
    for name, rules in roles.items():
        for rule in rules:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                values = rule.get(field) or []
                assert not any("*" in v for v in values), f"wildcard in {name}: {rule}"

    framework = [r for n, rs in roles.items() if n.endswith("-framework") for r in rs]
    application = [r for n, rs in roles.items() if n.endswith("-application") for r in rs]
    assert framework and application, f"RBAC must be split framework/application: {list(roles)}"

    def sel(selector: references.Selector) -> tuple[str, str]:
        return selector.group or "", selector.plural or selector.any_name or ""

    # Framework: exactly what kopf watches and writes for itself.
    for selector, verbs in [
        (references.CLUSTER_PEERINGS_K, ("get", "list", "watch", "patch")),
        (references.NAMESPACED_PEERINGS_K, ("get", "list", "watch", "patch")),
        (references.CRDS, ("list", "watch")),
        (references.NAMESPACES, ("list", "watch")),
        (references.EVENTS, ("create",)),
    ]:
        group, plural = sel(selector)
        for verb in verbs:
            assert allows(framework, group, plural, verb), f"framework lacks {verb} {plural}"

    # Application: every kind of ours, watched, patched (finalizer, annotations) and its status.
    plurals = REQUIRED_PLURALS | {c["spec"]["names"]["plural"] for c in crds}
    for plural in sorted(plurals):
        for verb in ("get", "list", "watch", "patch"):
            assert allows(application, "hostedengine.io", plural, verb), f"{verb} {plural}"
        assert allows(application, "hostedengine.io", f"{plural}/status", "patch"), plural

    # Bindings give both roles to the operator's service account.
    sa = one(objects, "ServiceAccount")
    bound = {
        b["roleRef"]["name"]
        for b in of_kind(objects, "ClusterRoleBinding")
        if {"kind": "ServiceAccount", "name": sa["metadata"]["name"],
            "namespace": sa["metadata"]["namespace"]} in b["subjects"]
    }
    assert bound == set(roles), f"bound {bound}, roles {set(roles)}"


# --------------------------------------------------------------------------------------------
# Deployment


def run_options(deployment: Obj) -> run_cli.RunOptions:
    """The container's command line, read by the real ``hosted-engine`` parser."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv[:2] == ["hosted-engine", "run"], argv
    args = build_parser().parse_args(argv[1:])
    assert args.func is run_cli.run_command
    return run_cli.options_from_args(args)


def check_deployment(objects: list[Obj]) -> run_cli.RunOptions:
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pod_sc, sc = pod.get("securityContext") or {}, container.get("securityContext") or {}

    # Non-root, read-only, nothing extra.
    assert pod_sc.get("runAsNonRoot") is True and sc.get("runAsNonRoot", True) is True
    assert int(pod_sc.get("runAsUser", sc.get("runAsUser", 0))) > 0
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("allowPrivilegeEscalation") is False
    assert sc.get("capabilities", {}).get("drop") == ["ALL"]
    assert (pod_sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a read-only root needs a writable /tmp"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]

    # The liveness probe asks the endpoint kopf serves for `hosted-engine run --liveness`.
    options = run_options(deployment)
    assert options.liveness, "no --liveness: the probe would have nothing to ask"
    url = urllib.parse.urlsplit(options.liveness)
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = ports.get(probe["port"], probe["port"])
    assert (probe["path"], port) == (url.path, url.port)
    assert url.hostname == "0.0.0.0", "kubelet probes the pod IP: listen on every address"

    # kopf's peer identity is the pod's name.
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"

    # Service account: the one the RBAC binds.
    sa = one(objects, "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert deployment["metadata"]["namespace"] == sa["metadata"]["namespace"]
    return options


def check_peering(objects: list[Obj], options: run_cli.RunOptions) -> None:
    """Replicas > 1 only with peering, and the peering objects are the ones kopf will look for."""
    deployment = one(objects, "Deployment")
    replicas = deployment["spec"].get("replicas", 1)
    if options.standalone:
        assert replicas <= 1, "several standalone replicas would act at once"
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        return
    if options.clusterwide:
        names = [o["metadata"]["name"] for o in of_kind(objects, "ClusterKopfPeering")]
        assert names == [options.peering]
    else:
        peerings = {
            o["metadata"]["namespace"]: o["metadata"]["name"]
            for o in of_kind(objects, "KopfPeering")
        }
        assert peerings == dict.fromkeys(options.namespaces, options.peering)


def check_operator(objects: list[Obj]) -> run_cli.RunOptions:
    crds = project_crds()
    peering_crds = load_docs(KOPF_PEERING_CRDS.read_text())
    validate_all(objects, extra_crds=[*crds, *peering_crds])
    check_rbac(objects, crds)
    options = check_deployment(objects)
    check_peering(objects, options)
    return options
