"""The export proxy: serves VirtualMachineExport volumes over HTTPS, like virt-exportproxy.

URLs follow KubeVirt's external links:
``/api/export.kubevirt.io/v1beta1/namespaces/NS/virtualmachineexports/NAME/volumes/VOL/disk.img``
(raw, with HTTP ranges) and ``.../disk.img.gz`` (gzip). The token from the export's token Secret
must come in the ``x-kubevirt-export-token`` header (or query parameter); a wrong or missing token
gets 401. The bytes are the deterministic stream of :mod:`.diskstream` for the volume's seed.
The certificate is the lab CA's (the API server's, valid for 127.0.0.1) when the lab serves HTTPS,
else one of its own CA; the CA's PEM is published in ``status.links.external.cert``.
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
import ipaddress
import re
import ssl
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hosted_engine.lab.kubevirt import EXPORT_GROUP
from hosted_engine.lab.kubevirt.diskstream import iter_disk

EXPORT_API = f"/api/{EXPORT_GROUP}/v1beta1"
TOKEN_HEADER = "x-kubevirt-export-token"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class ExportedVolume:
    name: str
    seed: str
    size: int


@dataclass
class ExportEntry:
    token: str
    volumes: dict[str, ExportedVolume] = field(default_factory=dict)


def server_tls(
    directory: Path, host: str, stem: str,
    certificates: tuple[bytes, bytes, bytes] | None = None,
) -> tuple[str, ssl.SSLContext]:
    """The TLS side of a lab HTTPS endpoint (export server, CDI upload proxy): with
    ``certificates`` (CA, server certificate for the host, key) written to ``stem``.crt/.key in
    ``directory``, else with a CA of its own; returns (CA PEM, server context)."""
    if certificates is not None:
        ca_pem, cert_pem, key_pem = certificates
        cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_file.write_bytes(cert_pem + ca_pem)
        key_file.write_bytes(key_pem)
        key_file.chmod(0o600)
        ca = ca_pem.decode()
    else:
        ca, cert_file, key_file = _make_certificates(directory, host)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return ca, context


def _make_certificates(directory: Path, host: str) -> tuple[str, Path, Path]:
    """A CA and a server certificate for ``host``; returns (CA PEM, cert file, key file)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hosted-engine lab export CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "virt-exportproxy")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file = directory / "export.crt"
    key_file = directory / "export.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return ca_cert.public_bytes(serialization.Encoding.PEM).decode(), cert_file, key_file


class ExportServer:
    """An HTTPS server for every ready export of the lab (one per KubeVirt simulator)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.ca_pem = ""
        self.entries: dict[tuple[str, str], ExportEntry] = {}
        self._runner: web.AppRunner | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def export_url(self, namespace: str, name: str) -> str:
        return f"{self.base_url}{EXPORT_API}/namespaces/{namespace}/virtualmachineexports/{name}"

    async def start(self, certificates: tuple[bytes, bytes, bytes] | None = None) -> None:
        """Serve with ``certificates`` (CA, server certificate for the host, key: the lab CA's
        API server certificate) when given, else with a CA of its own."""
        self._tmp = tempfile.TemporaryDirectory(prefix="lab-export-")
        self.ca_pem, context = server_tls(Path(self._tmp.name), self.host, "export", certificates)
        app = web.Application()
        prefix = EXPORT_API + "/namespaces/{ns}/virtualmachineexports/{name}/volumes/{vol}/"
        app.router.add_get(prefix + "disk.img", self._raw)
        app.router.add_get(prefix + "disk.img.gz", self._gzip)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0, ssl_context=context)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _volume(self, request: web.Request) -> ExportedVolume:
        key = (request.match_info["ns"], request.match_info["name"])
        entry = self.entries.get(key)
        if entry is None:
            raise web.HTTPNotFound(text="export not found or not ready\n")
        token = request.headers.get(TOKEN_HEADER) or request.query.get(TOKEN_HEADER) or ""
        if not hmac.compare_digest(token.encode(), entry.token.encode()):
            raise web.HTTPUnauthorized(text="invalid or missing export token\n")
        volume = entry.volumes.get(request.match_info["vol"])
        if volume is None:
            raise web.HTTPNotFound(text="volume not found\n")
        return volume

    async def _raw(self, request: web.Request) -> web.StreamResponse:
        volume = self._volume(request)
        start, end, status = 0, volume.size, 200
        header = request.headers.get("Range")
        if header:
            match = _RANGE.match(header.strip())
            if not match or (not match.group(1) and not match.group(2)):
                raise web.HTTPRequestRangeNotSatisfiable()
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)) + 1, volume.size) if match.group(2) else volume.size
            else:
                start = max(0, volume.size - int(match.group(2)))
            if start >= volume.size or start >= end:
                raise web.HTTPRequestRangeNotSatisfiable(
                    headers={"Content-Range": f"bytes */{volume.size}"}
                )
            status = 206
        response = web.StreamResponse(status=status)
        response.content_type = "application/octet-stream"
        response.content_length = end - start
        response.headers["Accept-Ranges"] = "bytes"
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{volume.size}"
        await response.prepare(request)
        for chunk in iter_disk(volume.seed, volume.size, start, end):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _gzip(self, request: web.Request) -> web.StreamResponse:
        volume = self._volume(request)
        response = web.StreamResponse(status=200)
        response.content_type = "application/gzip"
        await response.prepare(request)
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        for chunk in iter_disk(volume.seed, volume.size):
            data = compressor.compress(chunk)
            if data:
                await response.write(data)
        await response.write(compressor.flush())
        await response.write_eof()
        return response
