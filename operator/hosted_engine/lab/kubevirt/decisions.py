"""Pure decisions of the simulated KubeVirt, taken from KubeVirt's own code paths.

- :func:`sync_run_strategy` follows virt-controller's ``syncRunStrategy``
  (pkg/virt-controller/watch/vm/vm.go);
- :func:`start_request`, :func:`stop_request`, :func:`restart_request` follow virt-api's
  subresource handlers (pkg/virt-api/rest/lifecycle.go), including the 409s and the side effect
  that ``stop`` on an ``Always``/``Once`` VM rewrites ``spec.runStrategy`` to ``Halted``;
- :func:`printable_status` follows ``setPrintableStatus``;
- :func:`live_migratable` gives KubeVirt's reasons for ``LiveMigratable=False``;
- :func:`eviction_decision` follows the pod eviction admitter;
- :func:`admit_migrations` applies the KubeVirt CR's parallel migration limits.

No I/O here: every function takes plain dicts (API objects) and returns plain data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hosted_engine.lab.sim import quantity as sim_quantity

Obj = Mapping[str, Any]

FINAL_PHASES = frozenset({"Succeeded", "Failed"})
ACTIVE_MIGRATION_PHASES = frozenset(
    {"Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running"}
)
GIB = 1024**3



def parse_quantity(value: Any) -> float:
    """A Kubernetes resource quantity ("1Gi", "500m", "64Mi", 2) as a number (0 when unset)."""
    if value is None:
        return 0.0
    return float(sim_quantity.parse_quantity(value))


def parse_bytes(value: Any) -> int:
    return math.ceil(parse_quantity(value))


def phase_of(obj: Obj | None) -> str:
    """``status.phase`` of an object ("" when unset or when there is no object)."""
    return str(((obj or {}).get("status") or {}).get("phase") or "")


# -- run strategy ---------------------------------------------------------------------------


def run_strategy(vm: Obj) -> str:
    """``spec.runStrategy``, or the deprecated ``spec.running`` mapped to Always/Halted."""
    spec = vm.get("spec") or {}
    strategy = spec.get("runStrategy")
    if strategy:
        return str(strategy)
    return "Always" if spec.get("running") else "Halted"


def _requests(vm: Obj) -> list[dict[str, Any]]:
    return list((vm.get("status") or {}).get("stateChangeRequests") or [])


def has_start_request(vm: Obj) -> bool:
    return any(r.get("action") == "Start" for r in _requests(vm))


def has_stop_request_for(vm: Obj, vmi_uid: str | None) -> bool:
    reqs = _requests(vm)
    if not reqs or vmi_uid is None:
        return False
    first = reqs[0]
    return first.get("action") == "Stop" and first.get("uid") in (None, vmi_uid)


@dataclass(frozen=True)
class VmDecision:
    """What virt-controller does for one VM in one pass."""

    delete_vmi: bool = False
    create_vmi: bool = False
    add_start_request: bool = False
    set_run_strategy: str | None = None  # Halted + start request (paused start) -> Always


def sync_run_strategy(
    strategy: str,
    vm: Obj,
    vmi: Obj | None,
) -> VmDecision:
    """virt-controller's reaction to a VM's runStrategy and its current VMI (or none)."""
    vmi_phase = ((vmi or {}).get("status") or {}).get("phase", "") if vmi else None
    vmi_uid = (vmi or {}).get("metadata", {}).get("uid") if vmi else None
    deleting = bool(vmi and vmi.get("metadata", {}).get("deletionTimestamp"))
    stop_req = has_stop_request_for(vm, vmi_uid)
    if strategy == "Always":
        if vmi is not None:
            if not deleting and (stop_req or vmi_phase in FINAL_PHASES):
                return VmDecision(delete_vmi=True)
            return VmDecision()
        return VmDecision(create_vmi=True)
    if strategy == "RerunOnFailure":
        if vmi is not None:
            if not deleting and (stop_req or vmi_phase in FINAL_PHASES):
                return VmDecision(delete_vmi=True, add_start_request=vmi_phase == "Failed")
            return VmDecision()
        status_strategy = (vm.get("status") or {}).get("runStrategy")
        if not has_start_request(vm) and status_strategy == strategy:
            return VmDecision()
        return VmDecision(create_vmi=True)
    if strategy == "Manual":
        if vmi is not None:
            if not deleting and stop_req:
                return VmDecision(delete_vmi=True)
            return VmDecision()
        return VmDecision(create_vmi=has_start_request(vm))
    if strategy == "Halted":
        if vmi is None:
            if has_start_request(vm):
                return VmDecision(set_run_strategy="Always")
            return VmDecision()
        return VmDecision(delete_vmi=not deleting)
    if strategy == "Once":
        return VmDecision(create_vmi=vmi is None)
    return VmDecision()


def is_set_to_start(strategy: str, vm: Obj, vmi: Obj | None) -> bool:
    """virt-controller's ``isSetToStart``: whether the VM is meant to be running."""
    vmi_uid = (vmi or {}).get("metadata", {}).get("uid") if vmi else None
    phase = ((vmi or {}).get("status") or {}).get("phase") if vmi else None
    if strategy == "Always":
        return True
    if strategy == "Manual":
        return not has_stop_request_for(vm, vmi_uid) if vmi else has_start_request(vm)
    if strategy == "RerunOnFailure":
        return phase != "Succeeded" if vmi else True
    if strategy == "Once":
        return vmi is None
    return False


