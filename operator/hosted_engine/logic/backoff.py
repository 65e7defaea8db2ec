"""Exponential backoff, capped, in pure code.

oVirt's HA agent meant to slow down after failed engine starts, but compared a monotonic timestamp
with the epoch and reset its counter on every loop (shared/reference/ovirt-he-ha.md §2.4), so a
host whose starts keep failing retried every 10-22 s forever. Here the delay is a plain function
of the attempt number, computed against the one ``now`` the caller passes in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Backoff:
    """``delay(n) = min(cap, base * factor ** (n - 1))`` for the n-th consecutive failure."""

    base: timedelta = timedelta(seconds=10)
    factor: float = 2.0
    cap: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.base < timedelta(0):
            raise ValueError("backoff base must not be negative")
        if self.factor < 1.0:
            raise ValueError("backoff factor must be >= 1")
        if self.cap < self.base:
            raise ValueError("backoff cap must be >= base")

    def delay(self, attempt: int) -> timedelta:
        """Wait after the ``attempt``-th consecutive failure (0 or less: no wait)."""
        if attempt <= 0:
            return timedelta(0)
        cap = self.cap.total_seconds()
        seconds = self.base.total_seconds()
        # Multiply step by step so a huge attempt number never overflows a float.
        for _ in range(attempt - 1):
            if seconds >= cap:
                break
            seconds *= self.factor
        return timedelta(seconds=min(seconds, cap))

    def next_try(self, attempt: int, now: datetime) -> datetime:
        """The earliest time of the next try after the ``attempt``-th failure at ``now``."""
        return now + self.delay(attempt)
