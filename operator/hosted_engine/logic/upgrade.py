"""Engine upgrade with rollback (issue 10), in pure code.

A change of ``spec.vm.image`` (its source or its ``version``) is carried out as the seeds'
procedure (RHV 4.2 Self-Hosted Engine Guide ch. 5.3/6), one step after the other, each recorded
in ``status.upgrade.steps`` with its times::

    PreFlight -> Backup -> EnterGlobalMaintenance -> SwitchImage -> WaitHealthy
              -> LeaveGlobalMaintenance

* PreFlight waits (no timeout, nothing changed yet) until the engine is healthy, the spares are
  satisfied and the disk's StorageDomain is reachable. A new target seen in PreFlight or Backup
  replaces the old one (nothing was switched yet).
* Backup: a one-shot Backup object named in status (created once, deterministic name), with the
  target of ``upgradePolicy.backupName`` (or of the first Backup of this engine). No Backup to
  copy a target from, or a failed run -> the upgrade fails *before* any change: phase Failed.
  ``preUpgradeBackup: false`` skips it.
* EnterGlobalMaintenance: the operator's own global maintenance (``ownsGlobalMaintenance``),
  effective once the VM's runStrategy is Manual (docs/decisions/0002). When the user is already
  in global maintenance, the step is Skipped: the upgrade runs inside the user's maintenance and
  leaves it to the user (LeaveGlobalMaintenance is Skipped too).
* SwitchImage: every image gets its own DataVolume (``<engine>-disk-<hash>-g<generation>``);
  the VM keeps the old one beside the new one while the upgrade runs, its root volume points at
  the new one, then the engine is restarted (VMI deleted, started through the subresource).
* WaitHealthy: the VMI booted from the new disk and its newest health probe is OK, within
  ``upgradePolicy.healthTimeout`` counted from the switch. On success the old disk is dropped
  (the pre-upgrade Backup remains).
* Failure after the switch (timeout) -> Rollback: the root volume back to the old disk (still
  intact: an instant rollback), the new disk deleted, the engine restarted and waited for
  (same timeout); then LeaveGlobalMaintenance. Phase RolledBack (healthy on the old image) or
  Failed (RollbackUnhealthy: the HA machine gets the engine back when maintenance is left).

Never a loop: a finished upgrade whose target was not reached is remembered with the newest
spec generation seen while it ran (``targetGeneration``); the same target is tried again only
from a later generation (any new spec change, e.g. raising ``spec.resetSeq``).

``upgradePolicy.mode: Manual``: condition UpgradePending=True, nothing is done.

Everything lives in ``status.upgrade`` and every action is idempotent (what it should achieve is
observed first), so a restarted operator resumes at any step. :func:`advance` is the whole
interface; :func:`current_image` and :func:`switch_patch` read and write the VM's disks.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from hosted_engine import API_GROUP, API_VERSION
from hosted_engine.logic.engine_vm import ROOT_DISK, disk_name
from hosted_engine.logic.engine_vm import _data_volume_source as data_volume_source
from hosted_engine.models.hostedengine import (
    EngineImage,
    StepState,
    UpgradeMode,
    UpgradePhase,
    UpgradePolicy,
    UpgradeStatus,
    UpgradeStep,
    UpgradeStepName,
)

__all__ = ["data_volume_source"]  # the DataVolume source of the spec's image (engine_vm's)

Obj = Mapping[str, Any]

VERSION_ANNOTATION: Final = f"{API_GROUP}/engine-version"
#: Label on the pre-upgrade Backup objects (value: the HostedEngine's name).
UPGRADE_BACKUP_LABEL: Final = f"{API_GROUP}/pre-upgrade-of"
#: Steps of an upgrade, in order (Rollback is inserted before LeaveGlobalMaintenance on failure).
STEPS: Final = (
    UpgradeStepName.PRE_FLIGHT,
    UpgradeStepName.BACKUP,
    UpgradeStepName.ENTER_GLOBAL_MAINTENANCE,
    UpgradeStepName.SWITCH_IMAGE,
    UpgradeStepName.WAIT_HEALTHY,
    UpgradeStepName.LEAVE_GLOBAL_MAINTENANCE,
)
_DONE: Final = frozenset({StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED})
_NAME_LIMIT: Final = 63


# --------------------------------------------------------------------------------------------
# Images and disks


@dataclass(frozen=True)
class ImageRef:
    """One engine image: its source as shown in status, and its version."""

    source: str
    version: str | None = None

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.source}\n{self.version or ''}".encode()).hexdigest()[:8]

    def label(self) -> str:
        return f"{self.source} ({self.version})" if self.version else self.source


def source_label(image: EngineImage) -> str:
    """The spec's image source as status shows it (``status.vm.image``)."""
    if image.container_disk is not None:
        return str(image.container_disk.image)
    if image.url is not None:
        return str(image.url.url)
    assert image.pvc is not None
    return f"pvc:{image.pvc.claim_name}"