def remaining_requests(vm: Obj, vmi: Obj | None) -> list[dict[str, Any]]:
    """stateChangeRequests left once processed: a stop is done when its VMI is gone, a start
    when a live VMI (neither final nor being deleted) exists."""
    reqs = _requests(vm)
    vmi_uid = (vmi or {}).get("metadata", {}).get("uid") if vmi else None
    live = vmi is not None and not _is_final(vmi) and not (
        (vmi or {}).get("metadata", {}).get("deletionTimestamp")
    )
    while reqs:
        first = reqs[0]
        if first.get("action") == "Stop":
            if vmi is not None and first.get("uid") in (None, vmi_uid):
                break
            reqs = reqs[1:]
        elif first.get("action") == "Start":
            if not live:
                break
            reqs = reqs[1:]
        else:
            reqs = reqs[1:]
    return reqs


# -- subresources (virt-api) -----------------------------------------------------------------


@dataclass(frozen=True)
class SubresourceResult:
    """The answer of a start/stop/restart request and the writes it implies."""

    code: int  # 202 accepted, 409 conflict, 400 bad request
    message: str = ""
    run_strategy: str | None = None  # the patch of spec.runStrategy
    requests: list[dict[str, Any]] | None = None  # the new status.stateChangeRequests
    grace_period: int | None = None  # patch of the VMI's terminationGracePeriodSeconds
    force_delete_pod: bool = False

    @property
    def ok(self) -> bool:
        return self.code < 300


def _conflict(message: str) -> SubresourceResult:
    return SubresourceResult(409, message)


def _change_requests(vm: Obj, *changes: dict[str, Any]) -> list[dict[str, Any]] | str:
    current = _requests(vm)
    if not current:
        return list(changes)
    if len(changes) == 1 and changes[0]["action"] == "Stop":
        return list(changes)
    return "unable to complete request: stop/start already underway"


def _is_final(vmi: Obj | None) -> bool:
    return bool(vmi) and ((vmi or {}).get("status") or {}).get("phase") in FINAL_PHASES


