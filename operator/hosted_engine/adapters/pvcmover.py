"""The data mover of a ``pvc`` backup target: a standalone script run in a Job mounting the claim.

The operator cannot mount an arbitrary PersistentVolumeClaim, so everything that touches a
``pvc`` target runs in a Job (:mod:`hosted_engine.adapters.pvcstore`) whose pod mounts the claim
and runs this file with ``python3`` (the operator's image has it; the file is mounted from a
ConfigMap). It uses the standard library only and decides nothing: it moves bytes, measures them
and prints one line ``RESULT <json>`` for the operator to read from the pod's log. Secrets (the
export token, the upload token) come from environment variables filled from Secrets and are
never printed.

Modes (paths are arguments so that they can be mount paths):

- ``write CONFIG TARGET``: stream each export volume (HTTPS, the export's CA, the token from the
  env var the config names) into
  ``TARGET/<dir>/<name>`` gzip-compressed, hashing the raw and the stored bytes; write the
  definition files; then the manifest (the template plus the measured objects), **last**. Each
  file goes to a temporary name first and is renamed when complete.
- ``delete TARGET DIR``: remove a run's folder.
- ``verify TARGET DIR``: the manifest's text and, for every object it lists, its size and SHA-256
  (and the SHA-256 of the gunzipped bytes of a disk), plus the engine's definition.
- ``upload TARGET DIR CONFIG``: POST ``disk.img.gz`` to CDI's upload proxy (its CA, the token in
  ``UPLOAD_TOKEN``); the size and SHA-256 of what was sent.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import ssl
import sys
import tempfile
import urllib.parse
import zlib
from collections.abc import Iterator
from typing import Any

CHUNK = 1024 * 1024
MANIFEST = "manifest.json"
DISK = "disk.img.gz"
HE_DEFINITION = "hostedengine.yaml"


def _context(ca_pem: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_pem:
        context = ssl.create_default_context(cadata=ca_pem)
    return context


def _connection(url: str, ca_pem: str) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.netloc, timeout=60,
                                           context=_context(ca_pem)), path
    return http.client.HTTPConnection(parts.netloc, timeout=60), path


def _atomic(directory: str, name: str, chunks: Iterator[bytes]) -> tuple[int, str]:
    """Write ``chunks`` to ``directory/name`` through a temporary file; (size, SHA-256)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    sha, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                sha.update(chunk)
                size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return size, sha.hexdigest()


def _export(url: str, ca_pem: str, token: str, raw: Any, counter: list[int]) -> Iterator[bytes]:
    """The gzip-compressed bytes of one exported volume (raw bytes hashed into ``raw``)."""
    conn, path = _connection(url, ca_pem)
    try:
        conn.request("GET", path, headers={"x-kubevirt-export-token": token})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"export {url}: HTTP {response.status}")
        comp = zlib.compressobj(1, zlib.DEFLATED, 31)
        while chunk := response.read(CHUNK):
            raw.update(chunk)
            counter[0] += len(chunk)
            out = comp.compress(chunk)
            if out:
                yield out
        yield comp.flush()
    finally:
        conn.close()


def write(config_file: str, target: str) -> dict[str, Any]:
    with open(config_file) as handle:
        config = json.load(handle)
    directory = os.path.join(target, config["dir"])
    os.makedirs(directory, exist_ok=True)
    for leftover in os.listdir(directory):  # what an interrupted attempt left
        if leftover.startswith("."):
            os.unlink(os.path.join(directory, leftover))
    objects: list[dict[str, Any]] = []
    for disk in config["disks"]:
        raw, counter = hashlib.sha256(), [0]
        token = os.environ.get(disk.get("tokenEnv") or "EXPORT_TOKEN", "")
        size, sha = _atomic(directory, disk["name"],
                            _export(disk["url"], disk.get("ca", ""), token, raw, counter))
        objects.append({"name": disk["name"], "size": size, "sha256": sha,
                        "rawSize": counter[0], "rawSha256": raw.hexdigest()})
    for name, text in config["files"]:
        data = text.encode()
        size, sha = _atomic(directory, name, iter([data]))
        objects.append({"name": name, "size": size, "sha256": sha})
    body = dict(config["manifest"])
    body["objects"] = objects
    manifest = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
    _atomic(directory, MANIFEST, iter([manifest]))
    return {"manifestSha256": hashlib.sha256(manifest).hexdigest(),
            "sizeBytes": sum(o["size"] for o in objects) + len(manifest)}


