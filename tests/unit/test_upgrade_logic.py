"""hosted_engine.logic.upgrade: every step, the rollback, no loop, resume from every step.

A small model of the world (``World``) carries the machine's actions out the way the handler and
KubeVirt do (the VM's root disk, the VMI, the runStrategy of global maintenance, the Backup), so
whole upgrades run here in simulated time; single decisions are checked on hand-made
observations.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hosted_engine.logic import upgrade as up
from hosted_engine.models.hostedengine import (
    EngineImage,
    StepState,
    UpgradeMode,
    UpgradePhase,
    UpgradePolicy,
    UpgradeStatus,
)

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
OLD = up.ImageRef("quay.io/ovirt/engine:4.5", "4.5")
NEW = up.ImageRef("quay.io/ovirt/engine:4.6", "4.6")
HE = "engine"
NAMES = ["PreFlight", "Backup", "EnterGlobalMaintenance", "SwitchImage", "WaitHealthy",
         "LeaveGlobalMaintenance"]


def policy(**kw: Any) -> UpgradePolicy:
    return UpgradePolicy.model_validate({"preUpgradeBackup": False, "healthTimeout": "60s", **kw})


@dataclass
class World:
    """The engine VM as the handler and KubeVirt would move it (images per disk name)."""

    images: dict[str, up.ImageRef] = field(default_factory=lambda: {"engine-disk": OLD})
    root: str = "engine-disk"
    vmi_disk: str | None = "engine-disk"
    booted_at: datetime | None = T0 - timedelta(hours=1)
    broken: frozenset[up.ImageRef] = frozenset()  # images whose guest never gets healthy
    desired: up.ImageRef = NEW
    generation: int = 2
    user_gm: bool = False
    strategy: str = "Always"
    backups: dict[str, str] = field(default_factory=dict)
    backup_result: str = "Succeeded"
    pol: UpgradePolicy = field(default_factory=policy)
    deleted: list[str] = field(default_factory=list)
    starts: int = 0
    restarts: int = 0
    boot_time: timedelta = timedelta(seconds=5)

    def observe(self, status: UpgradeStatus | None, now: datetime) -> up.Observation:
        healthy = (self.vmi_disk is not None and self.booted_at is not None
                   and now - self.booted_at >= self.boot_time
                   and self.images.get(self.vmi_disk) not in self.broken)
        run = status.backup_run if status is not None else None
        return up.Observation(
            generation=self.generation,
            desired=self.desired,
            current=self.images[self.root],
            current_disk=self.root,
            policy=self.pol,
            vmi_disk=self.vmi_disk,
            healthy=healthy,
            run_strategy=self.strategy,
            user_global_maintenance=self.user_gm,
            backup_phase=self.backups.get(run) if run else None,
            backup_source="nightly",
        )

    def apply(self, plan: up.Plan, now: datetime) -> None:
        gm = self.user_gm or up.owns_global_maintenance(plan.status)
        self.strategy = "Manual" if gm else "Always"
        for action in plan.actions:
            if isinstance(action, up.SwitchDisk):
                if action.from_spec:
                    self.images[action.root] = self.desired
                self.root = action.root
                for name in list(self.images):
                    if name not in action.keep and name != action.root:
                        del self.images[name]
            elif isinstance(action, up.RestartEngine):
                self.restarts += 1
                self.vmi_disk = None
            elif isinstance(action, up.StartEngine):
                self.starts += 1
                self.vmi_disk, self.booted_at = self.root, now
            elif isinstance(action, up.DeleteDisk):
                self.deleted.append(action.name)
            elif isinstance(action, up.CreateBackup):
                self.backups.setdefault(action.name, self.backup_result)


def run(world: World, status: UpgradeStatus | None = None, *, until: float = 300,
        tick: float = 1.0, restart_each_step: bool = False
        ) -> tuple[UpgradeStatus | None, list[up.Plan]]:
    """Call advance every ``tick`` seconds until the upgrade ends (or ``until``)."""
    plans = []
    now = T0
    while (now - T0).total_seconds() < until:
        if restart_each_step and status is not None:  # a restarted operator reads status back
            status = up.status_from_dict(up.status_to_dict(status))
        plan = up.advance(status, world.observe(status, now), HE, now)
        world.apply(plan, now)
        plans.append(plan)
        status = plan.status
        if status is not None and status.phase is not UpgradePhase.RUNNING:
            break
        if status is None:
            break
        now += timedelta(seconds=tick)
    return status, plans


def steps(status: UpgradeStatus) -> dict[str, tuple[StepState, str]]:
    return {s.name.value: (s.state, s.message or "") for s in status.steps}


def reasons(plans: list[up.Plan]) -> list[str]:
    return [a.reason for p in plans for a in p.actions if isinstance(a, up.EmitEvent)]


# -- images and disks ---------------------------------------------------------------------------


def test_image_of_spec_and_of_the_vm_agree() -> None:
    image = EngineImage.model_validate({"url": {"url": "https://img.example/e.qcow2"},
                                        "version": "4.6"})
    ref = up.image_of_spec(image)
    vm: dict[str, Any] = {"metadata": {"annotations": {up.VERSION_ANNOTATION: "4.6"}},
          "spec": {"dataVolumeTemplates": [
              {"metadata": {"name": "other"}, "spec": {"source": {"blank": {}}}},
              {"metadata": {"name": "d2"},
               "spec": {"source": {"http": {"url": "https://img.example/e.qcow2"}}}}],
              "template": {"spec": {"volumes": [{"name": "root", "dataVolume": {"name": "d2"}},
                                                {"name": "cloudinit"}]}}}}
    assert up.current_image(vm) == (ref, "d2")
    registry = EngineImage.model_validate({"containerDisk": {"image": "q.io/e:1"}})
    assert up.image_of_spec(registry).source == "q.io/e:1"
    vm["spec"]["dataVolumeTemplates"][1]["spec"]["source"] = {"registry": {"url": "docker://q.io/e:1"}}
    assert up.current_image(vm) == (up.ImageRef("q.io/e:1", "4.6"), "d2")
    assert up.ImageRef("a", "1").key != up.ImageRef("a", "2").key


def test_switch_patch_keeps_named_templates_and_points_the_root_volume() -> None:
    vm = {"spec": {"dataVolumeTemplates": [
        {"metadata": {"name": "engine-disk", "labels": {"x": "y"}},
         "spec": {"source": {"http": {"url": "u1"}}, "storage": {"storageClassName": "sc"}}}],
        "template": {"spec": {"volumes": [{"name": "root", "dataVolume": {"name": "engine-disk"}},
                                          {"name": "cloudinit", "cloudInitNoCloud": {}}]}}}}
    new = up.new_template(vm, "engine-disk-abc", {"http": {"url": "u2"}})
    assert new == {"metadata": {"name": "engine-disk-abc", "labels": {"x": "y"}},
                   "spec": {"source": {"http": {"url": "u2"}},
                            "storage": {"storageClassName": "sc"}}}
    patch = up.switch_patch(vm, root="engine-disk-abc", keep=("engine-disk",),
                            new_template=new, version="4.6")
    names = [t["metadata"]["name"] for t in patch["spec"]["dataVolumeTemplates"]]
    assert names == ["engine-disk", "engine-disk-abc"]
    volumes = patch["spec"]["template"]["spec"]["volumes"]
    assert volumes[0] == {"name": "root", "dataVolume": {"name": "engine-disk-abc"}}
    assert volumes[1] == {"name": "cloudinit", "cloudInitNoCloud": {}}
    assert patch["metadata"]["annotations"][up.VERSION_ANNOTATION] == "4.6"
    back = up.switch_patch(vm, root="engine-disk", keep=("engine-disk",))
    assert [t["metadata"]["name"] for t in back["spec"]["dataVolumeTemplates"]] == ["engine-disk"]


def test_names_fit_kubernetes_limits() -> None:
    long = "e" * 63
    assert len(up.target_disk(long, NEW, 12345)) <= 63
    assert up.target_disk(HE, NEW, 3).endswith(f"-{NEW.key}-g3")
    assert up.target_disk(HE, NEW, 3) != up.target_disk(HE, NEW, 4)
    assert len(up.backup_name(long, 7)) <= 63


def test_backup_source_is_the_named_one_or_the_engines_first() -> None:
    backups = [
        {"metadata": {"name": "zz"}, "spec": {"source": {"hostedEngine": HE}}},
        {"metadata": {"name": "aa"}, "spec": {"source": {"hostedEngine": "other"}}},
        {"metadata": {"name": "bb", "labels": {up.UPGRADE_BACKUP_LABEL: HE}},
         "spec": {"source": {"hostedEngine": HE}}},
        {"metadata": {"name": "cc"}, "spec": {"source": {"hostedEngine": HE}}},
    ]
    assert up.pick_backup_source(backups, HE, None) == ("cc", "")
    assert up.pick_backup_source(backups, HE, "aa") == ("aa", "")
    source, why = up.pick_backup_source(backups, HE, "missing")
    assert source is None and "missing does not exist" in why
    assert up.pick_backup_source(backups[1:2], HE, None) == (None, "")
    body = up.pre_upgrade_backup(
        {"spec": {"target": {"s3": {"bucket": "b"}}, "schedule": "0 3 * * *", "quiesce": False,
                  "retention": {"keepLast": 3}}},
        name="engine-pre-upgrade-g2", namespace="ns", he=HE)
    assert body["spec"] == {"source": {"hostedEngine": HE}, "target": {"s3": {"bucket": "b"}},
                            "quiesce": False}
    assert body["metadata"]["labels"] == {up.UPGRADE_BACKUP_LABEL: HE}


# -- nothing to do, manual ----------------------------------------------------------------------


def test_no_vm_or_same_image_does_nothing() -> None:
    world = World(desired=OLD)
    plan = up.advance(None, world.observe(None, T0), HE, T0)
    assert plan == up.Plan(None, (), ())
    obs = replace(world.observe(None, T0), current=None, current_disk=None, desired=NEW)
    assert up.advance(None, obs, HE, T0) == up.Plan(None, (), ())


def test_manual_policy_only_records_upgrade_pending() -> None:
    world = World(pol=policy(mode="Manual"))
    plan = up.advance(None, world.observe(None, T0), HE, T0)
    assert plan.status is None and plan.actions == ()
    (cond,) = plan.conditions
    assert cond[:3] == ("UpgradePending", True, "ManualPolicy")
    assert OLD.label() in cond[3] and NEW.label() in cond[3]
    assert UpgradeMode.MANUAL.value in cond[3]


# -- a whole upgrade ----------------------------------------------------------------------------


def test_successful_upgrade_runs_every_step_in_order() -> None:
    world = World()
    status, plans = run(world)
    assert status is not None and status.phase is UpgradePhase.SUCCEEDED
    assert [s.name.value for s in status.steps] == NAMES
    st = steps(status)
    assert st["Backup"][0] is StepState.SKIPPED
    for name in ("PreFlight", "EnterGlobalMaintenance", "SwitchImage", "WaitHealthy",
                 "LeaveGlobalMaintenance"):
        assert st[name][0] is StepState.SUCCEEDED, st
    for s in status.steps:
        assert s.started_at is not None and s.finished_at is not None
        assert s.started_at <= s.finished_at
    assert (status.from_image, status.to_image) == (OLD.source, NEW.source)
    assert (status.from_version, status.to_version) == ("4.5", "4.6")
    assert status.owns_global_maintenance is False
    # the engine runs the new disk; the old one was dropped and deleted
    assert world.root == world.vmi_disk == status.to_disk
    assert world.images == {status.to_disk: NEW}
    assert world.deleted == ["engine-disk"]
    assert world.strategy == "Always"
    assert world.restarts == 1
    assert reasons(plans)[0] == "UpgradeStarted" and reasons(plans)[-1] == "UpgradeSucceeded"
    assert "UpgradeGlobalMaintenance" in reasons(plans)
    conds = {c[0]: c for c in plans[-1].conditions}
    assert conds["Upgrading"][1] is False and conds["UpgradeFailed"][1] is False
    assert not any(isinstance(a, up.Notify) for p in plans for a in p.actions)
    # then nothing more to do
    again = up.advance(status, world.observe(status, T0 + timedelta(hours=1)), HE,
                       T0 + timedelta(hours=1))
    assert again.status == status and again.actions == ()


def test_switch_waits_for_global_maintenance_to_be_in_effect() -> None:
    world = World()
    status = up.advance(None, world.observe(None, T0), HE, T0).status
    assert status is not None
    st = steps(status)
    assert st["EnterGlobalMaintenance"][0] is StepState.RUNNING  # runStrategy still Always
    assert status.owns_global_maintenance is True
    assert st["SwitchImage"][0] is StepState.PENDING
    assert up.changing(status)
    plan = up.advance(status, world.observe(status, T0), HE, T0)
    assert not any(isinstance(a, up.SwitchDisk) for a in plan.actions)
    world.strategy = "Manual"
    plan = up.advance(status, world.observe(status, T0), HE, T0)
    assert plan.status is not None
    assert steps(plan.status)["SwitchImage"][0] is StepState.RUNNING
    (switch,) = [a for a in plan.actions if isinstance(a, up.SwitchDisk)]
    assert switch.from_spec and switch.root == plan.status.to_disk
    assert switch.keep == ("engine-disk", plan.status.to_disk)


def test_pre_flight_waits_without_changing_anything() -> None:
    world = World()
    obs = replace(world.observe(None, T0), healthy=False, spares_ok=False,
                  spares_message="0 of 1", storage_ok=False, storage_message="domain down")
    plan = up.advance(None, obs, HE, T0)
    assert plan.status is not None and plan.status.phase is UpgradePhase.RUNNING
    assert not up.changing(plan.status)  # nothing is being changed yet
    state, message = steps(plan.status)["PreFlight"]
    assert state is StepState.RUNNING
    assert "not running healthy" in message and "0 of 1" in message and "domain down" in message
    assert [type(a) for a in plan.actions] == [up.EmitEvent]
    later = up.advance(plan.status, obs, HE, T0 + timedelta(hours=5))  # no timeout
    assert later.status is not None and steps(later.status)["PreFlight"][0] is StepState.RUNNING
    # a new target while still in pre-flight replaces the old one
    third = up.ImageRef("quay.io/ovirt/engine:4.7", "4.7")
    moved = up.advance(later.status, replace(obs, desired=third, generation=3), HE, T0)
    assert moved.status is not None and moved.status.to_version == "4.7"
    assert moved.status.target_generation == 3


def test_pre_upgrade_backup_is_created_once_and_waited_for() -> None:
    world = World(pol=policy(preUpgradeBackup=True))
    world.backup_result = "Running"
    status, plans = run(world, until=5)
    assert status is not None and steps(status)["Backup"][0] is StepState.RUNNING
    creates = [a for p in plans for a in p.actions if isinstance(a, up.CreateBackup)]
    assert creates == [up.CreateBackup("engine-pre-upgrade-g2", "nightly")]
    assert status.backup_run == "engine-pre-upgrade-g2"
    world.backups["engine-pre-upgrade-g2"] = "Succeeded"
    status, _ = run(world, status)
    assert status is not None and status.phase is UpgradePhase.SUCCEEDED
    assert steps(status)["Backup"][0] is StepState.SUCCEEDED


@pytest.mark.parametrize("result", ["Failed", "none"])
def test_backup_failure_or_no_target_fails_before_any_change(result: str) -> None:
    world = World(pol=policy(preUpgradeBackup=True), backup_result=result)
    obs = world.observe(None, T0)
    if result == "none":
        obs = replace(obs, backup_source=None)
    status = up.advance(None, obs, HE, T0).status
    if result == "Failed":
        world.apply(up.Plan(status), T0)
        world.backups["engine-pre-upgrade-g2"] = "Failed"
        plan = up.advance(status, replace(world.observe(status, T0), backup_message="disk full"),
                          HE, T0)
        status = plan.status
    assert status is not None and status.phase is UpgradePhase.FAILED
    expected = "BackupFailed" if result == "Failed" else "NoBackupTarget"
    assert status.reason == expected
    assert "nothing was changed" in (status.message or "")
    st = steps(status)
    assert st["Backup"][0] is StepState.FAILED
    assert all(st[n][0] is StepState.SKIPPED for n in NAMES[2:])
    assert status.owns_global_maintenance is False
    assert world.root == "engine-disk" and world.restarts == 0


def test_broken_image_is_rolled_back_and_healthy_on_the_old_one() -> None:
    world = World()
    world.broken = frozenset({NEW})
    status, plans = run(world, until=600)
    assert status is not None and status.phase is UpgradePhase.ROLLED_BACK
    assert [s.name.value for s in status.steps] == [
        *NAMES[:5], "Rollback", "LeaveGlobalMaintenance"]
    st = steps(status)
    assert st["WaitHealthy"][0] is StepState.FAILED and "60s" in st["WaitHealthy"][1]
    assert st["Rollback"][0] is StepState.SUCCEEDED
    assert st["LeaveGlobalMaintenance"][0] is StepState.SUCCEEDED
    assert status.reason == "HealthTimeout"
    assert world.root == world.vmi_disk == "engine-disk"
    assert world.images == {"engine-disk": OLD}
    assert world.deleted == [status.to_disk]
    assert world.strategy == "Always" and status.owns_global_maintenance is False
    # the timeout counts from the switch
    switched = status.steps[3].started_at
    failed = status.steps[4].finished_at
    assert switched is not None and failed is not None
    assert (failed - switched) >= timedelta(seconds=60)
    names = reasons(plans)
    assert names.count("UpgradeRollingBack") == 1 and names[-1] == "UpgradeRolledBack"
    notes = [a for p in plans for a in p.actions if isinstance(a, up.Notify)]
    assert [n.phase for n in notes] == ["RolledBack"]
    conds = {c[0]: c for c in plans[-1].conditions}
    assert conds["UpgradeFailed"][1:3] == (True, "HealthTimeout")
    assert conds["Upgrading"][1] is False


def test_a_failed_target_is_not_tried_again_until_the_spec_changes() -> None:
    world = World()
    world.broken = frozenset({NEW})
    status, _ = run(world, until=600)
    assert status is not None and status.phase is UpgradePhase.ROLLED_BACK
    assert world.restarts == 2  # the switch, the rollback
    later = T0 + timedelta(hours=2)
    for _ in range(3):
        plan = up.advance(status, world.observe(status, later), HE, later)
        world.apply(plan, later)
        assert plan.status == status and plan.actions == ()
    assert world.restarts == 2
    # a new generation (any spec change) allows one more attempt
    world.generation = 3
    plan = up.advance(status, world.observe(status, later), HE, later)
    assert plan.status is not None and plan.status.phase is UpgradePhase.RUNNING
    assert plan.status.started_at == later and plan.status.target_generation == 3
    assert plan.status.to_disk != status.to_disk


def test_rollback_that_never_gets_healthy_ends_failed_and_leaves_maintenance() -> None:
    world = World()
    world.broken = frozenset({OLD, NEW})
    # the old engine was healthy before (pre-flight), it breaks only after the switch
    status = up.advance(None, replace(world.observe(None, T0), healthy=True), HE, T0).status
    world.apply(up.Plan(status), T0)
    status, plans = run(world, status, until=900)
    assert status is not None and status.phase is UpgradePhase.FAILED
    assert status.reason == "RollbackUnhealthy"
    st = steps(status)
    assert st["Rollback"][0] is StepState.FAILED
    assert st["LeaveGlobalMaintenance"][0] is StepState.SUCCEEDED
    assert world.strategy == "Always"
    assert [a.phase for p in plans for a in p.actions if isinstance(a, up.Notify)] == ["Failed"]


def test_users_global_maintenance_is_never_left() -> None:
    world = World(user_gm=True, strategy="Manual")
    status, plans = run(world)
    assert status is not None and status.phase is UpgradePhase.SUCCEEDED
    st = steps(status)
    assert st["EnterGlobalMaintenance"][0] is StepState.SKIPPED
    assert st["LeaveGlobalMaintenance"][0] is StepState.SKIPPED
    assert "left to the user" in st["LeaveGlobalMaintenance"][1]
    assert not any(p.status is not None and p.status.owns_global_maintenance for p in plans)
    assert world.strategy == "Manual"  # still the user's maintenance
    assert world.root == world.vmi_disk == status.to_disk


def test_user_entering_maintenance_during_the_upgrade_keeps_it() -> None:
    world = World()
    status, _ = run(world, until=2)  # the operator's maintenance is on
    assert status is not None and status.owns_global_maintenance
    world.user_gm = True
    status, _ = run(world, status)
    assert status is not None and status.phase is UpgradePhase.SUCCEEDED
    assert status.owns_global_maintenance is False
    assert world.strategy == "Manual"  # the user's maintenance remains


def test_spec_change_after_the_switch_does_not_interrupt_the_upgrade() -> None:
    world = World()
    status, _ = run(world, until=3)
    assert status is not None and steps(status)["SwitchImage"][0] is not StepState.PENDING
    world.desired = up.ImageRef("quay.io/ovirt/engine:4.7", "4.7")
    world.generation = 3
    status, _ = run(world, status)
    assert status is not None and status.phase is UpgradePhase.SUCCEEDED
    assert status.to_version == "4.6" and status.target_generation == 3
    # the next decision starts the upgrade to 4.7
    plan = up.advance(status, world.observe(status, T0), HE, T0)
    assert plan.status is not None and plan.status.to_version == "4.7"
    assert plan.status.from_version == "4.6"


# -- resume ----------------------------------------------------------------------------------


def test_resumes_from_status_at_every_step_with_the_same_result() -> None:
    reference, _ = run(World())
    resumed, _ = run(World(), restart_each_step=True)
    assert reference is not None and resumed is not None
    assert up.status_to_dict(resumed) == up.status_to_dict(reference)


@pytest.mark.parametrize("stop_after", range(1, 12))
def test_a_restart_at_any_point_resumes_the_same_upgrade(stop_after: int) -> None:
    """Stop after ``stop_after`` decisions, lose everything but status, go on."""
    world = World(pol=policy(preUpgradeBackup=True))
    world.broken = frozenset({NEW}) if stop_after % 2 else frozenset()
    status, _ = run(world, until=stop_after)
    assert status is not None
    saved = up.status_to_dict(status)
    status, _ = run(world, up.status_from_dict(saved), until=600)
    assert status is not None
    expected = UpgradePhase.ROLLED_BACK if stop_after % 2 else UpgradePhase.SUCCEEDED
    assert status.phase is expected
    assert status.started_at == T0  # the same upgrade, not a second one
    assert status.backup_run == "engine-pre-upgrade-g2"
    assert world.strategy == "Always"


def test_restart_while_the_old_vmi_is_stopping_does_not_switch_twice() -> None:
    world = World()
    status, _ = run(world, until=2)
    assert status is not None
    # the switch was made and the VMI deleted; KubeVirt has not started the new one yet
    plan = up.advance(status, replace(world.observe(status, T0), vmi_disk=None,
                                      start_pending=True), HE, T0 + timedelta(seconds=3))
    assert not any(isinstance(a, (up.SwitchDisk, up.StartEngine)) for a in plan.actions)


def test_status_round_trips_and_bad_status_is_ignored() -> None:
    status, _ = run(World(), until=3)
    assert status is not None
    assert up.status_from_dict(up.status_to_dict(status)) == status
    assert up.status_from_dict({"phase": "Nonsense"}) is None
    assert up.status_from_dict(None) is None and up.status_to_dict(None) is None


def test_notification_pattern_and_text() -> None:
    assert up.notification_matches("maintenance|start|stop|up|down", "RolledBack")
    assert not up.notification_matches("^EngineDown", "Failed")
    assert not up.notification_matches("(", "Failed")
    subject, text = up.notification_text(HE, "ns", "engine.example", up.Notify(
        "RolledBack", "upgrade to x failed"), T0)
    assert subject == "ovirt-hosted-engine upgrade RolledBack"
    assert "ns/engine" in text and "upgrade to x failed" in text