def image_of_spec(image: EngineImage) -> ImageRef:
    return ImageRef(source_label(image), image.version)


def _dv_source_label(source: Obj) -> str:
    if "registry" in source:
        url = str((source.get("registry") or {}).get("url") or "")
        return url.removeprefix("docker://")
    if "http" in source:
        return str((source.get("http") or {}).get("url") or "")
    if "pvc" in source:
        return f"pvc:{(source.get('pvc') or {}).get('name') or ''}"
    return "unknown"


def _vm_spec(vm: Obj) -> Obj:
    return vm.get("spec") or {}


def _volumes(spec: Obj) -> list[Any]:
    return list(((spec.get("template") or {}).get("spec") or {}).get("volumes") or [])


def root_disk(spec: Obj) -> str | None:
    """The DataVolume the root volume of a VM (or VMI) spec boots from."""
    for volume in _volumes(spec):
        if volume.get("name") == ROOT_DISK:
            dv = volume.get("dataVolume") or volume.get("persistentVolumeClaim") or {}
            return str(dv.get("name") or dv.get("claimName") or "") or None
    return None


def vmi_root_disk(vmi: Obj | None) -> str | None:
    if vmi is None:
        return None
    for volume in (vmi.get("spec") or {}).get("volumes") or []:
        if volume.get("name") == ROOT_DISK:
            dv = volume.get("dataVolume") or volume.get("persistentVolumeClaim") or {}
            return str(dv.get("name") or dv.get("claimName") or "") or None
    return None


def current_image(vm: Obj) -> tuple[ImageRef, str] | None:
    """The image the VM boots (its root DataVolume template's source, the version annotation)
    and that DataVolume's name; None when the VM has no such template."""
    spec = _vm_spec(vm)
    disk = root_disk(spec)
    for template in spec.get("dataVolumeTemplates") or []:
        if (template.get("metadata") or {}).get("name") == disk and disk is not None:
            source = (template.get("spec") or {}).get("source") or {}
            version = ((vm.get("metadata") or {}).get("annotations") or {}).get(
                VERSION_ANNOTATION
            )
            return ImageRef(_dv_source_label(source), str(version) if version else None), disk
    return None


def target_disk(he: str, image: ImageRef, generation: int) -> str:
    """A DataVolume name per image and attempt (never the name of a disk in use)."""
    tail = f"-{image.key}-g{generation}"
    return f"{disk_name(he)[: _NAME_LIMIT - len(tail)]}{tail}"


def backup_name(he: str, generation: int) -> str:
    tail = f"-pre-upgrade-g{generation}"
    return f"{he[: _NAME_LIMIT - len(tail)]}{tail}"


