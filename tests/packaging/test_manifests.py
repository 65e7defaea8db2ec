"""manifests/: every file and the kustomize build are valid objects and a sound install."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging_checks import (
    KOPF_PEERING_CRDS,
    MANIFESTS_DIR,
    check_operator,
    load_docs,
    of_kind,
    one,
    validate_all,
)

Obj = dict[str, Any]


def kubectl() -> str:
    exe = Path(sys.executable).parent / "kubectl"
    return str(exe) if exe.exists() else (shutil.which("kubectl") or "kubectl")


def kustomize_build(directory: Path = MANIFESTS_DIR) -> list[Obj]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    return load_docs(result.stdout)


def files() -> list[Obj]:
    return [
        doc
        for path in sorted(MANIFESTS_DIR.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_docs(path.read_text())
    ]


@pytest.mark.parametrize("path", sorted(p.name for p in MANIFESTS_DIR.glob("*.yaml")
                                        if p.name != "kustomization.yaml"))
def test_each_file_validates(path: str) -> None:
    peering_crds = load_docs(KOPF_PEERING_CRDS.read_text())
    validate_all(load_docs((MANIFESTS_DIR / path).read_text()), extra_crds=peering_crds)


def test_kustomize_build_is_a_sound_install() -> None:
    objects = kustomize_build()
    options = check_operator(objects)
    assert options.clusterwide and not options.standalone
    # Every file is in the build, nothing more and nothing lost.
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, objects)) == sorted(map(key, files()))
    # The namespace the namespaced objects live in is created by the build itself.
    namespace = one(objects, "Namespace")["metadata"]["name"]
    assert {o["metadata"]["namespace"] for o in objects if "namespace" in o["metadata"]} == {
        namespace
    }
    # Cluster-scoped objects stay cluster-scoped (kustomize must not namespace them).
    for kind in ("ClusterKopfPeering", "ClusterRole", "ClusterRoleBinding"):
        for obj in of_kind(objects, kind):
            assert "namespace" not in obj["metadata"], obj


def test_namespace_enforces_the_restricted_pod_security_level() -> None:
    namespace = one(files(), "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_crds_step_installs_kopfs_peering_kinds() -> None:
    objects = kustomize_build(MANIFESTS_DIR / "crds")
    validate_all(objects)
    kinds = {(c["spec"]["group"], c["spec"]["names"]["kind"], c["spec"]["scope"])
             for c in one_each(objects, "CustomResourceDefinition")}
    assert kinds == {("kopf.dev", "ClusterKopfPeering", "Cluster"),
                     ("kopf.dev", "KopfPeering", "Namespaced")}
    # The operator's own step holds no CRD: a CRD and its objects in one apply fail.
    assert of_kind(kustomize_build(), "CustomResourceDefinition") == []


def one_each(objects: list[Obj], kind: str) -> list[Obj]:
    found = of_kind(objects, kind)
    assert found, f"no {kind}"
    return found
