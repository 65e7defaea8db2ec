"""kopf's per-event success line of the watch handlers on other groups' kinds (Leases, Pods,
VMIs...) is not logged: one line per event and handler is a hundred a second at 1,000 nodes."""

from __future__ import annotations

import logging

import pytest
from hosted_engine.handlers import kopf_scale


def test_only_the_success_lines_of_foreign_watch_handlers_are_dropped(
        caplog: pytest.LogCaptureFixture) -> None:
    import hosted_engine.handlers  # noqa: F401 - registers the handlers

    log = logging.getLogger("kopf.objects")
    assert any(isinstance(f, kopf_scale.QuietWatchSuccess) for f in log.filters)
    with caplog.at_level(logging.INFO, logger="kopf.objects"):
        log.info("Handler 'host-leases' succeeded.")
        log.info("Handler 'host-vmis' succeeded.")
        log.info("Handler 'host-watch' succeeded.")  # our own kind: kept
        log.info("Handler 'host-delete' succeeded.")  # not a watch handler: kept
        log.error("Handler 'host-leases' failed with an exception. Will ignore.")
        log.info("Activity 'host-startup' succeeded.")
    assert [r.getMessage() for r in caplog.records] == [
        "Handler 'host-watch' succeeded.",
        "Handler 'host-delete' succeeded.",
        "Handler 'host-leases' failed with an exception. Will ignore.",
        "Activity 'host-startup' succeeded.",
    ]


def test_the_ids_come_from_the_registered_watch_handlers() -> None:
    import hosted_engine.handlers  # noqa: F401

    ids = kopf_scale._foreign_watch_ids()
    assert {"host-leases", "host-pods", "host-vmis", "he-wake-nodes"} <= ids
    assert not ids & {"host-watch", "he-wake-hosts", "storagedomain-engines"}
    quiet = kopf_scale.QuietWatchSuccess(frozenset({"x"}))
    record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1,
                               "Handler 'x' succeeded.", None, None)
    assert quiet.filter(record) is False
    record.levelno = logging.DEBUG
    assert quiet.filter(record) is True