def switch_patch(
    vm: Obj,
    *,
    root: str,
    keep: Sequence[str],
    new_template: Obj | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """A merge patch of the VM: its root volume boots ``root``; the DataVolume templates are the
    ones named in ``keep`` (taken from the VM) plus ``new_template``; the version annotation.

    Lists are replaced whole by a merge patch, so both lists are written complete."""
    spec = _vm_spec(vm)
    templates = [
        dict(t)
        for t in spec.get("dataVolumeTemplates") or []
        if (t.get("metadata") or {}).get("name") in keep
    ]
    if new_template is not None:
        name = (new_template.get("metadata") or {}).get("name")
        templates = [t for t in templates if (t.get("metadata") or {}).get("name") != name]
        templates.append(dict(new_template))
    volumes = []
    for volume in _volumes(spec):
        if volume.get("name") == ROOT_DISK:
            volume = {"name": ROOT_DISK, "dataVolume": {"name": root}}
        volumes.append(volume)
    return {
        "metadata": {"annotations": {VERSION_ANNOTATION: version}},
        "spec": {
            "dataVolumeTemplates": templates,
            "template": {"spec": {"volumes": volumes}},
        },
    }


def new_template(vm: Obj, name: str, source: Obj) -> dict[str, Any] | None:
    """The DataVolume template of the new image: the VM's root template (storage, labels) with
    another name and source; None when the VM has no root template."""
    spec = _vm_spec(vm)
    disk = root_disk(spec)
    for template in spec.get("dataVolumeTemplates") or []:
        meta = dict(template.get("metadata") or {})
        if meta.get("name") != disk:
            continue
        meta["name"] = name
        return {"metadata": meta, "spec": {**(template.get("spec") or {}), "source": dict(source)}}
    return None


def pick_backup_source(
    backups: Sequence[Obj], he: str, wanted: str | None
) -> tuple[str | None, str]:
    """The Backup whose target the pre-upgrade backup uses: ``wanted`` (upgradePolicy.backupName)
    or the first, by name, whose source is ``he`` (never a pre-upgrade one); else why not."""
    names = {str((b.get("metadata") or {}).get("name") or ""): b for b in backups}
    if wanted is not None:
        if wanted not in names:
            return None, f"upgradePolicy.backupName: Backup {wanted} does not exist"
        return wanted, ""
    for name in sorted(names):
        b = names[name]
        labels = (b.get("metadata") or {}).get("labels") or {}
        source = ((b.get("spec") or {}).get("source") or {}).get("hostedEngine")
        if source == he and UPGRADE_BACKUP_LABEL not in labels:
            return name, ""
    return None, ""


def pre_upgrade_backup(source: Obj, *, name: str, namespace: str, he: str) -> dict[str, Any]:
    """A one-shot Backup of ``he`` to the target of the Backup ``source`` (its run settings
    too, not its schedule or retention)."""
    spec = source.get("spec") or {}
    body_spec: dict[str, Any] = {"source": {"hostedEngine": he}, "target": spec.get("target")}
    for key in ("quiesce", "runTimeout", "failoverHost"):
        if key in spec:
            body_spec[key] = spec[key]
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": namespace, "labels": {UPGRADE_BACKUP_LABEL: he}},
        "spec": body_spec,
    }


# --------------------------------------------------------------------------------------------
# Observation, actions, plan


@dataclass(frozen=True)
class Observation:
    """What the handler observed (all plain values)."""

    generation: int
    desired: ImageRef
    #: the image the VM boots and its DataVolume (None: no engine VM yet: nothing to upgrade)
    current: ImageRef | None
    current_disk: str | None
    policy: UpgradePolicy
    #: the root DataVolume of the active (not finished) engine VMI, None without one
    vmi_disk: str | None = None
    #: the active VMI is Running and its newest health probe is OK
    healthy: bool = False
    run_strategy: str | None = None
    #: the VM has a state change request (e.g. a start) KubeVirt has not carried out yet
    start_pending: bool = False
    user_global_maintenance: bool = False
    spares_ok: bool = True
    spares_message: str = ""
    storage_ok: bool = True
    storage_message: str = ""
    #: phase of the Backup named in status.upgrade.backupRun (None: not there)
    backup_phase: str | None = None
    backup_message: str = ""
    #: the Backup whose target the pre-upgrade backup copies (None: none found)
    backup_source: str | None = None
    #: why no Backup source (e.g. the named one does not exist)
    backup_source_problem: str = ""


@dataclass(frozen=True)
class CreateBackup:
    name: str
    source: str


@dataclass(frozen=True)
class SwitchDisk:
    """Point the VM's root volume at ``root``; keep the templates in ``keep``; with
    ``from_spec`` add the template of the spec's image named ``root``."""

    root: str
    keep: tuple[str, ...]
    from_spec: bool
    version: str | None


@dataclass(frozen=True)
class RestartEngine:
    """Stop the engine VMI (graceful); it is started again by :class:`StartEngine`."""


@dataclass(frozen=True)
class StartEngine:
    """The start subresource (runStrategy Manual in global maintenance)."""


@dataclass(frozen=True)
class DeleteDisk:
    name: str


@dataclass(frozen=True)
class EmitEvent:
    warning: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Notify:
    """A mail (``Upgrading-<phase>`` is matched against the notification pattern)."""

    phase: str
    message: str


Action = CreateBackup | SwitchDisk | RestartEngine | StartEngine | DeleteDisk | EmitEvent | Notify


