"""Secrets never reach logs, status or Events.

One operator run uses every secret it knows of, with recognisable values: the BMC password
(Redfish power management of three Hosts, read from the lab's Secrets), the SMTP password
(notifications over STARTTLS with AUTH), the S3 keys (a one-shot backup to S3), the engine's
root and admin passwords (cloud-init). Then everything the run produced is scanned, for each
value in clear and base64-encoded: every log record of the process (plain and in kopf's JSON
format), every object the lab API server holds except Secrets (statuses, specs, Events,
ConfigMaps, VirtualMachines, Jobs ...), and the output of the ``hosted-engine`` CLI.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability_hardening_support import (
    ADMIN_PASSWORD,
    ROOT_PASSWORD,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    SMTP_PASSWORD,
    OutputCapture,
    leaks,
)

from harness import HOSTEDENGINES, Cluster, wait_for  # isort: skip
from hosted_engine.adapters.kube import Resource  # isort: skip
from hosted_engine.cli.main import main as cli_main  # isort: skip
from hosted_engine.lab.bmc.tls import LabCA  # isort: skip
from hosted_engine.lab.sim.timings import LabTimings  # isort: skip
from hostedengine_lab import HOST_ENV, NAME, NS, PVCS, SECRETS, fast_spec, he_body  # isort: skip
from hostedengine_lab import prepare, wait_up  # isort: skip

pytestmark = pytest.mark.lab

BACKUPS = Resource("hostedengine.io", "v1alpha1", "backups", namespaced=True)
BUCKET = "engine-backups"


@pytest.fixture(autouse=True)
def _operator_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in HOST_ENV.items():
        monkeypatch.setenv(key, value)


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[tuple[int, _Inbox, LabCA]]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ca = LabCA(tmp_path / "smtp-ca")
    inbox = _Inbox()

    def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        return AuthResult(success=isinstance(data, LoginPassword)
                          and data.password == SMTP_PASSWORD.encode())

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    controller = Controller(inbox, hostname="127.0.0.1", port=port,
                            tls_context=ca.server_context(), require_starttls=True,
                            authenticator=auth, auth_require_tls=True)
    controller.start()
    try:
        yield port, inbox, ca
    finally:
        controller.stop()


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY
                     ).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "stringData": data}


def encoded(values: tuple[str, ...]) -> tuple[str, ...]:
    """Each value in clear and base64-encoded (as a Secret's data would carry it)."""
    return tuple(v for value in values
                 for v in (value, base64.b64encode(value.encode()).decode()))


def every_object(cluster: Cluster, secrets: bool = False) -> list[tuple[str, str]]:
    """Every object of the lab API server but Secrets (only Secrets), as (where, JSON)."""
    core = cluster.lab.lab.server.core

    async def dump() -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for (group, plural), bucket in list(core.store.buckets.items()):
            if ((group, plural) == ("", "secrets")) != secrets:
                continue
            for obj in list(bucket.iter(None)):
                meta = obj.get("metadata") or {}
                where = f"{group or 'core'}/{plural} {meta.get('namespace', '')}/{meta['name']}"
                out.append((where, json.dumps(obj, default=str)))
        return out

    result: list[tuple[str, str]] = cluster.lab.runner.call(dump)
    return result


def test_no_secret_in_logs_status_events_objects_or_cli_output(
        make_cluster: Callable[..., Cluster], output: OutputCapture,
        smtp_server: tuple[int, _Inbox, LabCA], s3_endpoint: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    port, inbox, ca = smtp_server
    cluster = make_cluster(3, timings=LabTimings.fast(), bmc=True)
    farm = cluster.lab.lab.farm
    assert farm is not None
    bmc_password = farm.credentials.password
    values = encoded((bmc_password, SMTP_PASSWORD, S3_SECRET_KEY, ROOT_PASSWORD,
                      ADMIN_PASSWORD))

    prepare(cluster)  # Hosts with Redfish power management: the BMC password is used
    cluster.create(SECRETS, secret("smtp-auth", {"username": "mailer",
                                                 "password": SMTP_PASSWORD}))
    cluster.create(SECRETS, secret("smtp-ca", {"ca.crt": ca.ca_pem.decode()}))
    cluster.create(SECRETS, secret("engine-passwords", {"root": ROOT_PASSWORD,
                                                        "admin": ADMIN_PASSWORD}))
    cluster.create(SECRETS, secret("s3-creds", {"accessKeyId": S3_ACCESS_KEY,
                                                "secretAccessKey": S3_SECRET_KEY}))
    spec = fast_spec()
    spec["vm"]["cloudInit"] = {
        "rootPasswordSecretRef": {"name": "engine-passwords", "key": "root"},
        "adminPasswordSecretRef": {"name": "engine-passwords", "key": "admin"}}
    spec["notifications"] = {
        "smtpServer": "127.0.0.1", "smtpPort": port, "startTLS": True,
        "credentialsSecretRef": {"name": "smtp-auth"},
        "caBundleSecretRef": {"name": "smtp-ca", "key": "ca.crt"},
        "sourceEmail": "he@lab.example", "destinationEmails": ["ops@lab.example"]}
    cluster.create(HOSTEDENGINES, he_body(spec))
    wait_up(cluster, timeout=60)
    wait_for("mails sent with SMTP AUTH", lambda: len(inbox.messages) >= 1, timeout=20)

    # the S3 keys: a one-shot backup of a small disk
    cluster.patch_status(PVCS, f"{NAME}-disk", {"capacity": {"storage": str(1024**2)}}, NS)
    cluster.create(BACKUPS, {
        "apiVersion": "hostedengine.io/v1alpha1", "kind": "Backup",
        "metadata": {"name": "once", "namespace": NS},
        "spec": {"source": {"hostedEngine": NAME}, "target": {"s3": {
            "endpoint": s3_endpoint, "bucket": BUCKET, "credentialsSecretRef": {
                "name": "s3-creds"}}}}})
    cluster.wait_field(BACKUPS, "once", "status.phase", "Succeeded", namespace=NS, timeout=60)

    # the CLI, as an administrator uses it
    capsys.readouterr()
    conn = ("--kubeconfig", str(cluster.kubeconfig), "-n", NS)
    assert cli_main(["vm-status", *conn]) == 0
    assert cli_main(["vm-status", *conn, "--json"]) == 0
    assert cli_main(["backup", "list", "once", *conn]) == 0
    cli = capsys.readouterr()
    assert "EngineUp" in cli.out or "up" in cli.out.lower()

    texts = [("log", output.text()), ("cli stdout", cli.out), ("cli stderr", cli.err)]
    objects = every_object(cluster)
    assert any(w.startswith("core/events") for w, _ in objects)
    assert any(w.startswith("hostedengine.io/hostedengines") for w, _ in objects)
    found = leaks([*texts, *objects], values)
    assert not found, "secret values found:\n" + "\n".join(found[:20])
    assert len(output.lines) > 100  # the scan saw the operator's logs
    # the scan would see them: each value is in the Secrets, where it belongs (base64 in data:
    # the API server merges the stringData written into data, and never returns stringData)
    in_secrets = "\n".join(leaks(every_object(cluster, secrets=True), values))
    for value in (bmc_password, SMTP_PASSWORD, S3_SECRET_KEY, ROOT_PASSWORD, ADMIN_PASSWORD):
        assert f": {base64.b64encode(value.encode()).decode()}" in in_secrets, value
