"""Host scores for the hosted engine, on oVirt's scale (base 3400), in pure code.

The formula follows ``ovirt-hosted-engine-ha`` ``agent/states.py`` (shared/reference/ovirt-he-ha.md
§2.1), restricted to what the issue asks for::

    score = base (3400)
      - int((1 - network) * 1600)     network = fraction of network probes that succeeded;
                                      1.0 = all fine, 0.0 = network unavailable (-1600)
      - cpu penalty                   int((L - 0.4) / (0.9 - 0.4) * 1000) clamped to [0, 1000],
                                      L = non-engine CPU load 0..1 (40 % -> 0, >= 90 % -> 1000)
      - 400                           free memory < engine memory (not on the host already
                                      running the engine: its memory is in use by the engine)
      - 50 * n                        n = recent failed starts on the host, 1 <= n <= 3
    = 0                               n > 3 (oVirt's ENGINE_RETRY_MAX_ATTEMPTS), or the host is not
                                      Ready, is in local maintenance, is lost (silent / BMC off) or
                                      fenced
    score = max(0, score)

A score of 0 means "never place the engine here". Ties are broken deterministically (a preferred
host, e.g. the one that last ran the engine, then by name) because one central operator decides,
unlike oVirt's agents, which all started on a tie and let the sanlock lease pick a winner.

Deliberate differences from oVirt:

* No management-bridge (-600) or stale-config (-1000) penalty: neither exists on KubeVirt.
* The network penalty takes a *fraction* of probes so a handler can probe several targets; oVirt
  pinged one gateway and lost 1600 points on a single blocked ICMP (its weakness §7.3).
* Lost and fenced hosts score 0 (oVirt simply stopped seeing them).
* The failed-start penalty works (oVirt's reset every loop, §2.4); the caller decides what
  "recent" means and passes the count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScoreWeights:
    """oVirt's ``agent.conf [score]`` defaults."""

    base: int = 3400
    network_penalty: int = 1600
    cpu_penalty_max: int = 1000
    cpu_load_min: float = 0.4
    cpu_load_max: float = 0.9
    memory_penalty: int = 400
    failed_start_penalty: int = 50
    failed_start_max: int = 3


@dataclass(frozen=True)
class HostFacts:
    """What the score of one host depends on (already reduced from raw observations)."""

    name: str
    ready: bool = True
    alive: bool = True
    fenced: bool = False
    local_maintenance: bool = False
    network: float = 1.0
    cpu_load: float = 0.0
    free_memory: int = 0
    runs_engine: bool = False
    recent_failed_starts: int = 0


@dataclass(frozen=True)
class Penalty:
    reason: str
    points: int


@dataclass(frozen=True)
class HostScore:
    host: str
    score: int
    penalties: tuple[Penalty, ...] = ()
    zero_reason: str | None = None
    free_memory: int = 0

    @property
    def eligible(self) -> bool:
        return self.score > 0

    def explain(self) -> str:
        """One line for status and messages, e.g. ``h2 1800 (network unavailable -1600)``."""
        if self.zero_reason is not None:
            return f"{self.host} 0 ({self.zero_reason})"
        if not self.penalties:
            return f"{self.host} {self.score}"
        parts = ", ".join(f"{p.reason} -{p.points}" for p in self.penalties)
        return f"{self.host} {self.score} ({parts})"


def cpu_penalty(load: float, weights: ScoreWeights = ScoreWeights()) -> int:
    span = weights.cpu_load_max - weights.cpu_load_min
    if span <= 0:
        return weights.cpu_penalty_max if load >= weights.cpu_load_max else 0
    raw = int((load - weights.cpu_load_min) / span * weights.cpu_penalty_max)
    return max(0, min(weights.cpu_penalty_max, raw))


def network_penalty(network: float, weights: ScoreWeights = ScoreWeights()) -> int:
    fraction = max(0.0, min(1.0, network))
    return round((1.0 - fraction) * weights.network_penalty)


def score_host(
    facts: HostFacts, engine_memory: int, weights: ScoreWeights = ScoreWeights()
) -> HostScore:
    zero: str | None = None
    if facts.fenced:
        zero = "fenced"
    elif not facts.alive:
        zero = "lost"
    elif not facts.ready:
        zero = "not Ready"
    elif facts.local_maintenance:
        zero = "local maintenance"
    elif facts.recent_failed_starts > weights.failed_start_max:
        zero = f"{facts.recent_failed_starts} recent failed starts"
    if zero is not None:
        return HostScore(facts.name, 0, (), zero, facts.free_memory)

    penalties: list[Penalty] = []
    net = network_penalty(facts.network, weights)
    if net:
        reason = "network unavailable" if facts.network <= 0 else "network degraded"
        penalties.append(Penalty(reason, net))
    cpu = cpu_penalty(facts.cpu_load, weights)
    if cpu:
        penalties.append(Penalty(f"CPU load {round(facts.cpu_load * 100)}%", cpu))
    if not facts.runs_engine and facts.free_memory < engine_memory:
        penalties.append(Penalty("not enough free memory", weights.memory_penalty))
    if facts.recent_failed_starts > 0:
        n = facts.recent_failed_starts
        penalties.append(Penalty(f"{n} recent failed start(s)", weights.failed_start_penalty * n))
    score = max(0, weights.base - sum(p.points for p in penalties))
    return HostScore(facts.name, score, tuple(penalties), None, facts.free_memory)


def score_hosts(
    hosts: Iterable[HostFacts], engine_memory: int, weights: ScoreWeights = ScoreWeights()
) -> tuple[HostScore, ...]:
    """Scores of all hosts, sorted by host name."""
    return tuple(
        sorted((score_host(h, engine_memory, weights) for h in hosts), key=lambda s: s.host)
    )


def best_host(
    scores: Iterable[HostScore], *, exclude: Iterable[str] = (), prefer: str | None = None
) -> HostScore | None:
    """The eligible host with the highest score; ties go to ``prefer``, then to the first name."""
    excluded = set(exclude)
    candidates = [s for s in scores if s.eligible and s.host not in excluded]
    if not candidates:
        return None
    return min(candidates, key=lambda s: (-s.score, s.host != prefer, s.host))


def move_target(
    scores: Sequence[HostScore], current: str, hysteresis: int = 800
) -> HostScore | None:
    """A host the running engine should move to: one that leads ``current`` by >= hysteresis."""
    mine = next((s for s in scores if s.host == current), None)
    my_score = mine.score if mine is not None else 0
    target = best_host(scores, exclude=(current,))
    if target is not None and target.score >= my_score + hysteresis:
        return target
    return None


@dataclass(frozen=True)
class SparesVerdict:
    """oVirt's HeSparesCount: how many *other* allowed hosts keep room for the engine."""

    satisfied: bool
    required: int
    available: int
    hosts: tuple[str, ...] = field(default_factory=tuple)
    engine_memory: int = 0

    def message(self) -> str:
        names = ", ".join(self.hosts) if self.hosts else "none"
        return (
            f"{self.available} of {self.required} required spare host(s) have room for the "
            f"engine ({self.engine_memory} bytes): {names}"
        )


def spares(
    scores: Iterable[HostScore], engine_host: str | None, engine_memory: int, required: int
) -> SparesVerdict:
    """Hosts other than ``engine_host`` that score > 0 and have the engine's memory free."""
    room = tuple(
        sorted(
            s.host
            for s in scores
            if s.host != engine_host and s.eligible and s.free_memory >= engine_memory
        )
    )
    return SparesVerdict(len(room) >= required, required, len(room), room, engine_memory)