@dataclass(frozen=True)
class Plan:
    status: UpgradeStatus | None
    actions: tuple[Action, ...] = ()
    #: (type, status, reason, message) for the HostedEngine's conditions
    conditions: tuple[tuple[str, bool, str, str], ...] = ()


def changing(status: UpgradeStatus | None) -> bool:
    """The upgrade is past its checks and backup: the engine is being switched, waited for or
    rolled back (``status.state`` then shows Upgrading)."""
    if status is None or status.phase is not UpgradePhase.RUNNING:
        return False
    return not _restartable(status)


def owns_global_maintenance(status: UpgradeStatus | None) -> bool:
    """The operator's own global maintenance is in effect (an overlay on the user's spec)."""
    return status is not None and status.owns_global_maintenance


# --------------------------------------------------------------------------------------------
# The machine


@dataclass
class _Run:
    st: UpgradeStatus
    obs: Observation
    now: datetime
    he: str
    actions: list[Action] = field(default_factory=list)

    def step(self, name: UpgradeStepName) -> UpgradeStep:
        for s in self.st.steps:
            if s.name is name:
                return s
        raise KeyError(name)

    def current(self) -> UpgradeStep | None:
        return next((s for s in self.st.steps if s.state not in _DONE), None)

    def begin(self, s: UpgradeStep, message: str | None = None) -> None:
        if s.state is StepState.PENDING:
            s.state = StepState.RUNNING
            s.started_at = self.now
        if message is not None:
            s.message = message[:1024]

    def end(self, s: UpgradeStep, state: StepState, message: str) -> None:
        if s.started_at is None:
            s.started_at = self.now
        s.state = state
        s.finished_at = self.now
        s.message = message[:1024]

    def event(self, warning: bool, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(warning, reason, message))

    def elapsed_since_switch(self) -> float:
        started = self.step(UpgradeStepName.SWITCH_IMAGE).started_at or self.now
        return (self.now - started).total_seconds()

    def timed_out(self, since: datetime | None) -> bool:
        limit = self.obs.policy.health_timeout.timedelta.total_seconds()
        return since is not None and (self.now - since).total_seconds() >= limit

    def finish(self, phase: UpgradePhase, reason: str | None, message: str) -> None:
        for s in self.st.steps:
            if s.state not in _DONE:
                self.end(s, StepState.SKIPPED, "not run: the upgrade ended before it")
        self.st.phase = phase
        self.st.finished_at = self.now
        self.st.reason = reason
        self.st.message = message[:1024]
        warning = phase is not UpgradePhase.SUCCEEDED
        self.event(warning, f"Upgrade{phase.value}", message)
        if warning:
            self.actions.append(Notify(phase.value, message))

    def fail_before_switch(self, s: UpgradeStep, reason: str, message: str) -> None:
        self.end(s, StepState.FAILED, message)
        self.finish(UpgradePhase.FAILED, reason, f"upgrade to {self.to_label()} failed: {message}"
                    " (nothing was changed)")

    def start_rollback(self, failed: UpgradeStep, reason: str, message: str) -> None:
        self.end(failed, StepState.FAILED, message)
        self.st.reason = reason
        self.st.message = message[:1024]
        leave_gm = UpgradeStepName.LEAVE_GLOBAL_MAINTENANCE
        for s in self.st.steps:
            if s.state not in _DONE and s.name is not leave_gm:
                self.end(s, StepState.SKIPPED, "not run: rolling back")
        leave = [s for s in self.st.steps if s.name is leave_gm]
        others = [s for s in self.st.steps if s.name is not leave_gm]
        rollback = UpgradeStep(name=UpgradeStepName.ROLLBACK)
        self.st.steps = [*others, rollback, *leave]
        self.begin(rollback, f"back to {self.from_label()}")
        self.event(True, "UpgradeRollingBack",
                   f"upgrade to {self.to_label()} failed ({message}); rolling back to "
                   f"{self.from_label()}")

    def to_label(self) -> str:
        return ImageRef(self.st.to_image or "", self.st.to_version).label()

    def from_label(self) -> str:
        return ImageRef(self.st.from_image or "", self.st.from_version).label()

    # -- the engine on a disk ------------------------------------------------------------

    def boot(self, disk: str, keep: tuple[str, ...], from_spec: bool,
             version: str | None) -> bool:
        """Drive the VM to run ``disk``; True once its VMI boots it and is healthy."""
        obs = self.obs
        if obs.current_disk != disk:
            self.actions.append(SwitchDisk(disk, keep, from_spec, version))
            return False
        if obs.vmi_disk is None:
            if not obs.start_pending:
                self.actions.append(StartEngine())
            return False
        if obs.vmi_disk != disk:
            self.actions.append(RestartEngine())
            return False
        return obs.healthy


