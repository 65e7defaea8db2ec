"""The HostedEngine's I/O helpers against real local servers: the health probe (aiohttp
server: healthy, unhealthy, hung, refused) and the SMTP notifier (aiosmtpd with STARTTLS and
AUTH, the certificate from a throw-away CA; plain, and a failure reported without the
password)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hosted_engine.adapters import engine_notify as notify
from hosted_engine.adapters import engine_probe
from hosted_engine.lab.bmc.tls import LabCA
from hosted_engine.logic.ha import ProbeResult


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_probe_good_bad_hung_and_refused() -> None:
    hang = asyncio.Event()

    async def health(request: web.Request) -> web.Response:
        mode = request.query.get("mode")
        if mode == "down":
            return web.Response(status=503, text="DB Down!")
        if mode == "hang":
            await hang.wait()
        return web.Response(text="DB Up!Welcome to Health Status!")

    app = web.Application()
    app.router.add_get("/ovirt-engine/services/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}/ovirt-engine/services/health"
    try:
        async with engine_probe.new_session() as session:
            ok = await engine_probe.probe(session, base, expect="DB Up", timeout=1)
            assert ok[0] is ProbeResult.OK
            bad = await engine_probe.probe(session, base + "?mode=down", expect="DB Up",
                                           timeout=1)
            assert bad[0] is ProbeResult.BAD and "503" in bad[1]
            started = time.monotonic()
            hung = await engine_probe.probe(session, base + "?mode=hang", expect="DB Up",
                                            timeout=0.2)
            assert hung[0] is ProbeResult.TIMEOUT
            assert time.monotonic() - started < 2  # the timeout bounds the probe
            refused = await engine_probe.probe(
                session, f"http://127.0.0.1:{free_port()}/", expect="DB Up", timeout=1)
            assert refused[0] is ProbeResult.BAD
    finally:
        hang.set()
        await runner.cleanup()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.tls: list[bool] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        self.tls.append(session.ssl is not None)
        return "250 OK"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[int, Inbox, LabCA]]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ca = LabCA(tmp_path / "ca")
    inbox = Inbox()

    def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        return AuthResult(success=isinstance(data, LoginPassword)
                          and (data.login, data.password) == (b"u", b"pw-123"))

    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port,
                            tls_context=ca.server_context(), require_starttls=False,
                            authenticator=auth, auth_require_tls=True)
    controller.start()
    try:
        yield port, inbox, ca
    finally:
        controller.stop()


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_notifier_sends_over_starttls_with_auth_without_blocking(
        smtp: tuple[int, Inbox, LabCA]) -> None:
    port, inbox, ca = smtp
    config = notify.SmtpConfig(server="127.0.0.1", port=port, start_tls=True,
                               ca_pem=ca.ca_pem.decode(), username="u", password="pw-123",
                               sender="he@example.com", recipients=("ops@example.com",))
    notifier = notify.Notifier()
    try:
        started = time.monotonic()
        assert notifier.send(notify.Mail(config, "EngineUp-EngineStop", "body 1"))
        assert notifier.send(notify.Mail(config, "EngineStop-EngineDown", "body 2"))
        assert time.monotonic() - started < 0.5  # queued, not sent inline
        wait_until(lambda: notifier.report.sent == 2)
        assert len(inbox.messages) == 2 and all(inbox.tls)
        assert b"EngineUp-EngineStop" in inbox.messages[0].content
        assert inbox.messages[0].rcpt_tos == ["ops@example.com"]
    finally:
        notifier.close()


def test_notifier_refuses_an_unknown_ca_and_reports_without_the_password(
        smtp: tuple[int, Inbox, LabCA]) -> None:
    port, inbox, _ = smtp
    config = notify.SmtpConfig(server="127.0.0.1", port=port, start_tls=True,
                               username="u", password="pw-123")  # system trust: not our CA
    notifier = notify.Notifier()
    try:
        notifier.send(notify.Mail(config, "s", "b"))
        wait_until(lambda: notifier.report.last_error is not None)
        assert notifier.report.sent == 0 and not inbox.messages
        assert "CERTIFICATE" in notifier.report.last_error.upper()
        assert "pw-123" not in notifier.report.last_error
    finally:
        notifier.close()


def test_notifier_close_delivers_what_is_queued_then_refuses(
        smtp: tuple[int, Inbox, LabCA]) -> None:
    port, inbox, ca = smtp
    config = notify.SmtpConfig(server="127.0.0.1", port=port, start_tls=True,
                               ca_pem=ca.ca_pem.decode(), sender="he@example.com",
                               recipients=("ops@example.com",))
    notifier = notify.Notifier()
    assert notifier.send(notify.Mail(config, "queued before close", "b"))
    notifier.close(wait=None)  # does not block (the event loop's way)
    notifier.close()  # idempotent
    wait_until(lambda: notifier.report.sent == 1)
    assert notifier.closed and not notifier._thread.is_alive()
    assert not notifier.send(notify.Mail(config, "after close", "b"))
    assert notifier.report.last_error == "notifier closed; mail dropped"
    assert len(inbox.messages) == 1


def test_hostedengine_daemon_end_closes_and_forgets_its_notifier() -> None:
    import kopf
    from hosted_engine.handlers import hostedengine as he_handlers

    memo = kopf.Memo()
    notifier = memo.setdefault(he_handlers.NOTIFIER_KEY, notify.Notifier())
    notifier.send(notify.Mail(notify.SmtpConfig(server="127.0.0.1", port=9), "s", "b"))
    he_handlers.close_notifier(memo)
    assert he_handlers.NOTIFIER_KEY not in memo  # a respawned daemon gets a new one
    assert notifier.closed
    wait_until(lambda: not notifier._thread.is_alive())
    he_handlers.close_notifier(memo)  # nothing left: no error