def start_request(vm: Obj, vmi: Obj | None) -> SubresourceResult:
    """PUT .../virtualmachines/NAME/start."""
    phase = ((vmi or {}).get("status") or {}).get("phase", "") if vmi else ""
    if vmi is not None and not _is_final(vmi) and phase not in ("", "Unknown"):
        return _conflict("VM is already running")
    strategy = run_strategy(vm)
    if strategy == "Halted":
        return SubresourceResult(202, run_strategy="Always")
    if strategy in ("RerunOnFailure", "Manual"):
        uid = (vmi or {}).get("metadata", {}).get("uid") if vmi else None
        needs_restart = (strategy == "RerunOnFailure" and phase == "Succeeded") or (
            strategy == "Manual" and _is_final(vmi)
        )
        if strategy == "RerunOnFailure" and phase == "Failed":
            return _conflict("RerunOnFailure does not support starting VM from failed state")
        if needs_restart:
            reqs = _change_requests(vm, {"action": "Stop", "uid": uid}, {"action": "Start"})
        else:
            reqs = _change_requests(vm, {"action": "Start"})
        if isinstance(reqs, str):
            return SubresourceResult(500, reqs)
        return SubresourceResult(202, requests=reqs)
    return _conflict(f"{strategy} does not support manual start requests")


def stop_request(vm: Obj, vmi: Obj | None, grace_period: int | None = None) -> SubresourceResult:
    """PUT .../virtualmachines/NAME/stop (StopOptions.gracePeriod)."""
    strategy = run_strategy(vm)
    has_vmi = vmi is not None
    running = has_vmi and not _is_final(vmi)
    uid = (vmi or {}).get("metadata", {}).get("uid") if vmi else None
    old_grace = ((vmi or {}).get("spec") or {}).get("terminationGracePeriodSeconds")
    patch_grace = grace_period if running and grace_period is not None else None
    if strategy == "Halted":
        if not running:
            return _conflict("VM is not running")
        if grace_period is None or (old_grace is not None and grace_period >= old_grace):
            return _conflict("Halted only supports manual stop requests with a shorter graceperiod")
    if strategy in ("Halted", "RerunOnFailure", "Manual"):
        if not running:
            return _conflict("VM is not running")
        reqs = _change_requests(vm, {"action": "Stop", "uid": uid})
        if isinstance(reqs, str):
            return SubresourceResult(500, reqs)
        return SubresourceResult(202, requests=reqs, grace_period=patch_grace)
    # Always, Once: the side effect the GitOps world notices.
    return SubresourceResult(202, run_strategy="Halted", grace_period=patch_grace)


def restart_request(
    vm: Obj, vmi: Obj | None, grace_period_seconds: int | None = None
) -> SubresourceResult:
    """PUT .../virtualmachines/NAME/restart (RestartOptions.gracePeriodSeconds: only 0)."""
    if grace_period_seconds is not None and grace_period_seconds > 0:
        return SubresourceResult(
            400, "For force restart, only gracePeriod=0 is supported for now"
        )
    if grace_period_seconds is not None and grace_period_seconds < 0:
        return SubresourceResult(400, "gracePeriod has to be greater or equal to 0")
    strategy = run_strategy(vm)
    if strategy in ("Halted", "Once"):
        return _conflict(f"RunStategy {strategy} does not support manual restart requests")
    if vmi is None:
        return _conflict("VM is not running: Halted")
    uid = vmi.get("metadata", {}).get("uid")
    reqs = _change_requests(vm, {"action": "Stop", "uid": uid}, {"action": "Start"})
    if isinstance(reqs, str):
        return SubresourceResult(500, reqs)
    return SubresourceResult(202, requests=reqs, force_delete_pod=grace_period_seconds == 0)


# -- printable status and conditions -----------------------------------------------------------


