"""Shared state of the hardening suite (tests/reliability/hardening).

- :data:`OBSERVED`: every resource request the operator made at any lab of this pytest process
  (the lab's request-log hook, :data:`hosted_engine.lab.apiserver.admission.GLOBAL_OBSERVERS`),
  recognised by its User-Agent. Registered when this module is imported (by the suite's
  conftest, at collection time), so the integration tests that run before the suite are
  recorded too; the RBAC check compares them with manifests/rbac.yaml.
- :data:`SECRET_VALUES` and :class:`OutputCapture`: recognisable secret values the fixtures
  put into Secrets, and everything the suite printed or logged, to scan for them.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
INTEGRATION = ROOT / "tests" / "integration"
if str(INTEGRATION) not in sys.path:  # the integration harness (harness.py, hostedengine_lab.py)
    sys.path.insert(0, str(INTEGRATION))

from hosted_engine.adapters.kube import USER_AGENT  # noqa: E402
from hosted_engine.lab.apiserver.admission import (  # noqa: E402
    GLOBAL_OBSERVERS,
    RequestRecord,
)


@dataclass(frozen=True, order=True)
class Call:
    """One kind of API call, as RBAC sees it."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespaced: bool

    @property
    def rbac_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


OBSERVED: set[Call] = set()
_LOCK = threading.Lock()
#: Requests of the operator per fault-injected lab run (counted by :func:`count_requests`).
_COUNT = {"requests": 0}


def _observe(record: RequestRecord) -> None:
    if record.local or not record.user_agent.startswith(USER_AGENT):
        return
    call = Call(record.verb, record.group, record.resource, record.subresource,
                bool(record.namespace))
    with _LOCK:
        OBSERVED.add(call)
        _COUNT["requests"] += 1


def operator_requests() -> int:
    """How many requests the operator made so far in this process."""
    return _COUNT["requests"]


if _observe not in GLOBAL_OBSERVERS:
    GLOBAL_OBSERVERS.append(_observe)


# -- secrets ------------------------------------------------------------------------------------

BMC_USER = "hardening-admin"
BMC_PASSWORD = "bmc-pw-Hardening-7731"
SMTP_PASSWORD = "smtp-pw-Hardening-5521"
S3_ACCESS_KEY = "AKIDHARDENING0042"
S3_SECRET_KEY = "s3-secret-Hardening-0042"
ROOT_PASSWORD = "root-pw-Hardening-9090"
ADMIN_PASSWORD = "admin-pw-Hardening-3141"
SECRET_VALUES: tuple[str, ...] = (BMC_PASSWORD, SMTP_PASSWORD, S3_SECRET_KEY, ROOT_PASSWORD,
                                  ADMIN_PASSWORD)


class OutputCapture(logging.Handler):
    """Every log record of the process, rendered plain and as kopf's JSON logs render it."""

    #: Loggers of the operator's own code and the client libraries it drives (not the lab's
    #: simulators, e.g. sushy_tools, the lab's Redfish emulator).
    OPERATOR_LOGGERS = ("kopf", "hosted_engine", "sushy", "pyghmi", "kubernetes", "botocore",
                        "boto3", "urllib3", "aiohttp")

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[tuple[str, str]] = []  # (logger name, rendered record)
        self._plain = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
        self._json = _json_formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append((record.name, self._plain.format(record)))
            if self._json is not None:
                self.lines.append((record.name, self._json.format(record)))
        except Exception:  # a broken record must not hide the others
            self.lines.append((record.name, repr(record.__dict__)))

    def text(self) -> str:
        """Everything logged in the process."""
        return "\n".join(line for _, line in self.lines)

    def operator_text(self) -> str:
        """What the operator (and the client libraries it uses) logged."""
        return "\n".join(line for name, line in self.lines
                         if name.split(".")[0] in self.OPERATOR_LOGGERS)


def _json_formatter() -> logging.Formatter | None:
    """kopf's JSON formatter (``hosted-engine run --log-format json``)."""
    try:
        from kopf._core.actions.loggers import ObjectJsonFormatter
    except ImportError:  # pragma: no cover - kopf moved it
        return None
    formatter: logging.Formatter = ObjectJsonFormatter()
    return formatter


def leaks(texts: Iterable[tuple[str, str]], secrets: Iterable[str] = SECRET_VALUES
          ) -> list[str]:
    """``(where, text)`` pairs that contain a secret value: ``"where: secret"`` each."""
    values = [s for s in secrets if s]
    return [f"{where}: {value}" for where, text in texts for value in values if value in text]


def dump(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str, sort_keys=True)
