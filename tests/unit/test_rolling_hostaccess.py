"""Per-hook ``hostAccess`` (decision 0004): the schema, the mapping from the spec and the hook
Job's pod spec, plus the spec mapping of hook scripts checked before a stage."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hosted_engine.adapters.jobs import (
    HOOK_USER,
    HOST_ROOT_MOUNT,
    HookSource,
    HostAccess,
    hook_job_body,
)
from hosted_engine.handlers import rollingmaintenance_mapping as rm
from hosted_engine.logic import rolling as rl
from hosted_engine.models import RollingMaintenance
from hosted_engine.models.rollingmaintenance import Hook
from pydantic import ValidationError

IMAGE = "registry.example.com/hooks:1"


def job(access: HostAccess, *, script: bool = False) -> dict[str, Any]:
    source = (HookSource(IMAGE, configmap="hooks", key="run.sh", host_access=access) if script
              else HookSource(IMAGE, command=("/bin/true",), host_access=access))
    return hook_job_body(name="j", namespace="ns", node="node-1", run="r", host="h",
                         stage="Maintenance", source=source, command=source.argv(),
                         timeout_s=30)


def pod(body: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = body["spec"]["template"]["spec"]
    return spec


def test_no_host_access_by_default_restricted_pod() -> None:
    p = pod(job(HostAccess()))
    assert not HostAccess().any
    for key in ("hostPID", "hostNetwork", "hostIPC", "volumes"):
        assert key not in p
    assert p["securityContext"]["runAsNonRoot"] is True
    assert p["securityContext"]["runAsUser"] == HOOK_USER
    container = p["containers"][0]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]}}
    assert "volumeMounts" not in container


def test_each_access_adds_only_itself() -> None:
    p = pod(job(HostAccess(host_pid=True)))
    assert p["hostPID"] is True and "hostNetwork" not in p and "volumes" not in p
    assert p["securityContext"]["runAsNonRoot"] is True

    p = pod(job(HostAccess(host_network=True)))
    assert p["hostNetwork"] is True and p["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "hostPID" not in p

    p = pod(job(HostAccess(host_root="ReadOnly")))
    assert p["volumes"] == [{"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}}]
    assert p["containers"][0]["volumeMounts"] == [
        {"name": "host-root", "mountPath": HOST_ROOT_MOUNT, "readOnly": True}]
    assert p["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False

    p = pod(job(HostAccess(host_root="ReadWrite")))
    assert p["containers"][0]["volumeMounts"][0]["readOnly"] is False


def test_privileged_runs_as_root_with_escalation() -> None:
    p = pod(job(HostAccess(privileged=True)))
    assert p["containers"][0]["securityContext"] == {"privileged": True,
                                                     "allowPrivilegeEscalation": True}
    assert p["securityContext"]["runAsUser"] == 0
    assert p["securityContext"]["runAsNonRoot"] is False
    assert "hostPID" not in p and "volumes" not in p


def test_script_and_host_root_are_both_mounted() -> None:
    p = pod(job(HostAccess(host_root="ReadOnly", host_pid=True), script=True))
    assert [v["name"] for v in p["volumes"]] == ["hook-script", "host-root"]
    mounts = {m["name"]: m["mountPath"] for m in p["containers"][0]["volumeMounts"]}
    assert mounts == {"hook-script": "/hooks", "host-root": HOST_ROOT_MOUNT}


def run(stages: dict[str, Any], **spec: Any) -> RollingMaintenance:
    return RollingMaintenance.model_validate({
        "apiVersion": "hostedengine.io/v1alpha1", "kind": "RollingMaintenance",
        "metadata": {"name": "r"},
        "spec": {"scope": {"hosts": ["h1"]}, "stages": stages, **spec}})


def test_spec_maps_host_access_per_stage() -> None:
    obj = run({
        "preFlight": {"image": IMAGE, "command": ["/bin/true"]},
        "maintenance": {"image": IMAGE, "script": {"name": "hooks", "key": "run.sh"},
                        "hostAccess": {"privileged": True, "hostPID": True,
                                       "hostNetwork": True, "hostRoot": "ReadWrite"}},
    })
    sources = rm.hook_sources(obj.spec)
    assert sources[rl.Stage.PRE_FLIGHT].host_access == HostAccess()
    assert sources[rl.Stage.MAINTENANCE].host_access == HostAccess(
        privileged=True, host_pid=True, host_network=True, host_root="ReadWrite")
    wire = obj.spec.stages.maintenance.to_dict() if obj.spec.stages.maintenance else {}
    assert wire["hostAccess"] == {"privileged": True, "hostPID": True, "hostNetwork": True,
                                  "hostRoot": "ReadWrite"}


@pytest.mark.parametrize("bad", [
    {"hostRoot": "Everything"},
    {"hostPid": True},  # the field is hostPID, as in a pod spec
    {"privileged": "yes please"},
    {"capabilities": ["SYS_ADMIN"]},
])
def test_schema_refuses_unknown_or_bad_access(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Hook.model_validate({"image": IMAGE, "command": ["x"], "hostAccess": bad})


def test_crd_schema_has_host_access_with_its_enum() -> None:
    schema = RollingMaintenance.model_json_schema(by_alias=True)
    text = str(schema)
    assert "hostAccess" in text and "hostPID" in text
    assert "ReadOnly" in text and "ReadWrite" in text


def test_pre_maintenance_ahead_maps_to_the_planner() -> None:
    assert rm.rolling_spec(run({}).spec).pre_maintenance_ahead is False
    assert rm.rolling_spec(run({}, preMaintenanceAhead=True).spec).pre_maintenance_ahead is True


# --------------------------------------------------------------------------------------------
# hook scripts checked before the run and before each stage


def test_script_refs_name_the_spec_field_of_script_stages_only() -> None:
    obj = run({
        "preFlight": {"image": IMAGE, "command": ["/bin/true"]},
        "maintenance": {"image": IMAGE, "script": {"name": "hooks", "key": "run.sh"}},
        "postMaintenance": {"image": IMAGE, "script": {"name": "post", "key": "p.sh"}},
    })
    sources = rm.hook_sources(obj.spec)
    refs = rm.script_refs(sources, sources)
    assert refs == {
        rl.Stage.MAINTENANCE: ("hooks", "run.sh", "spec.stages.maintenance.script"),
        rl.Stage.POST_MAINTENANCE: ("post", "p.sh", "spec.stages.postMaintenance.script"),
    }
    assert rm.script_refs(sources, [rl.Stage.PRE_FLIGHT]) == {}


def test_starting_stages_are_the_hooks_a_step_starts_now() -> None:
    state = rl.RunState(hosts=[rl.HostRun("h1", "g"), rl.HostRun("h2", "g")])
    state.hosts[0].stages["PreFlight"] = rl.StageRecord("j1", started_at=rm.EPOCH)
    actions = [
        rl.RunHook("h1", rl.Stage.PRE_FLIGHT, "j1", ("x",), 10),  # re-emitted: already started
        rl.RunHook("h2", rl.Stage.PRE_FLIGHT, "j2", ("x",), 10),
        rl.RunHook("h1", rl.Stage.PRE_MAINTENANCE, "j3", ("x",), 10),
        rl.EnterMaintenance("h2"),
    ]
    assert rm.starting_stages(state, actions) == {rl.Stage.PRE_FLIGHT, rl.Stage.PRE_MAINTENANCE}
    assert rm.starting_stages(state, actions[:1]) == set()


def test_cloudstack_timing_survives_the_status_between_reconciles() -> None:
    """The first-seen times of CloudStack's polling go through the object's status (the
    handler reads the state back from it on every reconcile)."""
    from datetime import timedelta

    from hosted_engine.logic.drain import TargetHost

    t0 = rm.EPOCH + timedelta(days=20000)
    views = [rl.HostView(name=n, capacity=TargetHost(n, 64 << 30, 16000, 0, 0), group="g",
                         labels={"g": "g"}) for n in ("h1", "h2")]
    sp = rl.cloudstack_order(rl.RollingSpec(scope=rl.Scope(host_names=("h1",)),
                                            hooks={rl.Stage.PRE_FLIGHT: ("x",)}),
                             ping_interval_s=10, maintenance_poll_s=30)
    pf = rl.job_name("rm", "h1", rl.Stage.PRE_FLIGHT)
    ended = {pf: rl.JobView(rl.JobState.SUCCEEDED, 0, "", t0)}

    def obs(at: float, jobs: dict[str, rl.JobView],
            hosts: list[rl.HostView] = views) -> rl.RollingObservation:
        return rl.RollingObservation("rm", t0 + timedelta(seconds=at), hosts, jobs, 10)

    def via_status(state: rl.RunState) -> rl.RunState:
        back = rm.from_status(rm.to_status(state))
        assert back is not None
        return back

    state = via_status(rl.step(None, sp, obs(0, {})).state)
    state = via_status(rl.step(state, sp, obs(3, ended)).state)  # end seen at 3 s
    state = via_status(rl.step(state, sp, obs(7, ended)).state)
    assert state.host("h1").stages["PreFlight"].result is None
    state = via_status(rl.step(state, sp, obs(10.5, ended)).state)  # after its poll at 10 s
    assert state.host("h1").stages["PreFlight"].result is rl.StageResult.SUCCEEDED
    assert state.host("h1").phase is rl.HostPhase.ENTERING_MAINTENANCE
    down = [replace(views[0], state="Maintenance"), views[1]]
    state = via_status(rl.step(state, sp, obs(12, ended, down)).state)  # seen at 12 s
    state = via_status(rl.step(state, sp, obs(25, ended, down)).state)
    assert state.host("h1").phase is rl.HostPhase.ENTERING_MAINTENANCE
    state = via_status(rl.step(state, sp, obs(41, ended, down)).state)  # after 10.5 + 30 s
    assert state.host("h1").phase is not rl.HostPhase.ENTERING_MAINTENANCE