def _condition(obj: Obj | None, ctype: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def crash_loop_delay(failures: int, jitter: float) -> float:
    """virt-controller's start backoff after ``failures`` consecutive start failures:
    max(10 s, 300 s / 30) x n^2 capped at 300 s, plus ``jitter`` (0..0.5) of it."""
    base = min(300.0, max(10.0, 300.0 / 30) * failures * failures)
    return base * (1.0 + max(0.0, min(0.5, jitter)))


def reached_running(vmi: Obj | None) -> bool:
    """Whether the VMI ever ran (start failures are counted only for those that did not)."""
    stamps = ((vmi or {}).get("status") or {}).get("phaseTransitionTimestamps") or []
    return any(s.get("phase") == "Running" for s in stamps)


def printable_status(
    vm: Obj,
    vmi: Obj | None,
    *,
    provisioning: bool = False,
    unschedulable: bool = False,
    crash_loop: bool = False,
) -> str:
    """The VM's ``status.printableStatus`` (``kubectl get vm`` STATUS column)."""
    if vm.get("metadata", {}).get("deletionTimestamp"):
        return "Terminating"
    strategy = run_strategy(vm)
    phase = ((vmi or {}).get("status") or {}).get("phase", "") if vmi else None
    if vmi is not None and phase not in FINAL_PHASES:
        deleting = bool(vmi.get("metadata", {}).get("deletionTimestamp"))
        if deleting or not is_set_to_start(strategy, vm, vmi):
            return "Stopping"
    if provisioning:
        return "Provisioning"
    if vmi is None or phase in FINAL_PHASES:
        return "CrashLoopBackOff" if crash_loop else "Stopped"
    state = (vmi.get("status") or {}).get("migrationState") or {}
    if state and not state.get("completed") and not state.get("failed"):
        return "Migrating"
    if phase == "Running":
        paused = _condition(vmi, "Paused")
        return "Paused" if paused and paused.get("status") == "True" else "Running"
    if phase == "Unknown":
        return "Unknown"
    if unschedulable:
        return "ErrorUnschedulable"
    return "Starting"


# -- migratability -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Migratability:
    migratable: bool
    reason: str = ""
    message: str = ""

    def condition(self) -> dict[str, Any]:
        cond: dict[str, Any] = {
            "type": "LiveMigratable",
            "status": "True" if self.migratable else "False",
        }
        if not self.migratable:
            cond["reason"] = self.reason
            cond["message"] = self.message
        return cond


def claim_names(vmi_spec: Obj) -> list[tuple[str, str]]:
    """(volume name, claim name) of the PVC and DataVolume volumes of a VMI spec."""
    out = []
    for vol in vmi_spec.get("volumes") or []:
        if "persistentVolumeClaim" in vol:
            out.append((vol["name"], vol["persistentVolumeClaim"].get("claimName", "")))
        elif "dataVolume" in vol:
            out.append((vol["name"], vol["dataVolume"].get("name", "")))
    return out


def live_migratable(
    vmi_spec: Obj,
    claim_access_modes: Mapping[str, Sequence[str]],
    annotations: Mapping[str, str] | None = None,
) -> Migratability:
    """KubeVirt's LiveMigratable condition for a VMI spec, given its claims' access modes."""
    devices = (vmi_spec.get("domain") or {}).get("devices") or {}
    if devices.get("hostDevices") or devices.get("gpus"):
        return Migratability(
            False, "HostDeviceNotLiveMigratable", "VMI uses a PCI host devices"
        )
    pod_networks = {n.get("name") for n in vmi_spec.get("networks") or [] if "pod" in n}
    allow_bridge = (annotations or {}).get(
        "kubevirt.io/allow-pod-bridge-network-live-migration"
    )
    for iface in devices.get("interfaces") or []:
        if iface.get("name") in pod_networks and "bridge" in iface and allow_bridge is None:
            return Migratability(
                False,
                "InterfaceNotLiveMigratable",
                "cannot migrate VMI which does not use masquerade, bridge with "
                "kubevirt.io/allow-pod-bridge-network-live-migration VM annotation or a "
                "migratable plugin to connect to the pod network",
            )
    for _, claim in claim_names(vmi_spec):
        modes = claim_access_modes.get(claim)
        if modes is None or "ReadWriteMany" not in modes:
            return Migratability(
                False,
                "DisksNotLiveMigratable",
                f"cannot migrate VMI: PVC {claim} is not shared, live migration requires "
                "that all PVCs must be shared (using ReadWriteMany access mode)",
            )
    return Migratability(True)


# -- eviction ----------------------------------------------------------------------------------


def eviction_decision(strategy: str, migratable: bool) -> str:
    """The pod eviction admitter: "evacuate" (deny + migrate), "deny" (blocked) or "allow"."""
    if strategy == "LiveMigrate":
        return "evacuate" if migratable else "deny"
    if strategy == "LiveMigrateIfPossible":
        return "evacuate" if migratable else "allow"
    if strategy == "External":
        return "evacuate"
    return "allow"


# -- migrations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationLimits:
    parallel_per_cluster: int = 5
    parallel_outbound_per_node: int = 2
    bandwidth: float = 0.0  # bytes/s; 0 = unlimited
    completion_timeout_per_gib: float = 150.0
    progress_timeout: float = 150.0

    @classmethod
    def from_kubevirt(cls, kubevirt: Obj | None) -> MigrationLimits:
        config = (((kubevirt or {}).get("spec") or {}).get("configuration") or {}).get(
            "migrations"
        ) or {}
        return cls(
            parallel_per_cluster=int(config.get("parallelMigrationsPerCluster", 5)),
            parallel_outbound_per_node=int(config.get("parallelOutboundMigrationsPerNode", 2)),
            bandwidth=parse_quantity(config.get("bandwidthPerMigration", 0)),
            completion_timeout_per_gib=float(config.get("completionTimeoutPerGiB", 150)),
            progress_timeout=float(config.get("progressTimeout", 150)),
        )

    def completion_timeout(self, memory_bytes: int) -> float:
        """Seconds before a migration of this much memory is aborted (at least one GiB)."""
        return self.completion_timeout_per_gib * max(1.0, memory_bytes / GIB)


@dataclass
class MigrationCandidate:
    key: str  # namespace/name of the VMIM
    source_node: str
    active: bool  # already past Pending


@dataclass
class Admission:
    admitted: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)


