"""The content of a simulated disk: a deterministic pseudo-random byte stream keyed by a seed.

Block ``i`` (1 MiB) is SHAKE-256 of ``seed || i``; the stream is seekable (HTTP ranges), the same
for the same seed on every machine, and different for different disks, so a backup's checksum can
be verified against :func:`disk_sha256`.

A seed ``blob:<sha256>`` is real content instead: the bytes a CDI import or upload wrote into a
claim (:mod:`.cdi`), kept in a file registered with :func:`register_blob`; past the end of the
content the disk reads as zeros (CDI grows a raw image to the claim's size).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

BLOCK = 1024 * 1024
BLOB_PREFIX = "blob:"
#: content-addressed files of imported disks: sha256 -> path (same bytes for the same key, so
#: several labs in one process can share the table)
_BLOBS: dict[str, Path] = {}


def register_blob(sha256: str, path: Path) -> str:
    """Make ``path`` (content with this SHA-256) readable as the seed ``blob:<sha256>``."""
    _BLOBS[sha256] = path
    return f"{BLOB_PREFIX}{sha256}"


def _iter_blob(sha256: str, size: int, start: int, stop: int) -> Iterator[bytes]:
    path = _BLOBS.get(sha256)
    if path is None:
        raise FileNotFoundError(f"disk content {sha256} is not in this lab")
    length = path.stat().st_size
    pos = max(0, start)
    with path.open("rb") as handle:
        handle.seek(min(pos, length))
        while pos < min(stop, length):
            chunk = handle.read(min(BLOCK, min(stop, length) - pos))
            if not chunk:
                break
            yield chunk
            pos += len(chunk)
    while pos < stop:
        n = min(BLOCK, stop - pos)
        yield bytes(n)
        pos += n


def _block(seed: bytes, index: int) -> bytes:
    return hashlib.shake_256(seed + index.to_bytes(8, "big")).digest(BLOCK)


def iter_disk(seed: str, size: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of the disk (``end`` defaults to ``size``), in chunks of <= 1 MiB."""
    stop = size if end is None else min(end, size)
    if seed.startswith(BLOB_PREFIX):
        yield from _iter_blob(seed[len(BLOB_PREFIX):], size, start, stop)
        return
    key = seed.encode()
    pos = max(0, start)
    while pos < stop:
        index, offset = divmod(pos, BLOCK)
        block = _block(key, index)
        chunk = block[offset : offset + min(BLOCK - offset, stop - pos)]
        yield chunk
        pos += len(chunk)


def read_disk(seed: str, size: int, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(iter_disk(seed, size, start, end))


def disk_sha256(seed: str, size: int) -> str:
    """The SHA-256 (hex) of the whole disk."""
    digest = hashlib.sha256()
    for chunk in iter_disk(seed, size):
        digest.update(chunk)
    return digest.hexdigest()