def _fresh(obs: Observation, he: str, now: datetime) -> UpgradeStatus:
    assert obs.current is not None
    return UpgradeStatus(
        phase=UpgradePhase.RUNNING,
        from_image=obs.current.source,
        from_version=obs.current.version,
        to_image=obs.desired.source,
        to_version=obs.desired.version,
        from_disk=obs.current_disk,
        to_disk=target_disk(he, obs.desired, obs.generation),
        target_generation=obs.generation,
        started_at=now,
        steps=[UpgradeStep(name=n) for n in STEPS],
    )


def _target(status: UpgradeStatus) -> ImageRef:
    return ImageRef(status.to_image or "", status.to_version)


def conditions(
    status: UpgradeStatus | None, pending: str | None
) -> tuple[tuple[str, bool, str, str], ...]:
    """UpgradePending, Upgrading and UpgradeFailed (only once an upgrade was ever asked for)."""
    if status is None and pending is None:
        return ()
    out: list[tuple[str, bool, str, str]] = [
        ("UpgradePending", True, "ManualPolicy", pending)
        if pending is not None
        else ("UpgradePending", False, "NoPendingUpgrade", "")
    ]
    if status is None:
        return tuple(out)
    if status.phase is UpgradePhase.RUNNING:
        step = next((s for s in status.steps if s.state not in _DONE), None)
        name = step.name.value if step is not None else "Finishing"
        out.append(("Upgrading", True, name, (step.message or "") if step else ""))
        out.append(("UpgradeFailed", False, "InProgress", ""))
    else:
        out.append(("Upgrading", False, status.phase.value, status.message or ""))
        if status.phase is UpgradePhase.SUCCEEDED:
            out.append(("UpgradeFailed", False, "Succeeded", status.message or ""))
        else:
            out.append(("UpgradeFailed", True, status.reason or "Failed", status.message or ""))
    return tuple(out)


def advance(
    status: UpgradeStatus | None, obs: Observation, he: str, now: datetime
) -> Plan:
    """One decision: the next ``status.upgrade``, the actions, the conditions."""
    st = status.model_copy(deep=True) if status is not None else None
    if obs.current is None:  # no engine VM yet: the first deployment uses the spec's image
        return Plan(st, (), conditions(st, None))
    pending: str | None = None
    actions: list[Action] = []
    if st is None or st.phase is not UpgradePhase.RUNNING:
        if obs.desired == obs.current:
            return Plan(st, (), conditions(st, None))
        if obs.policy.mode is UpgradeMode.MANUAL:
            pending = (
                f"the image changed from {obs.current.label()} to {obs.desired.label()}; "
                "upgradePolicy.mode is Manual: set it to Automatic to upgrade"
            )
            return Plan(st, (), conditions(st, pending))
        if (
            st is not None
            and _target(st) == obs.desired
            and obs.generation <= (st.target_generation or 0)
        ):
            return Plan(st, (), conditions(st, None))  # failed target: not again (no loop)
        st = _fresh(obs, he, now)
        actions.append(EmitEvent(False, "UpgradeStarted",
                                 f"upgrading the engine from {obs.current.label()} to "
                                 f"{obs.desired.label()}"))
    elif _target(st) != obs.desired and _restartable(st):
        # a new target before anything was switched: start over with it
        old = _target(st).label()
        st = _fresh(obs, he, now)
        actions.append(EmitEvent(False, "UpgradeStarted",
                                 f"the target changed from {old}: upgrading the engine from "
                                 f"{obs.current.label()} to {obs.desired.label()}"))
    st.target_generation = max(st.target_generation or 0, obs.generation)
    run = _Run(st, obs, now, he, actions)
    for _ in range(len(STEPS) + 2):  # on to the next step at once, until one has to wait
        step = run.current()
        if step is None:
            break
        _STEP[step.name](run, step)
        after = run.current()
        if after is None or after is step:
            break
    if run.current() is None and st.phase is UpgradePhase.RUNNING:
        rolled = any(s.name is UpgradeStepName.ROLLBACK for s in st.steps)
        if not rolled:
            run.finish(UpgradePhase.SUCCEEDED, None,
                       f"the engine runs {run.to_label()} (from {run.from_label()})")
    return Plan(st, tuple(run.actions), conditions(st, None))


