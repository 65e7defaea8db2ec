"""Backup targets: S3-compatible object storage (boto3) and a directory of the operator.

Keys are relative to the target's base (the S3 ``prefix`` or the directory ``path``); a run is
the folder ``<namespace>/<hostedengine>/<run-id>/`` (docs/decisions/0005-backup-format.md).

S3: endpoint, region, path-style addressing (default), TLS verification on by default with an
optional CA bundle from a Secret; the access keys come from the credentials Secret
(``accessKeyId``, ``secretAccessKey``) and never appear in a log, a status or an Event.
A stream of unknown length (the compressed disk) goes up as a multipart upload.

Filesystem: each object is written to a temporary name and renamed into place once complete,
so a reader never sees half an object.

A PVC target is not a store of this process: only a pod that mounts the claim reaches it, so
it goes through data mover Jobs (:mod:`hosted_engine.adapters.pvcstore`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final, Protocol

import boto3
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from pydantic import SecretStr

from hosted_engine.adapters.kube import Kube, KubeError
from hosted_engine.models.backup import BackupTarget, FilesystemTarget, S3Target

ACCESS_KEY: Final = "accessKeyId"
SECRET_KEY: Final = "secretAccessKey"
#: Multipart part size and parallel parts of a streamed upload.
PART_SIZE: Final = 8 * 1024 * 1024
CONCURRENCY: Final = 4
READ_CHUNK: Final = 1024 * 1024


class StoreError(Exception):
    """The target failed (message safe to show: no credentials)."""


class ObjectStore(Protocol):
    def location(self, key: str) -> str: ...

    def upload_stream(self, key: str, chunks: Iterable[bytes]) -> None: ...

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def iter_object(self, key: str) -> Iterator[bytes]: ...

    def exists(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> int: ...

    def abort_incomplete(self, prefix: str) -> int: ...

    def close(self) -> None: ...


class _IterReader:
    """A read()-able view of an iterator of chunks (what boto3's upload_fileobj reads)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = bytearray()
        self._done = False

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buf) < size):
            try:
                self._buf += next(self._it)
            except StopIteration:
                self._done = True
        if size < 0:
            size = len(self._buf)
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out


def _clean_key(key: str) -> str:
    parts = [p for p in key.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise StoreError(f"invalid object key {key!r}")
    return "/".join(parts)


class S3Store:
    def __init__(self, target: S3Target, access_key: SecretStr, secret_key: SecretStr,
                 ca_bundle: str | None = None) -> None:
        self.target = target
        self._ca_file: str | None = None
        verify: bool | str = target.verify_tls
        if target.verify_tls and ca_bundle:
            fd, self._ca_file = tempfile.mkstemp(prefix="backup-ca-", suffix=".pem")
            with os.fdopen(fd, "w") as handle:
                handle.write(ca_bundle)
            verify = self._ca_file
        config = botocore.config.Config(
            s3={"addressing_style": "path" if target.force_path_style else "virtual"},
            retries={"max_attempts": 3, "mode": "standard"},
            signature_version="s3v4",
            max_pool_connections=CONCURRENCY * 2,
        )
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=str(target.endpoint),
            region_name=target.region or "us-east-1",
            aws_access_key_id=access_key.get_secret_value(),
            aws_secret_access_key=secret_key.get_secret_value(),
            verify=verify,
            config=config,
        )
        self.transfer = TransferConfig(
            multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
            max_concurrency=CONCURRENCY, use_threads=True,
        )

    def _key(self, key: str) -> str:
        prefix = _clean_key(self.target.prefix)
        key = _clean_key(key)
        return f"{prefix}/{key}" if prefix else key

    def location(self, key: str) -> str:
        return f"s3://{self.target.bucket}/{self._key(key)}"

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            raise StoreError(f"{what}: {error.get('Code', '')} {error.get('Message', '')}"
                             .strip()) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise StoreError(f"{what}: {type(exc).__name__}: {exc}") from None

    def upload_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        with self._errors(f"upload {self.location(key)}"):
            self.client.upload_fileobj(_IterReader(chunks), self.target.bucket, self._key(key),
                                       Config=self.transfer)

    def put(self, key: str, data: bytes) -> None:
        with self._errors(f"put {self.location(key)}"):
            self.client.put_object(Bucket=self.target.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        return b"".join(self.iter_object(key))

    def iter_object(self, key: str) -> Iterator[bytes]:
        with self._errors(f"get {self.location(key)}"):
            response = self.client.get_object(Bucket=self.target.bucket, Key=self._key(key))
            body = response["Body"]
            try:
                while chunk := body.read(READ_CHUNK):
                    yield chunk
            finally:
                body.close()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.target.bucket, Key=self._key(key))
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StoreError(f"head {self.location(key)}: {code}") from None
        return True

    def delete_prefix(self, prefix: str) -> int:
        full = self._key(prefix).rstrip("/") + "/"
        removed = 0
        with self._errors(f"delete {self.location(prefix)}"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.target.bucket, Prefix=full):
                keys = [{"Key": o["Key"]} for o in page.get("Contents") or []]
                if keys:
                    self.client.delete_objects(Bucket=self.target.bucket,
                                               Delete={"Objects": keys, "Quiet": True})
                    removed += len(keys)
        return removed + self.abort_incomplete(prefix)

    def abort_incomplete(self, prefix: str) -> int:
        """Abort the multipart uploads left under ``prefix`` by an interrupted run."""
        full = self._key(prefix).rstrip("/") + "/"
        aborted = 0
        with self._errors(f"abort uploads under {self.location(prefix)}"):
            uploads = self.client.list_multipart_uploads(Bucket=self.target.bucket, Prefix=full)
            for upload in uploads.get("Uploads") or []:
                self.client.abort_multipart_upload(Bucket=self.target.bucket,
                                                   Key=upload["Key"], UploadId=upload["UploadId"])
                aborted += 1
        return aborted

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self._ca_file:
            with contextlib.suppress(OSError):
                os.unlink(self._ca_file)
            self._ca_file = None


