"""Every duration of the simulated cluster, in one place.

The defaults are those of a real cluster (kubelet, kube-controller-manager, kube-scheduler,
KubeVirt, a physical server's BMC); :meth:`LabTimings.fast` shrinks them for tests so a node death
plays out in about a second. Nothing in ``hosted_engine.lab.sim`` hard-codes a duration.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class LabTimings:
    # -- the loop ---------------------------------------------------------------------------
    #: how often every simulator's reconcile loop runs (a pacing knob, not a Kubernetes value)
    tick: float = 0.5

    # -- kubelet ----------------------------------------------------------------------------
    #: the kubelet renews its node Lease in kube-node-lease (kubelet: ~10 s, renewInterval)
    lease_interval: float = 10.0
    #: the kubelet posts an unchanged node status this often (nodeStatusReportFrequency, 5 min);
    #: a changed status is posted at once
    node_status_report_interval: float = 300.0
    #: from power-on until the kubelet has rejoined (POST, OS boot, kubelet start)
    node_boot_time: float = 60.0
    #: from a pod bound to a live node to its containers running (image pull skipped)
    pod_start_delay: float = 2.0
    #: upper bound applied to a pod's terminationGracePeriodSeconds (None: the pod's own value)
    max_termination_grace: float | None = None
    #: how long a container without a local process takes to exit on SIGTERM (capped by grace)
    container_stop_time: float = 1.0

    # -- kube-controller-manager -----------------------------------------------------------
    #: node lifecycle controller check period (--node-monitor-period, 5 s)
    node_monitor_period: float = 5.0
    #: silence after which a node turns Ready=Unknown (--node-monitor-grace-period; 40 s, 50 s
    #: since Kubernetes 1.32 -- the issue asks for 40 s)
    node_monitor_grace_period: float = 40.0
    #: DefaultTolerationSeconds admission: not-ready / unreachable NoExecute tolerations (300 s)
    default_toleration_seconds: float = 300.0
    #: Job controller pod-failure backoff: base, doubled per failure, capped (10 s .. 6 min)
    job_backoff_base: float = 10.0
    job_backoff_max: float = 360.0
    #: PodGC: a pod bound to a Node that no longer exists is force-deleted after this quarantine
    pod_gc_orphan_quarantine: float = 40.0

    # -- kube-scheduler ---------------------------------------------------------------------
    #: retry period for unschedulable pods (the real queue also retries on cluster events)
    scheduler_retry: float = 5.0
    #: most seconds of scheduling per pass, so that heartbeats are never starved (a pacing
    #: knob: kube-scheduler's own throughput is bounded too)
    scheduler_pass_budget: float = 0.4

    # -- storage ----------------------------------------------------------------------------
    #: PV controller resync (--pvclaimbinder-sync-period, 15 s; binding is also event driven)
    pv_sync_period: float = 15.0

    # -- BMC --------------------------------------------------------------------------------
    #: delay between a BMC power command and the power actually changing
    bmc_power_delay: float = 5.0
    #: an ACPI soft off: the operating system's shutdown before the power drops
    os_shutdown_time: float = 30.0

    # -- KubeVirt (read by the KubeVirt simulators) -----------------------------------------
    #: guest boot from a running virt-launcher to VMI Running with a guest agent
    vm_boot_time: float = 20.0
    #: virt-launcher pod creation to its compute container running
    virt_launcher_start_delay: float = 5.0
    #: live-migration bandwidth, bytes per second (10 GbE, about 1.1 GiB/s effective)
    migration_bandwidth: float = 1.1 * 1024**3
    #: fixed part of a migration (target pod start, handshake, final switch-over)
    migration_setup_time: float = 5.0
    #: virt-handler node heartbeat (1 min) and the virt-controller's unresponsive threshold (5 min)
    virt_handler_heartbeat: float = 60.0
    virt_handler_unresponsive: float = 300.0
    #: VirtualMachineSnapshot readyToUse delay, export ready delay, DataVolume import time
    snapshot_delay: float = 5.0
    export_ready_delay: float = 5.0
    datavolume_import_time: float = 30.0
    #: guest shutdown on a graceful stop (terminationGracePeriodSeconds of VMIs defaults to 180)
    vm_shutdown_time: float = 10.0
    #: most seconds of VM/VMI reconciles per pass (what is left waits for the next pass, oldest
    #: first), so that a mass start never starves heartbeats (a pacing knob, like the scheduler's)
    kubevirt_pass_budget: float = 0.4
    #: a settled VM/VMI (nothing it depends on changed) is reconciled again after this long
    #: (the controllers' informer resync), each object on its own schedule
    kubevirt_resync_period: float = 10.0

    #: more durations for simulators added by plugins (name -> seconds)
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fast(cls, **overrides: Any) -> LabTimings:
        """Short durations for tests: a node dies and is evicted within about two seconds."""
        base = cls(
            tick=0.02,
            lease_interval=0.1,
            node_status_report_interval=0.3,
            node_boot_time=0.3,
            pod_start_delay=0.05,
            max_termination_grace=0.2,
            container_stop_time=0.05,
            node_monitor_period=0.05,
            node_monitor_grace_period=0.5,
            default_toleration_seconds=1.0,
            job_backoff_base=0.05,
            job_backoff_max=0.4,
            pod_gc_orphan_quarantine=0.2,
            scheduler_retry=0.1,
            pv_sync_period=0.2,
            bmc_power_delay=0.0,
            os_shutdown_time=0.1,
            vm_boot_time=0.2,
            virt_launcher_start_delay=0.05,
            migration_bandwidth=64 * 1024**3,
            migration_setup_time=0.1,
            virt_handler_heartbeat=0.2,
            virt_handler_unresponsive=1.0,
            snapshot_delay=0.1,
            export_ready_delay=0.1,
            datavolume_import_time=0.2,
            vm_shutdown_time=0.1,
        )
        return replace(base, **overrides)

    def get(self, name: str, default: float) -> float:
        """A duration by name: a field, else ``extra``, else ``default``."""
        if name in {f.name for f in fields(self)} and name != "extra":
            value = getattr(self, name)
            return float(value) if value is not None else default
        return float(self.extra.get(name, default))

    def termination_grace(self, requested: float) -> float:
        """The grace a pod actually gets, given what it asked for."""
        if self.max_termination_grace is None:
            return requested
        return min(requested, self.max_termination_grace)
