"""CDI's data path: the importer (http and s3 sources) and the upload proxy (upload source).

Faithful to CDI (containerized-data-importer, doc/datavolumes.md, doc/upload.md):

- Import (``spec.source.http`` / ``spec.source.s3``): the importer really downloads the URL.
  ``secretRef`` names a Secret with ``accessKeyId`` and ``secretKey`` (HTTP basic auth for http,
  the S3 keys for s3); ``certConfigMap`` names a ConfigMap whose values are PEM CA certificates
  the importer trusts (TLS is always verified). An s3 URL is ``SCHEME://HOST/BUCKET/KEY``.
  ``http.checksum`` (``sha256:<hex>``, also md5/sha1/sha512) is checked against the downloaded
  bytes. A gzip stream is decompressed (multi-member too); the content must fit the claim.
  A failed attempt is what a failing importer pod is: ``status.restartCount`` goes up, the
  ``Running`` condition is False with reason ``Error`` and CDI's message (e.g. ``Unable to
  connect to http data source: expected status code 200, got 404. Status: 404 Not Found``), the
  phase stays ImportInProgress and the import is retried after a growing back-off; it never
  becomes Failed by itself (CDI does not either).
- Upload (``spec.source.upload``): UploadScheduled, then UploadReady once the claim is bound.
  A token comes from ``POST /apis/upload.cdi.kubevirt.io/v1beta1/namespaces/NS/
  uploadtokenrequests`` (``spec.pvcName``; valid 5 minutes). The upload proxy (HTTPS; its URL in
  the ``CDIConfig`` ``config``'s ``status.uploadProxyURL``, its CA in the ConfigMap
  ``cdi/cdi-uploadproxy-signer-bundle``, key ``ca-bundle.crt``) takes ``POST /v1beta1/upload``
  (or ``upload-async``) with ``Authorization: Bearer <token>``: 401 without a valid token, 503
  while the DataVolume is not UploadReady, 409 while another upload to it runs, 400 when the
  content is larger than the claim; then the DataVolume Succeeds.

What lands in the claim is kept as a content-addressed file and becomes the claim's content seed
(``blob:<sha256>``, :mod:`.diskstream`), so it travels with clones, snapshots and exports; the
claim is annotated with the content's ``lab.hostedengine.io/content-sha256`` and ``-size`` so a
test can check exactly what was imported.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from aiohttp import web

from hosted_engine.lab.kubevirt import CDI_GROUP, DISK_SEED_ANNOTATION
from hosted_engine.lab.kubevirt.diskstream import register_blob
from hosted_engine.lab.kubevirt.resources import DATAVOLUMES, phase, set_condition, status, uid_of
from hosted_engine.lab.sim.api import (
    CONFIGMAPS,
    NAMESPACES,
    PVCS,
    SECRETS,
    Obj,
    Res,
    name_of,
    ns_of,
)
from hosted_engine.lab.sim.quantity import to_units

if TYPE_CHECKING:
    from hosted_engine.lab.kubevirt.sim import KubeVirtSim

log = logging.getLogger(__name__)

UPLOAD_GROUP = "upload.cdi.kubevirt.io"
CDI_NAMESPACE = "cdi"
CDICONFIGS = Res(CDI_GROUP, "v1beta1", "cdiconfigs", "CDIConfig", namespaced=False)
CRDS = Res("apiextensions.k8s.io", "v1", "customresourcedefinitions",
           "CustomResourceDefinition", namespaced=False)
UPLOAD_CA_CONFIGMAP = "cdi-uploadproxy-signer-bundle"
UPLOAD_CA_KEY = "ca-bundle.crt"
CONTENT_SHA_ANNOTATION = "lab.hostedengine.io/content-sha256"
CONTENT_SIZE_ANNOTATION = "lab.hostedengine.io/content-size"
TOKEN_TTL = 300.0
CHUNK = 1024 * 1024
_ALGORITHMS = ("md5", "sha1", "sha256", "sha512")


class ImportFailed(Exception):
    """One failed importer attempt (the message is CDI's)."""


@dataclass
class Content:
    path: Path
    sha256: str
    size: int


class _Writer:
    """Writes a stream into a file, gunzipping it when it starts with gzip's magic, hashing the
    stored content (and, when asked, the bytes as they came)."""

    def __init__(self, directory: Path, checksum: str | None = None) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".content-")
        self.handle = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.sha = hashlib.sha256()
        self.size = 0
        self.received = 0
        self._magic = b""
        self._decomp: Any = None
        self._decided = False
        self.expected: tuple[str, str] | None = None
        self._raw: Any = None
        if checksum:
            algorithm, _, digest = checksum.partition(":")
            if algorithm not in _ALGORITHMS or not digest:
                raise ImportFailed(f"invalid checksum {checksum!r}: want <algorithm>:<hex> with "
                                   f"algorithm one of {', '.join(_ALGORITHMS)}")
            self.expected = (algorithm, digest.lower())
            self._raw = hashlib.new(algorithm)

    def _out(self, data: bytes) -> None:
        if data:
            self.handle.write(data)
            self.sha.update(data)
            self.size += len(data)

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self._raw is not None:
            self._raw.update(chunk)
        if not self._decided:
            self._magic += chunk
            if len(self._magic) < 2:
                return
            self._decided = True
            if self._magic[:2] == b"\x1f\x8b":
                self._decomp = zlib.decompressobj(31)
            chunk, self._magic = self._magic, b""
        if self._decomp is None:
            self._out(chunk)
            return
        data = chunk
        try:
            while data:
                self._out(self._decomp.decompress(data))
                if self._decomp.eof:
                    data = self._decomp.unused_data
                    self._decomp = zlib.decompressobj(31)
                else:
                    data = b""
        except zlib.error as exc:
            raise ImportFailed(f"Unable to process data: gzip: invalid data ({exc})") from None

    def finish(self) -> None:
        if not self._decided:
            self._out(self._magic)
        self.handle.close()
        if self.expected is not None:
            algorithm, digest = self.expected
            actual = self._raw.hexdigest()
            if actual != digest:
                raise ImportFailed(f"checksum mismatch: expected {algorithm}:{digest}, "
                                   f"got {algorithm}:{actual}")

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def _ca_file(directory: Path, pems: Iterable[str]) -> str | None:
    text = "\n".join(p for p in pems if p.strip())
    if not text:
        return None
    fd, name = tempfile.mkstemp(dir=directory, prefix=".ca-", suffix=".pem")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return name


