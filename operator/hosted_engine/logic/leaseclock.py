"""The lease clock: node Lease silence judged against what the operator has heard, not the wall.

An operator behind its Lease watch (kopf's queue at 1,000 nodes on a starved machine: minutes;
after a restart at 200 nodes: p99 19 s, ``hosted_engine_watch_lag_seconds``) sees every Lease
as old as its lag. Judged against the wall clock, every host would then look silent: the
HostedEngine's HA machine would score them all 0 / lost and the Host could write NonResponsive
and accept a fence request for a live node. So Lease silence is judged against::

    lease_now = min(now, max over the node Leases seen of (renewTime + renew interval))

(:func:`horizon` computes the max, once per observation; :func:`lease_now` applies it). The
renew interval is each Lease's own: the configured one, else a quarter of its
``leaseDurationSeconds`` (the kubelet's ``renewIntervalFraction``), else 10 s.

* Up to date: some node renewed within its last interval, so ``lease_now == now`` (strictly: up
  to its 4 % jitter plus the write and watch latency, a fraction of a second on a lab of 3
  nodes, nothing with many): no change.
* Behind by X s on every Lease: the newest renewal seen is X s old too, so ``lease_now`` is
  about ``now - X``; a healthy node's silence stays below its renew interval plus one more
  (its renewal is at most one period older than the newest one) -- under the 2 missed renewals
  (21.8 s) and the HostedEngine's 22 s. (A healthy node that is also late by a renewal while
  the operator is behind can reach the threshold: the lease clock keeps the margin for one late
  renewal only when the operator is up to date.)
* One node dead among live ones: the live ones keep the horizon at ``now``, the dead one falls
  behind them and is lost after the same silence as before.
* Every Lease silent at once (all power lost, or the operator cut from the API): the horizon
  stops one interval after the newest renewal, and nobody is called lost by its Lease -- the
  conservative answer. A BMC that reads Off and a Node NotReady still prove a loss, unchanged.

Only the decisions taken on the watch cache use the lease clock: the Host's re-read right
before a power-off (a fresh GET of the Node and its Lease) compares that Lease with the wall
clock, as it must (no horizon on that observation).

Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

#: The kubelet renews its Lease every quarter of leaseDurationSeconds (renewIntervalFraction).
KUBELET_RENEW_FRACTION = 0.25
#: The renew interval when neither the configuration nor the Lease says (the kubelet's 10 s).
DEFAULT_RENEW_INTERVAL_S = 10.0


def renew_interval_s(lease_duration_s: float | None, configured_s: float | None = None) -> float:
    """A node Lease's renew interval: ``configured_s`` when set, else a quarter of the Lease's
    ``leaseDurationSeconds``, else 10 s."""
    if configured_s is not None and configured_s > 0:
        return configured_s
    if lease_duration_s is not None and lease_duration_s > 0:
        return lease_duration_s * KUBELET_RENEW_FRACTION
    return DEFAULT_RENEW_INTERVAL_S


def horizon(renewals: Iterable[tuple[datetime, float]]) -> datetime | None:
    """How far the lease clock may run: the latest ``renewTime + renew interval`` over every node
    Lease seen (``renewals``: (renewTime, renew interval in seconds) pairs). None: no Lease."""
    return max((renewed + timedelta(seconds=interval) for renewed, interval in renewals),
               default=None)


def lease_now(now: datetime, limit: datetime | None) -> datetime:
    """The time Lease silence is judged at: ``now``, held back to the :func:`horizon` ``limit``
    (None: no Lease seen, or a fresh read to judge against the wall clock: ``now``)."""
    return now if limit is None or limit >= now else limit


__all__ = [
    "DEFAULT_RENEW_INTERVAL_S",
    "KUBELET_RENEW_FRACTION",
    "horizon",
    "lease_now",
    "renew_interval_s",
]