def _restartable(st: UpgradeStatus) -> bool:
    """Nothing changed yet: PreFlight or Backup is the current step."""
    step = next((s for s in st.steps if s.state not in _DONE), None)
    return step is not None and step.name in (UpgradeStepName.PRE_FLIGHT, UpgradeStepName.BACKUP)


def _pre_flight(r: _Run, s: UpgradeStep) -> None:
    obs = r.obs
    problems = []
    if not obs.healthy:
        problems.append("the engine is not running healthy")
    if not obs.spares_ok:
        problems.append(f"spares not satisfied ({obs.spares_message})")
    if not obs.storage_ok:
        problems.append(f"storage not reachable ({obs.storage_message})")
    if problems:
        r.begin(s, "waiting: " + "; ".join(problems))
        return
    r.end(s, StepState.SUCCEEDED, "engine healthy, spares satisfied, storage reachable")


def _backup(r: _Run, s: UpgradeStep) -> None:
    obs, st = r.obs, r.st
    if not obs.policy.pre_upgrade_backup:
        r.end(s, StepState.SKIPPED, "upgradePolicy.preUpgradeBackup is false")
        return
    if st.backup_run is None:
        if obs.backup_source is None:
            why = obs.backup_source_problem or (
                "no Backup of this engine to take the target from: create one or set "
                "upgradePolicy.backupName (or preUpgradeBackup: false)"
            )
            r.fail_before_switch(s, "NoBackupTarget", why)
            return
        st.backup_run = backup_name(r.he, st.target_generation or obs.generation)
        r.begin(s, f"Backup {st.backup_run} (target of {obs.backup_source})")
        r.actions.append(CreateBackup(st.backup_run, obs.backup_source))
        return
    r.begin(s)
    if obs.backup_phase == "Succeeded":
        r.end(s, StepState.SUCCEEDED, f"Backup {st.backup_run} succeeded")
    elif obs.backup_phase in ("Failed", "Suspended"):
        r.fail_before_switch(
            s, "BackupFailed", f"Backup {st.backup_run} failed: {obs.backup_message}".strip()
        )
    elif obs.backup_phase is None and obs.backup_source is not None:
        r.actions.append(CreateBackup(st.backup_run, obs.backup_source))  # idempotent


def _enter_gm(r: _Run, s: UpgradeStep) -> None:
    if r.obs.user_global_maintenance and not r.st.owns_global_maintenance:
        r.end(s, StepState.SKIPPED,
              "the user's global maintenance is on: the upgrade runs in it and leaves it to "
              "the user")
        return
    if not r.st.owns_global_maintenance:
        r.st.owns_global_maintenance = True
        r.event(False, "UpgradeGlobalMaintenance",
                "entering global maintenance for the upgrade (the operator's own)")
    r.begin(s, "waiting for runStrategy Manual")
    if r.obs.run_strategy == "Manual":
        r.end(s, StepState.SUCCEEDED, "in the operator's global maintenance")


def _switch(r: _Run, s: UpgradeStep) -> None:
    st = r.st
    assert st.to_disk is not None and st.from_disk is not None
    r.begin(s, f"engine to {st.to_disk} ({r.to_label()})")
    if r.obs.current_disk == st.to_disk and r.obs.vmi_disk == st.to_disk:
        r.end(s, StepState.SUCCEEDED, f"engine restarted on {st.to_disk}")
        return
    if r.timed_out(s.started_at):
        r.start_rollback(s, "SwitchTimeout",
                         f"the engine did not start on {r.to_label()} within "
                         f"{r.obs.policy.health_timeout}")
        return
    r.boot(st.to_disk, (st.from_disk, st.to_disk), True, st.to_version)


def _wait_healthy(r: _Run, s: UpgradeStep) -> None:
    st = r.st
    assert st.to_disk is not None and st.from_disk is not None
    r.begin(s, f"waiting for the health page of {r.to_label()}")
    if r.obs.vmi_disk == st.to_disk and r.obs.healthy:
        r.end(s, StepState.SUCCEEDED,
              f"healthy on {r.to_label()} after {r.elapsed_since_switch():.0f}s")
        r.actions.append(SwitchDisk(st.to_disk, (st.to_disk,), False, st.to_version))
        r.actions.append(DeleteDisk(st.from_disk))
        return
    if r.timed_out(r.step(UpgradeStepName.SWITCH_IMAGE).started_at):
        r.start_rollback(s, "HealthTimeout",
                         f"the engine on {r.to_label()} was not healthy within "
                         f"{r.obs.policy.health_timeout}")
        return
    r.boot(st.to_disk, (st.from_disk, st.to_disk), True, st.to_version)


