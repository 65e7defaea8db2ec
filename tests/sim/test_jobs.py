"""Jobs: the kubelet runs the container's command as a local process; the Job controller counts.

References: kubernetes.io/docs/concepts/workloads/controllers/job/ (backoffLimit, pod backoff
failure policy, activeDeadlineSeconds, terminal conditions SuccessCriteriaMet/FailureTarget then
Complete/Failed), /docs/concepts/workloads/pods/pod-lifecycle/#container-states,
docs/decisions/0004-hook-jobs.md.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from hosted_engine.lab.apiserver import ApiError
from hosted_engine.lab.sim.api import CONFIGMAPS, JOBS, PODS, SECRETS, Obj
from hosted_engine.lab.sim.lab import Lab
from simhelpers import cond, events_for, job


def job_obj(lab: Lab, name: str) -> Obj:
    obj = lab.informer(JOBS).get(name, "default")
    assert obj is not None
    return obj


def job_pods(lab: Lab, name: str) -> list[Obj]:
    return sorted(
        (
            p
            for p in lab.informer(PODS).items()
            if (p["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name") == name
        ),
        key=lambda p: p["metadata"]["creationTimestamp"] + p["metadata"]["name"],
    )


def finished(lab: Lab, name: str) -> str | None:
    obj = lab.informer(JOBS).get(name, "default")
    for ctype in ("Complete", "Failed"):
        if cond(obj, ctype).get("status") == "True":
            return ctype
    return None


async def wait_finished(lab: Lab, name: str, timeout: float = 10) -> str:
    await lab.wait_for(lambda: finished(lab, name) is not None, timeout=timeout)
    result = finished(lab, name)
    assert result is not None
    return result


async def pod_log(lab: Lab, pod: Obj) -> str:
    raw = await lab.client.request(
        "GET", f"/api/v1/namespaces/default/pods/{pod['metadata']['name']}/log"
    )
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def test_exit_zero_completes_the_job_with_logs(sim_lab: Lab) -> None:
    await sim_lab.api.create(
        JOBS, job("ok", "echo started on $HOSTNAME; echo done >&2; exit 0"), "default"
    )
    assert await wait_finished(sim_lab, "ok") == "Complete"
    obj = job_obj(sim_lab, "ok")
    assert obj["status"]["succeeded"] == 1 and obj["status"]["active"] == 0
    assert obj["status"]["completionTime"] and obj["status"]["startTime"]
    assert cond(obj, "SuccessCriteriaMet")["status"] == "True"
    (pod,) = job_pods(sim_lab, "ok")
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    text = await pod_log(sim_lab, pod)
    assert f"started on {pod['metadata']['name']}" in text  # HOSTNAME is the pod's name
    assert "done" in text  # stderr is in the log too
    assert await events_for(sim_lab, "ok", "Completed")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"


async def test_a_failing_command_fails_the_job_with_its_exit_code(sim_lab: Lab) -> None:
    await sim_lab.api.create(JOBS, job("bad", "echo oops; exit 3"), "default")
    assert await wait_finished(sim_lab, "bad") == "Failed"
    failed = cond(job_obj(sim_lab, "bad"), "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert cond(job_obj(sim_lab, "bad"), "FailureTarget")["status"] == "True"
    (pod,) = job_pods(sim_lab, "bad")
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert "oops" in await pod_log(sim_lab, pod)


async def test_backoff_limit_counts_failed_pods(sim_lab: Lab) -> None:
    await sim_lab.api.create(JOBS, job("retry", "exit 1", backoffLimit=2), "default")
    assert await wait_finished(sim_lab, "retry") == "Failed"
    assert job_obj(sim_lab, "retry")["status"]["failed"] == 3
    assert len(job_pods(sim_lab, "retry")) == 3
    created = await events_for(sim_lab, "retry", "SuccessfulCreate")
    assert len(created) == 3


async def test_active_deadline_kills_the_running_pod(sim_lab: Lab) -> None:
    await sim_lab.api.create(
        JOBS, job("slow", "sleep 30", activeDeadlineSeconds=1, backoffLimit=3), "default"
    )
    assert await wait_finished(sim_lab, "slow") == "Failed"
    assert cond(job_obj(sim_lab, "slow"), "Failed")["reason"] == "DeadlineExceeded"
    await sim_lab.wait_for(lambda: not job_pods(sim_lab, "slow"), timeout=5)
    assert job_obj(sim_lab, "slow")["status"]["active"] == 0


async def test_hook_script_from_configmap_with_secret_env_and_payload(sim_lab: Lab) -> None:
    script = 'echo "payload=$1 token=$TOKEN node=$NODE"\ncat "$2"\nexit 70\n'
    await sim_lab.api.create(
        CONFIGMAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "hooks", "namespace": "default"},
            "data": {"pre-flight": script},
        },
        "default",
    )
    await sim_lab.api.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hook-secret", "namespace": "default"},
            "data": {
                "token": base64.b64encode(b"s3cr3t").decode(),
                "note": base64.b64encode(b"from a secret volume").decode(),
            },
        },
        "default",
    )
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeName": "node-2",
        "containers": [
            {
                "name": "hook",
                "image": "registry.example/runner:1",
                # mount paths in arguments are rewritten to the volumes' local directories
                "command": ["/bin/sh", "/hooks/run.sh", "maintenance", "/etc/extra/note"],
                "env": [
                    {
                        "name": "TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "hook-secret", "key": "token"}},
                    },
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                ],
                "volumeMounts": [
                    {"name": "hooks", "mountPath": "/hooks"},
                    {"name": "extra", "mountPath": "/etc/extra"},
                ],
            }
        ],
        "volumes": [
            {
                "name": "hooks",
                "configMap": {
                    "name": "hooks",
                    "defaultMode": 0o755,
                    "items": [{"key": "pre-flight", "path": "run.sh"}],
                },
            },
            {"name": "extra", "secret": {"secretName": "hook-secret"}},
        ],
    }
    await sim_lab.api.create(JOBS, job("hook", "", template_spec=spec), "default")
    assert await wait_finished(sim_lab, "hook") == "Failed"
    (pod,) = job_pods(sim_lab, "hook")
    assert pod["spec"]["nodeName"] == "node-2"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 70
    text = await pod_log(sim_lab, pod)
    assert "payload=maintenance token=s3cr3t node=node-2" in text
    assert "from a secret volume" in text


async def test_a_missing_secret_key_keeps_the_container_waiting(sim_lab: Lab) -> None:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "hook",
                "image": "x",
                "command": ["true"],
                "env": [
                    {"name": "T", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}
                ],
            }
        ],
    }
    await sim_lab.api.create(JOBS, job("cfg", "", template_spec=spec), "default")
    await sim_lab.wait_for(
        lambda: any(
            (cs.get("state") or {}).get("waiting", {}).get("reason") == "CreateContainerConfigError"
            for p in job_pods(sim_lab, "cfg")
            for cs in (p.get("status") or {}).get("containerStatuses") or []
        ),
        timeout=5,
    )
    assert finished(sim_lab, "cfg") is None


async def test_completions_and_parallelism(sim_lab: Lab) -> None:
    await sim_lab.api.create(JOBS, job("many", "exit 0", completions=3, parallelism=2), "default")
    assert await wait_finished(sim_lab, "many") == "Complete"
    assert job_obj(sim_lab, "many")["status"]["succeeded"] == 3
    assert len(job_pods(sim_lab, "many")) == 3


async def test_indexed_job_gives_each_pod_its_index(sim_lab: Lab) -> None:
    await sim_lab.api.create(
        JOBS,
        job(
            "idx",
            "echo index=$JOB_COMPLETION_INDEX",
            completions=2,
            parallelism=2,
            completionMode="Indexed",
        ),
        "default",
    )
    assert await wait_finished(sim_lab, "idx") == "Complete"
    assert job_obj(sim_lab, "idx")["status"]["completedIndexes"] == "0-1"
    logs = sorted([await pod_log(sim_lab, p) for p in job_pods(sim_lab, "idx")])
    assert logs == ["index=0\n", "index=1\n"]


async def test_on_failure_restarts_the_container_in_place(sim_lab: Lab) -> None:
    script = "if [ -f /scratch/tried ]; then echo second; exit 0; fi; touch /scratch/tried; exit 1"
    spec: dict[str, Any] = {
        "restartPolicy": "OnFailure",
        "containers": [
            {
                "name": "hook",
                "image": "x",
                "command": ["/bin/sh", "-c", script],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            }
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    }
    await sim_lab.api.create(JOBS, job("again", "", backoffLimit=3, template_spec=spec), "default")
    assert await wait_finished(sim_lab, "again") == "Complete"
    (pod,) = job_pods(sim_lab, "again")
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 1


async def test_power_loss_kills_the_job_process_and_the_api_keeps_running(
    sim_lab: Lab, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeName": "node-1",
        "containers": [
            {
                "name": "hook",
                "image": "x",
                "command": ["/bin/sh", "-c", f"echo $$$$ > {pidfile}; exec sleep 30"],
            }
        ],
    }
    await sim_lab.api.create(JOBS, job("victim", "", template_spec=spec), "default")
    await sim_lab.wait_for(
        lambda: pidfile.exists() and pidfile.read_text().strip() != "", timeout=5
    )
    await sim_lab.wait_for(
        lambda: [p["status"].get("phase") for p in job_pods(sim_lab, "victim")] == ["Running"],
        timeout=5,
    )
    pid = int(pidfile.read_text())
    await sim_lab.faults.fail_node("node-1")

    def dead() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await sim_lab.wait_for(dead, timeout=5)
    await sim_lab.settle(5)
    (pod,) = job_pods(sim_lab, "victim")
    assert pod["status"]["phase"] == "Running"
    try:
        await pod_log(sim_lab, pod)
    except ApiError as exc:
        assert exc.code == 500 and "10250" in exc.message
    else:
        raise AssertionError("logs of a pod on a dead node must not be served")
