"""virt-api: the VM subresources and KubeVirt's admission webhooks.

- ``PUT /apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachines/NAME/{start,stop,
  restart,migrate}`` with the real side effects (:mod:`.decisions` has the table): ``stop`` on an
  Always/Once VM rewrites ``spec.runStrategy`` to Halted, Manual/RerunOnFailure get a
  ``stateChangeRequest``, refused requests answer 409 with KubeVirt's messages; ``migrate``
  creates a VirtualMachineInstanceMigration named ``kubevirt-migrate-vm-*``.
- The pod eviction webhook: evicting a virt-launcher pod whose VMI has evictionStrategy
  LiveMigrate (and is migratable), LiveMigrateIfPossible (migratable) or External is denied with
  429 ``Eviction triggered evacuation of VMI "NS/NAME"`` and sets ``status.evacuationNodeName``
  (the evacuation controller then migrates it); a non-migratable LiveMigrate VMI blocks the drain
  (429); None lets the eviction delete the pod, and the VM dies.
- The migration create webhook: the VMI must exist, run, be migratable and have no migration in
  flight (422 otherwise).

Writes carry the observed resourceVersion, so a concurrent change answers 409 like KubeVirt's
JSON-patch ``test`` operations.
"""

from __future__ import annotations

from typing import Any

from hosted_engine.lab.kubevirt import APP_LABEL, DOMAIN_ANNOTATION
from hosted_engine.lab.kubevirt import decisions as d
from hosted_engine.lab.kubevirt.resources import VMIMS, VMIS, VMS, phase
from hosted_engine.lab.kubevirt.sim import KubeVirtSim, SubresourceError
from hosted_engine.lab.sim.api import PODS, Obj, condition, meta, name_of, ns_of

VM_VERBS = ("start", "stop", "restart", "migrate")


def condition_status(obj: Obj, ctype: str) -> str | None:
    cond = condition(obj, ctype)
    return None if cond is None else str(cond.get("status"))


def _rv(obj: Obj) -> str:
    return str(meta(obj).get("resourceVersion", ""))


