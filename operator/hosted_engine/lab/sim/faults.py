"""Fault injection and inspection of a running lab: a Python API for tests, and the control
endpoint the ``hosted-engine lab ...`` commands call.

Node faults are the lab's own: :meth:`LabFaults.fail_node` cuts a machine's power at once (no
BMC command: a PSU or a motherboard dying), :meth:`LabFaults.recover_node` repairs it (power on,
boot, rejoin), :meth:`LabFaults.partition_node` cuts a running machine from the API server and
:meth:`LabFaults.heal_partition` reconnects it. BMC faults (lab with BMCs, Redfish):
:meth:`LabFaults.bmc_down` makes a node's BMC stop answering until :meth:`LabFaults.bmc_up`,
:meth:`LabFaults.slow_bmc` delays its answers. VM faults (``crash_vm``, ``hang_guest``,
``heal_guest``, ``set_migration_bandwidth``) belong to the KubeVirt simulators, which fill them
in with :meth:`LabFaults.set_hook`; :meth:`LabFaults.add_status_section` adds their part of
:meth:`LabFaults.status` (VMs, migrations).

The control endpoint is an aggregated API group on the lab API server, behind the same bearer
token as the rest of the API: ``POST /apis/lab.hostedengine.io/v1/faults`` with
``{"action": "fail-node", "target": "node-2"}`` and ``GET /apis/lab.hostedengine.io/v1/status``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from hosted_engine.lab.apiserver import ApiError, ApiRequest, ApiResponse

if TYPE_CHECKING:
    from hosted_engine.lab.sim.lab import Lab

CONTROL_GROUP = "lab.hostedengine.io"
CONTROL_VERSION = "v1"
VM_ACTIONS = ("crash-vm", "hang-guest", "heal-guest", "set-migration-bandwidth")
NODE_ACTIONS = ("fail-node", "recover-node", "partition-node", "heal-partition")
BMC_ACTIONS = ("bmc-down", "bmc-up")  # and "slow-bmc", which takes a value

Hook = Callable[..., Awaitable[Any] | Any]
StatusSection = Callable[[], Awaitable[Any] | Any]


class LabFaults:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.hooks: dict[str, Hook] = {}
        self.sections: dict[str, StatusSection] = {}

    # -- extension ---------------------------------------------------------------------------

    def set_hook(self, action: str, hook: Hook) -> None:
        """Fill a VM action: ``crash_vm(namespace, name)``, ``hang_guest(namespace, name)``,
        ``heal_guest(namespace, name)``, ``set_migration_bandwidth(bytes_per_second)``."""
        self.hooks[action.replace("-", "_")] = hook

    def add_status_section(self, name: str, section: StatusSection) -> None:
        """``status()[name] = section()`` (e.g. "vms", "migrations")."""
        self.sections[name] = section

    # -- node faults -------------------------------------------------------------------------

    def _node(self, name: str) -> Any:
        node = self.lab.nodes.get(name)
        if node is None:
            raise ApiError(404, f'node "{name}" is not a lab machine', "NotFound")
        return node

    async def _settle_power(self, name: str, on: bool) -> None:
        node = self._node(name)
        # NodePower tells the machine through loop.call_soon_threadsafe; let that run
        for _ in range(100):
            if (node.booted_at is not None) == on:
                return
            await asyncio.sleep(0)
        await self.lab.wait_for(lambda: (node.booted_at is not None) == on, timeout=5)

    async def fail_node(self, name: str) -> str:
        """Sudden power loss: heartbeats stop, processes die, the API keeps the last status."""
        self._node(name)
        self.lab.power[name].set(False)
        await self._settle_power(name, False)
        return f"{name} lost power"

    async def recover_node(self, name: str) -> str:
        """Repair a failed (or partitioned) machine: reconnect and power on; it boots and
        rejoins after ``node_boot_time``."""
        node = self._node(name)
        node.heal()
        if not node.powered:
            self.lab.power[name].set(True)
            await self._settle_power(name, True)
            return f"{name} powered on, booting"
        return f"{name} is running"

    async def partition_node(self, name: str) -> str:
        """Cut a running machine from the API server; its guests keep running."""
        self._node(name).partition()
        return f"{name} partitioned from the API server"

    async def heal_partition(self, name: str) -> str:
        self._node(name).heal()
        return f"{name} reconnected"

    # -- BMC faults (the lab's Redfish BMCs) -------------------------------------------------

    def _bmc_faults(self, name: str) -> Any:
        self._node(name)
        farm = getattr(self.lab, "farm", None)
        if farm is None:
            raise ApiError(501, "the lab runs without BMCs", "NotImplemented")
        return farm.faults

    async def bmc_down(self, name: str) -> str:
        """``name``'s BMC stops answering (requests to it are lost) until :meth:`bmc_up`."""
        self._bmc_faults(name).set_down(name, True)
        return f"{name}'s BMC stopped answering"

    async def bmc_up(self, name: str) -> str:
        """``name``'s BMC answers again, on time (ends :meth:`bmc_down` and :meth:`slow_bmc`)."""
        self._bmc_faults(name).clear(name)
        return f"{name}'s BMC answers again"

    async def slow_bmc(self, name: str, seconds: float) -> str:
        """Every answer of ``name``'s BMC comes ``seconds`` late (0: on time again)."""
        self._bmc_faults(name).set_delay(name, float(seconds))
        return f"{name}'s BMC answers {float(seconds)}s late"

    # -- VM faults (filled by the KubeVirt simulators) ---------------------------------------

    async def _vm_hook(self, action: str, *args: Any) -> Any:
        hook = self.hooks.get(action)
        if hook is None:
            raise ApiError(
                501,
                f"{action.replace('_', '-')}: the KubeVirt simulators are not loaded",
                "NotImplemented",
            )
        result = hook(*args)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def crash_vm(self, namespace: str, name: str) -> Any:
        return await self._vm_hook("crash_vm", namespace, name)

    async def hang_guest(self, namespace: str, name: str) -> Any:
        return await self._vm_hook("hang_guest", namespace, name)

    async def heal_guest(self, namespace: str, name: str) -> Any:
        return await self._vm_hook("heal_guest", namespace, name)

    async def set_migration_bandwidth(self, bytes_per_second: float) -> Any:
        return await self._vm_hook("set_migration_bandwidth", float(bytes_per_second))

    # -- status ------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Nodes (power, machine state, Ready, taints, pods), plus the plugins' sections."""
        nodes = []
        informer = self.lab.informer_if_any("nodes")
        view = self.lab.view() if self.lab.started else None
        for name, node in self.lab.nodes.items():
            obj = informer.get(name) if informer is not None else None
            ready = "Missing"
            taints: list[str] = []
            unschedulable = False
            if obj is not None:
                for cond in (obj.get("status") or {}).get("conditions") or []:
                    if cond.get("type") == "Ready":
                        ready = str(cond.get("status"))
                taints = [
                    f"{t.get('key')}:{t.get('effect')}"
                    for t in (obj.get("spec") or {}).get("taints") or []
                ]
                unschedulable = bool((obj.get("spec") or {}).get("unschedulable"))
            pods = view.pods_by_node.get(name, []) if view is not None else []
            nodes.append(
                {
                    "name": name,
                    "power": "On" if node.powered else "Off",
                    "machine": node.state,
                    "ready": ready,
                    "unschedulable": unschedulable,
                    "taints": taints,
                    "pods": len(pods),
                    "terminatingPods": sum(
                        1 for p in pods if (p.get("metadata") or {}).get("deletionTimestamp")
                    ),
                }
            )
        out: dict[str, Any] = {"nodes": nodes, "vms": [], "migrations": []}
        for key, section in self.sections.items():
            value = section()
            if inspect.isawaitable(value):
                value = await value
            out[key] = value
        return out

    # -- the control endpoint ----------------------------------------------------------------

    def register_endpoint(self, server: Any) -> None:
        resources = [
            {
                "name": "faults",
                "singularName": "fault",
                "namespaced": False,
                "kind": "Fault",
                "verbs": ["create"],
            },
            {
                "name": "status",
                "singularName": "status",
                "namespaced": False,
                "kind": "LabStatus",
                "verbs": ["get"],
            },
        ]
        server.register_aggregated(CONTROL_GROUP, CONTROL_VERSION, resources, self._handle)

    async def _handle(self, req: ApiRequest, rest: list[str]) -> ApiResponse:
        api_version = f"{CONTROL_GROUP}/{CONTROL_VERSION}"
        if rest[:1] == ["status"] and req.method.upper() == "GET":
            body = {"kind": "LabStatus", "apiVersion": api_version, **(await self.status())}
            return ApiResponse(200, body)
        if rest[:1] != ["faults"] or req.method.upper() != "POST":
            raise ApiError(
                405,
                "the lab control endpoint serves GET status and POST faults",
                "MethodNotAllowed",
            )
        body = req.body
        if isinstance(body, bytes | str):
            body = json.loads(body or "{}")
        if not isinstance(body, dict):
            raise ApiError(400, "expected a JSON object", "BadRequest")
        action = str(body.get("action", ""))
        target = str(body.get("target", ""))
        result = await self.perform(action, target, body.get("value"))
        return ApiResponse(
            200,
            {
                "kind": "FaultResult",
                "apiVersion": api_version,
                "action": action,
                "target": target,
                "result": result,
            },
        )

    async def perform(self, action: str, target: str, value: Any = None) -> Any:
        """One action by its CLI name (``fail-node`` ...), as the control endpoint does."""
        if action in NODE_ACTIONS:
            method = getattr(self, action.replace("-", "_"))
            return await method(target)
        if action in BMC_ACTIONS:
            return await getattr(self, action.replace("-", "_"))(target)
        if action == "slow-bmc":
            return await self.slow_bmc(target, float(value if value is not None else 0.0))
        if action == "set-migration-bandwidth":
            return await self.set_migration_bandwidth(float(value if value is not None else target))
        if action in VM_ACTIONS:
            namespace, _, name = target.partition("/")
            if not name:
                raise ApiError(400, f"{action} needs NAMESPACE/NAME, got {target!r}", "BadRequest")
            return await getattr(self, action.replace("-", "_"))(namespace, name)
        raise ApiError(400, f"unknown lab action {action!r}", "BadRequest")
