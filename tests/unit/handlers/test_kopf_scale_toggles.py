"""kopf's index pre-population toggles: same semantics, wake-ups linear in the objects.

The scenario is kopf's start-up (kopf._core.reactor.queueing/processing): one toggle per object
of the indexed kinds, every object's processing parked in ``wait_for(True)`` until the last
toggle is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hosted_engine.handlers import kopf_scale
from kopf._cogs.aiokits import aiotoggles


class Counted:
    """``all``, counting its evaluations (each is one waiter's check, or a make/drop)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, states: Iterable[bool]) -> bool:
        self.calls += 1
        return all(states)


async def parked(toggles: Any, count: int) -> None:
    """Yield until ``count`` waiters wait on the set's condition again."""
    for _ in range(10_000):
        waiting = [f for f in toggles._condition._waiters if not f.done()]
        if len(waiting) == count:
            return
        await asyncio.sleep(0)
    raise AssertionError("waiters never parked")


async def start_up(cls: Callable[[Any], Any], objects: int, waiters: int
                   ) -> tuple[int, list[asyncio.Task[None]], Any]:
    """kopf's start-up in small: make ``objects`` toggles, park ``waiters``, drop all but one
    toggle (each drop followed by the waiters' reaction). Returns the evaluations counted."""
    counted = Counted()
    toggles = cls(counted)
    made = [await toggles.make_toggle(name=f"obj-{i}") for i in range(objects)]
    tasks = [asyncio.create_task(toggles.wait_for(True)) for _ in range(waiters)]
    await parked(toggles, waiters)
    for toggle in made[:-1]:
        await toggles.drop_toggle(toggle)
        await parked(toggles, waiters)
    assert not any(t.done() for t in tasks), "released while a toggle was still off"
    calls = counted.calls
    await toggles.drop_toggle(made[-1])
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    return calls, tasks, toggles


def test_kopf_uses_the_quiet_toggle_set_once_the_handlers_are_imported() -> None:
    import hosted_engine.handlers  # noqa: F401

    assert aiotoggles.ToggleSet is kopf_scale.QuietToggleSet
    assert kopf_scale.install() is True


async def test_waiters_are_released_exactly_when_the_last_toggle_goes() -> None:
    _, tasks, toggles = await start_up(kopf_scale.QuietToggleSet, 50, 20)
    assert all(t.done() and t.exception() is None for t in tasks)
    assert toggles.is_on() and len(toggles) == 0


async def test_wake_ups_are_linear_not_quadratic() -> None:
    objects = waiters = 100
    quiet, _, _ = await start_up(kopf_scale.QuietToggleSet, objects, waiters)
    kopfs, _, _ = await start_up(kopf_scale._ORIGINAL, objects, waiters)
    # kopf's own class: every drop wakes and re-checks every waiter
    assert kopfs >= (objects - 1) * waiters
    # ours: two checks per make/drop plus the waiters' first check
    assert quiet <= 2 * objects * 2 + waiters * 2
    assert kopfs > 10 * quiet  # and the gap grows with the number of objects


@pytest.mark.parametrize("fn", [any, all])
async def test_single_toggles_still_wake_their_set_waiters(fn: Callable[..., bool]) -> None:
    """The pause set (``any``): a toggle turned on wakes wait_for(True) through the shared
    condition, without any make or drop."""
    toggles = kopf_scale.QuietToggleSet(fn)
    toggle = await toggles.make_toggle(False, name="peering")
    waiter = asyncio.create_task(toggles.wait_for(True))
    await parked(toggles, 1)
    assert not waiter.done()
    await toggle.turn_to(True)
    await asyncio.wait_for(waiter, 5)
    off = asyncio.create_task(toggles.wait_for(False))
    await parked(toggles, 1)
    await toggles.drop_toggles([toggle])
    if fn is any:
        await asyncio.wait_for(off, 5)  # no toggle on: paused no more
    else:
        assert toggles.is_on() and not off.done()  # all() of nothing stays on
        off.cancel()
