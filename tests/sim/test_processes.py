"""The kubelet's process handling: path rewriting, $(VAR) expansion, exit codes.

References: kubernetes.io/docs/tasks/inject-data-application/define-command-argument-container/
(``$(VAR)`` expansion, ``$$`` escape), /docs/concepts/workloads/pods/pod-lifecycle/
#container-state-terminated (signal deaths reported as 128 + signal).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from hosted_engine.lab.sim.kubelet import _expand, executes, qos_class
from hosted_engine.lab.sim.processes import (
    ContainerLog,
    ContainerProcess,
    exit_code_of,
    rewrite_path,
)


def test_mount_paths_are_rewritten_only_where_they_are_paths() -> None:
    mounts = {"/hooks": "/tmp/h", "/scratch/": "/tmp/s"}
    assert rewrite_path("/hooks/run.sh", mounts) == "/tmp/h/run.sh"
    assert rewrite_path("touch /scratch/x; ls /scratch", mounts) == "touch /tmp/s/x; ls /tmp/s"
    assert rewrite_path("--dir=/hooks", mounts) == "--dir=/tmp/h"
    assert rewrite_path("/var/hooks/x", mounts) == "/var/hooks/x"
    assert rewrite_path("/hooksfoo", mounts) == "/hooksfoo"


def test_variable_expansion_like_the_kubelet() -> None:
    env = {"A": "1", "B": "two"}
    assert _expand("$(A)-$(B)", env) == "1-two"
    assert _expand("$(MISSING)", env) == "$(MISSING)"
    assert _expand("$$(A) $$$$", env) == "$(A) $$"


def test_signal_deaths_are_128_plus_signal() -> None:
    assert exit_code_of(-9) == 137
    assert exit_code_of(-15) == 143
    assert exit_code_of(3) == 3


def test_which_pods_run_as_processes_and_their_qos() -> None:
    job_pod = {"metadata": {"labels": {"batch.kubernetes.io/job-name": "j"}}}
    assert executes(job_pod)
    assert not executes({"metadata": {"labels": {"kubevirt.io": "virt-launcher"}}})
    assert executes({"metadata": {"annotations": {"lab.hostedengine.io/exec": "true"}}})
    guaranteed = {
        "spec": {
            "containers": [
                {
                    "resources": {
                        "limits": {"cpu": "1", "memory": "1Gi"},
                        "requests": {"cpu": "1", "memory": "1Gi"},
                    }
                }
            ]
        }
    }
    assert qos_class(guaranteed) == "Guaranteed"
    assert qos_class({"spec": {"containers": [{}]}}) == "BestEffort"


async def test_a_stubborn_process_is_killed_after_the_grace(tmp_path: Path) -> None:
    log = ContainerLog()
    proc = ContainerProcess(log)
    await proc.start(
        ["/bin/sh", "-c", "trap '' TERM; echo ready; sleep 30"], {"PATH": "/usr/bin:/bin"}, tmp_path
    )
    while "ready" not in log.text():
        await asyncio.sleep(0.01)
    await proc.stop(grace=0.1)
    assert await proc.wait() == 137


async def test_a_missing_command_exits_127_with_a_message(tmp_path: Path) -> None:
    log = ContainerLog()
    proc = ContainerProcess(log)
    await proc.start(["/no/such/binary"], {}, tmp_path)
    assert await proc.wait() == 127
    assert "/no/such/binary" in log.text()
