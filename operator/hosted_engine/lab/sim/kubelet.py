"""The simulated kubelet of every lab node.

While its machine runs and reaches the API server, a node's kubelet:

- registers the Node (again, if someone deleted it), renews its Lease in ``kube-node-lease``
  every ``lease_interval`` and posts node status when it changes or every
  ``node_status_report_interval``;
- admits pods bound to it: Pending (ContainerCreating) then, after ``pod_start_delay``, Running
  with conditions and containerStatuses;
- executes the containers of Job pods (and of pods annotated ``lab.hostedengine.io/exec: "true"``)
  as local processes (see :mod:`.processes`): exit code 0 -> Succeeded, otherwise Failed (or a
  restart for ``restartPolicy: OnFailure``/``Always``), pod ``activeDeadlineSeconds`` honoured;
  other pods run without a process;
- finishes the graceful deletion of its pods: SIGTERM, at most the grace period (capped by
  ``max_termination_grace``), then the final delete.

When the machine loses power every process dies at once and the kubelet stops: the API keeps the
pods' last status (still Running). When it boots again, the kubelet finds pods it no longer runs:
``restartPolicy: Never`` pods fail with ``ContainerStatusUnknown`` (exit 137) as a real kubelet
reports them; the others are restarted. While partitioned, processes keep running but nothing
reaches the API; the kubelet catches up once healed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hosted_engine.lab.sim.api import (
    CONFIGMAPS,
    LEASES,
    NODES,
    PODS,
    SECRETS,
    Api,
    Obj,
    condition,
    meta,
    name_of,
    ns_of,
    record_event,
    rfc3339,
    rfc3339_micro,
)
from hosted_engine.lab.sim.nodes import SimNode
from hosted_engine.lab.sim.processes import ContainerLog, ContainerProcess, rewrite_path
from hosted_engine.lab.sim.timings import LabTimings

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"
EXEC_ANNOTATION = "lab.hostedengine.io/exec"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
COMPONENT = "kubelet"

#: ``callback(event, node_name, pod)`` with event "started", "stopped" or "killed"
PodListener = Callable[[str, str, Obj], None]
#: how long a pod without a process takes to stop on SIGTERM (None: ask the next hook)
StopTimeHook = Callable[[Obj], float | None]


def executes(pod: Obj) -> bool:
    """Whether the kubelet runs this pod's containers as local processes."""
    m = meta(pod)
    flag = (m.get("annotations") or {}).get(EXEC_ANNOTATION)
    if flag is not None:
        return str(flag).lower() == "true"
    if JOB_NAME_LABEL in (m.get("labels") or {}):
        return True
    return any(ref.get("kind") == "Job" for ref in m.get("ownerReferences") or [])


def qos_class(pod: Obj) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    requests_any = False
    guaranteed = bool(containers)
    for c in containers:
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        if limits or requests:
            requests_any = True
        for name in ("cpu", "memory"):
            if name not in limits or (name in requests and requests[name] != limits[name]):
                guaranteed = False
    if guaranteed:
        return "Guaranteed"
    return "Burstable" if requests_any else "BestEffort"


@dataclass
class LocalContainer:
    name: str
    image: str
    process: ContainerProcess | None = None
    log: ContainerLog = field(default_factory=ContainerLog)
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    container_id: str = ""
    restart_at: float | None = None


@dataclass
class LocalPod:
    """What the kubelet knows about a pod it runs."""

    uid: str
    namespace: str
    name: str
    executes: bool
    restart_policy: str
    containers: dict[str, LocalContainer]
    pod_ip: str
    admitted_at: float
    start_time: str
    phase: str = "Pending"
    start_due: float = 0.0
    running_since: float | None = None
    deadline_exceeded: bool = False
    stop_task: asyncio.Task[None] | None = None
    stopped: bool = False
    sandbox: Path | None = None
    reason: str | None = None
    message: str | None = None
    dirty: bool = True
    #: the status last posted (to skip identical writes)
    posted: dict[str, Any] | None = None


