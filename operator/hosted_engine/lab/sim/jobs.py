"""The batch/v1 Job controller (kube-controller-manager's), for Jobs whose pods the lab kubelet
runs as local processes.

It creates pods from ``spec.template`` up to ``parallelism`` until ``completions`` pods succeeded
(``Indexed`` mode gives each pod its completion index), waits an exponential backoff after each
failure, and ends the Job:

- success: ``SuccessCriteriaMet`` then ``Complete`` (with ``completionTime``);
- ``backoffLimit`` exceeded (failed pods > limit): ``FailureTarget`` then ``Failed`` with reason
  ``BackoffLimitExceeded``;
- ``activeDeadlineSeconds`` passed since ``startTime``: running pods are deleted, ``Failed`` with
  reason ``DeadlineExceeded``.

The terminal condition is added once no pod of the Job is still terminating, as since Kubernetes
1.31. A pod deleted before it finished counts as failed (the job-tracking finalizer's effect).
``ttlSecondsAfterFinished`` deletes a finished Job (the TTL-after-finished controller).
Source: kubernetes.io/docs/concepts/workloads/controllers/job/.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hosted_engine.lab.sim.api import (
    JOBS,
    PODS,
    Api,
    Obj,
    condition,
    meta,
    name_of,
    ns_of,
    parse_time,
    random_suffix,
    record_event,
    rfc3339,
)

log = logging.getLogger(__name__)

COMPONENT = "job-controller"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


@dataclass
class _JobState:
    """What the controller remembers about one Job between passes."""

    outcomes: dict[str, str] = field(default_factory=dict)  # pod uid -> Succeeded / Failed
    indexes: dict[str, int] = field(default_factory=dict)  # pod uid -> completion index
    names: dict[str, str] = field(default_factory=dict)  # pod uid -> pod name
    next_create: float = 0.0
    failed_seen: int = 0
    failure: tuple[str, str] | None = None
    finished_at: float | None = None


def _controller_uid(pod: Obj) -> str | None:
    for ref in meta(pod).get("ownerReferences") or []:
        if ref.get("kind") == "Job" and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _finished(job: Obj) -> str | None:
    for ctype in ("Complete", "Failed"):
        if (condition(job, ctype) or {}).get("status") == "True":
            return ctype
    return None


class JobController:
    def __init__(self, api: Api, timings: Any, wall: Callable[[], datetime]) -> None:
        self.api = api
        self.timings = timings
        self.wall = wall
        self.state: dict[str, _JobState] = {}

    async def reconcile(self, jobs: Sequence[Obj], pods: Iterable[Obj], now: float) -> None:
        by_owner: dict[str, list[Obj]] = {}
        for pod in pods:
            uid = _controller_uid(pod)
            if uid:
                by_owner.setdefault(uid, []).append(pod)
        live = set()
        for job in jobs:
            uid = str(meta(job).get("uid"))
            live.add(uid)
            try:
                await self._sync(job, by_owner.get(uid, []), now)
            except Exception:
                log.exception("job %s/%s", ns_of(job), name_of(job))
        for uid in set(self.state) - live:
            del self.state[uid]

    async def _sync(self, job: Obj, pods: list[Obj], now: float) -> None:
        uid = str(meta(job).get("uid"))
        st = self.state.setdefault(uid, _JobState())
        spec = job.get("spec") or {}
        status = job.get("status") or {}
        done = _finished(job)
        if done:
            await self._ttl(job, st, now)
            return
        if spec.get("suspend"):
            return
        wall = self.wall()
        start = parse_time(status.get("startTime"))
        patch: dict[str, Any] = {}
        if start is None:
            start = wall
            patch["startTime"] = rfc3339(wall)

        seen = set()
        active, terminating = [], []
        for pod in pods:
            puid = str(meta(pod).get("uid"))
            seen.add(puid)
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                st.outcomes.setdefault(puid, str(phase))
            elif meta(pod).get("deletionTimestamp"):
                terminating.append(pod)
            else:
                active.append(pod)
        for puid in list(st.indexes):
            if puid not in seen and puid not in st.outcomes:
                # not in the pod informer: deleted before it finished, or created so recently
                # that the informer has not delivered it yet (then it is still active)
                name = st.names.get(puid)
                found = await self.api.get(PODS, name, ns_of(job)) if name else None
                if found is not None and str(meta(found).get("uid")) == puid:
                    seen.add(puid)
                    active.append(found)
                    continue
                st.outcomes[puid] = "Failed"  # deleted before it finished
        restarts = sum(
            int(cs.get("restartCount", 0))
            for pod in active
            for cs in (pod.get("status") or {}).get("containerStatuses") or []
        )
        succeeded = sum(1 for o in st.outcomes.values() if o == "Succeeded")
        failed = sum(1 for o in st.outcomes.values() if o == "Failed")
        completions = int(spec.get("completions", 1) or 1)
        parallelism = int(spec.get("parallelism", 1) if spec.get("parallelism") is not None else 1)
        backoff_limit = int(spec.get("backoffLimit", 6))

        conditions: list[Obj] = []
        if st.failure is None and succeeded < completions:
            deadline = spec.get("activeDeadlineSeconds")
            if deadline is not None and (wall - start).total_seconds() >= float(deadline):
                st.failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
            elif failed + restarts > backoff_limit:
                st.failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            if st.failure is not None:
                conditions.append(self._cond("FailureTarget", *st.failure))
                await record_event(
                    self.api,
                    job,
                    JOBS,
                    "Warning",
                    st.failure[0],
                    st.failure[1],
                    COMPONENT,
                    wall,
                )
        success = succeeded >= completions
        if success and condition(job, "SuccessCriteriaMet") is None:
            conditions.append(
                self._cond(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                )
            )
        if failed > st.failed_seen:  # the Job controller's pod-failure backoff
            st.failed_seen = failed
            st.next_create = now + min(
                self.timings.job_backoff_base * 2 ** (failed - 1), self.timings.job_backoff_max
            )
        if st.failure is not None or success:
            for pod in active:
                await self.api.delete(PODS, name_of(pod), ns_of(pod))
                terminating.append(pod)
            active = []
        elif now >= st.next_create:
            want = min(parallelism, completions - succeeded) - len(active)
            indexes = self._free_indexes(spec, st, active, completions)
            for _ in range(max(0, want)):
                index = indexes.pop(0) if indexes else None
                created = await self._create_pod(job, index)
                if created is not None:
                    st.indexes[str(meta(created).get("uid"))] = index if index is not None else -1
                    st.names[str(meta(created).get("uid"))] = name_of(created)
                    active.append(created)
        if not active and not terminating and (st.failure is not None or success):
            if st.failure is not None:
                conditions.append(self._cond("Failed", *st.failure))
            else:
                conditions.append(
                    self._cond(
                        "Complete",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    )
                )
                patch["completionTime"] = rfc3339(wall)
                await record_event(
                    self.api, job, JOBS, "Normal", "Completed", "Job completed", COMPONENT, wall
                )
            st.finished_at = now
        ready = sum(1 for p in active if (condition(p, "Ready") or {}).get("status") == "True")
        patch.update(
            {
                "active": len(active),
                "succeeded": succeeded,
                "failed": failed,
                "ready": ready,
                "terminating": len(terminating),
            }
        )
        if spec.get("completionMode") == "Indexed":
            done_idx = sorted(
                st.indexes[u]
                for u, o in st.outcomes.items()
                if o == "Succeeded" and u in st.indexes
            )
            patch["completedIndexes"] = _ranges(done_idx)
        if conditions:
            patch["conditions"] = [*(status.get("conditions") or []), *conditions]
        current = {k: status.get(k) for k in patch if k != "conditions"}
        if conditions or current != {k: v for k, v in patch.items() if k != "conditions"}:
            await self.api.patch(JOBS, name_of(job), {"status": patch}, ns_of(job), "status")

    def _cond(self, ctype: str, reason: str, message: str) -> Obj:
        stamp = rfc3339(self.wall())
        return {
            "type": ctype,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastProbeTime": stamp,
            "lastTransitionTime": stamp,
        }

    @staticmethod
    def _free_indexes(
        spec: Obj, st: _JobState, active: Sequence[Obj], completions: int
    ) -> list[int]:
        if spec.get("completionMode") != "Indexed":
            return []
        taken = {st.indexes.get(str(meta(p).get("uid")), -1) for p in active} | {
            st.indexes[u] for u, o in st.outcomes.items() if o == "Succeeded" and u in st.indexes
        }
        return [i for i in range(completions) if i not in taken]

    async def _create_pod(self, job: Obj, index: int | None) -> Obj | None:
        m = meta(job)
        template = (job.get("spec") or {}).get("template") or {}
        tmeta = dict(template.get("metadata") or {})
        labels = dict(tmeta.get("labels") or {})
        labels.setdefault("batch.kubernetes.io/job-name", name_of(job))
        labels.setdefault("job-name", name_of(job))
        labels.setdefault("batch.kubernetes.io/controller-uid", str(m.get("uid")))
        labels.setdefault("controller-uid", str(m.get("uid")))
        annotations = dict(tmeta.get("annotations") or {})
        spec = dict(template.get("spec") or {})
        name = f"{name_of(job)}-{random_suffix()}"
        if index is not None:
            annotations[INDEX_ANNOTATION] = str(index)
            labels[INDEX_ANNOTATION] = str(index)
            name = f"{name_of(job)}-{index}-{random_suffix()}"
            spec["containers"] = [
                {
                    **c,
                    "env": [
                        *(c.get("env") or []),
                        {"name": "JOB_COMPLETION_INDEX", "value": str(index)},
                    ],
                }
                for c in spec.get("containers") or []
            ]
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns_of(job),
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name_of(job),
                        "uid": m.get("uid"),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": spec,
        }
        created = await self.api.create(PODS, body, ns_of(job))
        if created is not None:
            await record_event(
                self.api,
                job,
                JOBS,
                "Normal",
                "SuccessfulCreate",
                f"Created pod: {name}",
                COMPONENT,
                self.wall(),
            )
        return created

    async def _ttl(self, job: Obj, st: _JobState, now: float) -> None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        if st.finished_at is None:
            st.finished_at = now
        if now - st.finished_at >= float(ttl):
            await self.api.delete(JOBS, name_of(job), ns_of(job), propagation="Foreground")


def _ranges(indexes: Sequence[int]) -> str:
    out: list[str] = []
    start = prev = None
    for i in indexes:
        if start is None:
            start = prev = i
        elif prev is not None and i == prev + 1:
            prev = i
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = i
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ",".join(out)
