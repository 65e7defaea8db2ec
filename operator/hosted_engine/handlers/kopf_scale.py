"""kopf at scale: its index pre-population must not be quadratic in the number of objects.

While an operator with ``@kopf.index`` handlers starts, kopf makes one toggle per object of every
indexed kind (``ToggleSet.make_toggle``), drops it once the object is indexed
(``drop_toggle``), and parks the processing of every object of every watched kind in
``ToggleSet.wait_for(True)`` until the set is empty. kopf 1.45's ``ToggleSet`` wakes every
parked waiter on every make and drop (``Condition.notify_all``), although the set's state
(``all`` of its toggles) cannot change until the last toggle goes: O(objects x objects)
wake-ups. Measured with ``bench/operator_scale.py``: 200 Hosts and 2,000 VMs (about 7,000
watched objects) and the operator had reconciled no Host after 150 s, its event loop busy in
``Condition.notify_all`` and ``wait_for``; at 10,000 VMs it would take hours.

:class:`QuietToggleSet` keeps kopf's semantics (waiters wait for ``is_on() == state``; a single
toggle's own waiters are woken by ``Toggle.turn_to`` as before) but notifies only when a make or
drop changes ``is_on()``: O(objects) wake-ups. :func:`install` puts it in place of kopf's class
before kopf builds its sets (``hosted_engine.handlers`` imports this module first); it refuses
silently-wrong patching: if kopf's internals differ from what this relies on, nothing is
changed and a warning is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kopf._cogs.aiokits import aiotoggles

log = logging.getLogger(__name__)

_ORIGINAL: Any = aiotoggles.ToggleSet


class QuietToggleSet(aiotoggles.ToggleSet):
    """kopf's ToggleSet, waking its waiters only when its overall state changes."""

    async def make_toggle(self, __val: bool = False, *, name: str | None = None
                          ) -> aiotoggles.Toggle:
        toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
        async with self._condition:
            before = self.is_on()
            self._toggles.add(toggle)
            if self.is_on() != before:
                self._condition.notify_all()
        return toggle

    async def drop_toggle(self, toggle: aiotoggles.Toggle) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.discard(toggle)
            if self.is_on() != before:
                self._condition.notify_all()

    async def drop_toggles(self, toggles: Iterable[aiotoggles.Toggle]) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.difference_update(toggles)
            if self.is_on() != before:
                self._condition.notify_all()


def _compatible() -> bool:
    probe = _ORIGINAL(all)
    return all(hasattr(probe, attr) for attr in ("_condition", "_toggles", "_fn")) and all(
        hasattr(_ORIGINAL, method)
        for method in ("make_toggle", "drop_toggle", "drop_toggles", "wait_for", "is_on"))


def install() -> bool:
    """Use :class:`QuietToggleSet` for every ToggleSet kopf makes from now on; True if done."""
    if aiotoggles.ToggleSet is QuietToggleSet:
        return True
    if not _compatible():
        log.warning("kopf's ToggleSet is not the one expected: start-up stays quadratic")
        return False
    aiotoggles.ToggleSet = QuietToggleSet  # type: ignore[misc]
    return True


def uninstall() -> None:
    """Back to kopf's own class (tests)."""
    aiotoggles.ToggleSet = _ORIGINAL  # type: ignore[misc]


install()