class Kubelet:
    """The kubelet of one :class:`SimNode`."""

    def __init__(
        self,
        node: SimNode,
        api: Api,
        timings: LabTimings,
        wall: Callable[[], datetime],
        workdir: Path,
        listeners: list[PodListener],
        stop_hooks: list[StopTimeHook],
    ) -> None:
        self.node = node
        self.api = api
        self.timings = timings
        self.wall = wall
        self.workdir = workdir
        self.listeners = listeners
        self.stop_hooks = stop_hooks
        self.pods: dict[str, LocalPod] = {}
        self.next_lease = 0.0
        self.next_status = 0.0
        self.lease_missing = True
        self.registered_boot: str | None = None
        self.ready_since = rfc3339(wall())
        self._ip_counter = 1
        #: pods whose final delete was sent (uid), so it is sent once
        self._finalised: set[str] = set()
        node.add_listener(self._on_machine_event)

    # -- machine events ---------------------------------------------------------------------

    def _on_machine_event(self, node: SimNode, event: str) -> None:
        if event == "power-off":
            for pod in self.pods.values():
                for c in pod.containers.values():
                    if c.process is not None:
                        c.process.kill_now()
                if pod.stop_task is not None:
                    pod.stop_task.cancel()
                self._notify("killed", pod)
                self._remove_sandbox(pod)
            self.pods.clear()
            self._finalised.clear()
            self.next_lease = 0.0
            self.next_status = 0.0
        elif event in ("power-on", "heal"):
            self.next_lease = 0.0
            self.next_status = 0.0

    def _notify(self, event: str, pod: LocalPod) -> None:
        ref: Obj = {"metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid}}
        for callback in list(self.listeners):
            try:
                callback(event, self.node.name, ref)
            except Exception:
                log.exception("pod listener failed")

    # -- the sync loop ----------------------------------------------------------------------

    async def sync(self, node_obj: Obj | None, pods: Iterable[Obj], now: float) -> None:
        """One pass: heartbeats, node status, pods. ``pods`` are those bound to this node."""
        if not self.node.running():
            return
        self._reap_local(now)
        if not self.node.connected():
            return
        if node_obj is None:
            node_obj = await self._register()
            if node_obj is None:
                return
        if now >= self.next_lease:
            await self._renew_lease(node_obj)
            # client-go's lease controller renews with a 4 % jitter (wait.JitterUntil)
            self.next_lease = now + self.timings.lease_interval * (1 + 0.04 * random.random())
        await self._post_node_status(node_obj, now)
        seen: set[str] = set()
        for pod in pods:
            uid = str(meta(pod).get("uid", ""))
            seen.add(uid)
            try:
                await self._sync_pod(pod, now)
            except Exception:
                log.exception("kubelet %s: pod %s/%s", self.node.name, ns_of(pod), name_of(pod))
        for uid in list(self.pods):
            if uid not in seen:  # force-deleted, or deleted while we were away
                await self._forget(self.pods[uid], grace=0.0)

    # -- node -------------------------------------------------------------------------------

    async def _register(self) -> Obj | None:
        body = self.node.node_object()
        self.ready_since = rfc3339(self.wall())
        body["status"] = self.node.status_body(self.ready_since, self.ready_since)
        created = await self.api.create(NODES, body)
        if created is not None and not (created.get("status") or {}).get("conditions"):
            created = await self.api.patch(
                NODES, self.node.name, {"status": body["status"]}, subresource="status"
            )
        if created is not None:
            self.registered_boot = self.node.boot_id
            self.next_status = 0.0
            self.lease_missing = True
            await record_event(
                self.api,
                created,
                NODES,
                "Normal",
                "RegisteredNode",
                f"Node {self.node.name} event: Registered Node {self.node.name} in Controller",
                "node-controller",
                self.wall(),
            )
        return created

    async def _renew_lease(self, node_obj: Obj) -> None:
        stamp = rfc3339_micro(self.wall())
        spec = {
            "holderIdentity": self.node.name,
            "leaseDurationSeconds": 40,
            "renewTime": stamp,
        }
        if not self.lease_missing:
            got = await self.api.patch(
                LEASES, self.node.name, {"spec": spec}, namespace=NODE_LEASE_NAMESPACE
            )
            if got is not None:
                return
        body: Obj = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.node.name,
                "namespace": NODE_LEASE_NAMESPACE,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": self.node.name,
                        "uid": meta(node_obj).get("uid", ""),
                    }
                ],
            },
            "spec": spec,
        }
        created = await self.api.create(LEASES, body, NODE_LEASE_NAMESPACE)
        if created is None:
            await self.api.patch(
                LEASES, self.node.name, {"spec": spec}, namespace=NODE_LEASE_NAMESPACE
            )
        self.lease_missing = False

    async def _post_node_status(self, node_obj: Obj, now: float) -> None:
        ready = condition(node_obj, "Ready") or {}
        info = (node_obj.get("status") or {}).get("nodeInfo") or {}
        rebooted = bool(info.get("bootID")) and info.get("bootID") != self.node.boot_id
        changed = ready.get("status") != "True" or rebooted
        if not changed and now < self.next_status:
            return
        stamp = rfc3339(self.wall())
        if changed:
            self.ready_since = stamp
        elif ready.get("lastTransitionTime"):
            self.ready_since = str(ready["lastTransitionTime"])
        status = self.node.status_body(stamp, self.ready_since)
        await self.api.patch(NODES, self.node.name, {"status": status}, subresource="status")
        self.next_status = now + self.timings.node_status_report_interval
        if rebooted:
            await record_event(
                self.api,
                node_obj,
                NODES,
                "Warning",
                "Rebooted",
                f"Node {self.node.name} has been rebooted, boot id: {self.node.boot_id}",
                COMPONENT,
                self.wall(),
                host=self.node.name,
            )
        if changed:
            await record_event(
                self.api,
                node_obj,
                NODES,
                "Normal",
                "NodeReady",
                f"Node {self.node.name} status is now: NodeReady",
                COMPONENT,
                self.wall(),
                host=self.node.name,
            )

    # -- pods -------------------------------------------------------------------------------

    def _reap_local(self, now: float) -> None:
        """Process exits and restarts happen on the machine, reachable or not."""
        for pod in self.pods.values():
            if pod.phase not in ("Running", "Pending") or pod.stop_task is not None:
                continue
            for c in pod.containers.values():
                proc = c.process
                if proc is not None and not proc.running and "terminated" not in c.state:
                    code = proc.exit_code if proc.exit_code is not None else 137
                    started_at = (c.state.get("running") or {}).get("startedAt")
                    c.state = {
                        "terminated": {
                            "exitCode": code,
                            "reason": "Completed" if code == 0 else "Error",
                            "startedAt": started_at,
                            "finishedAt": rfc3339(self.wall()),
                            "containerID": c.container_id,
                        }
                    }
                    pod.dirty = True
                    restart = pod.restart_policy == "Always" or (
                        pod.restart_policy == "OnFailure" and code != 0
                    )
                    if restart:
                        delay = min(
                            self.timings.job_backoff_base * 2**c.restart_count,
                            self.timings.job_backoff_max,
                        )
                        c.restart_at = now + delay
                        c.process = None  # reaped: its exit is in lastState
                        c.last_state = c.state
                        c.state = {
                            "waiting": {
                                "reason": "CrashLoopBackOff",
                                "message": f"back-off restarting failed container {c.name}",
                            }
                        }
            if pod.executes and pod.phase == "Running":
                states = [c.state for c in pod.containers.values()]
                if all("terminated" in s for s in states):
                    codes = [s["terminated"]["exitCode"] for s in states]
                    pod.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
                    pod.dirty = True
                    self._notify("stopped", pod)

    async def _sync_pod(self, pod: Obj, now: float) -> None:
        m = meta(pod)
        uid = str(m.get("uid", ""))
        local = self.pods.get(uid)
        if m.get("deletionTimestamp"):
            await self._terminate(pod, local, now)
            return
        status = pod.get("status") or {}
        if local is None:
            if status.get("phase") in ("Succeeded", "Failed"):
                return
            ran_before = status.get("containerStatuses") and status.get("phase") == "Running"
            never = (pod.get("spec") or {}).get("restartPolicy", "Always") == "Never"
            if ran_before and never:
                # we ran it before the machine restarted: its containers are gone
                await self._report_lost(pod)
                return
            local = self._admit(pod, now)
        if local.phase == "Pending" and now >= local.start_due:
            await self._start(pod, local, now)
        if local.phase == "Running":
            await self._restart_due(pod, local, now)
            self._check_deadline(pod, local, now)
        if local.dirty:
            await self._post_pod_status(pod, local)

    def _admit(self, pod: Obj, now: float) -> LocalPod:
        spec = pod.get("spec") or {}
        m = meta(pod)
        containers = {
            c["name"]: LocalContainer(name=c["name"], image=str(c.get("image", "")))
            for c in spec.get("containers") or []
        }
        ip = f"10.244.{self.node.index}.{self._ip_counter % 254 + 1}"
        self._ip_counter += 1
        local = LocalPod(
            uid=str(m.get("uid", "")),
            namespace=str(m.get("namespace", "")),
            name=str(m.get("name", "")),
            executes=executes(pod),
            restart_policy=str(spec.get("restartPolicy") or "Always"),
            containers=containers,
            pod_ip=ip,
            admitted_at=now,
            start_time=rfc3339(self.wall()),
            start_due=now + self.timings.pod_start_delay,
        )
        restarts = {
            cs.get("name"): int(cs.get("restartCount", 0))
            for cs in (pod.get("status") or {}).get("containerStatuses") or []
        }
        for c in containers.values():  # a pod restarted after a reboot keeps counting
            if c.name in restarts and (pod.get("status") or {}).get("phase") == "Running":
                c.restart_count = restarts[c.name] + 1
        self.pods[local.uid] = local
        return local

    async def _start(self, pod: Obj, local: LocalPod, now: float) -> None:
        spec = pod.get("spec") or {}
        if local.executes:
            env_ok = True
            for c in spec.get("containers") or []:
                lc = local.containers[c["name"]]
                if not await self._start_process(pod, local, c, lc):
                    env_ok = False
            if not env_ok and not any(lc.process is not None for lc in local.containers.values()):
                local.dirty = True
                return
        else:
            for lc in local.containers.values():
                lc.container_id = f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}"
                lc.state = {"running": {"startedAt": rfc3339(self.wall())}}
        local.phase = "Running"
        local.running_since = now
        local.dirty = True
        self._notify("started", local)

    async def _start_process(
        self, pod: Obj, local: LocalPod, container: Obj, lc: LocalContainer
    ) -> bool:
        env = await self._container_env(pod, local, container)
        if env is None:
            lc.state = {
                "waiting": {
                    "reason": "CreateContainerConfigError",
                    "message": "a referenced ConfigMap or Secret key was not found",
                }
            }
            return False
        mounts = await self._mounts(pod, local, container)
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        argv = [rewrite_path(_expand(str(a), env), mounts) for a in argv]
        if not argv:
            lc.state = {
                "waiting": {
                    "reason": "CreateContainerError",
                    "message": "the lab ignores images: the container needs a command",
                }
            }
            return False
        env = {k: rewrite_path(v, mounts) for k, v in env.items()}
        assert local.sandbox is not None
        cwd = Path(rewrite_path(str(container.get("workingDir") or ""), mounts) or local.sandbox)
        if not cwd.is_dir():
            cwd = local.sandbox
        lc.process = ContainerProcess(lc.log)
        await lc.process.start(argv, env, cwd)
        lc.container_id = f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}"
        lc.state = {"running": {"startedAt": rfc3339(self.wall())}}
        return True

    async def _restart_due(self, pod: Obj, local: LocalPod, now: float) -> None:
        spec = pod.get("spec") or {}
        by_name = {c["name"]: c for c in spec.get("containers") or []}
        for lc in local.containers.values():
            if lc.restart_at is not None and now >= lc.restart_at:
                lc.restart_at = None
                lc.restart_count += 1
                if local.executes and lc.name in by_name:
                    await self._start_process(pod, local, by_name[lc.name], lc)
                else:
                    lc.state = {"running": {"startedAt": rfc3339(self.wall())}}
                local.dirty = True

    def _check_deadline(self, pod: Obj, local: LocalPod, now: float) -> None:
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline is None or local.running_since is None or local.deadline_exceeded:
            return
        if now - local.admitted_at < float(deadline):
            return
        local.deadline_exceeded = True
        local.phase = "Failed"
        local.reason = "DeadlineExceeded"
        local.message = "Pod was active on the node longer than the specified deadline"
        local.dirty = True
        local.stop_task = asyncio.create_task(self._stop_containers(local, 0.0))

    async def _report_lost(self, pod: Obj) -> None:
        status = pod.get("status") or {}
        lost = []
        for cs in status.get("containerStatuses") or []:
            lost.append(
                {
                    **cs,
                    "ready": False,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "ContainerStatusUnknown",
                            "message": "The container could not be located when the pod was "
                            "terminated",
                        }
                    },
                }
            )
        body = {
            "status": {
                "phase": "Failed",
                "containerStatuses": lost,
                "conditions": self._pod_conditions(pod, ready=False, started=False),
            }
        }
        await self.api.patch(PODS, name_of(pod), body, ns_of(pod), subresource="status")

    def _pod_conditions(self, pod: Obj, ready: bool, started: bool) -> list[Obj]:
        stamp = rfc3339(self.wall())
        old = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}

        def cond(ctype: str, value: bool, reason: str | None = None) -> Obj:
            status = "True" if value else "False"
            prev = old.get(ctype) or {}
            since = prev.get("lastTransitionTime") if prev.get("status") == status else stamp
            out: Obj = {
                "type": ctype,
                "status": status,
                "lastProbeTime": None,
                "lastTransitionTime": since or stamp,
            }
            if reason and not value:
                out["reason"] = reason
            return out

        return [
            cond("PodReadyToStartContainers", started),
            cond("Initialized", True),
            cond("Ready", ready, "ContainersNotReady" if not ready else None),
            cond("ContainersReady", ready, "ContainersNotReady" if not ready else None),
            cond("PodScheduled", True),
        ]

    async def _post_pod_status(self, pod: Obj, local: LocalPod) -> None:
        containers = []
        for c in (pod.get("spec") or {}).get("containers") or []:
            lc = local.containers.get(c["name"])
            if lc is None:
                continue
            running = "running" in lc.state
            entry: Obj = {
                "name": lc.name,
                "image": lc.image,
                "imageID": f"{lc.image}@sha256:{'0' * 64}" if lc.image else "",
                "ready": running and local.phase == "Running",
                "started": running,
                "restartCount": lc.restart_count,
                "state": lc.state,
                "lastState": lc.last_state,
            }
            if lc.container_id:
                entry["containerID"] = lc.container_id
            containers.append(entry)
        ready = local.phase == "Running" and all(c["ready"] for c in containers)
        started = local.phase != "Pending" or any(c["started"] for c in containers)
        status: Obj = {
            "phase": local.phase,
            "conditions": self._pod_conditions(pod, ready=ready, started=started or True),
            "hostIP": self.node.internal_ip,
            "hostIPs": [{"ip": self.node.internal_ip}],
            "podIP": local.pod_ip,
            "podIPs": [{"ip": local.pod_ip}],
            "startTime": local.start_time,
            "qosClass": qos_class(pod),
            "containerStatuses": containers,
        }
        if local.reason:
            status["reason"] = local.reason
            status["message"] = local.message
        comparable = {k: v for k, v in status.items() if k != "conditions"}
        comparable["ready"] = ready
        if comparable == local.posted:
            local.dirty = False
            return
        got = await self.api.patch(PODS, local.name, {"status": status}, local.namespace, "status")
        if got is not None:
            local.posted = comparable
        local.dirty = False

    def exit_containers(self, namespace: str, name: str, exit_code: int) -> bool:
        """The main process of a pod that runs no local process ended on its own (virt-launcher
        once its qemu died or the guest powered off): its containers terminate with
        ``exit_code`` and, as it restarts nothing, the pod turns Succeeded (0) or Failed.
        False when this kubelet does not run such a pod, Running and not being stopped."""
        local = next((p for p in self.pods.values()
                      if p.namespace == namespace and p.name == name), None)
        if local is None or local.executes or local.phase != "Running" \
                or local.stop_task is not None:
            return False
        if local.restart_policy == "Always" or (
            local.restart_policy == "OnFailure" and exit_code != 0
        ):
            return False  # the kubelet would restart it: not simulated for process-less pods
        for c in local.containers.values():
            if "terminated" in c.state:
                continue
            c.state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": (c.state.get("running") or {}).get("startedAt"),
                    "finishedAt": rfc3339(self.wall()),
                    "containerID": c.container_id,
                }
            }
        local.phase = "Succeeded" if exit_code == 0 else "Failed"
        local.dirty = True
        self._notify("stopped", local)
        return True

    # -- termination ------------------------------------------------------------------------

    async def _terminate(self, pod: Obj, local: LocalPod | None, now: float) -> None:
        m = meta(pod)
        uid = str(m.get("uid", ""))
        if uid in self._finalised:
            return
        if local is None:
            await self._final_delete(pod)
            return
        if local.stop_task is None and not local.stopped:
            grace = m.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            grace_s = self.timings.termination_grace(float(grace))
            local.stop_task = asyncio.create_task(self._stop_containers(local, grace_s, pod))
            return
        if local.stopped:
            if local.dirty:
                await self._post_pod_status(pod, local)
            await self._forget(local, grace=0.0)
            await self._final_delete(pod)

    async def _stop_containers(self, local: LocalPod, grace: float, pod: Obj | None = None) -> None:
        try:
            if all("terminated" in c.state for c in local.containers.values()):
                # Every container already exited (a pod that ended on its own): nothing gets a
                # SIGTERM, so no grace period and no stop time; the pod goes at once.
                pass
            elif local.executes:
                await asyncio.gather(
                    *(
                        c.process.stop(grace)
                        for c in local.containers.values()
                        if c.process is not None
                    )
                )
            else:
                stop_time = self.timings.get("container_stop_time", 1.0)
                for hook in self.stop_hooks:
                    wanted = hook(pod) if pod is not None else None
                    if wanted is not None:
                        stop_time = wanted
                        break
                await asyncio.sleep(max(0.0, min(grace, stop_time)))
            for c in local.containers.values():
                if "terminated" not in c.state:
                    code = c.process.exit_code if c.process is not None else 0
                    c.state = {
                        "terminated": {
                            "exitCode": code if code is not None else 137,
                            "reason": "Completed" if code == 0 else "Error",
                            "finishedAt": rfc3339(self.wall()),
                            "containerID": c.container_id,
                        }
                    }
            local.dirty = True
            self._notify("stopped", local)
        finally:
            local.stopped = True

    async def _forget(self, local: LocalPod, grace: float) -> None:
        self.pods.pop(local.uid, None)
        if local.stop_task is None:
            for c in local.containers.values():
                if c.process is not None and c.process.running:
                    await c.process.stop(grace)
            self._notify("stopped", local)
        self._remove_sandbox(local)

    async def _final_delete(self, pod: Obj) -> None:
        m = meta(pod)
        uid = str(m.get("uid", ""))
        self._finalised.add(uid)
        await self.api.delete(PODS, name_of(pod), ns_of(pod), grace_period_seconds=0, uid=uid)

    # -- logs -------------------------------------------------------------------------------

    def container_log(self, namespace: str, name: str, container: str | None) -> str | None:
        """The container's log, or None when this kubelet does not run the pod."""
        if not self.node.connected():
            return None
        for pod in self.pods.values():
            if pod.namespace == namespace and pod.name == name:
                if container is None:
                    if len(pod.containers) != 1:
                        return None
                    container = next(iter(pod.containers))
                lc = pod.containers.get(container)
                return lc.log.text() if lc is not None else None
        return None

    async def follow_log(self, namespace: str, name: str, container: str) -> Any:
        """``kubectl logs -f``: what is there, then new output until the container ends."""
        local = next(
            (p for p in self.pods.values() if p.namespace == namespace and p.name == name), None
        )
        lc = local.containers.get(container) if local is not None else None
        if lc is None:
            return
        sent = 0
        while True:
            chunks = lc.log.chunks
            for _, data in chunks[sent:]:
                yield data
            sent = len(chunks)
            if lc.process is None or not lc.process.running or not self.node.running():
                if sent == len(lc.log.chunks):
                    return
                continue
            await asyncio.sleep(0.05)

    async def shutdown(self) -> None:
        """The lab stops: end every process this kubelet started."""
        for pod in list(self.pods.values()):
            if pod.stop_task is not None:
                pod.stop_task.cancel()
            for c in pod.containers.values():
                if c.process is not None:
                    c.process.kill_now()
            self._remove_sandbox(pod)
        self.pods.clear()

    # -- volumes and environment ------------------------------------------------------------

    def _remove_sandbox(self, local: LocalPod) -> None:
        if local.sandbox is not None:
            shutil.rmtree(local.sandbox, ignore_errors=True)
            local.sandbox = None

    async def _mounts(self, pod: Obj, local: LocalPod, container: Obj) -> dict[str, str]:
        if local.sandbox is None:
            local.sandbox = self.workdir / "pods" / local.uid
            local.sandbox.mkdir(parents=True, exist_ok=True)
        volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
        mounts: dict[str, str] = {}
        for vm in container.get("volumeMounts") or []:
            vol = volumes.get(vm.get("name"))
            if vol is None:
                continue
            path = await self._volume_dir(local, vol)
            if path is None:
                continue
            sub = vm.get("subPath")
            mounts[str(vm["mountPath"])] = str(Path(path) / sub) if sub else path
        return mounts

    async def _volume_dir(self, local: LocalPod, vol: Obj) -> str | None:
        assert local.sandbox is not None
        name = str(vol.get("name"))
        target = local.sandbox / "volumes" / name
        if "hostPath" in vol:
            return str(vol["hostPath"].get("path", "/"))
        if "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"].get("claimName", "")
            shared = self.workdir / "claims" / local.namespace / str(claim)
            shared.mkdir(parents=True, exist_ok=True)
            return str(shared)
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in vol:
            ref = vol["configMap"]
            obj = await self.api.get(CONFIGMAPS, str(ref.get("name")), local.namespace)
            data: dict[str, bytes] = {}
            if obj is not None:
                data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
                for k, v in (obj.get("binaryData") or {}).items():
                    data[k] = base64.b64decode(v)
            _materialise(target, data, ref.get("items"), ref.get("defaultMode"))
        elif "secret" in vol:
            ref = vol["secret"]
            obj = await self.api.get(SECRETS, str(ref.get("secretName")), local.namespace)
            data = {}
            if obj is not None:
                data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            _materialise(target, data, ref.get("items"), ref.get("defaultMode"))
        return str(target)

    async def _container_env(
        self, pod: Obj, local: LocalPod, container: Obj
    ) -> dict[str, str] | None:
        env: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOSTNAME": local.name,
            "HOME": "/root",
        }
        for src in container.get("envFrom") or []:
            prefix = str(src.get("prefix") or "")
            if "configMapRef" in src:
                values = await self._config_values(CONFIGMAPS, src["configMapRef"], local)
            else:
                values = await self._config_values(SECRETS, src.get("secretRef") or {}, local)
            if values is None:
                return None
            env.update({prefix + k: v for k, v in values.items()})
        for item in container.get("env") or []:
            name = str(item.get("name"))
            if "valueFrom" not in item:
                env[name] = _expand(str(item.get("value", "")), env)
                continue
            src = item["valueFrom"]
            value: str | None = None
            if "fieldRef" in src:
                value = _field_ref(pod, local, self.node, str(src["fieldRef"].get("fieldPath")))
            elif "configMapKeyRef" in src or "secretKeyRef" in src:
                is_cm = "configMapKeyRef" in src
                ref = src["configMapKeyRef"] if is_cm else src["secretKeyRef"]
                values = await self._config_values(CONFIGMAPS if is_cm else SECRETS, ref, local)
                value = (values or {}).get(str(ref.get("key")))
                if value is None and not ref.get("optional"):
                    return None
            if value is not None:
                env[name] = value
        return env

    async def _config_values(
        self, res: Any, ref: Mapping[str, Any], local: LocalPod
    ) -> dict[str, str] | None:
        obj = await self.api.get(res, str(ref.get("name")), local.namespace)
        if obj is None:
            return {} if ref.get("optional") else None
        if res is SECRETS:
            return {
                k: base64.b64decode(v).decode("utf-8", "replace")
                for k, v in (obj.get("data") or {}).items()
            }
        return {k: str(v) for k, v in (obj.get("data") or {}).items()}


def _materialise(target: Path, data: Mapping[str, bytes], items: Any, mode: Any) -> None:
    chosen = (
        {str(i.get("key")): str(i.get("path")) for i in items} if items else {k: k for k in data}
    )
    for key, rel in chosen.items():
        if key not in data:
            continue
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[key])
        with contextlib.suppress(OSError):
            path.chmod(int(mode) if mode is not None else 0o644)


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion ($$ escapes)."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and ")" in value[i:]:
            end = value.index(")", i)
            name = value[i + 2 : end]
            out.append(env.get(name, value[i : end + 1]))
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _field_ref(pod: Obj, local: LocalPod, node: SimNode, path: str) -> str | None:
    m = meta(pod)
    simple = {
        "metadata.name": m.get("name"),
        "metadata.namespace": m.get("namespace"),
        "metadata.uid": m.get("uid"),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", "default"),
        "status.hostIP": node.internal_ip,
        "status.podIP": local.pod_ip,
    }
    if path in simple:
        value = simple[path]
        return None if value is None else str(value)
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path.startswith(prefix + "['") and path.endswith("']"):
            key = path[len(prefix) + 2 : -2]
            found = (m.get(source) or {}).get(key)
            return None if found is None else str(found)
    return None
