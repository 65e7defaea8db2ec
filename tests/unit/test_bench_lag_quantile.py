"""bench/operator_scale.py's reading of the operator's watch-lag histogram: the Prometheus text
page parsed, the window's buckets (difference of two scrapes) and the quantiles estimated from
them as Prometheus' ``histogram_quantile`` does."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from hosted_engine.adapters import metrics
from prometheus_client import CollectorRegistry, Histogram, generate_latest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

ops = importlib.import_module("operator_scale")  # bench/ is no package

INF = float("inf")


def test_quantile_interpolates_inside_the_bucket_of_the_rank() -> None:
    # 10 observations: 4 in (0, 0.1], 4 in (0.1, 1], 2 in (1, 10]
    buckets = {0.1: 4.0, 1.0: 8.0, 10.0: 10.0, INF: 10.0}
    assert ops.histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.9 * 1 / 4)  # rank 5
    assert ops.histogram_quantile(0.2, buckets) == pytest.approx(0.05)  # first bucket from 0
    assert ops.histogram_quantile(0.99, buckets) == pytest.approx(1 + 9 * 1.9 / 2)  # rank 9.9
    assert ops.histogram_quantile(1.0, buckets) == pytest.approx(10.0)
    assert ops.histogram_quantile(0.0, buckets) == pytest.approx(0.0)


def test_quantile_in_the_inf_bucket_is_the_largest_bound_and_empty_is_none() -> None:
    assert ops.histogram_quantile(0.99, {0.1: 1.0, 300.0: 1.0, INF: 100.0}) == 300.0
    assert ops.histogram_quantile(0.5, {0.1: 0.0, INF: 0.0}) is None
    assert ops.histogram_quantile(0.5, {}) is None
    # empty buckets below the rank are skipped, not interpolated into
    assert ops.histogram_quantile(0.5, {0.1: 0.0, 1.0: 0.0, 10.0: 2.0, INF: 2.0}) == \
        pytest.approx(5.5)
    with pytest.raises(ValueError):
        ops.histogram_quantile(1.5, {INF: 1.0})


def test_window_from_two_scrapes_of_a_real_exposition() -> None:
    registry = CollectorRegistry()
    lag = Histogram(ops.WATCH_LAG, "lag", ["kind"],
                    buckets=metrics.WATCH_LAG_BUCKETS, registry=registry)
    other = lag.labels("Node")
    other.observe(100)  # another kind: not read
    before_text = generate_latest(registry).decode()
    empty = ops.parse_histogram(before_text, ops.WATCH_LAG, {"kind": "Lease"})
    assert empty == {}  # no Lease observation yet: no series
    lease = lag.labels("Lease")
    for seconds in (0.5, 40.0):  # before the window
        lease.observe(seconds)
    start = ops.parse_histogram(generate_latest(registry).decode(), ops.WATCH_LAG,
                                {"kind": "Lease"})
    assert start[INF] == 2 and start[0.5] == 1
    for seconds in (0.02, 0.02, 0.03, 0.2, 150.0):  # in the window
        lease.observe(seconds)
    end = ops.parse_histogram(generate_latest(registry).decode(), ops.WATCH_LAG,
                              {"kind": "Lease"})
    window = ops.bucket_delta(start, end)
    assert window[INF] == 5 and window[0.025] == 2 and window[120.0] == 4
    summary = ops.lag_summary(start, end)
    assert summary is not None
    assert summary["count"] == 5
    assert summary["p50_s"] == pytest.approx(0.025 + 0.025 * 0.5 / 1, abs=1e-3)  # rank 2.5
    assert 120 < summary["p99_s"] <= 300
    # a series that appeared during the window: the start counts as zero (7 observations;
    # rank 3.5 falls in (0.1, 0.25] holding the 4th, rank 6.93 in (120, 300] holding the 7th)
    assert ops.lag_summary({}, end) == {"count": 7, "p50_s": 0.1 + 0.15 * 0.5,
                                        "p99_s": round(120 + 180 * 0.93, 3)}
    assert ops.lag_summary(None, end) is None
