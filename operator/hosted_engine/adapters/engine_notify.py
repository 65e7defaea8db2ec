"""State-transition mails over SMTP (oVirt's broker notifications), never blocking the state
machine: :meth:`Notifier.send` only puts the mail on a queue; one worker thread per notifier
delivers it with ``smtplib`` (STARTTLS verified against the system trust store or a given CA
bundle, AUTH when credentials are configured). Delivery results are kept for status; the
password is never logged or reported."""

from __future__ import annotations

import contextlib
import logging
import queue
import smtplib
import ssl
import threading
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from hosted_engine.clock import get_clock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmtpConfig:
    server: str
    port: int = 25
    start_tls: bool = False
    verify_tls: bool = True
    ca_pem: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "root@localhost"
    recipients: tuple[str, ...] = ("root@localhost",)
    timeout: float = 10.0


@dataclass(frozen=True)
class Mail:
    config: SmtpConfig
    subject: str
    body: str


@dataclass
class DeliveryReport:
    sent: int = 0
    last_sent_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


def _tls_context(config: SmtpConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if config.ca_pem:
        context.load_verify_locations(cadata=config.ca_pem)
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def deliver(mail: Mail) -> None:
    """Send one mail now (blocking; called by the worker thread)."""
    cfg = mail.config
    msg = EmailMessage()
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.recipients)
    msg["Subject"] = mail.subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="hosted-engine-operator")
    msg.set_content(mail.body)
    with smtplib.SMTP(cfg.server, cfg.port, timeout=cfg.timeout) as smtp:
        smtp.ehlo()
        if cfg.start_tls:
            smtp.starttls(context=_tls_context(cfg))
            smtp.ehlo()
        if cfg.username is not None and cfg.password is not None:
            if not cfg.start_tls:
                # smtplib would send AUTH in the clear: the password never goes unencrypted
                raise smtplib.SMTPException(
                    "refusing to send SMTP credentials over an unencrypted connection; "
                    "set spec.notifications.startTLS")
            smtp.login(cfg.username, cfg.password)
        smtp.send_message(msg)


class Notifier:
    """A queue and one daemon worker thread; :meth:`send` never blocks."""

    def __init__(self, maxsize: int = 1000) -> None:
        self._queue: queue.Queue[Mail | None] = queue.Queue(maxsize)
        self.report = DeliveryReport()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="he-notifier", daemon=True)
        self._started = False
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, mail: Mail) -> bool:
        """Queue a mail; False when the queue is full or the notifier closed (the mail is
        dropped and reported)."""
        with self._lock:
            if self._closed:
                self.report.last_error = "notifier closed; mail dropped"
                self.report.last_error_at = self._stamp()
                return False
            if not self._started:
                self._thread.start()
                self._started = True
        try:
            self._queue.put_nowait(mail)
        except queue.Full:
            self._failed("notification queue full; mail dropped")
            return False
        return True

    def _stamp(self) -> datetime:
        return get_clock().now()

    def _failed(self, message: str) -> None:
        with self._lock:
            self.report.last_error = message[:1024]
            self.report.last_error_at = self._stamp()

    def _run(self) -> None:
        while True:
            mail = self._queue.get()
            if mail is None:
                return
            self._deliver(mail)
            if self._closed and self._queue.empty():
                return  # closed while the queue was full: no room was left for the sentinel

    def _deliver(self, mail: Mail) -> None:
        try:
            deliver(mail)
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            # the message of an SMTP error never carries the password
            text = f"{type(exc).__name__}: {exc}"
            log.warning("notification to %s failed: %s", mail.config.server, text)
            self._failed(text)
        else:
            with self._lock:
                self.report.sent += 1
                self.report.last_sent_at = self._stamp()

    def close(self, wait: float | None = 5.0) -> None:
        """Stop the worker after the mails already queued; ``wait``: seconds to join it
        (``None``: do not wait, for callers on an event loop). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        if not started:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # a full queue: the worker sees _closed after a mail
        if wait is not None:
            self._thread.join(wait)
