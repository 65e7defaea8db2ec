"""kopf at scale: its index pre-population must not be quadratic in the number of objects, and
its log must not carry a line per watch event (see :class:`QuietWatchSuccess`).

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


class QuietWatchSuccess(logging.Filter):
    """Drops kopf's ``Handler '<id>' succeeded.`` INFO line of the watch handlers (``@kopf.on.
    event``) on other groups' kinds -- Leases, Pods, Nodes, VMs, VMIs, migrations, Jobs...: kopf
    logs one per event and handler, a hundred lines a second at 1,000 nodes (the Leases alone)
    and 6,000 at the start of 200 Hosts and 2,000 VMs. Failures, our own kinds' handlers and
    everything else still log; ``ids`` None: read them from kopf's registry at the first line.
    """

    def __init__(self, ids: frozenset[str] | None = None) -> None:
        super().__init__()
        self.ids = ids

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not isinstance(record.msg, str):
            return True
        msg = record.msg
        if not (msg.startswith("Handler '") and msg.endswith("' succeeded.")):
            return True
        if self.ids is None:
            self.ids = _foreign_watch_ids()
        return msg[len("Handler '"):-len("' succeeded.")] not in self.ids


def _foreign_watch_ids() -> frozenset[str]:
    """Ids of the registered watch handlers of kinds outside hostedengine.io."""
    from kopf._core.intents import registries

    from hosted_engine import API_GROUP

    try:
        handlers = registries.get_default_registry()._watching.get_all_handlers()
        return frozenset(str(h.id) for h in handlers if h.selector is not None
                         and h.selector.group != API_GROUP)
    except AttributeError:  # another kopf: keep every line
        return frozenset()


def install_log_filter() -> None:
    logger = logging.getLogger("kopf.objects")
    if not any(isinstance(f, QuietWatchSuccess) for f in logger.filters):
        logger.addFilter(QuietWatchSuccess())


install()
install_log_filter()
