"""Randomized partitions and faults on the full lab (the real operator, in a thread, with its
Hosts and BMCs): a seed draws a sequence of faults on the engine's host or another one (power
loss, a partition from the API of a few seconds, a guest crash, a hung guest; every kind once
in a seeded order, then random ones), each healed after a random delay, then the cluster must
converge (engine Up and Available, every Host Up).

Checked all along from the lab's side, every 50 ms:
* never two engines: at most one engine guest process alive in the KubeVirt simulator,
  counting the guests left running on a partitioned machine after the cluster let go of them;
* never a fence without need: no BMC power-off command reaches a machine that runs, is
  reachable and has not been cut off from the API within the last 5 s (its Lease is fresh).

CI runs one lab with 5 faults in sequence; HE_LONG_TESTS=1 runs 4 labs of 6 faults. A failure
names the seed, the fault sequence and what was seen.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator

import pytest
from harness import HOSTEDENGINES, HOSTS, Cluster, LabCluster, OperatorThread, field, wait_for
from hosted_engine.lab.bmc.power import PowerCause
from hosted_engine.lab.kubevirt.plugin import _SIMS
from hosted_engine.lab.sim.timings import LabTimings
from hostedengine_lab import (
    ALL_NODES,
    HOST_ENV,
    NAME,
    NS,
    engine_vmi,
    he_body,
    lab_call,
    prepare,
    wait_up,
)

pytestmark = pytest.mark.lab

LONG = os.environ.get("HE_LONG_TESTS") == "1"
SEEDS = [11, 12, 13, 14] if LONG else [11]
FAULTS = 6 if LONG else 5
KINDS = ("power_loss", "partition", "partition_other", "crash", "hang")


@pytest.fixture(autouse=True)
def _operator_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in HOST_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def lab_cluster() -> Iterator[LabCluster]:
    with LabCluster(3, timings=LabTimings.fast(), bmc=True) as lab:
        yield lab


class Monitor:
    """Samples the lab's truth in its own loop and records invariant violations."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.lab = cluster.lab.lab
        self.sim = _SIMS[id(self.lab)]
        self.violations: list[str] = []
        self.cut_until: dict[str, float] = {}  # node -> monotonic time its Lease is fresh again
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        for name in ALL_NODES:
            self._watch_power(name)

    def _watch_power(self, name: str) -> None:
        power = self.lab.power[name]
        monitor = self

        class Commands(list[PowerCause]):
            def append(self, cause: PowerCause) -> None:
                if cause is PowerCause.OFF:
                    monitor.on_power_off(name)
                super().append(cause)

        power.commands = Commands(power.commands)

    def on_power_off(self, name: str) -> None:
        machine = self.lab.nodes[name]
        alive = machine.running() and not machine.partitioned
        if alive and time.monotonic() >= self.cut_until.get(name, 0.0):
            self.violations.append(f"BMC power-off of {name}, which runs, is reachable and "
                                   "has a fresh Lease")

    def cut(self, name: str) -> None:
        self.cut_until[name] = float("inf")

    def reconnected(self, name: str) -> None:
        self.cut_until[name] = time.monotonic() + 5.0

    def _engine_guests(self) -> list[str]:
        async def read() -> list[str]:
            alive = [g for g in self.sim.guests.values() if g.alive]
            alive += [g for gs in self.sim.orphans.values() for g in gs if g.alive]
            return [g.node for g in alive if g.key == (NS, NAME)]

        result: list[str] = self.cluster.lab.runner.call(read)
        return result

    def _run(self) -> None:
        while not self._stop.is_set():
            guests = self._engine_guests()
            self.samples += 1
            if len(guests) > 1:
                self.violations.append(f"two engines running, on {sorted(guests)}")
            self._stop.wait(0.05)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def converged(cluster: Cluster, what: str, timeout: float = 120) -> None:
    wait_up(cluster, timeout=timeout)
    for name in ALL_NODES:
        cluster.wait_field(HOSTS, name, "status.state", "Up", timeout=timeout)
    wait_for(f"{what}: the engine guest alone and running",
             lambda: field(cluster.get(HOSTEDENGINES, NAME, NS), "status.engine.health")
             == "good", timeout=timeout)
    # the status can say "good" a moment before the VMI of a replaced guest exists: a VM fault
    # needs the running VMI on the engine's host
    def vmi_running() -> bool:
        vmi = engine_vmi(cluster)
        host = field(cluster.get(HOSTEDENGINES, NAME, NS), "status.host")
        return bool(vmi) and field(vmi, "status.phase") == "Running" \
            and field(vmi, "status.nodeName") == host
    wait_for(f"{what}: the engine VMI running on the engine's host", vmi_running,
             timeout=timeout)


def apply(cluster: Cluster, monitor: Monitor, rng: random.Random, kind: str) -> str:
    """One fault, healed after a random delay; returns what was done."""
    engine = str(field(cluster.get(HOSTEDENGINES, NAME, NS), "status.host"))
    others = [n for n in ALL_NODES if n != engine]
    delay = round(rng.uniform(0.5, 6.0), 1)
    if kind == "power_loss":
        lab_call(cluster, lambda lab: lab.faults.fail_node(engine))
        wait_up(cluster, avoid=engine, timeout=90)
        monitor.reconnected(engine)
        lab_call(cluster, lambda lab: lab.faults.recover_node(engine))
        return f"power loss of {engine}"
    if kind in ("partition", "partition_other"):
        node = engine if kind == "partition" else rng.choice(others)
        monitor.cut(node)
        lab_call(cluster, lambda lab: lab.faults.partition_node(node))
        time.sleep(delay)  # the fault's duration (not a wait for a state)
        monitor.reconnected(node)
        lab_call(cluster, lambda lab: lab.faults.heal_partition(node))
        # fenced meanwhile: the machine is off; repair it
        lab_call(cluster, lambda lab: lab.faults.recover_node(node))
        return f"partition of {node} for {delay}s"
    if kind == "crash":
        lab_call(cluster, lambda lab: lab.faults.crash_vm(NS, NAME))
        return f"engine crash on {engine}"
    lab_call(cluster, lambda lab: lab.faults.hang_guest(NS, NAME))
    time.sleep(delay)  # the fault's duration
    lab_call(cluster, lambda lab: lab.faults.heal_guest(NS, NAME))
    return f"hung guest on {engine} for {delay}s"


@pytest.mark.parametrize("seed", SEEDS)
def test_random_faults_never_two_engines_never_a_needless_fence(
        seed: int, lab_cluster: LabCluster) -> None:
    rng = random.Random(seed)
    operator = OperatorThread(lab_cluster.kubeconfig).start()
    done: list[str] = []
    try:
        cluster = Cluster(lab_cluster, operator)
        prepare(cluster)
        cluster.create(HOSTEDENGINES, he_body())
        converged(cluster, f"seed {seed} at the start", timeout=90)
        with Monitor(cluster) as monitor:
            # every kind once, in a seeded order, then random ones
            kinds = rng.sample(KINDS, len(KINDS))
            kinds += [rng.choice(KINDS) for _ in range(FAULTS - len(kinds))]
            for kind in kinds:
                done.append(apply(cluster, monitor, rng, kind))
                converged(cluster, f"seed {seed} after {done}")
                assert not monitor.violations, (seed, done, monitor.violations)
        assert monitor.samples > 10
        assert not monitor.violations, (seed, done, monitor.violations)
    finally:
        operator.stop()

