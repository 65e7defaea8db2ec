"""Simulated machines: each lab node's hardware, power, boot and network reachability.

A :class:`SimNode` is the machine behind a Node object. Its power comes from a
:class:`PowerSwitch` (the BMC farm's per-node ``NodePower`` in a full lab, or :class:`LocalPower`):
power off kills every process on it at once (the kubelet stops, guests and job processes die) while
the API keeps showing what it last saw; power on boots it, and after ``node_boot_time`` its kubelet
rejoins with a new boot ID. A *partition* keeps the machine running (guests keep running) but cuts
it from the API server: no heartbeats, no status updates, until healed.

The kubelet (``kubelet.py``) acts for the node only while :meth:`SimNode.connected` is true.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hosted_engine.lab.sim.api import Obj

log = logging.getLogger(__name__)

KUBEVIRT_DEVICES = (
    "devices.kubevirt.io/kvm",
    "devices.kubevirt.io/tun",
    "devices.kubevirt.io/vhost-net",
)
KUBELET_VERSION = "v1.33.1"


class PowerSwitch(Protocol):
    """A machine's power as its BMC sees it; listeners are called with the new state."""

    @property
    def is_on(self) -> bool: ...

    def add_listener(self, callback: Callable[[bool], None]) -> None: ...


class LocalPower:
    """A power switch with no BMC in front of it (labs started without BMCs, unit scenarios)."""

    def __init__(self, on: bool = True) -> None:
        self._on = on
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def is_on(self) -> bool:
        return self._on

    def add_listener(self, callback: Callable[[bool], None]) -> None:
        self._listeners.append(callback)

    def set(self, on: bool) -> None:
        if on == self._on:
            return
        self._on = on
        for callback in list(self._listeners):
            callback(on)


@dataclass(frozen=True)
class HostHardware:
    """What one machine offers to Kubernetes."""

    cpu: int = 16
    memory_gi: int = 64
    pods: int = 110
    ephemeral_storage_gi: int = 500
    labels: dict[str, str] = field(default_factory=dict)

    def capacity(self) -> dict[str, str]:
        cap = {
            "cpu": str(self.cpu),
            "memory": f"{self.memory_gi}Gi",
            "pods": str(self.pods),
            "ephemeral-storage": f"{self.ephemeral_storage_gi}Gi",
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
        }
        cap.update({device: "1k" for device in KUBEVIRT_DEVICES})
        return cap

    def allocatable(self) -> dict[str, str]:
        alloc = self.capacity()
        # the kubelet's default hard eviction threshold memory.available<100Mi
        alloc["memory"] = f"{self.memory_gi * 1024 - 100}Mi"
        return alloc


PowerListener = Callable[["SimNode", str], None]


class SimNode:
    """One machine: power, boot, partition. Times are event-loop seconds (``loop.time()``)."""

    def __init__(
        self,
        name: str,
        index: int,
        hardware: HostHardware,
        power: PowerSwitch,
        boot_time: float,
        now: Callable[[], float],
        system_uuid: str | None = None,
    ) -> None:
        self.name = name
        self.index = index
        self.hardware = hardware
        self.power = power
        self.boot_time = boot_time
        self._now = now
        self.system_uuid = system_uuid or str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.lab"))
        self.boot_id = str(uuid.uuid4())
        self.partitioned = False
        self.booted_at: float | None = now() if power.is_on else None
        #: incremented at every power loss; processes of an older epoch are dead
        self.power_epoch = 0
        self._listeners: list[PowerListener] = []
        power.add_listener(self._on_power)

    # -- state -------------------------------------------------------------------------------

    def add_listener(self, callback: PowerListener) -> None:
        """``callback(node, event)``: ``power-off``, ``power-on``, ``partition`` or ``heal``."""
        self._listeners.append(callback)

    def _emit(self, event: str) -> None:
        for callback in list(self._listeners):
            try:
                callback(self, event)
            except Exception:  # a listener's bug must not stop the machine
                log.exception("node %s listener failed on %s", self.name, event)

    def _on_power(self, on: bool) -> None:
        if on and self.booted_at is None:
            self.booted_at = self._now() + self.boot_time
            self.boot_id = str(uuid.uuid4())
            log.info("node %s powered on, booting", self.name)
            self._emit("power-on")
        elif not on and self.booted_at is not None:
            self.booted_at = None
            self.power_epoch += 1
            log.info("node %s lost power", self.name)
            self._emit("power-off")

    @property
    def powered(self) -> bool:
        return self.power.is_on

    def running(self) -> bool:
        """Powered and booted: its processes run (guests, jobs)."""
        return self.booted_at is not None and self._now() >= self.booted_at

    def connected(self) -> bool:
        """Its kubelet can talk to the API server."""
        return self.running() and not self.partitioned

    @property
    def state(self) -> str:
        if self.booted_at is None:
            return "Off"
        if self._now() < self.booted_at:
            return "Booting"
        return "Partitioned" if self.partitioned else "Running"

    def partition(self) -> None:
        if not self.partitioned:
            self.partitioned = True
            self._emit("partition")

    def heal(self) -> None:
        if self.partitioned:
            self.partitioned = False
            self._emit("heal")

    # -- the Node object ---------------------------------------------------------------------

    @property
    def internal_ip(self) -> str:
        return f"10.0.{self.index // 250}.{self.index % 250 + 1}"

    def node_object(self) -> Obj:
        """The Node the kubelet registers (metadata and spec; status comes with it)."""
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
            "node-role.kubernetes.io/worker": "",
        }
        labels.update(self.hardware.labels)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                },
            },
            "spec": {
                "podCIDR": f"10.244.{self.index}.0/24",
                "podCIDRs": [f"10.244.{self.index}.0/24"],
                "providerID": f"lab://{self.name}",
            },
        }

    def node_info(self) -> dict[str, Any]:
        return {
            "machineID": self.system_uuid.replace("-", ""),
            "systemUUID": self.system_uuid,
            "bootID": self.boot_id,
            "kernelVersion": "6.1.0-lab-amd64",
            "osImage": "Debian GNU/Linux 12 (bookworm)",
            "containerRuntimeVersion": "containerd://1.7.27",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": "amd64",
        }

    def status_body(self, heartbeat: str, ready_since: str) -> Obj:
        """The node status the kubelet posts while it runs."""

        def cond(ctype: str, status: str, reason: str, message: str) -> Obj:
            return {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": ready_since,
            }

        return {
            "capacity": self.hardware.capacity(),
            "allocatable": self.hardware.allocatable(),
            "conditions": [
                cond(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                cond(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                cond(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.internal_ip},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": self.node_info(),
        }
