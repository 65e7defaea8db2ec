"""RBAC against the calls the operator really makes (named zz_ to run after the rest of the
session: it reads what the lab's request log recorded, see reliability_hardening_support).

- The ClusterRoles of manifests/rbac.yaml (the chart's are kept equal by tests/packaging) name
  every group, resource and verb: no wildcard.
- Every request the operator made at a lab in this session -- (verb, group, resource,
  subresource), recognised by its User-Agent -- is allowed by those rules.
- Every rule is used by some request, unless :data:`JUSTIFIED` says why not. This half needs
  the integration tests in the same session (``make test``); alone, it is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from reliability_hardening_support import OBSERVED, ROOT, Call

pytestmark = pytest.mark.lab

RBAC = ROOT / "manifests" / "rbac.yaml"
CHART_RBAC = ROOT / "charts" / "hosted-engine-operator" / "templates" / "rbac.yaml"
Permission = tuple[str, str, str]  # (group, resource[/subresource], verb)

#: Rules the tests never exercise, and why they are still needed.
_FINALIZERS = ("OwnerReferencesPermissionEnforcement: children with blockOwnerDeletion need "
               "update on the owner's finalizers; checked by admission, never a request")
_READ_AFTER_CONFLICT = ("create_or_get/ensure read the existing object after a 409 "
                        "AlreadyExists (a create whose answer was lost); rare on the lab")
_UNREACHED = "a code path the suite does not reach"
JUSTIFIED: dict[Permission, str] = {
    **{("hostedengine.io", f"{plural}/finalizers", "update"): _FINALIZERS
       for plural in ("hostedengines", "hosts", "storagedomains", "backups", "restores",
                      "rollingmaintenances")},
    **{("kopf.dev", "kopfpeerings", verb): "kopf's peering in namespaced mode "
       "(hosted-engine run --namespace); the suite runs cluster-wide"
       for verb in ("get", "list", "watch", "patch")},
    ("kopf.dev", "clusterkopfpeerings", "get"): "kopf's documented peering RBAC (the "
    "packaging contract, tests/packaging, requires it)",
    **{("", "namespaces", verb): "kopf observes namespaces when started with namespace "
       "patterns; the suite runs cluster-wide" for verb in ("list", "watch")},
    ("hostedengine.io", "rollingmaintenances", "get"): "get on each of our kinds is part of "
    "the packaging contract (tests/packaging); RollingMaintenances are only watched",
    ("kubevirt.io", "virtualmachineinstancemigrations", "get"): _READ_AFTER_CONFLICT,
    ("", "persistentvolumes", "get"): _READ_AFTER_CONFLICT,
    ("", "services", "get"): _READ_AFTER_CONFLICT,
    ("", "secrets", "patch"): "adapters/pvcstore.py replaces a mover Job's token Secret; "
    + _UNREACHED,
    ("", "configmaps", "list"): "pairs with the ConfigMaps watch (a client lists again after "
    "410 Gone); not hit by the suite",
}


def rules(path: Path = RBAC) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [rule for d in docs if d["kind"] in ("ClusterRole", "Role")
            for rule in d.get("rules") or []]


def permissions() -> set[Permission]:
    return {(group, resource, verb) for rule in rules()
            for group in rule.get("apiGroups") or []
            for resource in rule.get("resources") or []
            for verb in rule.get("verbs") or []}


def allowed(call: Call, granted: set[Permission]) -> bool:
    return (call.group, call.rbac_resource, call.verb) in granted


def test_no_wildcards_in_the_manifests_or_the_chart() -> None:
    assert rules(), "no rules found"
    for rule in rules():
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in (rule.get(key) or []), (key, rule)
        assert not any("*" in r for r in rule.get("resources") or []), rule
    assert "'*'" not in CHART_RBAC.read_text() and '"*"' not in CHART_RBAC.read_text()
    assert "- '*'" not in CHART_RBAC.read_text()


def test_every_call_of_the_operator_is_allowed() -> None:
    if not OBSERVED:
        pytest.skip("no operator request was recorded in this session (run with the suite)")
    granted = permissions()
    outside = sorted(c for c in OBSERVED if not allowed(c, granted))
    assert not outside, "calls the ClusterRoles do not allow:\n" + "\n".join(
        f"  {c.verb} {c.group or 'core'} {c.rbac_resource}" for c in outside)


def test_every_rule_is_used_or_justified(request: pytest.FixtureRequest) -> None:
    tests = Path(__file__).resolve().parents[2]
    needed = {path for folder in ("integration", "reliability")
              for path in (tests / folder).rglob("test_*.py")}
    collected = {Path(str(item.path)).resolve() for item in request.session.items}
    if not needed <= collected:
        pytest.skip("needs every integration and reliability test in the same session to have "
                    "seen every call (make test)")
    used = {(c.group, c.rbac_resource, c.verb) for c in OBSERVED}
    unused = sorted(p for p in permissions() - used if p not in JUSTIFIED)
    assert not unused, "rules no test saw used (remove them or justify them):\n" + "\n".join(
        f"  {verb} {group or 'core'} {resource}" for group, resource, verb in unused)
    stale = sorted(p for p in JUSTIFIED if p not in permissions())
    assert not stale, f"justifications for rules that no longer exist: {stale}"