def download(kind: str, source: Obj, creds: tuple[str, str] | None, ca_pems: list[str],
             directory: Path, progress: list[int]) -> Content:
    """One importer attempt (blocking: runs in a thread). ``progress`` gets [received, total]."""
    url = str(source.get("url") or "")
    ca = _ca_file(directory, ca_pems)
    writer = _Writer(directory, str(source.get("checksum") or "") if kind == "http" else None)
    try:
        if kind == "http":
            _download_http(url, creds, ca, writer, progress)
        else:
            _download_s3(url, creds, ca, writer, progress)
        writer.finish()
    except BaseException:
        writer.discard()
        raise
    finally:
        if ca:
            with contextlib.suppress(OSError):
                os.unlink(ca)
    return Content(writer.path, writer.sha.hexdigest(), writer.size)


def _download_http(url: str, creds: tuple[str, str] | None, ca: str | None, writer: _Writer,
                   progress: list[int]) -> None:
    if urlsplit(url).scheme not in ("http", "https"):
        raise ImportFailed(f"Unable to connect to http data source: unsupported protocol "
                           f"scheme in {url!r}")
    try:
        with requests.get(url, stream=True, timeout=30, verify=ca or True,
                          auth=creds) as response:
            if response.status_code != 200:
                raise ImportFailed(
                    "Unable to connect to http data source: expected status code 200, got "
                    f"{response.status_code}. Status: {response.status_code} {response.reason}")
            progress[1] = int(response.headers.get("Content-Length") or 0)
            for chunk in response.iter_content(CHUNK):
                writer.feed(chunk)
                progress[0] = writer.received
    except requests.exceptions.SSLError:
        raise ImportFailed("Unable to connect to http data source: x509: certificate signed by "
                           "unknown authority") from None
    except requests.RequestException as exc:
        raise ImportFailed(f"Unable to connect to http data source: {type(exc).__name__}"
                           ) from None