def delete(target: str, folder: str) -> dict[str, Any]:
    path = os.path.join(target, folder)
    removed = sum(len(files) for _, _, files in os.walk(path)) if os.path.isdir(path) else 0
    shutil.rmtree(path, ignore_errors=True)
    return {"removed": removed}


def _read(path: str) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def verify(target: str, folder: str) -> dict[str, Any]:
    directory = os.path.join(target, folder)
    with open(os.path.join(directory, MANIFEST), "rb") as handle:
        manifest = handle.read()
    out: dict[str, Any] = {"manifest": manifest.decode("utf-8", "replace"), "objects": {}}
    try:
        listed = [str(o["name"]) for o in json.loads(manifest).get("objects") or []]
    except (ValueError, AttributeError, TypeError, KeyError):
        listed = []
    for name in listed:
        path = os.path.join(directory, os.path.basename(name))
        if not os.path.isfile(path):
            out["objects"][name] = None
            continue
        sha, raw, size, corrupt = hashlib.sha256(), hashlib.sha256(), 0, False
        decomp: Any = zlib.decompressobj(31) if name.endswith(".gz") else None
        for chunk in _read(path):
            sha.update(chunk)
            size += len(chunk)
            data = chunk
            try:
                while decomp is not None and data:
                    raw.update(decomp.decompress(data))
                    if decomp.eof:
                        data, decomp = decomp.unused_data, zlib.decompressobj(31)
                    else:
                        data = b""
            except zlib.error:  # corrupt compressed data: hash the rest as stored
                decomp, corrupt = None, True
        entry: dict[str, Any] = {"size": size, "sha256": sha.hexdigest()}
        if name.endswith(".gz"):
            entry["rawSha256"] = "corrupt" if corrupt else raw.hexdigest()
        out["objects"][name] = entry
        if name == HE_DEFINITION:
            with open(path, "rb") as handle:
                out["heDefinition"] = handle.read().decode("utf-8", "replace")
    return out


def upload(target: str, folder: str, config_file: str) -> dict[str, Any]:
    with open(config_file) as handle:
        config = json.load(handle)
    path = os.path.join(target, folder, DISK)
    size = os.path.getsize(path)
    sha = hashlib.sha256()
    conn, url_path = _connection(config["url"].rstrip("/") + "/v1beta1/upload",
                                 config.get("ca", ""))
    try:
        conn.putrequest("POST", url_path)
        conn.putheader("Authorization", f"Bearer {os.environ.get('UPLOAD_TOKEN', '')}")
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        for chunk in _read(path):
            sha.update(chunk)
            conn.send(chunk)
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace").strip()[:300]
        if response.status != 200:
            raise RuntimeError(f"upload proxy: HTTP {response.status}: {text}")
    finally:
        conn.close()
    return {"size": size, "sha256": sha.hexdigest()}


def main(argv: list[str]) -> int:
    try:
        if argv[0] == "write":
            result = write(argv[1], argv[2])
        elif argv[0] == "delete":
            result = delete(argv[1], argv[2])
        elif argv[0] == "verify":
            result = verify(argv[1], argv[2])
        elif argv[0] == "upload":
            result = upload(argv[1], argv[2], argv[3])
        else:
            raise ValueError(f"unknown mode {argv[0]!r}")
    except Exception as exc:
        print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
        return 1
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
