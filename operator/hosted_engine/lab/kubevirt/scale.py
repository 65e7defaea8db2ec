"""A lab at scale for benchmarks: N nodes, V KubeVirt VMs created in bulk, wait until Running.

>>> lab = await start_scale_lab(hosts=1000, vms=10000)          # doctest: +SKIP
>>> ...                                                         # measure something
>>> await lab.stop()                                            # doctest: +SKIP

or, on a lab already running (e.g. in a :class:`~hosted_engine.lab.sim.runner.LabRunner`'s
loop, with the operator's CRDs installed first)::

    await create_vms(lab, 10000, namespace="bench")
    await wait_vms_running(lab, 10000, namespace="bench", timeout=1800)

Every VM goes through the real path (the API server with its admission and CRD validation,
virt-controller, the scheduler, the kubelets, the guest boot): nothing is written behind the
simulators' backs, so what the operator sees is what a real cluster would show. The time to
all Running is bounded by the simulators' CPU: about 19 ms per VM (10,000 VMs on 1,000 nodes:
188 CPU-s, 423 s on a shared machine, see docs/benchmarks.md); shorter ``LabTimings``
(``vm_boot_time``, ``virt_launcher_start_delay``, ``pod_start_delay``) cut the fixed delays,
not the CPU.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hosted_engine.lab.kubevirt.resources import VMIS, VMS
from hosted_engine.lab.sim.api import NAMESPACES, Obj, meta, ns_of

if TYPE_CHECKING:
    from hosted_engine.lab.sim.lab import Lab
    from hosted_engine.lab.sim.timings import LabTimings


def tune_gc(threshold0: int = 50_000) -> None:
    """Make CPython's cyclic garbage collector affordable for a process holding a big lab.

    A lab with 10,000 VMs keeps millions of small dicts alive; with the default thresholds
    (700, 10, 10) the collector scans them again and again (a third of the lab's CPU in a
    2,000-VM profile). This moves what exists now to the permanent generation
    (:func:`gc.freeze`) and collects the youngest generation less often. Process-wide: for
    benchmark processes, not for a test suite."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold0, max(gen1, 20), max(gen2, 100))


def vm_body(index: int, namespace: str = "bench", *, memory: str = "128Mi",
            cpu: str = "100m", prefix: str = "vm-") -> Obj:
    """A small VirtualMachine (``runStrategy: Always``, pod network, no disks)."""
    return {
        "apiVersion": VMS.api_version,
        "kind": VMS.kind,
        "metadata": {"name": f"{prefix}{index}", "namespace": namespace},
        "spec": {
            "runStrategy": "Always",
            "template": {
                "spec": {
                    "domain": {
                        "cpu": {"cores": 1},
                        "memory": {"guest": memory},
                        "resources": {"requests": {"cpu": cpu}},
                        "devices": {"interfaces": [{"name": "default", "masquerade": {}}]},
                    },
                    "networks": [{"name": "default", "pod": {}}],
                }
            },
        },
    }


async def create_vms(
    lab: Lab,
    count: int,
    namespace: str = "bench",
    *,
    body: Callable[[int, str], Obj] | None = None,
    start: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> float:
    """Create the namespace (if missing) and ``count`` VMs (``vm-<start>`` ..); seconds taken.

    ``body(index, namespace)`` makes each VM (default :func:`vm_body`); ``progress(created,
    seconds)`` is called every 1,000 VMs. The event loop is yielded to between creates, so the
    simulators keep running meanwhile."""
    make = body or (lambda i, ns: vm_body(i, ns))
    t0 = time.monotonic()
    await lab.api.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    for i in range(start, start + count):
        await lab.client.create(VMS.group, VMS.version, VMS.plural, make(i, namespace),
                                namespace)
        done = i - start + 1
        if done % 100 == 0:
            await asyncio.sleep(0)
        if progress is not None and done % 1000 == 0:
            progress(done, time.monotonic() - t0)
    return time.monotonic() - t0


def vms_running(lab: Lab, namespace: str | None = "bench") -> int:
    """VMIs in phase Running (``namespace`` None: all), from the lab's VMI informer."""
    return sum(
        1
        for vmi in lab.informer(VMIS).items()
        if (namespace is None or ns_of(vmi) == namespace)
        and (vmi.get("status") or {}).get("phase") == "Running"
        and not meta(vmi).get("deletionTimestamp")
    )


async def wait_vms_running(
    lab: Lab,
    count: int,
    namespace: str | None = "bench",
    *,
    timeout: float = 1800.0,
    progress: Callable[[int, float], None] | None = None,
    progress_every: float = 30.0,
) -> float:
    """Wait until ``count`` VMIs are Running; the seconds waited. TimeoutError after
    ``timeout`` (with how many were Running). ``progress(running, seconds)`` every
    ``progress_every`` seconds."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    last = t0
    while True:
        running = vms_running(lab, namespace)
        now = loop.time()
        if running >= count:
            return now - t0
        if now - t0 > timeout:
            raise TimeoutError(f"{running} of {count} VMIs Running after {timeout:g}s")
        if progress is not None and now - last >= progress_every:
            last = now
            progress(running, now - t0)
        await asyncio.sleep(min(1.0, max(lab.timings.tick, 0.01)))


async def start_scale_lab(
    hosts: int = 1000,
    vms: int = 10000,
    *,
    namespace: str = "bench",
    timings: LabTimings | None = None,
    timeout: float = 1800.0,
    progress: Callable[[str, int, float], None] | None = None,
    gc_tuning: bool = True,
    **lab_options: Any,
) -> Lab:
    """Start a :class:`~hosted_engine.lab.sim.lab.Lab` with ``hosts`` nodes (real timings unless
    ``timings``; no BMCs and plain HTTP unless ``lab_options`` say otherwise), create ``vms``
    VMs in ``namespace`` and wait until all run. The caller stops the lab
    (``await lab.stop()``); it is stopped here if the VMs do not all start in ``timeout``.
    ``progress(stage, count, seconds)``: stage "created" or "running". ``gc_tuning``: call
    :func:`tune_gc` first (process-wide; say False inside a test suite)."""
    from hosted_engine.lab.sim.lab import Lab
    from hosted_engine.lab.sim.timings import LabTimings

    if gc_tuning:
        tune_gc()
    lab_options.setdefault("bmc", False)
    lab_options.setdefault("tls_enabled", False)
    lab = Lab(hosts=hosts, timings=timings or LabTimings(), plugins=True, **lab_options)
    await lab.start()
    try:
        def on_created(n: int, s: float) -> None:
            if progress is not None:
                progress("created", n, s)

        def on_running(n: int, s: float) -> None:
            if progress is not None:
                progress("running", n, s)

        await create_vms(lab, vms, namespace, progress=on_created)
        await wait_vms_running(lab, vms, namespace, timeout=timeout, progress=on_running)
    except BaseException:
        await lab.stop()
        raise
    return lab