def _download_s3(url: str, creds: tuple[str, str] | None, ca: str | None, writer: _Writer,
                 progress: list[int]) -> None:
    import boto3
    import botocore.config
    import botocore.exceptions

    parts = urlsplit(url)
    bucket, _, key = parts.path.lstrip("/").partition("/")
    if not parts.netloc or not bucket or not key:
        raise ImportFailed(f"could not parse s3 url {url!r}: want SCHEME://HOST/BUCKET/KEY")
    client: Any = boto3.session.Session().client(
        "s3", endpoint_url=f"{parts.scheme or 'https'}://{parts.netloc}", region_name="us-east-1",
        aws_access_key_id=creds[0] if creds else None,
        aws_secret_access_key=creds[1] if creds else None,
        verify=ca or True,
        config=botocore.config.Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}),
    )
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        progress[1] = int(response.get("ContentLength") or 0)
        body = response["Body"]
        while chunk := body.read(CHUNK):
            writer.feed(chunk)
            progress[0] = writer.received
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise ImportFailed(f"could not get s3 object: {key}: {code}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ImportFailed(f"could not get s3 object: {key}: {type(exc).__name__}") from None
    finally:
        client.close()


@dataclass
class _Import:
    task: asyncio.Task[Content] | None = None
    progress: list[int] = field(default_factory=lambda: [0, 0])
    restarts: int = 0
    retry_at: float = 0.0


def _decode(data: Obj, key: str) -> str:
    return base64.b64decode(str(data.get(key) or "")).decode()


class CdiSim:
    """CDI's importer and upload proxy for one KubeVirt simulator."""

    def __init__(self, sim: KubeVirtSim, host: str = "127.0.0.1") -> None:
        self.sim = sim
        self.api = sim.api
        self.host = host
        self.port = 0
        self.ca_pem = ""
        self.imports: dict[str, _Import] = {}
        self.tokens: dict[str, tuple[str, str, float]] = {}
        self._uploading: set[tuple[str, str]] = set()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._runner: web.AppRunner | None = None

    @property
    def directory(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lab-cdi-")
        return Path(self._tmp.name)

    @property
    def upload_proxy(self) -> str:
        """What CDIConfig publishes: host:port, no scheme (like a route's host)."""
        return f"{self.host}:{self.port}"

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, certificates: tuple[bytes, bytes, bytes] | None = None) -> None:
        from hosted_engine.lab.kubevirt.export import server_tls

        self.ca_pem, context = server_tls(self.directory, self.host, "upload", certificates)
        app = web.Application(client_max_size=1024 ** 4)
        for path in ("/v1beta1/upload", "/v1beta1/upload-async", "/v1alpha1/upload"):
            app.router.add_post(path, self._upload)
            app.router.add_put(path, self._upload)
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0, ssl_context=context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int((getattr(server, "sockets", None) or [])[0].getsockname()[1])
        self._runner = runner
        await self._install()

    async def _install(self) -> None:
        """The cdi namespace, the upload proxy's CA bundle, the CDIConfig with its URL."""
        with contextlib.suppress(Exception):
            await self.api.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": CDI_NAMESPACE}})
        with contextlib.suppress(Exception):
            await self.api.create(CONFIGMAPS, {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": UPLOAD_CA_CONFIGMAP, "namespace": CDI_NAMESPACE},
                "data": {UPLOAD_CA_KEY: self.ca_pem}}, CDI_NAMESPACE)
        with contextlib.suppress(Exception):
            await self.api.create(CRDS, cdiconfig_crd())
        for _ in range(50):
            try:
                await self.api.create(CDICONFIGS, {
                    "apiVersion": CDICONFIGS.api_version, "kind": "CDIConfig",
                    "metadata": {"name": "config"}, "spec": {}})
                break
            except Exception as exc:  # the CRD takes a moment to be served; or it exists
                if "exists" in str(exc).lower() or "conflict" in str(exc).lower():
                    break
                await asyncio.sleep(0.05)
        with contextlib.suppress(Exception):
            await self.api.patch(CDICONFIGS, "config",
                                 {"status": {"uploadProxyURL": self.upload_proxy}}, None,
                                 "status")

    async def stop(self) -> None:
        for entry in self.imports.values():
            if entry.task is not None:
                entry.task.cancel()
        self.imports.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- shared -----------------------------------------------------------------------------

    async def _store(self, content: Content, dv: Obj, pvc: Obj) -> str | None:
        """Check the content fits the claim and make it the claim's; None, or CDI's error."""
        available = claim_capacity(pvc)
        if content.size > available:
            with contextlib.suppress(OSError):
                content.path.unlink()
            return (f"Virtual image size {content.size} is larger than the reported available "
                    f"storage {available}. A larger PVC is required.")
        final = self.directory / content.sha256
        os.replace(content.path, final)
        seed = register_blob(content.sha256, final)
        await self.api.patch(PVCS, name_of(pvc), {"metadata": {"annotations": {
            DISK_SEED_ANNOTATION: seed, CONTENT_SHA_ANNOTATION: content.sha256,
            CONTENT_SIZE_ANNOTATION: str(content.size)}}}, ns_of(pvc))
        return None

    async def _dv_status(self, dv: Obj, body: Obj) -> None:
        await self.api.patch(DATAVOLUMES, name_of(dv), {"status": body}, ns_of(dv), "status")

    # -- import -----------------------------------------------------------------------------

    async def _secret(self, namespace: str, name: str | None) -> tuple[str, str] | None:
        if not name:
            return None
        secret = await self.api.get(SECRETS, name, namespace)
        if secret is None:
            raise ImportFailed(f'secrets "{name}" not found')
        data = secret.get("data") or {}
        return _decode(data, "accessKeyId"), _decode(data, "secretKey")

    async def _cas(self, namespace: str, name: str | None) -> list[str]:
        if not name:
            return []
        cm = await self.api.get(CONFIGMAPS, name, namespace)
        if cm is None:
            raise ImportFailed(f'configmaps "{name}" not found')
        return [str(v) for v in (cm.get("data") or {}).values()]

    async def sync_import(self, dv: Obj, pvc: Obj, conds: list[Obj], now: str) -> None:
        """One pass over an http/s3 import whose claim is bound."""
        source = (dv.get("spec") or {}).get("source") or {}
        kind = "http" if "http" in source else "s3"
        entry = self.imports.setdefault(uid_of(dv), _Import())
        loop_now = self.sim.now()
        if entry.task is None:
            if loop_now < entry.retry_at:
                return
            namespace = ns_of(dv)
            src = dict(source.get(kind) or {})
            try:
                creds = await self._secret(namespace, src.get("secretRef"))
                cas = await self._cas(namespace, src.get("certConfigMap"))
            except ImportFailed as exc:
                await self._attempt_failed(dv, entry, conds, now, str(exc))
                return
            entry.progress = [0, 0]
            entry.task = asyncio.ensure_future(asyncio.to_thread(
                download, kind, src, creds, cas, self.directory, entry.progress))
            conds = set_condition(conds, "Running", "True", "Pod is running", "", now)
            await self._dv_status(dv, {"phase": "ImportInProgress", "progress": "0.00%",
                                       "conditions": conds})
            return
        if not entry.task.done():
            received, total = entry.progress
            done = min(received / total, 0.99) if total else 0.0
            text = f"{done * 100:.2f}%"
            if status(dv).get("progress") != text:
                await self._dv_status(dv, {"phase": "ImportInProgress", "progress": text})
            return
        task, entry.task = entry.task, None
        try:
            content = task.result()
        except ImportFailed as exc:
            await self._attempt_failed(dv, entry, conds, now, str(exc))
            return
        except Exception as exc:
            await self._attempt_failed(dv, entry, conds, now, f"{type(exc).__name__}: {exc}")
            return
        error = await self._store(content, dv, pvc)
        if error is not None:
            await self._attempt_failed(dv, entry, conds, now, error)
            return
        self.imports.pop(uid_of(dv), None)
        conds = set_condition(conds, "Running", "False", "Completed", "Import Complete", now)
        conds = set_condition(conds, "Ready", "True", "", "", now)
        await self._dv_status(dv, {"phase": "Succeeded", "progress": "100.0%",
                                   "conditions": conds})

    async def _attempt_failed(self, dv: Obj, entry: _Import, conds: list[Obj], now: str,
                              message: str) -> None:
        """The importer pod failed: it restarts after a back-off (as kubelet's, doubling)."""
        entry.restarts += 1
        base = max(self.sim.timings.datavolume_import_time, 0.05)
        entry.retry_at = self.sim.now() + base * min(2 ** (entry.restarts - 1), 32)
        conds = set_condition(conds, "Running", "False", "Error", message, now)
        conds = set_condition(conds, "Ready", "False", "", "", now)
        count = int(status(dv).get("restartCount") or 0) + 1
        await self._dv_status(dv, {"phase": "ImportInProgress", "restartCount": count,
                                   "conditions": conds})

    # -- upload -----------------------------------------------------------------------------

    async def sync_upload(self, dv: Obj, conds: list[Obj], now: str) -> None:
        """UploadScheduled -> UploadReady (the upload server pod runs) once the claim is bound."""
        if phase(dv) == "UploadScheduled":
            conds = set_condition(conds, "Running", "True", "Pod is running", "", now)
            await self._dv_status(dv, {"phase": "UploadReady", "conditions": conds})

    def issue_token(self, namespace: str, pvc: str) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        for key in [k for k, (_, _, exp) in self.tokens.items() if exp < now]:
            self.tokens.pop(key, None)
        self.tokens[token] = (namespace, pvc, now + TOKEN_TTL)
        return token

    async def token_request(self, namespace: str, body: Obj) -> Obj:
        """An UploadTokenRequest: the token for ``spec.pvcName``, or LookupError."""
        pvc = str(((body.get("spec") or {}).get("pvcName")) or "")
        if not pvc or await self.api.get(PVCS, pvc, namespace) is None:
            raise LookupError(f'persistentvolumeclaims "{pvc}" not found')
        out = dict(body)
        out["metadata"] = {**(body.get("metadata") or {}), "namespace": namespace}
        out["status"] = {"token": self.issue_token(namespace, pvc)}
        return out

    def _token_target(self, request: web.Request) -> tuple[str, str]:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        for known, (namespace, pvc, expires) in list(self.tokens.items()):
            if hmac.compare_digest(known.encode(), token.encode()):
                if expires < time.monotonic():
                    break
                return namespace, pvc
        raise web.HTTPUnauthorized(text="authentication failed: invalid or expired token\n")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _upload(self, request: web.Request) -> web.Response:
        namespace, name = self._token_target(request)
        dv = await self.api.get(DATAVOLUMES, name, namespace)
        pvc = await self.api.get(PVCS, name, namespace)
        if dv is None or pvc is None or phase(dv) != "UploadReady":
            raise web.HTTPServiceUnavailable(
                text=f"temporary unable to process upload: PVC {namespace}/{name} is not ready "
                     "for upload\n")
        key = (namespace, name)
        if key in self._uploading:
            raise web.HTTPConflict(text="an upload to this PVC is in progress\n")
        self._uploading.add(key)
        writer = _Writer(self.directory)
        try:
            async for chunk in request.content.iter_chunked(CHUNK):
                writer.feed(chunk)
            writer.finish()
        except ImportFailed as exc:
            writer.discard()
            self._uploading.discard(key)
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        except BaseException:
            writer.discard()
            self._uploading.discard(key)
            raise
        try:
            content = Content(writer.path, writer.sha.hexdigest(), writer.size)
            error = await self._store(content, dv, pvc)
            if error is not None:
                raise web.HTTPBadRequest(text=f"{error}\n")
            now = self.sim.stamp()
            conds = list(status(dv).get("conditions") or [])
            conds = set_condition(conds, "Running", "False", "Completed", "Upload Complete", now)
            conds = set_condition(conds, "Ready", "True", "", "", now)
            await self._dv_status(dv, {"phase": "Succeeded", "progress": "100.0%",
                                       "conditions": conds})
        finally:
            self._uploading.discard(key)
        return web.Response(text="")


def claim_capacity(pvc: Obj) -> int:
    capacity = (status(pvc).get("capacity") or {}).get("storage")
    if capacity is None:
        capacity = (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get(
            "storage", "1Gi")
    return to_units("storage", capacity)


def cdiconfig_crd() -> Obj:
    """CDIConfig (cluster-scoped): only what the lab publishes (status.uploadProxyURL)."""
    schema = {"type": "object", "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                   "properties": {"uploadProxyURL": {"type": "string"}}}}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"cdiconfigs.{CDI_GROUP}",
                     "labels": {"app.kubernetes.io/part-of": "hosted-engine-lab"}},
        "spec": {"group": CDI_GROUP, "scope": "Cluster",
                 "names": {"kind": "CDIConfig", "listKind": "CDIConfigList",
                           "plural": "cdiconfigs", "singular": "cdiconfig"},
                 "versions": [{"name": "v1beta1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": schema},
                               "subresources": {"status": {}}}]},
    }
