"""Host scores on oVirt's scale: every penalty, every zero, ties, hysteresis, spares, backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hosted_engine.logic.backoff import Backoff
from hosted_engine.logic.scoring import (
    HostFacts,
    HostScore,
    ScoreWeights,
    best_host,
    cpu_penalty,
    move_target,
    network_penalty,
    score_host,
    score_hosts,
    spares,
)
from hypothesis import given, settings
from hypothesis import strategies as st

GIB = 1 << 30
ENGINE = 8 * GIB


def facts(**kw: object) -> HostFacts:
    base: dict[str, object] = {"name": "h1", "free_memory": 16 * GIB}
    base.update(kw)
    return HostFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "expected", "penalty"),
    [
        ({}, 3400, None),
        ({"network": 0.0}, 1800, "network unavailable"),
        ({"network": 0.8}, 3080, "network degraded"),
        ({"cpu_load": 0.4}, 3400, None),
        ({"cpu_load": 0.8}, 2600, "CPU load 80%"),
        ({"cpu_load": 0.9}, 2400, "CPU load 90%"),
        ({"cpu_load": 1.0}, 2400, "CPU load 100%"),
        ({"free_memory": 4 * GIB}, 3000, "not enough free memory"),
        ({"recent_failed_starts": 1}, 3350, "1 recent failed start(s)"),
        ({"recent_failed_starts": 3}, 3250, "3 recent failed start(s)"),
    ],
)
def test_each_penalty(kw: dict[str, object], expected: int, penalty: str | None) -> None:
    result = score_host(facts(**kw), ENGINE)
    assert result.score == expected
    assert result.zero_reason is None
    if penalty is None:
        assert result.penalties == ()
    else:
        assert [p.reason for p in result.penalties] == [penalty]
        assert result.penalties[0].points == 3400 - expected


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"ready": False}, "not Ready"),
        ({"local_maintenance": True}, "local maintenance"),
        ({"alive": False}, "lost"),
        ({"fenced": True}, "fenced"),
        ({"recent_failed_starts": 4}, "4 recent failed starts"),
    ],
)
def test_zero_scores(kw: dict[str, object], why: str) -> None:
    result = score_host(facts(**kw), ENGINE)
    assert result.score == 0
    assert not result.eligible
    assert result.zero_reason == why
    assert result.explain() == f"h1 0 ({why})"


def test_memory_penalty_not_applied_to_the_host_running_the_engine() -> None:
    assert score_host(facts(free_memory=0, runs_engine=True), ENGINE).score == 3400
    assert score_host(facts(free_memory=0, runs_engine=False), ENGINE).score == 3000


def test_penalties_add_up_and_clamp_at_zero() -> None:
    result = score_host(
        facts(network=0.0, cpu_load=1.0, free_memory=0, recent_failed_starts=3), ENGINE
    )
    # 3400 - 1600 - 1000 - 400 - 150 = 250
    assert result.score == 250
    assert "network unavailable -1600" in result.explain()
    heavy = ScoreWeights(network_penalty=5000)
    assert score_host(facts(network=0.0), ENGINE, heavy).score == 0


def test_cpu_curve_is_monotonic_and_bounded() -> None:
    values = [cpu_penalty(x / 100) for x in range(0, 101)]
    assert values == sorted(values)
    assert values[0] == 0 and values[40] == 0 and values[100] == 1000
    assert network_penalty(-1.0) == 1600 and network_penalty(2.0) == 0


def test_best_host_highest_score_then_preferred_then_name() -> None:
    scores = score_hosts(
        [facts(name="h3"), facts(name="h2"), facts(name="h1", network=0.0)], ENGINE
    )
    assert [s.host for s in scores] == ["h1", "h2", "h3"]
    best = best_host(scores)
    assert best is not None and best.host == "h2"
    preferred = best_host(scores, prefer="h3")
    assert preferred is not None and preferred.host == "h3"
    assert best_host(scores, exclude=("h2", "h3")) == scores[0]
    assert best_host([HostScore("h9", 0, (), "lost")]) is None


def test_move_needs_a_lead_of_at_least_the_hysteresis() -> None:
    current = HostScore("h1", 2600)
    assert move_target([current, HostScore("h2", 3399)], "h1") is None
    assert move_target([current, HostScore("h2", 3400)], "h1") == HostScore("h2", 3400)
    # One failed probe of one network target (-320) never moves a healthy engine.
    one_bad_probe = score_host(facts(name="h1", network=0.8, runs_engine=True), ENGINE)
    assert move_target([one_bad_probe, HostScore("h2", 3400)], "h1") is None
    # A host that is gone scores 0 and loses to any eligible host.
    assert move_target([HostScore("h1", 0, (), "lost"), HostScore("h2", 800)], "h1") is not None


def test_spares_counts_other_eligible_hosts_with_room() -> None:
    scores = score_hosts(
        [
            facts(name="h1"),
            facts(name="h2", free_memory=2 * GIB),
            facts(name="h3"),
            facts(name="h4", ready=False),
        ],
        ENGINE,
    )
    verdict = spares(scores, "h1", ENGINE, 2)
    assert not verdict.satisfied
    assert (verdict.available, verdict.required, verdict.hosts) == (1, 2, ("h3",))
    assert verdict.message().startswith("1 of 2 required spare host(s)")
    assert spares(scores, "h1", ENGINE, 1).satisfied
    assert spares(scores, None, ENGINE, 2).hosts == ("h1", "h3")


@settings(max_examples=200, deadline=None)
@given(
    base=st.integers(0, 120),
    factor=st.floats(1.0, 4.0),
    extra=st.integers(0, 3600),
    attempts=st.integers(1, 80),
)
def test_backoff_grows_and_is_capped(base: int, factor: float, extra: int, attempts: int) -> None:
    backoff = Backoff(timedelta(seconds=base), factor, timedelta(seconds=base + extra))
    delays = [backoff.delay(n) for n in range(0, attempts + 1)]
    assert delays[0] == timedelta(0)
    assert all(a <= b for a, b in pairwise(delays))
    assert all(d <= backoff.cap for d in delays)
    assert delays[1] == backoff.base
    if factor >= 1.5 and base > 0:
        # Strictly growing until the cap is reached.
        for a, b in pairwise(delays[1:]):
            assert b > a or b == backoff.cap
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert backoff.next_try(attempts, now) == now + delays[attempts]


def test_backoff_huge_attempt_does_not_overflow_and_rejects_bad_config() -> None:
    assert Backoff().delay(10**6) == timedelta(minutes=5)
    with pytest.raises(ValueError):
        Backoff(factor=0.5)
    with pytest.raises(ValueError):
        Backoff(base=timedelta(seconds=10), cap=timedelta(seconds=5))
