"""A backup run's Kubernetes side and its data path.

- VirtualMachineSnapshot (k8s-anchors §1.6) of the engine VM (the guest agent freezes the
  filesystems when present) and a VirtualMachineExport (§1.8) of that snapshot, with a token
  Secret the operator creates (random, owned by the Backup, deleted with the run's cleanup).
  Names are deterministic per run (:func:`hosted_engine.logic.backup.child_name`), so a
  restarted operator finds them again instead of creating others.
- The export's raw disk is streamed over HTTPS, verified against the CA the export publishes in
  ``status.links.external.cert`` (never unverified), compressed into gzip members and hashed on
  the way (raw and stored SHA-256), and uploaded to the target; then the VM's and the
  HostedEngine's definitions; then the manifest, last.
- The failover Host's maintenance is *requested* with the annotation
  ``hostedengine.io/maintenance-request: backup/<namespace>.<backup>`` (the Host handler
  honours it like ``spec.maintenance.mode: local``); removing it activates the Host.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import secrets
import tempfile
import threading
import zlib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from hashlib import sha256 as hashlib_sha256
from queue import Empty, Full, Queue
from typing import Any, Final

import requests
import yaml

from hosted_engine import MANAGED_BY_LABEL, MANAGED_BY_VALUE, __version__
from hosted_engine.adapters.kube import (
    SECRETS,
    TRANSIENT_STATUSES,
    Body,
    Kube,
    KubeError,
    NotFound,
    Resource,
    hostedengine_resource,
)
from hosted_engine.adapters.objectstore import ObjectStore, StoreError
from hosted_engine.clock import get_clock
from hosted_engine.logic import backup as lb
from hosted_engine.models.host import MAINTENANCE_REQUEST_ANNOTATION

SNAPSHOTS: Final = Resource("snapshot.kubevirt.io", "v1beta1", "virtualmachinesnapshots", True)
EXPORTS: Final = Resource("export.kubevirt.io", "v1beta1", "virtualmachineexports", True)
VMS: Final = Resource("kubevirt.io", "v1", "virtualmachines", True)
BACKUPS: Final = hostedengine_resource("backups", namespaced=True)
RESTORES: Final = hostedengine_resource("restores", namespaced=True)
HOSTEDENGINES: Final = hostedengine_resource("hostedengines", namespaced=True)
HOSTS: Final = hostedengine_resource("hosts", namespaced=False)
TOKEN_HEADER: Final = "x-kubevirt-export-token"
RUN_LABEL: Final = "hostedengine.io/backup-run"
BACKUP_LABEL: Final = "hostedengine.io/backup"
EXPORT_TTL: Final = "2h"
HTTP_TIMEOUT: Final = 60.0
CHUNK: Final = 1024 * 1024
_DROP_META: Final = ("managedFields", "uid", "resourceVersion", "creationTimestamp",
                     "ownerReferences", "generation", "finalizers", "deletionTimestamp",
                     "deletionGracePeriodSeconds", "selfLink")


class Cancelled(Exception):
    """The operator is stopping: the run resumes from its status on the next start."""


def definition(obj: Mapping[str, Any], *, keep_status: bool) -> dict[str, Any]:
    """An object as stored in a backup: no server-side bookkeeping."""
    out = copy.deepcopy(dict(obj))
    meta = out.get("metadata") or {}
    for key in _DROP_META:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    for key in list(annotations):
        if (key.startswith("hostedengine.io/") and "last-handled" in key) or key.startswith(
            "kopf.zalando.org/"
        ):
            annotations.pop(key)
    if not keep_status:
        out.pop("status", None)
    return out


def _meta(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("metadata") or {}


def _status(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("status") or {}


@dataclass
class ExportLink:
    url: str
    ca_pem: str
    volume: str


class BackupKube:
    """The API side of a run (synchronous, over the shared :class:`Kube`)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    # -- the source -----------------------------------------------------------------------
    def hosted_engine(self, namespace: str, name: str) -> Body | None:
        return self.kube.find(HOSTEDENGINES, name, namespace)

    def vm(self, namespace: str, name: str) -> Body | None:
        return self.kube.find(VMS, name, namespace)

    def vms(self, namespace: str) -> list[Body]:
        return self.kube.list(VMS, namespace)

    # -- failover host --------------------------------------------------------------------
    def host(self, name: str) -> Body | None:
        return self.kube.find(HOSTS, name)

    def request_maintenance(self, host: str, value: str, on: bool) -> None:
        """Put (or take back) our maintenance request; another requester's is left alone."""
        current = self.kube.find(HOSTS, host)
        if current is None:
            return
        present = (_meta(current).get("annotations") or {}).get(MAINTENANCE_REQUEST_ANNOTATION)
        if (on and present == value) or (not on and present != value):
            return
        if on and present:  # someone else's maintenance: ours joins it, theirs is not touched
            return
        with contextlib.suppress(NotFound):
            self.kube.patch(HOSTS, host, {"metadata": {"annotations": {
                MAINTENANCE_REQUEST_ANNOTATION: value if on else None}}})

    # -- snapshot and export --------------------------------------------------------------
    def snapshot(self, namespace: str, name: str) -> Body | None:
        return self.kube.find(SNAPSHOTS, name, namespace)

    def export(self, namespace: str, name: str) -> Body | None:
        return self.kube.find(EXPORTS, name, namespace)

    def create_snapshot(self, owner: Mapping[str, Any], name: str, vm: str, run_id: str) -> None:
        namespace = _meta(owner).get("namespace")
        self.kube.create_or_get(SNAPSHOTS, {
            "apiVersion": SNAPSHOTS.api_version,
            "kind": "VirtualMachineSnapshot",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {RUN_LABEL: run_id, BACKUP_LABEL: _meta(owner).get("name")}},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm},
                     "deletionPolicy": "Delete", "failureDeadline": "5m"},
        }, owner=owner)

    def create_export(self, owner: Mapping[str, Any], name: str, snapshot: str,
                      run_id: str) -> None:
        namespace = str(_meta(owner).get("namespace"))
        labels = {RUN_LABEL: run_id, BACKUP_LABEL: str(_meta(owner).get("name"))}
        if self.kube.find(SECRETS, name, namespace) is None:
            token = secrets.token_urlsafe(32)
            self.kube.create_or_get(SECRETS, {
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "data": {"token": base64.b64encode(token.encode()).decode()},
            }, owner=owner)
        self.kube.create_or_get(EXPORTS, {
            "apiVersion": EXPORTS.api_version,
            "kind": "VirtualMachineExport",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"source": {"apiGroup": "snapshot.kubevirt.io",
                                "kind": "VirtualMachineSnapshot", "name": snapshot},
                     "tokenSecretRef": name, "ttlDuration": EXPORT_TTL},
        }, owner=owner)

    def delete_children(self, namespace: str, name: str) -> None:
        self.kube.delete(EXPORTS, name, namespace)
        self.kube.delete(SECRETS, name, namespace)
        self.kube.delete(SNAPSHOTS, name, namespace)

    def export_links(self, namespace: str, name: str) -> list[ExportLink]:
        export = self.export(namespace, name) or {}
        external = (_status(export).get("links") or {}).get("external") or {}
        ca = str(external.get("cert") or "")
        out = []
        for volume in external.get("volumes") or []:
            for fmt in volume.get("formats") or []:
                if fmt.get("format") == "raw":
                    out.append(ExportLink(str(fmt.get("url")), ca, str(volume.get("name"))))
        return out

    def export_token(self, namespace: str, name: str) -> str:
        return self.kube.read_secret(namespace, name, "token").get_secret_value()

    # -- the Backup itself ----------------------------------------------------------------
    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Body:
        return self.kube.patch_status(BACKUPS, name, status, namespace)

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        with contextlib.suppress(Exception):
            self.kube.post_event(obj, reason=reason, message=message[:1000],
                                 type="Warning" if type_ == "Warning" else "Normal")