def admit_migrations(
    candidates: Iterable[MigrationCandidate], limits: MigrationLimits
) -> Admission:
    """Which Pending migrations may start now, in order, under the cluster and per-node limits.

    ``candidates`` must come in creation order; active ones count against the limits.
    """
    items = list(candidates)
    running = sum(1 for c in items if c.active)
    per_node: dict[str, int] = {}
    for c in items:
        if c.active:
            per_node[c.source_node] = per_node.get(c.source_node, 0) + 1
    result = Admission()
    for c in items:
        if c.active:
            continue
        if (
            running < limits.parallel_per_cluster
            and per_node.get(c.source_node, 0) < limits.parallel_outbound_per_node
        ):
            running += 1
            per_node[c.source_node] = per_node.get(c.source_node, 0) + 1
            result.admitted.append(c.key)
        else:
            result.queued.append(c.key)
    return result


def vmi_memory_bytes(vmi_spec: Obj) -> int:
    """Guest memory: domain.memory.guest, else resources.requests.memory, else 128Mi."""
    domain = vmi_spec.get("domain") or {}
    guest = (domain.get("memory") or {}).get("guest")
    if guest is not None:
        return parse_bytes(guest)
    requested = ((domain.get("resources") or {}).get("requests") or {}).get("memory")
    if requested is not None:
        return parse_bytes(requested)
    return 128 * 1024**2


def vmi_cpu_request(vmi_spec: Obj) -> str:
    domain = vmi_spec.get("domain") or {}
    requested = ((domain.get("resources") or {}).get("requests") or {}).get("cpu")
    if requested is not None:
        return str(requested)
    cpu = domain.get("cpu") or {}
    cores = int(cpu.get("cores", 1)) * int(cpu.get("sockets", 1)) * int(cpu.get("threads", 1))
    # KubeVirt requests 1/10 of a CPU per vCPU by default (cpuAllocationRatio 10).
    return f"{cores * 100}m"