def _rollback(r: _Run, s: UpgradeStep) -> None:
    st = r.st
    assert st.to_disk is not None and st.from_disk is not None
    r.begin(s)
    if r.boot(st.from_disk, (st.from_disk,), False, st.from_version):
        r.end(s, StepState.SUCCEEDED, f"healthy again on {r.from_label()}")
        r.actions.append(DeleteDisk(st.to_disk))
        return
    if r.timed_out(s.started_at):
        r.end(s, StepState.FAILED,
              f"the engine on {r.from_label()} was not healthy within "
              f"{r.obs.policy.health_timeout} either")


def _leave_gm(r: _Run, s: UpgradeStep) -> None:
    st = r.st
    if st.owns_global_maintenance:
        st.owns_global_maintenance = False
        r.end(s, StepState.SUCCEEDED, "left the operator's global maintenance")
        r.event(False, "UpgradeGlobalMaintenanceLeft",
                "left the global maintenance the upgrade had entered")
    elif r.obs.user_global_maintenance:
        r.end(s, StepState.SKIPPED, "the user's global maintenance is left to the user")
    else:
        r.end(s, StepState.SKIPPED, "the upgrade did not enter global maintenance")
    rollback = next((x for x in st.steps if x.name is UpgradeStepName.ROLLBACK), None)
    if rollback is None:
        return
    if rollback.state is StepState.SUCCEEDED:
        r.finish(UpgradePhase.ROLLED_BACK, st.reason or "RolledBack",
                 f"upgrade to {r.to_label()} failed ({st.message}); rolled back: healthy on "
                 f"{r.from_label()}")
    else:
        r.finish(UpgradePhase.FAILED, "RollbackUnhealthy",
                 f"upgrade to {r.to_label()} failed ({st.message}) and the engine was not "
                 f"healthy on {r.from_label()} after the rollback either; HA has it back")


_STEP: Final = {
    UpgradeStepName.PRE_FLIGHT: _pre_flight,
    UpgradeStepName.BACKUP: _backup,
    UpgradeStepName.ENTER_GLOBAL_MAINTENANCE: _enter_gm,
    UpgradeStepName.SWITCH_IMAGE: _switch,
    UpgradeStepName.WAIT_HEALTHY: _wait_healthy,
    UpgradeStepName.ROLLBACK: _rollback,
    UpgradeStepName.LEAVE_GLOBAL_MAINTENANCE: _leave_gm,
}


def status_from_dict(raw: object) -> UpgradeStatus | None:
    """``status.upgrade`` as a model (None when absent or unreadable)."""
    if not isinstance(raw, Mapping) or not raw:
        return None
    try:
        return UpgradeStatus.model_validate(dict(raw))
    except ValueError:
        return None


def status_to_dict(status: UpgradeStatus | None) -> dict[str, Any] | None:
    if status is None:
        return None
    out: dict[str, Any] = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return out


def notification_matches(pattern: str, phase: str) -> bool:
    """The notification pattern (oVirt's ``state_transition``) against ``Upgrading-<phase>``
    (the default ``maintenance|start|stop|up|down`` matches: "Up" of "Upgrading")."""
    try:
        return re.search(pattern, f"Upgrading-{phase}", re.IGNORECASE) is not None
    except re.error:
        return False


def notification_text(
    he: str, namespace: str, fqdn: str, note: Notify, now: datetime
) -> tuple[str, str]:
    """(subject, body) of the mail of a failed upgrade."""
    subject = f"ovirt-hosted-engine upgrade {note.phase}"
    body = json.dumps(
        {"hostedEngine": f"{namespace}/{he}", "fqdn": fqdn, "upgrade": note.phase,
         "message": note.message, "time": now.isoformat()},
        indent=2,
    )
    text = (
        f"The upgrade of the hosted engine {namespace}/{he} ({fqdn}) ended {note.phase}.\n"
        f"{note.message}\n\n{body}\n"
    )
    return subject, text