def iter_export(link: ExportLink, token: str, stop: threading.Event | None = None,
                session: requests.Session | None = None) -> Iterator[bytes]:
    """The raw disk of one exported volume, verified against the export's CA."""
    ca_file = None
    verify: bool | str = True
    if link.ca_pem:
        fd, ca_file = tempfile.mkstemp(prefix="export-ca-", suffix=".pem")
        with os.fdopen(fd, "w") as handle:
            handle.write(link.ca_pem)
        verify = ca_file
    http = session or requests.Session()
    try:
        with http.get(link.url, headers={TOKEN_HEADER: token}, stream=True, verify=verify,
                      timeout=HTTP_TIMEOUT) as response:
            if response.status_code != 200:
                raise StoreError(f"export {link.volume}: HTTP {response.status_code}")
            expected = response.headers.get("Content-Length")
            got = 0
            for chunk in response.iter_content(CHUNK):
                if stop is not None and stop.is_set():
                    raise Cancelled("operator stopping")
                got += len(chunk)
                yield chunk
            if expected is not None and got != int(expected):
                raise StoreError(f"export {link.volume}: short read ({got} of {expected})")
    except requests.RequestException as exc:
        raise StoreError(f"export {link.volume}: {type(exc).__name__}") from None
    finally:
        if session is None:
            http.close()
        if ca_file:
            with contextlib.suppress(OSError):
                os.unlink(ca_file)


