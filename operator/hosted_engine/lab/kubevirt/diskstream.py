"""The content of a simulated disk: a deterministic pseudo-random byte stream keyed by a seed.

Block ``i`` (1 MiB) is SHAKE-256 of ``seed || i``; the stream is seekable (HTTP ranges), the same
for the same seed on every machine, and different for different disks, so a backup's checksum can
be verified against :func:`disk_sha256`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

BLOCK = 1024 * 1024


def _block(seed: bytes, index: int) -> bytes:
    return hashlib.shake_256(seed + index.to_bytes(8, "big")).digest(BLOCK)


def iter_disk(seed: str, size: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of the disk (``end`` defaults to ``size``), in chunks of <= 1 MiB."""
    key = seed.encode()
    stop = size if end is None else min(end, size)
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