class FilesystemStore:
    def __init__(self, target: FilesystemTarget) -> None:
        self.base = Path(target.path)

    def _path(self, key: str) -> Path:
        return self.base / _clean_key(key)

    def location(self, key: str) -> str:
        return str(self._path(key))

    def upload_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                with os.fdopen(fd, "wb") as handle:
                    for chunk in chunks:
                        handle.write(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise StoreError(f"write {path}: {exc.strerror or exc}") from None

    def put(self, key: str, data: bytes) -> None:
        self.upload_stream(key, [data])

    def get(self, key: str) -> bytes:
        return b"".join(self.iter_object(key))

    def iter_object(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(READ_CHUNK):
                    yield chunk
        except OSError as exc:
            raise StoreError(f"read {path}: {exc.strerror or exc}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> int:
        root = self._path(prefix)
        if not root.is_dir():
            return 0
        removed = 0
        for path in sorted(root.rglob("*"), reverse=True):
            with contextlib.suppress(OSError):
                if path.is_dir():
                    path.rmdir()
                else:
                    path.unlink()
                    removed += 1
        with contextlib.suppress(OSError):
            root.rmdir()
        return removed

    def abort_incomplete(self, prefix: str) -> int:
        """Remove the temporary files an interrupted run left under ``prefix``."""
        root = self._path(prefix)
        removed = 0
        if root.is_dir():
            for path in root.glob(".*"):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        return removed

    def close(self) -> None:
        return None


def open_store(kube: Kube, namespace: str, target: BackupTarget) -> ObjectStore:
    """The store of ``target``; credentials and CA bundle read from their Secrets."""
    if target.filesystem is not None:
        return FilesystemStore(target.filesystem)
    if target.s3 is not None:
        s3 = target.s3
        ref = s3.credentials_secret_ref
        secret_ns = ref.namespace or namespace
        try:
            access = kube.read_secret(secret_ns, ref.name, ACCESS_KEY)
            secret = kube.read_secret(secret_ns, ref.name, SECRET_KEY)
            ca = None
            if s3.ca_bundle_secret_ref is not None:
                ca_ref = s3.ca_bundle_secret_ref
                ca = kube.read_secret(ca_ref.namespace or namespace, ca_ref.name,
                                      ca_ref.key).get_secret_value()
        except KubeError as exc:
            raise StoreError(str(exc)) from None
        return S3Store(s3, access, secret, ca)
    raise StoreError("a pvc target is reached through data mover Jobs, not opened directly")


__all__ = ["FilesystemStore", "ObjectStore", "S3Store", "StoreError", "open_store"]