def prefetch(chunks: Iterator[bytes], depth: int = 8) -> Iterator[bytes]:
    """Read ``chunks`` in a thread of its own, up to ``depth`` ahead: the HTTPS read (TLS
    decryption releases the GIL) overlaps with hashing and compression in the caller."""
    queue: Queue[tuple[bytes | None, BaseException | None]] = Queue(maxsize=depth)
    done = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not done.is_set():
                    try:
                        queue.put((chunk, None), timeout=0.5)
                        break
                    except Full:
                        continue
                if done.is_set():
                    return
            queue.put((None, None))
        except BaseException as exc:  # handed to the consumer
            queue.put((None, exc))

    worker = threading.Thread(target=produce, name="backup-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            chunk, error = queue.get()
            if error is not None:
                raise error
            if chunk is None:
                return
            yield chunk
    finally:
        done.set()
        with contextlib.suppress(Empty):
            while True:
                queue.get_nowait()
        worker.join(timeout=5)


def run_prefix(namespace: str, hosted_engine: str, run_id: str) -> str:
    return f"{namespace}/{hosted_engine}/{run_id}"


def _upload_disk(store: ObjectStore, key: str, name: str, link: ExportLink, token: str,
                 stop: threading.Event | None) -> lb.StoredObject:
    """Stream one exported volume to ``key``, gzip members, hashing both sides."""
    gz = lb.GzipStream()

    def compressed() -> Iterator[bytes]:
        for chunk in prefetch(iter_export(link, token, stop)):
            yield from gz.feed(chunk)
        yield from gz.finish()

    store.upload_stream(key, compressed())
    return lb.StoredObject(name, gz.stored_size, gz.stored_sha.hexdigest(), gz.raw_size,
                           gz.raw_sha.hexdigest())


class RunGone(Exception):
    """What a run needs is gone (message for the run's status)."""


@dataclass
class RunParts:
    """What a run writes: disks (object name, export link, token Secret), definition files,
    and the manifest's source and snapshot indications."""

    disks: list[tuple[str, ExportLink, str]]
    files: list[tuple[str, bytes]]
    source: dict[str, Any]
    indications: list[str]
    version: str | None


def run_parts(api: BackupKube, namespace: str, hosted_engine: str, export: str,
              others: Mapping[str, str] | None) -> RunParts:
    """Everything a run stores, read from the API (``others``: other VMs -> their exports)."""
    he = api.hosted_engine(namespace, hosted_engine)
    vm = api.vm(namespace, hosted_engine)
    if he is None or vm is None:
        raise RunGone("the HostedEngine or its VM is gone")
    links = api.export_links(namespace, export)
    if not links:
        raise RunGone("the export lists no volume")
    disks = [(lb.DISK if i == 0 else f"disk-{link.volume}.img.gz", link, export)
             for i, link in enumerate(links)]
    definitions: list[tuple[str, Mapping[str, Any], bool]] = [
        (lb.VM_DEFINITION, vm, False), (lb.HE_DEFINITION, he, True)]
    for other, other_export in sorted((others or {}).items()):
        other_vm = api.vm(namespace, other)
        if other_vm is None:
            raise RunGone(f"VirtualMachine {other} is gone")
        disk_prefix, vm_file = lb.vm_object_names(other)
        disks += [(f"{disk_prefix}disk.img.gz" if i == 0
                   else f"{disk_prefix}disk-{link.volume}.img.gz", link, other_export)
                  for i, link in enumerate(api.export_links(namespace, other_export))]
        definitions.append((vm_file, other_vm, False))
    files = [(name, yaml.safe_dump(definition(obj, keep_status=keep), sort_keys=False).encode())
             for name, obj, keep in definitions]
    snap = api.snapshot(namespace, export)
    he_vm = (he.get("spec") or {}).get("vm") or {}
    version = (he_vm.get("image") or {}).get("version")
    source = {"hostedEngine": hosted_engine, "virtualMachine": hosted_engine,
              "fqdn": (he_vm.get("network") or {}).get("fqdn"), "engineVersion": version,
              "volumes": [link.volume for link in links],
              "virtualMachines": sorted(others or {})}
    return RunParts(disks, files, source,
                    [str(i) for i in _status(snap).get("indications") or []],
                    str(version) if version else None)


def upload_run(api: BackupKube, store: ObjectStore, backup: Mapping[str, Any], *,
               hosted_engine: str, run_id: str, export: str,
               stop: threading.Event | None = None,
               others: Mapping[str, str] | None = None) -> lb.UploadResult:
    """Stream the run's disk(s), definitions and (last) the manifest to ``store``; ``others``
    maps the other selected VMs to their exports."""
    namespace = str(_meta(backup).get("namespace"))
    prefix = run_prefix(namespace, hosted_engine, run_id)
    try:
        parts = run_parts(api, namespace, hosted_engine, export, others)
        store.abort_incomplete(prefix)  # a resumed run: what the interrupted upload left
        tokens: dict[str, str] = {}
        objects: list[lb.StoredObject] = []
        for name, link, secret in parts.disks:
            if secret not in tokens:
                tokens[secret] = api.export_token(namespace, secret)
            objects.append(_upload_disk(store, f"{prefix}/{name}", name, link, tokens[secret],
                                        stop))
        for name, data in parts.files:
            store.put(f"{prefix}/{name}", data)
            objects.append(lb.StoredObject(name, len(data), lb.sha256_hex(data)))
        manifest = lb.build_manifest(
            namespace=namespace, backup=str(_meta(backup).get("name")), run_id=run_id,
            created_at=get_clock().now(), operator_version=__version__, source=parts.source,
            objects=objects, indications=parts.indications)
        store.put(f"{prefix}/{lb.MANIFEST}", manifest)
    except RunGone as exc:
        return lb.UploadResult(ok=False, error=str(exc))
    except (StoreError, KubeError) as exc:
        if isinstance(exc, KubeError) and exc.status in TRANSIENT_STATUSES:
            raise  # a busy API server (429, 5xx): the step is tried again, the run goes on
        return lb.UploadResult(ok=False, error=str(exc))
    total = sum(o.size for o in objects) + len(manifest)
    return lb.UploadResult(ok=True, size_bytes=total, manifest_sha256=lb.sha256_hex(manifest),
                           location=store.location(prefix), engine_version=parts.version)


# --------------------------------------------------------------------------------------------
# Restore: read back and verify a run, import its disk


DATAVOLUMES: Final = Resource("cdi.kubevirt.io", "v1beta1", "datavolumes", True)
CONFIGMAPS: Final = Resource("", "v1", "configmaps", True)
STORAGEDOMAINS: Final = hostedengine_resource("storagedomains", namespaced=False)
RESTORE_LABEL: Final = "hostedengine.io/restore"
UPLOAD_TOKENS: Final = Resource("upload.cdi.kubevirt.io", "v1beta1", "uploadtokenrequests", True)
CDICONFIGS: Final = Resource("cdi.kubevirt.io", "v1beta1", "cdiconfigs", False)
#: where CDI publishes the upload proxy's CA (the cdi-uploadproxy-signer's bundle)
UPLOAD_CA: Final = ("cdi", "cdi-uploadproxy-signer-bundle", "ca-bundle.crt")
#: the upload proxy's in-cluster Service, when CDIConfig publishes no URL
UPLOAD_PROXY_SERVICE: Final = "cdi-uploadproxy.cdi.svc"


class _Tally:
    """Size and SHA-256 of a stream as it goes by (and its bytes, when ``keep``)."""

    def __init__(self, *, keep: bool, stop: threading.Event | None) -> None:
        self.keep = keep
        self.stop = stop
        self.size = 0
        self.sha = hashlib_sha256()
        self.content = bytearray()

    def count(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            if self.stop is not None and self.stop.is_set():
                raise Cancelled("operator stopping")
            self.size += len(chunk)
            self.sha.update(chunk)
            if self.keep:
                self.content.extend(chunk)
            yield chunk


@dataclass
class Verification:
    manifest: dict[str, Any]
    he_definition: dict[str, Any]
    mismatches: list[lb.Mismatch]
    verified: int


def verify_run(store: ObjectStore, prefix: str, manifest_sha256: str | None = None,
               stop: threading.Event | None = None,
               only: Collection[str] | None = None) -> Verification:
    """Read the manifest and every object it lists (or those in ``only``); compare sizes and
    SHA-256 (the disk's raw bytes too). Raises :class:`StoreError` or
    :class:`lb.ManifestError` when the run cannot be read at all."""
    raw = store.get(f"{prefix}/{lb.MANIFEST}")
    mismatches: list[lb.Mismatch] = []
    if manifest_sha256 is not None and lb.sha256_hex(raw) != manifest_sha256:
        mismatches.append(lb.Mismatch(lb.MANIFEST, manifest_sha256, lb.sha256_hex(raw)))
    manifest = lb.parse_manifest(raw)
    he_definition: dict[str, Any] = {}
    verified = 0
    for entry in manifest["objects"]:
        name = str(entry["name"])
        if only is not None and name not in only:
            continue
        tally = _Tally(keep=name == lb.HE_DEFINITION, stop=stop)
        raw_sha = hashlib_sha256() if entry.get("rawSha256") else None
        try:
            chunks = tally.count(store.iter_object(f"{prefix}/{name}"))
            if raw_sha is not None:
                for data in lb.iter_gunzip(chunks):
                    raw_sha.update(data)
            else:
                for _ in chunks:
                    pass
        except StoreError:
            mismatches.append(lb.Mismatch(name, str(entry["sha256"]), None))
            continue
        except zlib.error:  # corrupt compressed data: finish hashing what is stored
            with contextlib.suppress(StoreError):
                for _ in chunks:
                    pass
            found = lb.verify_object(entry, tally.size, tally.sha.hexdigest())
            mismatches.extend(found or [lb.Mismatch(f"{name} (gzip)", None, "corrupt")])
            continue
        found = lb.verify_object(entry, tally.size, tally.sha.hexdigest(),
                                 raw_sha.hexdigest() if raw_sha is not None else None)
        mismatches.extend(found)
        if not found:
            verified += 1
            if tally.keep:
                loaded = yaml.safe_load(bytes(tally.content))
                he_definition = loaded if isinstance(loaded, dict) else {}
    return Verification(manifest, he_definition, mismatches, verified)


def upload_disk_body(namespace: str, name: str, *, size: str, storage_class: str | None,
                     labels: Mapping[str, str], access_modes: list[str] | None = None,
                     volume_mode: str | None = None) -> dict[str, Any]:
    """A CDI DataVolume waiting for the disk through the upload proxy (``source.upload``)."""
    body = import_disk_body(namespace, name, url="", secret=None, ca_config_map=None, size=size,
                            storage_class=storage_class, labels=labels,
                            access_modes=access_modes, volume_mode=volume_mode)
    body["spec"]["source"] = {"upload": {}}
    return body


@dataclass
class UploadProxy:
    url: str
    ca_pem: str | None


def upload_proxy(kube: Kube) -> UploadProxy:
    """CDI's upload proxy: ``CDIConfig/config``'s ``status.uploadProxyURL`` (a host, maybe
    with a scheme) or the in-cluster Service; its CA from the signer bundle ConfigMap (none:
    the system's trust store)."""
    config = kube.find(CDICONFIGS, "config") or {}
    host = str(_status(config).get("uploadProxyURL") or UPLOAD_PROXY_SERVICE)
    url = host if "://" in host else f"https://{host}"
    namespace, name, key = UPLOAD_CA
    ca = None
    with contextlib.suppress(KubeError):
        bundle = kube.find(CONFIGMAPS, name, namespace) or {}
        ca = (bundle.get("data") or {}).get(key) or None
    return UploadProxy(url.rstrip("/"), ca)


def upload_token(kube: Kube, namespace: str, claim: str) -> str:
    """A token for one upload to ``claim`` (an UploadTokenRequest; CDI's tokens last 5 min)."""
    response = kube.create(UPLOAD_TOKENS, {
        "apiVersion": UPLOAD_TOKENS.api_version, "kind": "UploadTokenRequest",
        "metadata": {"name": claim, "namespace": namespace}, "spec": {"pvcName": claim}})
    token = str(_status(response).get("token") or "")
    if not token:
        raise KubeError(f"UploadTokenRequest for {claim}: no token in the response")
    return token


class UploadRefused(StoreError):
    """The upload proxy refused the content (HTTP 4xx other than 401): do not retry."""


@dataclass
class Sent:
    size: int
    sha256: str


def upload_disk(proxy: UploadProxy, token: str, chunks: Iterator[bytes],
                stop: threading.Event | None = None) -> Sent:
    """Stream ``chunks`` (the stored disk, gzip: the upload server decompresses it) to the
    upload proxy, TLS verified; returns the size and SHA-256 of what was sent."""
    ca_file = None
    verify: bool | str = True
    if proxy.ca_pem:
        fd, ca_file = tempfile.mkstemp(prefix="upload-ca-", suffix=".pem")
        with os.fdopen(fd, "w") as handle:
            handle.write(proxy.ca_pem)
        verify = ca_file
    sha = hashlib_sha256()
    sent = [0]

    def body() -> Iterator[bytes]:
        for chunk in chunks:
            if stop is not None and stop.is_set():
                raise Cancelled("operator stopping")
            sha.update(chunk)
            sent[0] += len(chunk)
            yield chunk

    try:
        response = requests.post(f"{proxy.url}/v1beta1/upload", data=body(), verify=verify,
                                 timeout=HTTP_TIMEOUT,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/octet-stream"})
    except requests.RequestException as exc:
        raise StoreError(f"upload proxy: {type(exc).__name__}") from None
    finally:
        if ca_file:
            with contextlib.suppress(OSError):
                os.unlink(ca_file)
    if response.status_code != 200:
        message = f"upload proxy: HTTP {response.status_code}: {response.text.strip()[:300]}"
        if 400 <= response.status_code < 500 and response.status_code not in (401, 409):
            raise UploadRefused(message)
        raise StoreError(message)
    return Sent(sent[0], sha.hexdigest())


def pvc_folder(path: str, folder: str) -> str:
    """A run's folder inside a pvc target's volume."""
    return "/".join(p for p in (path.strip("/"), folder.strip("/")) if p)


def verification_from_measures(measured: Mapping[str, Any],
                               manifest_sha256: str | None) -> Verification:
    """A :class:`Verification` from what a pvc target's data mover measured (``verify``)."""
    raw = str(measured.get("manifest") or "").encode()
    mismatches: list[lb.Mismatch] = []
    if manifest_sha256 is not None and lb.sha256_hex(raw) != manifest_sha256:
        mismatches.append(lb.Mismatch(lb.MANIFEST, manifest_sha256, lb.sha256_hex(raw)))
    manifest = lb.parse_manifest(raw)
    objects = measured.get("objects") or {}
    he_definition: dict[str, Any] = {}
    verified = 0
    for entry in manifest["objects"]:
        name = str(entry["name"])
        seen = objects.get(name) or {}
        found = lb.verify_object(entry, seen.get("size"), seen.get("sha256"),
                                 seen.get("rawSha256"))
        mismatches.extend(found)
        if not found:
            verified += 1
            if name == lb.HE_DEFINITION:
                loaded = yaml.safe_load(str(measured.get("heDefinition") or ""))
                he_definition = loaded if isinstance(loaded, dict) else {}
    return Verification(manifest, he_definition, mismatches, verified)


def import_disk_body(namespace: str, name: str, *, url: str, secret: str | None,
                     ca_config_map: str | None, size: str, storage_class: str | None,
                     labels: Mapping[str, str], access_modes: list[str] | None = None,
                     volume_mode: str | None = None) -> dict[str, Any]:
    """A CDI DataVolume importing the stored disk (gzip) from S3."""
    s3: dict[str, Any] = {"url": url}
    if secret:
        s3["secretRef"] = secret
    if ca_config_map:
        s3["certConfigMap"] = ca_config_map
    storage: dict[str, Any] = {"resources": {"requests": {"storage": size}}}
    if storage_class:
        storage["storageClassName"] = storage_class
    if access_modes:
        storage["accessModes"] = list(access_modes)
    if volume_mode:
        storage["volumeMode"] = volume_mode
    return {"apiVersion": DATAVOLUMES.api_version, "kind": "DataVolume",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"source": {"s3": s3}, "storage": storage}}


__all__ = [
    "BACKUPS",
    "BACKUP_LABEL",
    "EXPORTS",
    "HOSTEDENGINES",
    "HOSTS",
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "RESTORES",
    "RUN_LABEL",
    "SNAPSHOTS",
    "UPLOAD_TOKENS",
    "BackupKube",
    "Cancelled",
    "ExportLink",
    "RunGone",
    "RunParts",
    "Verification",
    "definition",
    "import_disk_body",
    "iter_export",
    "prefetch",
    "pvc_folder",
    "run_parts",
    "run_prefix",
    "upload_disk",
    "upload_disk_body",
    "upload_proxy",
    "upload_run",
    "upload_token",
    "verification_from_measures",
    "verify_run",
]