class VirtApi:
    def __init__(self, sim: KubeVirtSim) -> None:
        self.sim = sim
        self.api = sim.api

    async def vm_subresource(
        self, verb: str, namespace: str, name: str, body: dict[str, Any] | None
    ) -> None:
        """Serve one VM subresource request; returns on 202, raises SubresourceError."""
        if verb not in VM_VERBS:
            raise SubresourceError(404, f"the server could not find the requested resource "
                                        f"(virtualmachines/{verb})")
        options = body or {}
        dry_run = bool(options.get("dryRun"))
        vm = await self.api.get(VMS, name, namespace)
        if vm is None:
            raise SubresourceError(404, f'virtualmachine.kubevirt.io "{name}" not found')
        vmi = await self.api.get(VMIS, name, namespace)
        if verb == "migrate":
            await self._migrate(vm, vmi, options, dry_run)
            return
        if verb == "start":
            result = d.start_request(vm, vmi)
        elif verb == "stop":
            grace = options.get("gracePeriod")
            result = d.stop_request(vm, vmi, None if grace is None else int(grace))
        else:
            grace = options.get("gracePeriodSeconds")
            result = d.restart_request(vm, vmi, None if grace is None else int(grace))
        if not result.ok:
            message = result.message
            if result.code == 409:
                message = f'Operation cannot be fulfilled on virtualmachine.kubevirt.io "{name}": '\
                          f"{result.message}"
            raise SubresourceError(result.code, message)
        if dry_run:
            return
        if result.grace_period is not None and vmi is not None:
            await self.api.patch(
                VMIS, name, {"spec": {"terminationGracePeriodSeconds": result.grace_period}},
                namespace,
            )
        if result.run_strategy is not None:
            spec = vm.get("spec") or {}
            patch: Obj = {"metadata": {"resourceVersion": _rv(vm)}}
            if spec.get("runStrategy") is not None or spec.get("running") is None:
                patch["spec"] = {"runStrategy": result.run_strategy}
            else:
                patch["spec"] = {"running": result.run_strategy == "Always"}
            await self.api.patch(VMS, name, patch, namespace)
        if result.requests is not None:
            await self.api.patch(
                VMS,
                name,
                {"metadata": {"resourceVersion": _rv(vm)},
                 "status": {"stateChangeRequests": result.requests, "startFailure": None}},
                namespace,
                subresource="status",
            )
        if result.force_delete_pod and vmi is not None:
            pod = self.sim.current_pod(vmi)
            if pod is not None:
                await self.api.delete(PODS, name_of(pod), namespace, grace_period_seconds=1)

    async def _migrate(self, vm: Obj, vmi: Obj | None, options: dict[str, Any],
                       dry_run: bool) -> None:
        name = name_of(vm)
        if vmi is None:
            raise SubresourceError(404, f'virtualmachineinstance.kubevirt.io "{name}" not found')
        if phase(vmi) != "Running":
            raise SubresourceError(
                409,
                f'Operation cannot be fulfilled on virtualmachine.kubevirt.io "{name}": '
                "VM is not running",
            )
        body: Obj = {
            "apiVersion": VMIMS.api_version,
            "kind": VMIMS.kind,
            "metadata": {"generateName": "kubevirt-migrate-vm-", "namespace": ns_of(vm)},
            "spec": {"vmiName": name},
        }
        if options.get("addedNodeSelector"):
            body["spec"]["addedNodeSelector"] = dict(options["addedNodeSelector"])
        if dry_run:
            return
        await self.admit_migration(body)
        await self.api.create(VMIMS, body, ns_of(vm))

    # -- webhooks ---------------------------------------------------------------------------

    async def admit_migration(self, vmim: Obj) -> None:
        """KubeVirt's VMIM create admitter."""
        namespace = ns_of(vmim)
        vmi_name = str((vmim.get("spec") or {}).get("vmiName") or "")
        vmi = await self.api.get(VMIS, vmi_name, namespace)
        if vmi is None:
            raise SubresourceError(422, f'the VMI "{namespace}/{vmi_name}" does not exist')
        if phase(vmi) != "Running":
            raise SubresourceError(422, f"Cannot migrate VMI in phase {phase(vmi) or 'Pending'}"
                                        f": VMI {vmi_name} is not running")
        cond = condition(vmi, "LiveMigratable")
        if cond is not None and cond.get("status") == "False":
            raise SubresourceError(
                422, f"Cannot migrate VMI, Reason: {cond.get('reason')}, "
                     f"Message: {cond.get('message')}")
        state = (vmi.get("status") or {}).get("migrationState") or {}
        if state and not state.get("completed"):
            raise SubresourceError(
                422, f"in-flight migration detected. Active migration job "
                     f"({state.get('migrationUid')}) is currently already in progress for VMI "
                     f"{vmi_name}.")

    async def admit_eviction(self, namespace: str, pod_name: str) -> None:
        """The pod eviction admitter for virt-launcher pods (raises 429 to deny)."""
        pod = await self.api.get(PODS, pod_name, namespace)
        if pod is None:
            return
        labels = meta(pod).get("labels") or {}
        if labels.get(APP_LABEL) != "virt-launcher":
            return
        vmi_name = (meta(pod).get("annotations") or {}).get(DOMAIN_ANNOTATION) or labels.get(
            "vm.kubevirt.io/name")
        if not vmi_name:
            return
        vmi = await self.api.get(VMIS, str(vmi_name), namespace)
        if vmi is None or d.phase_of(vmi) in d.FINAL_PHASES:
            return
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        if node != (vmi.get("status") or {}).get("nodeName"):
            return  # a migration target pod, or a stale one: no protection
        strategy = self.sim.eviction_strategy(vmi)
        migratable = condition_status(vmi, "LiveMigratable") != "False" and \
            self.sim.migratability(vmi).migratable
        decision = d.eviction_decision(strategy, migratable)
        if decision == "allow":
            return
        if decision == "deny":
            raise SubresourceError(
                429, f"VMI {namespace}/{vmi_name} is configured with an eviction strategy but "
                     "is not live-migratable")
        if (vmi.get("status") or {}).get("evacuationNodeName") != node:
            await self.api.patch(VMIS, str(vmi_name), {"status": {"evacuationNodeName": node}},
                                 namespace, subresource="status")
        raise SubresourceError(
            429, f'Eviction triggered evacuation of VMI "{namespace}/{vmi_name}"')
