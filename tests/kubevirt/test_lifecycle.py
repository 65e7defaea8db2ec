"""VM and VMI lifecycle on the lab: runStrategy, virt-launcher pods, printableStatus, guests.

Behaviour from shared/reference/k8s-anchors.md §1.1-§1.2 and §1.10.
"""

from __future__ import annotations

from hosted_engine.lab.kubevirt.resources import VMS
from hosted_engine.lab.sim.api import PODS
from kvlab import NS, KubeVirtLab, vm_body


async def test_always_vm_runs_with_a_launcher_pod_and_an_ip(kvlab: KubeVirtLab) -> None:
    await kvlab.api.create(VMS, vm_body("web", "Always"), NS)
    vmi = await kvlab.wait_phase("web", "Running")
    status = vmi["status"]
    assert status["nodeName"].startswith("node-")
    ip = status["interfaces"][0]["ipAddress"]
    assert ip.startswith("127.77.")
    phases = [p["phase"] for p in status["phaseTransitionTimestamps"]]
    assert phases == ["Pending", "Scheduling", "Scheduled", "Running"]
    pods = await kvlab.api.list(PODS, NS, label_selector="kubevirt.io=virt-launcher")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["nodeName"] == status["nodeName"]
    assert pod["metadata"]["labels"]["kubevirt.io/created-by"] == vmi["metadata"]["uid"]
    requests = pod["spec"]["containers"][0]["resources"]["requests"]
    assert int(requests["memory"]) > 1024**3  # the guest's memory plus the launcher overhead
    await kvlab.wait_printable("web", "Running")
    vm = await kvlab.vm("web")
    assert vm["status"]["ready"] is True
    assert vm["status"]["runStrategy"] == "Always"
    ready = {c["type"]: c["status"] for c in vm["status"]["conditions"]}
    assert ready["Ready"] == "True" and ready["LiveMigratable"] == "True"
