"""TLS verification is on by default for the BMC (Redfish), SMTP and S3 endpoints: each client is
built from a spec exactly as the operator builds it (model defaults), pointed at an endpoint
whose certificate comes from a private CA, and must refuse it -- unless the spec gives the CA or
explicitly opts out. Credentials never go over a connection that is not encrypted, and never
into an error message.
"""

from __future__ import annotations

import http.server
import smtplib
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from reliability_hardening_support import (
    BMC_PASSWORD,
    BMC_USER,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    SMTP_PASSWORD,
)

from hosted_engine.adapters import engine_notify as notify  # isort: skip
from hosted_engine.adapters.objectstore import S3Store  # isort: skip
from hosted_engine.adapters.power import (  # isort: skip
    BmcCredentials,
    BmcTarget,
    PowerError,
    RedfishPowerManager,
)
from hosted_engine.lab.bmc.tls import LabCA  # isort: skip
from hosted_engine.models.backup import S3Target  # isort: skip
from hosted_engine.models.host import PowerManagement  # isort: skip
from hosted_engine.models.hostedengine import Notifications  # isort: skip


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers anything with an empty JSON document (enough to get past the TLS handshake)."""

    def _answer(self) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ca(tmp_path: Path) -> LabCA:
    return LabCA(tmp_path / "ca")


@pytest.fixture
def https(ca: LabCA) -> Iterator[Any]:
    """An HTTPS server on 127.0.0.1 with a certificate of the private CA."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests = 0  # type: ignore[attr-defined]
    server.socket = ca.server_context().wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_bmc_redfish_refuses_an_unknown_ca_unless_given_or_opted_out(
        https: Any, ca: LabCA) -> None:
    port = https.server_address[1]
    spec = PowerManagement.model_validate({
        "type": "redfish", "address": "127.0.0.1", "port": port, "systemID": "node-1",
        "credentialsSecretRef": {"name": "bmc", "namespace": "ns"}, "actionTimeout": "5s"})
    assert spec.verify_tls is True  # the default
    credentials = BmcCredentials(BMC_USER, BMC_PASSWORD)

    def status(target: BmcTarget) -> Any:
        with RedfishPowerManager(target, credentials) as manager:
            return manager.status()

    refused = status(BmcTarget.from_spec(spec))
    assert refused.error is PowerError.TLS, refused
    assert BMC_PASSWORD not in repr(refused)
    assert https.requests == 0  # nothing was sent over the untrusted connection

    with_ca = status(BmcTarget.from_spec(spec, ca_bundle_pem=ca.ca_pem.decode()))
    opted_out = status(BmcTarget.from_spec(spec.model_copy(update={"verify_tls": False})))
    for result in (with_ca, opted_out):
        assert result.error is not PowerError.TLS, result
        assert BMC_PASSWORD not in repr(result)
    assert https.requests > 0


def test_s3_refuses_an_unknown_ca_unless_given_or_opted_out(https: Any, ca: LabCA) -> None:
    port = https.server_address[1]
    target = S3Target.model_validate({
        "endpoint": f"https://127.0.0.1:{port}", "bucket": "engine-backups",
        "credentialsSecretRef": {"name": "s3"}})
    assert target.verify_tls is True  # the default
    keys = (SecretStr(S3_ACCESS_KEY), SecretStr(S3_SECRET_KEY))

    store = S3Store(target, *keys)
    with pytest.raises(Exception) as refused:
        store.exists("manifest.json")
    assert "certificate verify failed" in str(refused.value).lower() or \
        "ssl" in type(refused.value).__name__.lower(), repr(refused.value)
    assert S3_SECRET_KEY not in str(refused.value)
    assert https.requests == 0

    for trusted in (S3Store(target, *keys, ca_bundle=ca.ca_pem.decode()),
                    S3Store(target.model_copy(update={"verify_tls": False}), *keys)):
        assert trusted.exists("manifest.json") is True  # the endpoint answered 200
    assert https.requests >= 2


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.logins: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp(ca: LabCA) -> Iterator[tuple[int, _Inbox]]:
    """An SMTP server offering STARTTLS (private CA) and AUTH even without TLS (a careless
    server: the client must be the one that refuses to send the password in the clear)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    inbox = _Inbox()

    def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        inbox.logins.append((session.ssl is not None, data))
        return AuthResult(success=True)

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    controller = Controller(inbox, hostname="127.0.0.1", port=port,
                            tls_context=ca.server_context(), require_starttls=False,
                            authenticator=auth, auth_require_tls=False)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def smtp_config(spec: Notifications, port: int, ca_pem: str | None = None,
                password: str | None = SMTP_PASSWORD) -> notify.SmtpConfig:
    """As the HostedEngine handler builds it from the spec."""
    return notify.SmtpConfig(
        server="127.0.0.1", port=port, start_tls=spec.start_tls,
        verify_tls=not spec.insecure_skip_tls_verify, ca_pem=ca_pem,
        username="he" if password else None, password=password,
        sender=str(spec.source_email), recipients=tuple(str(r) for r in spec.destination_emails),
        timeout=5)


def test_smtp_refuses_an_unknown_ca_unless_given_or_opted_out(
        smtp: tuple[int, _Inbox], ca: LabCA) -> None:
    port, inbox = smtp
    spec = Notifications.model_validate({"smtpServer": "127.0.0.1", "smtpPort": port,
                                         "startTLS": True})
    assert spec.insecure_skip_tls_verify is False  # verification is the default
    with pytest.raises(ssl.SSLCertVerificationError):
        notify.deliver(notify.Mail(smtp_config(spec, port), "EngineUp-EngineDown", "x"))
    assert inbox.logins == [] and inbox.messages == []

    notify.deliver(notify.Mail(smtp_config(spec, port, ca.ca_pem.decode()), "with CA", "x"))
    skip = spec.model_copy(update={"insecure_skip_tls_verify": True})
    notify.deliver(notify.Mail(smtp_config(skip, port), "opted out", "x"))
    assert len(inbox.messages) == 2
    assert [tls for tls, _ in inbox.logins] == [True, True]


def test_smtp_credentials_never_go_over_a_plain_connection(
        smtp: tuple[int, _Inbox]) -> None:
    port, inbox = smtp
    plain = Notifications.model_validate({"smtpServer": "127.0.0.1", "smtpPort": port})
    assert plain.start_tls is False
    with pytest.raises(smtplib.SMTPException) as refused:
        notify.deliver(notify.Mail(smtp_config(plain, port), "EngineUp-EngineDown", "x"))
    assert "startTLS" in str(refused.value) and SMTP_PASSWORD not in str(refused.value)
    assert inbox.logins == [] and inbox.messages == []  # the server never saw the password
    # without credentials a plain relay is still allowed (oVirt's default: localhost:25)
    notify.deliver(notify.Mail(smtp_config(plain, port, password=None), "relay", "x"))
    assert len(inbox.messages) == 1
